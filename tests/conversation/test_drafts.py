"""Replies drafted during the pause that ends a turn (``Draft`` + ``DraftContext``).

The turn-taker offers the speculative transcript of a pause as a draft; the local agent
prepares the reply on it, holding everything it would say until the turn is confirmed. The
checks: a confirmed draft is the same reply as an undrafted one, only sooner; a withdrawn
draft leaves no trace on the wire, in the history or in any tool that changes something;
read-only tools run early and are reported under the real turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from simclient import Frame, SimClient

from sagelab.agents.base import ResolvedAgent
from sagelab.agents.local.brain import Brain, ChatMessage, ToolCaller
from sagelab.agents.local.pipeline import LocalAgent
from sagelab.agents.turns import EnergyTurnDetector
from sagelab.config import ToolSpec, load_config
from sagelab.conversation.fakes import FakeSTT, FakeTTS, MarkedSpeech
from sagelab.conversation.simulation import run_simulated, simulated_runner
from sagelab.conversation.turns import (
    CancelTranscription,
    Draft,
    Transcribe,
    TurnAction,
    TurnTaker,
    UserTurn,
)
from sagelab.server.conversation import Conversation
from sagelab.server.metrics import ServerMetrics
from sagelab.tools import ToolRegistry

pytestmark = pytest.mark.fast

# -- the core: when a draft is offered -------------------------------------------------------


def _feed(taker: TurnTaker, pcm: np.ndarray, chunk: int, t0: float = 0.0) -> list[TurnAction]:
    actions: list[TurnAction] = []
    for k, i in enumerate(range(0, pcm.size, chunk)):
        actions += taker.audio(pcm[i : i + chunk], t0 + (k + 1) * chunk / 16000)
    return actions


def test_a_guess_that_lands_in_the_pause_is_offered_and_the_turn_confirms_it() -> None:
    taker = TurnTaker(EnergyTurnDetector(silence_ms=400), speculate_after_ms=160)
    speech = MarkedSpeech().add_silence(200).add_speech(800)
    actions = _feed(taker, speech.pcm, 320)
    actions += _feed(taker, np.zeros(16 * 200, np.int16), 320, 1.0)  # 200 ms into the pause
    guess = next(a for a in actions if isinstance(a, Transcribe) and a.speculative)
    offered = taker.transcribed(guess.job, " u0x160 ", 90.0, 1.25)
    assert offered == [Draft(guess.job, "u0x160", guess.start, guess.end)]
    rest = _feed(taker, np.zeros(16 * 400, np.int16), 320, 1.25)
    turns = [a for a in rest if isinstance(a, UserTurn)]
    assert [(t.job, t.text, t.final) for t in turns] == [(guess.job, "u0x160", True)]


def test_no_draft_while_an_earlier_utterance_is_still_being_transcribed() -> None:
    taker = TurnTaker(EnergyTurnDetector(silence_ms=400), speculate_after_ms=160)
    speech = MarkedSpeech().add_speech(500).add_silence(600).add_speech(500).add_silence(200)
    actions = _feed(taker, speech.pcm, 320)
    first, second = [a for a in actions if isinstance(a, Transcribe)]
    # The first pause's guess became the first utterance, whose text has not come yet.
    assert first.speculative and second.speculative and taker.pending == 1
    assert taker.transcribed(second.job, "u50x160", 90.0, 2.0) == []


def test_speech_after_the_draft_withdraws_it() -> None:
    taker = TurnTaker(EnergyTurnDetector(silence_ms=400), speculate_after_ms=160)
    pcm = MarkedSpeech().add_speech(600).add_silence(250).pcm
    actions = _feed(taker, pcm, 160)
    guess = next(a for a in actions if isinstance(a, Transcribe) and a.speculative)
    assert taker.transcribed(guess.job, "u0x160", 50.0, 1.0)
    more = _feed(taker, MarkedSpeech().add_speech(300).pcm, 160, 1.0)
    assert CancelTranscription(guess.job) in more


# -- the agent: a draft in simulated time ---------------------------------------------------


class LookUpThenMaybeWrite(Brain):
    """Looks the request up (a read-only tool); when the request is long, also writes it down
    (a tool that changes something), then answers with both results."""

    async def respond(
        self,
        history: Sequence[ChatMessage],
        *,
        system_prompt: str,
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> AsyncIterator[str]:
        heard = history[-1].content
        found = await call_tool("look_up", {"query": heard})
        answer = f"I found {found.value} for you."
        if len(heard.split()) > 60:  # more than 60 units: 600 ms of speech
            saved = await call_tool("write_down", {"text": heard})
            answer += f" And I {saved.value} it."
        yield answer


@dataclass
class Tools:
    lookups: list[tuple[float, str]] = field(default_factory=list)
    writes: list[tuple[float, str]] = field(default_factory=list)
    lookup_s: float = 0.02

    def registry(self) -> ToolRegistry:
        registry = ToolRegistry()

        @registry.tool(name="look_up")
        async def look_up(query: str) -> str:
            """Count what was asked for (it only reads)."""
            self.lookups.append((asyncio.get_running_loop().time(), query))
            await asyncio.sleep(self.lookup_s)
            return f"{len(query.split())} units"

        @registry.tool(name="write_down")
        async def write_down(text: str) -> str:
            """Keep the request (it changes something)."""
            self.writes.append((asyncio.get_running_loop().time(), text))
            await asyncio.sleep(0.02)
            return "wrote"

        return registry


def _agent_spec(greeting: str = "") -> ResolvedAgent:
    tools = (
        ToolSpec(name="look_up", type="server", read_only=True),
        ToolSpec(name="write_down", type="server"),
    )
    return ResolvedAgent(
        id="draft",
        name="draft",
        prompt="",
        first_message=greeting,
        language="en",
        voice=None,
        tools=tools,
        backend="local",
        options={},
        input_format="pcm_16000",
        output_format="pcm_16000",
    )


@dataclass
class Run:
    frames: list[Frame]
    tools: Tools
    history: list[ChatMessage]
    speech_end: float  # when the last speech ended (s, simulated)

    def of(self, *kinds: str) -> list[Frame]:
        return [f for f in self.frames if f.kind in kinds]

    def replies(self) -> list[Frame]:
        return self.of("agent_response")

    def wire(self) -> list[tuple[str, int | None]]:
        """What the client saw, kind and event id, without the timing reports."""
        return [(f.kind, f.event_id) for f in self.frames if f.kind not in ("stage", "ping")]

    def first_audio(self, event_id: int) -> float:
        return next(f.t for f in self.frames if f.kind == "audio" and f.event_id == event_id)


def converse(
    speech: MarkedSpeech,
    *,
    drafts: bool,
    chunk_ms: int = 20,
    stt_s: float = 0.05,
    tts_s: float = 0.15,
    greeting: str = "",
    heard_report: tuple[float, float] | None = None,
    lookup_s: float = 0.02,
) -> Run:
    """``speech`` streamed in simulated real time to a local agent with the two tools.

    ``heard_report`` is ``(at_s, played_ms)``: at that time the client reports having played
    that much of the greeting (sagelab's ``internal_sagelab_heard``)."""
    config = load_config(None, env={}, port=0, ping_interval_s=60.0)
    stt, tts, tools = FakeSTT(), FakeTTS(ms_per_char=50, chunks=3), Tools(lookup_s=lookup_s)

    def delay(fn: Any) -> float:
        return stt_s if getattr(fn, "__self__", None) is stt else tts_s

    async def main() -> Run:
        transport = SimClient()
        conv = Conversation(
            conversation_id="conv_draft",
            agent=_agent_spec(greeting),
            transport=transport,
            config=config,
            metrics=ServerMetrics(),
            store=None,
            server_tools=tools.registry(),
        )
        agent = LocalAgent(
            conv,
            detector=EnergyTurnDetector(silence_ms=400),
            stt=stt,
            tts=tts,
            brain=LookUpThenMaybeWrite(),
            draft_replies=drafts,
            runner=simulated_runner(delay),
        )
        await conv.start(agent)
        loop = asyncio.get_running_loop()
        t0, step = loop.time(), chunk_ms * 16
        if heard_report is not None:
            at_s, played_ms = heard_report

            async def report() -> None:
                await asyncio.sleep(at_s)
                first = next(f for f in transport.frames if f.kind == "agent_response")
                await conv.heard(first.event_id or 0, played_ms)

            reporting = loop.create_task(report())
        for k, i in enumerate(range(0, speech.pcm.size, step)):
            await asyncio.sleep(max(0.0, t0 + (k + 1) * chunk_ms / 1000 - loop.time()))
            conv.touch()
            await conv.run_backend(agent.on_audio(speech.pcm[i : i + step]))
        await asyncio.sleep(20)
        if heard_report is not None:
            await reporting
        history = list(agent.history)
        await conv.close(1000, "done")
        end = t0 + speech.speech_ranges[-1][1] / 16000
        return Run(transport.frames, tools, history, end)

    return run_simulated(main)


def test_a_drafted_reply_is_the_same_reply_only_sooner() -> None:
    speech = MarkedSpeech().add_silence(500).add_speech(500).add_silence(2000)
    plain, drafted = converse(speech, drafts=False), converse(speech, drafts=True)
    for run in (plain, drafted):
        assert [f.data for f in run.replies()] == ["I found 50 units for you."]
    assert drafted.wire() == plain.wire()
    wait_plain = plain.first_audio(plain.replies()[0].event_id or 0) - plain.speech_end
    wait_drafted = drafted.first_audio(drafted.replies()[0].event_id or 0) - drafted.speech_end
    # The draft's look-up (20 ms) and first TTS chunk (150 ms) were done in the silence.
    assert wait_plain - wait_drafted == pytest.approx(0.17, abs=0.03)
    assert drafted.history == plain.history


def test_the_read_only_tool_ran_early_and_is_reported_under_the_real_turn() -> None:
    speech = MarkedSpeech().add_silence(500).add_speech(500).add_silence(2000)
    run = converse(speech, drafts=True)
    reply = run.replies()[0]
    ((looked_at, _),) = run.tools.lookups
    assert looked_at < run.speech_end + 0.4  # before the 400 ms of silence had ended the turn
    transcript = next(f for f in run.frames if f.kind == "user_transcript")
    request = next(f for f in run.frames if f.kind == "tool_request")
    assert request.event_id == reply.event_id == transcript.event_id
    assert transcript.t <= request.t <= reply.t
    stages = {f.data[0]: f.data[1] for f in run.frames if f.kind == "stage"}
    assert stages["draft"] > 0 and stages["tts_first_audio"] < 1.0  # ready when it committed


def test_a_withdrawn_draft_leaves_no_trace_and_writes_nothing() -> None:
    # 650 ms of speech, a 300 ms pause (a draft is offered: 160 ms + 50 ms of STT), then more.
    speech = (
        MarkedSpeech().add_silence(500).add_speech(650).add_silence(300).add_speech(400)
    ).add_silence(2000)
    run = converse(speech, drafts=True)
    # One request, one reply, written once: the draft on the first 650 ms never surfaced.
    assert [f.data for f in run.of("user_transcript")] and len(run.replies()) == 1
    assert [text for _, text in run.tools.writes] == [
        " ".join(f.data for f in run.of("user_transcript"))
    ]
    assert run.tools.writes[0][0] > run.speech_end
    assert len(run.of("tool_request")) == 2  # the reply's look-up and write, nothing drafted
    assert [m.role for m in run.history] == ["user", "assistant"]


def test_a_tool_that_changes_something_waits_for_the_turn() -> None:
    speech = MarkedSpeech().add_silence(500).add_speech(900).add_silence(2000)
    run = converse(speech, drafts=True)
    ((written_at, _),) = run.tools.writes
    assert written_at >= run.speech_end + 0.4  # only once the silence had ended the turn
    assert run.replies()[0].data == "I found 90 units for you. And I wrote it."


def test_a_late_report_of_the_cut_greeting_does_not_cancel_the_next_reply() -> None:
    # The user talks over the greeting; the player's report of what it played of the greeting
    # arrives just after the user's turn ended, while its reply is still being produced.
    greeting = "Hello, this is the agent with a greeting long enough to be talked over."
    speech = MarkedSpeech().add_silence(500).add_speech(500).add_silence(2000)
    plain = converse(speech, drafts=False, greeting=greeting)
    t0 = plain.frames[0].t
    # Between the reply's start (its transcript) and its first event (after the 20 ms look-up).
    started = plain.of("user_transcript")[-1].t - t0
    speaking = plain.replies()[-1].t - t0
    assert speaking - started > 0.015
    late = converse(speech, drafts=False, greeting=greeting, heard_report=(started + 0.01, 300))
    assert [f.data for f in late.replies()][-1] == "I found 50 units for you."
    assert late.of("audio")[-1].event_id == late.replies()[-1].event_id


def test_a_look_up_still_running_when_the_turn_is_confirmed_is_reported() -> None:
    # The draft starts its 300 ms look-up about 210 ms into the pause; the turn is confirmed
    # at 400 ms, while the look-up still runs: its call must still reach the client.
    speech = MarkedSpeech().add_silence(500).add_speech(500).add_silence(2000)
    run = converse(speech, drafts=True, lookup_s=0.3)
    reply = run.replies()[0]
    ((looked_at, _),) = run.tools.lookups
    assert looked_at < run.speech_end + 0.4 < looked_at + 0.3  # confirmed mid-look-up
    (request,) = run.of("tool_request")
    assert request.event_id == reply.event_id and request.t <= reply.t
