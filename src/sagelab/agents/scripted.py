"""``ScriptedAgent``: deterministic replies from recorded audio, for transport tests and load.

It exercises everything a real agent does on the wire (turn-taking, streamed audio, barge-in,
client tool calls) without a model, so its timing is the server's own. Options in the agents
file::

    backend: scripted
    options:
      greeting_audio: audio/greeting.wav      # spoken with first_message
      turn_detection: {threshold_dbfs: -40, silence_ms: 500, min_speech_ms: 60}
      replies:                                # used in order, then from the start again
        - text: "The weather in {city} is {result}."
          audio: audio/reply_weather.wav
          tool_call: {name: get_weather, parameters: {city: Paris}}
        - text: "Anything else?"
          audio: audio/reply_else.wav

``{result}`` in a reply's text is replaced by the tool result, other ``{name}`` fields by the
tool call's parameters. Without STT the agent cannot know what was said, so a spoken turn's
``user_transcript`` is the reply's ``user_text`` when given, else a note of the speech length.

Known delays, for measuring the measurements (``tests/metrics``): a real agent's latency is
whatever its models take; these make it a number chosen in advance. All default to 0::

    options:
      transcript_delay_ms: 50   # end of turn detected → user_transcript
      reply_delay_ms: 120       # user_transcript (or user_message) → tool call / agent_response
      audio_delay_ms: 80        # agent_response → the reply's first audio

Each delay taken is reported as a stage of its turn (``transcript_delay``, ``reply_delay``,
``audio_delay``: the time actually slept, in ms) to clients that ask for stages, as is each
tool call's round trip (``tool``). The greeting is never delayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.agents.base import Agent, AgentContext, AgentTurn
from sagelab.agents.replies import ReplyTask
from sagelab.agents.turns import SAMPLE_RATE, EnergyTurnDetector
from sagelab.audio import load_audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScriptedReply:
    text: str
    audio: Path | None = None
    user_text: str | None = None
    tool_name: str | None = None
    tool_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delays:
    """Injected waits in milliseconds (see the module docstring)."""

    transcript_ms: float = 0.0
    reply_ms: float = 0.0
    audio_ms: float = 0.0


@lru_cache(maxsize=64)
def _cached_audio(path: Path) -> np.ndarray:
    # Shared by every session: 50 sessions must not each hold a copy of the same recording.
    pcm = load_audio(path, rate=SAMPLE_RATE)
    pcm.setflags(write=False)
    return pcm


class ScriptedAgent(Agent):
    def __init__(
        self,
        ctx: AgentContext,
        replies: list[ScriptedReply],
        greeting_audio: Path | None,
        detector: EnergyTurnDetector,
        delays: Delays | None = None,
    ) -> None:
        super().__init__(ctx)
        self.delays = delays or Delays()
        self.replies = replies
        self.greeting_audio = greeting_audio
        self.detector = detector
        self._next_reply = 0
        self._replies = ReplyTask(ctx, crash_is_fatal=True)
        self._speech_started_at = 0

    async def start(self) -> None:
        if self.ctx.agent.first_message:
            self._replies.start(
                self._speak(None, self.ctx.agent.first_message, self.greeting_audio)
            )

    async def on_audio(self, pcm: np.ndarray) -> None:
        for event in self.detector.feed(pcm):
            if event.kind == "speech_start":
                self._speech_started_at = event.sample
                await self._replies.barge_in()
            else:
                seconds = (event.sample - self._speech_started_at) / SAMPLE_RATE
                self._replies.start(self._reply(self._take_reply(), None, speech_seconds=seconds))

    async def on_user_message(self, text: str) -> None:
        await self._replies.barge_in()
        self._replies.start(self._reply(self._take_reply(), text, speech_seconds=None))

    async def on_interrupt(self) -> None:
        await self._replies.barge_in()

    async def close(self) -> None:
        await self._replies.cancel()

    def _take_reply(self) -> ScriptedReply | None:
        """Each user turn consumes the next script step when it arrives, even if a newer turn
        cancels its reply before it runs, so a script stays in step with its conversation."""
        if not self.replies:
            return None
        reply = self.replies[self._next_reply % len(self.replies)]
        self._next_reply += 1
        return reply

    async def _reply(
        self, reply: ScriptedReply | None, typed_text: str | None, speech_seconds: float | None
    ) -> None:
        if reply is None:
            return
        turn = self.ctx.begin_turn()
        if typed_text is None:
            heard = reply.user_text or f"(speech, {speech_seconds or 0:.2f} s)"
            await self._pause(turn, "transcript_delay", self.delays.transcript_ms)
            await self.ctx.user_transcript(turn, heard)
        await self._pause(turn, "reply_delay", self.delays.reply_ms)
        fields: dict[str, Any] = dict(reply.tool_parameters)
        if reply.tool_name is not None:
            t0 = time.perf_counter()
            result = await self.ctx.call_tool(turn, reply.tool_name, dict(reply.tool_parameters))
            await self.ctx.stage(turn, "tool", (time.perf_counter() - t0) * 1000)
            fields["result"] = (
                result.text if not result.is_error else f"unavailable ({result.text})"
            )
        text = reply.text.format_map(_Lenient(fields))
        await self._speak(turn, text, reply.audio, delay_ms=self.delays.audio_ms)

    async def _pause(self, turn: AgentTurn, stage: str, ms: float) -> None:
        if ms <= 0:
            return
        t0 = time.perf_counter()
        await asyncio.sleep(ms / 1000)
        await self.ctx.stage(turn, stage, (time.perf_counter() - t0) * 1000)

    async def _speak(
        self, turn: AgentTurn | None, text: str, audio: Path | None, delay_ms: float = 0.0
    ) -> None:
        turn = turn or self.ctx.begin_turn()
        await self.ctx.agent_response(turn, text)
        if audio is not None and not self.ctx.agent.text_only:
            await self._pause(turn, "audio_delay", delay_ms)
            await self.ctx.agent_audio(turn, _cached_audio(audio))
            await self.ctx.finish_audio(turn)


class _Lenient(dict[str, Any]):
    """Leaves unknown ``{fields}`` in a reply text as they are instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def create(ctx: AgentContext, base_dir: Path) -> ScriptedAgent:
    options = ctx.agent.options

    def resolve(path: str | None) -> Path | None:
        if path is None:
            return None
        p = Path(path)
        p = p if p.is_absolute() else base_dir / p
        if not p.is_file():
            raise FileNotFoundError(f"agent {ctx.agent.id!r}: audio file {p} does not exist")
        _cached_audio(p)  # decoded now, once per process: never on a reply's critical path
        return p

    replies = []
    for i, item in enumerate(options.get("replies", [])):
        if not isinstance(item, dict) or "text" not in item:
            raise ValueError(f"agent {ctx.agent.id!r}: options.replies[{i}] needs a 'text'")
        tool = item.get("tool_call") or {}
        replies.append(
            ScriptedReply(
                text=str(item["text"]),
                audio=resolve(item.get("audio")),
                user_text=item.get("user_text"),
                tool_name=tool.get("name"),
                tool_parameters=dict(tool.get("parameters", {})),
            )
        )
    detector = EnergyTurnDetector(**options.get("turn_detection", {}))
    delays = {}
    for key in ("transcript_delay_ms", "reply_delay_ms", "audio_delay_ms"):
        value = options.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(
                f"agent {ctx.agent.id!r}: options.{key} must be a number of milliseconds >= 0, "
                f"got {value!r}"
            )
        delays[key.removesuffix("_delay_ms") + "_ms"] = float(value)
    return ScriptedAgent(
        ctx, replies, resolve(options.get("greeting_audio")), detector, Delays(**delays)
    )
