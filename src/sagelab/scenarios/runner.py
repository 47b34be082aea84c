"""Drive one scenario through a ``Session``: the user's side of the conversation, in real time.

The runner only acts and records; judging is ``expectations``' job, so a run can be checked
again (or against other expectations) from its saved timeline. Each step gets a window of the
session's timeline, from just before it acts to just before the next step acts; everything
the agent did in answer to the step lands in that window.

Pacing follows a real user: speech is streamed in real time with trailing silence (a
microphone keeps sending), the next turn starts once the agent has finished talking, and a
``barge_in`` starts talking ``after_ms`` after the previous reply's first audio arrived,
without waiting for it to end. Lines to ``say`` are synthesised before the session opens, so
TTS time never shows up as user silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagelab.audio import load_audio, silence
from sagelab.audio.activity import energy_bounds
from sagelab.client import SentAudio, Session, SessionError, Timeline
from sagelab.client.session import ToolHandler
from sagelab.scenarios.loader import ScenarioError
from sagelab.scenarios.model import (
    BargeInStep,
    ClientTool,
    PlayStep,
    SayStep,
    Scenario,
    Step,
    TextStep,
    WaitStep,
)

Synthesizer = Callable[[str], np.ndarray]


@dataclass
class StepRun:
    """What the runner did for one step, and where in the timeline its answer is."""

    index: int
    step: Step
    start: int = 0  # timeline positions: [start, end)
    end: int = 0
    start_ns: int = 0  # time.monotonic_ns() when the step began
    sent: SentAudio | None = None
    sent_ns: int | None = None  # when the turn's input (speech end, or the text) went out
    reply_event_id: int | None = None
    first_audio_ns: int | None = None
    error: str | None = None
    ran: bool = False


@dataclass
class ScenarioRun:
    scenario: Scenario
    repeat: int
    timeline: Timeline
    steps: list[StepRun]
    conversation_id: str | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    # Server tool parameters are not on the wire; when the server's store can be read,
    # ``tool_records`` maps tool_call_id → the stored call (parameters, result, error).
    tool_records: dict[str, dict[str, Any]] = field(default_factory=dict)


def piper_synthesizer() -> Synthesizer:
    """Lines to ``say``, spoken by the local Piper voice (loaded once per process)."""
    from sagelab.agents.local.tts import get_tts

    tts = get_tts(first_clause_chars=None)  # a user's line is spoken whole, not clause-first

    def synthesize(text: str) -> np.ndarray:
        parts = [chunk.pcm for chunk in tts.synthesize(text)]
        if not parts:
            raise ValueError(f"Piper produced no audio for {text!r}")
        return np.concatenate(parts)

    return synthesize


def needs_tts(scenario: Scenario) -> bool:
    return any(
        isinstance(s, SayStep) or (isinstance(s, BargeInStep) and s.barge_in.say is not None)
        for s in scenario.steps
    )


def _client_tools(tools: dict[str, ClientTool]) -> dict[str, Callable[[dict[str, Any]], Any]]:
    def handler(spec: ClientTool) -> Callable[[dict[str, Any]], Any]:
        def run(_parameters: dict[str, Any]) -> Any:
            if spec.error is not None:
                raise RuntimeError(spec.error)
            return spec.result

        return run

    return {name: handler(spec) for name, spec in tools.items()}


class _Audio:
    """Each step's speech, loaded or synthesised up front."""

    def __init__(self, scenario: Scenario, synthesize: Synthesizer | None) -> None:
        self.pcm: dict[int, np.ndarray] = {}
        for i, step in enumerate(scenario.steps):
            try:
                self._prepare(i, step, synthesize)
            except (OSError, RuntimeError, ValueError) as exc:
                where = scenario.source or scenario.name
                raise ScenarioError(
                    f"{where}: step {i + 1}: cannot prepare its audio: {exc}"
                ) from exc

    def _prepare(self, i: int, step: Step, synthesize: Synthesizer | None) -> None:
        text = None
        if isinstance(step, PlayStep):
            gap = silence(step.gap_ms)
            clips = [load_audio(p) for p in step.play]
            if step.trim:
                clips = [_trimmed(c) for c in clips]
            parts = [part for clip in clips for part in (clip, gap)]
            self.pcm[i] = np.concatenate(parts[:-1])
        elif isinstance(step, SayStep):
            text = step.say
        elif isinstance(step, BargeInStep):
            if step.barge_in.play is not None:
                self.pcm[i] = load_audio(step.barge_in.play)
            text = step.barge_in.say
        if text is not None:
            if synthesize is None:
                raise ValueError("it says a line, but no synthesizer was given")
            self.pcm[i] = synthesize(text)


def _trimmed(pcm: np.ndarray) -> np.ndarray:
    """The recording's speech without the room tone and breath at its ends (``gap_ms`` is
    then the pause a listener hears), or the whole of it if nothing stands out."""
    try:
        start, end = energy_bounds(pcm)
    except ValueError:
        return pcm
    return pcm[start:end]


async def run_scenario(
    scenario: Scenario,
    url: str,
    *,
    repeat: int = 0,
    synthesize: Synthesizer | None = None,
    on_step: Callable[[StepRun], None] | None = None,
    record_audio: bool = True,
    tools: Mapping[str, ToolHandler] | None = None,
) -> ScenarioRun:
    """Hold the scenario's conversation with ``scenario.agent`` at ``url``; never raises for
    what the agent does (that is recorded), only for a scenario that cannot be prepared.

    ``tools`` are real client tool handlers (``ToolRegistry.session_tools()``, say), for a lab
    that runs the application's own tools; they take precedence over the scenario's canned
    ``client_tools`` of the same name."""
    audio = _Audio(scenario, synthesize or (piper_synthesizer() if needs_tts(scenario) else None))
    steps = [StepRun(i, s) for i, s in enumerate(scenario.steps)]
    settings = scenario.settings
    quiet_s = settings.agent_quiet_ms / 1000
    t0 = time.monotonic()
    session: Session | None = None
    run = ScenarioRun(scenario, repeat, Timeline(), steps)
    try:
        async with Session.connect(
            url,
            scenario.agent,
            stages=True,
            tools={**_client_tools(scenario.client_tools), **(tools or {})},
            chunk_ms=settings.chunk_ms,
            record_audio=record_audio,
        ) as session:
            run.timeline = session.timeline
            run.conversation_id = session.conversation_id
            # Waiting for the greeting's text keeps it from being taken for the reply to the
            # first step, even when the first step talks over its audio.
            if settings.greeting != "none":
                with contextlib.suppress(TimeoutError):
                    await session.wait_for("agent_response", timeout=10)
            if settings.greeting == "wait":
                await session.wait_agent_done(quiet_s=quiet_s, timeout=60)
            driver = _Driver(session, scenario, audio)
            for k, step_run in enumerate(steps):
                step_run.start = session.mark()
                step_run.start_ns = time.monotonic_ns()
                if k:
                    steps[k - 1].end = step_run.start
                following = scenario.steps[k + 1] if k + 1 < len(steps) else None
                try:
                    await driver.step(step_run, steps[k - 1] if k else None, following)
                except TimeoutError as exc:
                    step_run.error = str(exc)
                    with contextlib.suppress(TimeoutError):
                        await session.wait_agent_done(
                            quiet_s=quiet_s, timeout=settings.reply_timeout_s
                        )
                step_run.ran = True
                if on_step is not None:
                    on_step(step_run)
            with contextlib.suppress(TimeoutError):
                await session.wait_agent_done(quiet_s=quiet_s, timeout=settings.reply_timeout_s)
    except SessionError as exc:
        run.error = str(exc)
    finally:
        if session is not None:
            run.timeline = session.timeline
            run.conversation_id = session.conversation_id
        for step_run in steps:
            if step_run.ran and not step_run.end:
                step_run.end = len(run.timeline)
        run.duration_s = time.monotonic() - t0
    return run


class _Driver:
    def __init__(self, session: Session, scenario: Scenario, audio: _Audio) -> None:
        self.s = session
        self.scenario = scenario
        self.audio = audio
        self.settings = scenario.settings

    def _last_reply_id(self, before: int) -> int:
        ids = [
            e.event_id
            for e in self.s.timeline.events[:before]
            if e.type in ("agent_response", "interruption") and e.event_id is not None
        ]
        return max(ids, default=0)

    async def step(self, run: StepRun, previous: StepRun | None, following: Step | None) -> None:
        step = run.step
        if isinstance(step, WaitStep):
            await asyncio.sleep(step.wait_ms / 1000)
            return
        mark = run.start
        known = self._last_reply_id(mark)
        if isinstance(step, BargeInStep):
            start_ns = previous.first_audio_ns if previous else None
            if start_ns is not None:
                delay = (start_ns - time.monotonic_ns()) / 1e9 + step.barge_in.after_ms / 1000
                await asyncio.sleep(max(0.0, delay))
        if isinstance(step, TextStep):
            await self.s.send_text(step.send_text)
            run.sent_ns = self.s.timeline.of_type("user_message")[-1].t_ns
        else:
            run.sent = await self.s.send_audio(
                self.audio.pcm[run.index], trailing_silence_ms=self.settings.trailing_silence_ms
            )
            run.sent_ns = run.sent.speech_end_ns
        if not step.wait_reply:
            return
        timeout = self.settings.reply_timeout_s
        try:
            reply = await self.s.wait_for(
                "agent_response",
                since=mark,
                timeout=timeout,
                predicate=lambda e: (e.event_id or 0) > known,
            )
        except TimeoutError as exc:
            raise TimeoutError(f"no agent reply within {timeout:g} s") from exc
        run.reply_event_id = reply.event_id
        if not self.s.text_only:
            try:
                first = await self.s.wait_for(
                    "audio",
                    since=mark,
                    timeout=timeout,
                    predicate=lambda e: (e.event_id or 0) >= reply.event_id,
                )
            except TimeoutError as exc:
                raise TimeoutError(f"the reply's audio did not start within {timeout:g} s") from exc
            run.first_audio_ns = first.t_ns
        if not isinstance(following, BargeInStep):
            await self.s.wait_agent_done(
                quiet_s=self.settings.agent_quiet_ms / 1000, timeout=max(60.0, timeout)
            )
