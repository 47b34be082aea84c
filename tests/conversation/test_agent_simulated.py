"""The real adapters (server ``Conversation`` + ``LocalAgent``) in simulated time.

Nothing here sleeps on the wall clock: the loop's clock jumps from timer to timer, the models
are fakes whose delays are simulated, and a minute of conversation runs in a fraction of a
second. The checks are the issue's invariants, on the frames the client would receive:
every unit of speech transcribed once and in order, every ``agent_response`` followed by its
audio or by ``interruption`` + ``agent_response_correction`` with what was heard, no audio of
a turn after its interruption, event ids that never go back.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simclient import Frame, SimClient

from sagelab.agents.base import ResolvedAgent
from sagelab.agents.local.brains.echo import EchoBrain
from sagelab.agents.local.endofturn import EndOfTurnPolicy
from sagelab.agents.local.pipeline import LocalAgent
from sagelab.agents.local.vad import VadTurnDetector
from sagelab.agents.turns import EnergyTurnDetector
from sagelab.config import load_config
from sagelab.conversation.fakes import (
    FakeEndOfTurn,
    FakeSTT,
    FakeTTS,
    LevelVad,
    MarkedSpeech,
    heard_units,
)
from sagelab.conversation.simulation import run_simulated, simulated_runner
from sagelab.server.conversation import Conversation
from sagelab.server.metrics import ServerMetrics

GREETING = "Hello, I am the test agent. Ask me anything you like."


def _agent() -> ResolvedAgent:
    return ResolvedAgent(
        id="sim",
        name="sim",
        prompt="",
        first_message=GREETING,
        language="en",
        voice=None,
        tools=(),
        backend="local",
        options={},
        input_format="pcm_16000",
        output_format="pcm_16000",
    )


def _conversation(transport: SimClient, config: Any) -> Conversation:
    """The server's conversation adapter for the test agent, recording what it sends."""
    return Conversation(
        conversation_id="conv_sim",
        agent=_agent(),
        transport=transport,
        config=config,
        metrics=ServerMetrics(),
        store=None,
    )


def converse(
    speech: MarkedSpeech,
    chunk_ms: int,
    stt_delays: list[float],
    tts_delay: float = 0.05,
    *,
    policy: EndOfTurnPolicy | None = None,
    eot: FakeEndOfTurn | None = None,
    ask_ahead_ms: float = 0.0,
    hinting: bool = False,
) -> list[Frame]:
    """Stream ``speech`` to a local agent in simulated real time; the frames the client got.

    With a model ``policy``, ``eot`` answers the end-of-turn questions after its ``delay_s``
    and the detector waits the policy's ``max_silence_ms`` (as ``factory.create`` builds it).
    ``hinting`` uses the Silero turn detector (on ``LevelVad``), whose early hint of a voice
    makes barge-in provisional, instead of the energy detector.
    """
    config = load_config(None, env={}, port=0, ping_interval_s=1.0)
    delays = itertools.cycle(stt_delays)
    stt, tts = FakeSTT(), FakeTTS(ms_per_char=50, chunks=3)
    wait = 400 if policy is None else int(policy.max_silence_ms)

    def delay(fn: Any) -> float:
        owner = getattr(fn, "__self__", None)
        if owner is stt:
            return next(delays)
        if eot is not None and owner is eot:
            return eot.delay_s
        return tts_delay

    async def main() -> list[Frame]:
        transport = SimClient()
        conv = _conversation(transport, config)
        detector: Any = (
            VadTurnDetector(vad=LevelVad(), end_silence_ms=wait)  # type: ignore[arg-type]
            if hinting
            else EnergyTurnDetector(silence_ms=wait)
        )
        agent = LocalAgent(
            conv,
            detector=detector,
            stt=stt,
            tts=tts,
            brain=EchoBrain(prefix="Heard "),
            end_of_turn=policy,
            end_of_turn_model=eot,
            ask_ahead_ms=ask_ahead_ms,
            runner=simulated_runner(delay),
        )
        await conv.start(agent)
        pcm = speech.pcm
        step = chunk_ms * 16
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k, i in enumerate(range(0, pcm.size, step)):
            await asyncio.sleep(max(0.0, t0 + (k + 1) * chunk_ms / 1000 - loop.time()))
            conv.touch()
            await conv.run_backend(agent.on_audio(pcm[i : i + step]))
        await asyncio.sleep(30)  # long enough for every reply to play out
        await conv.close(1000, "done")
        return transport.frames

    return run_simulated(main)


def check_invariants(speech: MarkedSpeech, frames: list[Frame]) -> None:
    transcripts = [f.data for f in frames if f.kind == "user_transcript"]
    expected = [(u, 160) for u in range(speech.units)]
    assert heard_units(transcripts) == expected
    turn_ids = [f.event_id for f in frames if f.kind not in ("ping", "metadata", "error", "close")]
    first_seen = list(dict.fromkeys(turn_ids))
    assert first_seen == sorted(first_seen), "a turn's event id went back"
    ping_ids = [f.event_id for f in frames if f.kind == "ping"]
    assert ping_ids == sorted(set(ping_ids)) and not set(ping_ids) & set(first_seen)
    for eid in {f.event_id for f in frames if f.kind == "agent_response"}:
        mine = [f for f in frames if f.event_id == eid]
        cut = [f.t for f in mine if f.kind == "interruption"]
        audio = [f for f in mine if f.kind == "audio"]
        if cut:
            assert all(f.t <= cut[0] for f in audio), "audio after its interruption"
            responses = " ".join(f.data for f in mine if f.kind == "agent_response")
            corrections = [f.data for f in mine if f.kind == "correction"]
            assert len(corrections) <= 1
            if corrections:
                original, corrected = corrections[0]
                assert original == responses and responses.startswith(corrected)
        else:
            assert audio, f"turn {eid}: agent_response with neither audio nor interruption"


@st.composite
def speech_patterns(draw: st.DrawFn) -> MarkedSpeech:
    speech = MarkedSpeech().add_silence(draw(st.integers(0, 4000)))  # often over the greeting
    for _ in range(draw(st.integers(1, 5))):
        speech.add_speech(draw(st.integers(150, 3500)))
        speech.add_silence(
            draw(st.one_of(st.integers(30, 300), st.integers(350, 600), st.integers(700, 3000)))
        )
    return speech.add_silence(1500)


@pytest.mark.timeout(900)  # 40 simulated conversations; minutes of CPU on a loaded machine
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speech=speech_patterns(),
    chunk_ms=st.integers(10, 500),
    stt_delays=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=4),
)
def test_local_agent_loses_nothing_and_keeps_the_protocol(
    speech: MarkedSpeech, chunk_ms: int, stt_delays: list[float]
) -> None:
    check_invariants(speech, converse(speech, chunk_ms, stt_delays))


def test_a_long_reading_with_pauses_at_the_sdk_chunk_size() -> None:
    # The shape of the reported failure: a 40 s passage with natural pauses, some long enough
    # to end a turn, streamed in 250 ms chunks while transcription takes its time.
    rng = np.random.default_rng(7)
    speech = MarkedSpeech().add_silence(1200)
    while speech.samples < 40 * 16000:
        speech.add_speech(int(rng.integers(800, 4000)))
        speech.add_silence(int(rng.choice([120, 250, 420, 480, 650, 900])))
    frames = converse(speech, 250, [0.35, 0.9, 0.2])
    check_invariants(speech, frames)
    assert any(f.kind == "agent_response" for f in frames)


def test_a_monologue_is_transcribed_in_pieces_and_answered_once() -> None:
    # 25 s of reading with 300 ms breaths (under the 400 ms wait): LocalAgent cuts it at a
    # breath every 8 s or more, each piece is shown as it is transcribed, and the one reply
    # (the echo brain repeats its request) answers all of it.
    speech = MarkedSpeech().add_silence(4000)  # after the greeting
    while speech.samples < 29 * 16000:
        speech.add_speech(1700).add_silence(300)
    speech.add_silence(1500)
    frames = converse(speech, 100, [0.3])
    check_invariants(speech, frames)
    pieces = [f for f in frames if f.kind == "user_transcript"]
    replies = [f for f in frames if f.kind == "agent_response"][1:]  # after the greeting
    assert 3 <= len(pieces) <= 4, [p.data for p in pieces]  # 25 s in pieces of 8 s or more
    assert len(replies) == 1 and replies[0].t >= pieces[-1].t
    # (The echo is cut at the brain's reply length, well past the first piece.)
    request, echo = " ".join(p.data for p in pieces), replies[0].data.removeprefix("Heard ")
    assert request.startswith(echo) and len(echo) > len(pieces[0].data)


def test_speech_over_the_greeting_cuts_it_and_says_what_was_heard() -> None:
    speech = MarkedSpeech().add_silence(1500).add_speech(1200).add_silence(2500)
    frames = converse(speech, 20, [0.2])
    check_invariants(speech, frames)
    greeting_id = next(f.event_id for f in frames if f.kind == "agent_response")
    assert any(f.kind == "interruption" and f.event_id == greeting_id for f in frames)
    (original, corrected) = next(f.data for f in frames if f.kind == "correction")
    assert original == GREETING and GREETING.startswith(corrected) and corrected != GREETING


def test_a_heard_report_cuts_the_greeting_and_the_history_keeps_what_was_heard() -> None:
    config = load_config(None, env={}, port=0, ping_interval_s=1.0)

    async def main() -> tuple[list[Frame], list[Any]]:
        transport = SimClient()
        conv = _conversation(transport, config)
        agent = LocalAgent(
            conv,
            detector=EnergyTurnDetector(silence_ms=400),
            stt=FakeSTT(),
            tts=FakeTTS(ms_per_char=50, chunks=3),
            brain=EchoBrain(prefix="Heard "),
            runner=simulated_runner(lambda fn: 0.05),
        )
        await conv.start(agent)
        await asyncio.sleep(1.0)
        greeting_id = next(f.event_id for f in transport.frames if f.kind == "agent_response")
        await conv.heard(greeting_id, 600)  # the user's player stopped after 0.6 s
        await asyncio.sleep(3.0)
        await conv.close(1000, "done")
        return transport.frames, list(agent.history)

    frames, history = run_simulated(main)
    (original, corrected) = next(f.data for f in frames if f.kind == "correction")
    assert original == GREETING and corrected == "Hello, I am" == history[-1].content
    cut_at = next(f.t for f in frames if f.kind == "interruption")
    assert not [f for f in frames if f.kind == "audio" and f.t > cut_at]


@pytest.mark.fast
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speech=speech_patterns(),
    chunk_ms=st.integers(10, 500),
    stt_delays=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=4),
    answers=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    model_delay=st.floats(0.0, 1.0),
    ask_ahead=st.sampled_from([0, 200]),
)
def test_with_an_end_of_turn_model_the_agent_loses_nothing(
    speech: MarkedSpeech,
    chunk_ms: int,
    stt_delays: list[float],
    answers: list[float],
    model_delay: float,
    ask_ahead: int,
) -> None:
    frames = converse(
        speech,
        chunk_ms,
        stt_delays,
        policy=EndOfTurnPolicy(400, 0.9, 800),
        eot=FakeEndOfTurn(answers, delay_s=model_delay),
        ask_ahead_ms=ask_ahead,
    )
    check_invariants(speech, frames)


@pytest.mark.fast
def test_the_model_answers_sooner_than_the_silence_fallback() -> None:
    speech = MarkedSpeech().add_silence(4000).add_speech(1500).add_silence(3000)
    policy = EndOfTurnPolicy(200, 0.9, 800)

    def first_reply_audio(answer: float) -> float:
        frames = converse(speech, 20, [0.05], policy=policy, eot=FakeEndOfTurn([answer], 0.03))
        check_invariants(speech, frames)
        reply = [f for f in frames if f.kind == "agent_response"][1]
        return next(f.t for f in frames if f.kind == "audio" and f.event_id == reply.event_id)

    speech_end = speech.speech_ranges[0][1] / 16000
    sure, unsure = first_reply_audio(0.95), first_reply_audio(0.1)
    # Sure: 200 ms + 30 ms of model; unsure: the 800 ms fallback (plus the same TTS time).
    assert sure - speech_end < 0.45
    assert unsure - sure == pytest.approx(0.57, abs=0.05)


# -- barge-in on the detector's hint ---------------------------------------------------------


def said_before_any_request(frames: list[Frame]) -> str:
    """What the agent said, as the client's transcript has it (each reply corrected to what
    was heard), before the user's first transcript."""
    first_request = next((f.t for f in frames if f.kind == "user_transcript"), float("inf"))
    words: list[str] = []
    for eid in dict.fromkeys(f.event_id for f in frames if f.kind == "agent_response"):
        mine = [f for f in frames if f.event_id == eid]
        if mine[0].t > first_request:
            break
        corrections = [f.data[1] for f in mine if f.kind == "correction"]
        text = (
            corrections[-1]
            if corrections
            else " ".join(f.data for f in mine if f.kind == "agent_response")
        )
        words.extend(text.split())
    return " ".join(words)


@pytest.mark.fast
@pytest.mark.parametrize("chunk_ms", [20, 100, 250])
def test_a_click_stops_the_greeting_at_once_and_the_rest_is_said(chunk_ms: int) -> None:
    speech = MarkedSpeech().add_silence(1500).add_click(20).add_silence(6000)
    frames = converse(speech, chunk_ms, [0.2], hinting=True)
    check_invariants(speech, frames)
    assert not [f for f in frames if f.kind == "user_transcript"]
    assert said_before_any_request(frames) == GREETING  # nothing lost, nothing said twice
    cuts = [f for f in frames if f.kind == "interruption"]
    if chunk_ms == 250:
        # The click and the quiet after it arrive in one chunk: known for what it is at once.
        assert not cuts
        return
    cut = cuts[0]
    assert cut.t - 1.5 <= chunk_ms / 1000 + 0.04  # the chunk holding the click, + a window
    responses = [f for f in frames if f.kind == "agent_response"]
    assert len(responses) == 2 and responses[1].event_id > cut.event_id
    resumed = [f for f in frames if f.kind == "audio" and f.event_id == responses[1].event_id]
    assert resumed and resumed[0].t - cut.t < 0.6


@pytest.mark.fast
@pytest.mark.parametrize("chunk_ms", [20, 100])
def test_speech_over_the_greeting_is_cut_on_the_hint_and_not_resumed(chunk_ms: int) -> None:
    speech = MarkedSpeech().add_silence(1500).add_speech(1200).add_silence(2500)
    frames = converse(speech, chunk_ms, [0.2], hinting=True)
    check_invariants(speech, frames)
    cut = next(f for f in frames if f.kind == "interruption")
    # The first window that is mostly speech is enough (LevelVad: 0.95 x its share).
    assert cut.t - 1.5 <= chunk_ms / 1000 + 0.035
    responses = [f.data for f in frames if f.kind == "agent_response"]
    assert len(responses) == 2 and responses[1].startswith("Heard ")  # the echo, no resume


@pytest.mark.timeout(900)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speech=speech_patterns(),
    clicks=st.lists(st.tuples(st.integers(0, 8000), st.integers(5, 120)), max_size=3),
    chunk_ms=st.integers(10, 500),
    stt_delays=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=4),
)
def test_with_provisional_barge_in_the_agent_loses_nothing(
    speech: MarkedSpeech, clicks: list[tuple[int, int]], chunk_ms: int, stt_delays: list[float]
) -> None:
    # Clicks anywhere (over the agent, in the user's pauses, next to speech) add hints that
    # are withdrawn; speech adds hints that are confirmed. The user's speech is still
    # transcribed once and in order, and the protocol holds.
    clicked = speech.with_clicks(clicks)
    check_invariants(clicked, converse(clicked, chunk_ms, stt_delays, hinting=True))
