"""``sagelab bench transport``: N concurrent sessions streaming real-time speech.

Each session is a microphone that never stops: a real recording, then silence, again and again,
paced on one absolute schedule, against the ``scripted`` agent (no models, so the figures are
the transport's and the server's own). Measured per session from its timeline:

* ping round trip: the ``ping_ms`` the server reports (previous ping → pong, as in ElevenLabs);
* time to first audio: end of the user's speech in the audio actually sent → first audio frame
  of the agent's next turn received (includes the agent's end-of-turn silence window);
* session set-up: connect → ``conversation_initiation_metadata``;
* send lateness: how far the load generator itself fell behind its schedule;
* errors: failed connects, ``error`` events, closes other than the normal one we asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.audio import load_audio, silence
from sagelab.audio.activity import speech_bounds
from sagelab.bench.stats import Summary
from sagelab.client import Session, SessionError
from sagelab.client.timeline import Timeline

SAMPLE_RATE = 16_000


@dataclass
class SessionResult:
    ok: bool
    error: str | None = None
    setup_ms: float | None = None
    ping_ms: list[float] = field(default_factory=list)
    ws_rtt_ms: list[float] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)
    max_lateness_ms: float = 0.0
    error_events: list[str] = field(default_factory=list)
    close_code: int | None = None


def first_audio_latencies(timeline: Timeline, ends_ns: list[int]) -> list[float]:
    """For each end of speech: ms until the first audio frame of a newer agent turn."""
    audio = [e for e in timeline.events if e.type == "audio" and e.direction == "recv"]
    out: list[float] = []
    for end in ends_ns:
        seen = max((e.event_id or 0 for e in audio if e.t_ns <= end), default=0)
        nxt = next((e for e in audio if e.t_ns > end and (e.event_id or 0) > seen), None)
        if nxt is not None:
            out.append((nxt.t_ns - end) / 1e6)
    return out


def mic_stream(speech: np.ndarray, gap_ms: int, seconds: float) -> tuple[np.ndarray, list[int]]:
    """Speech, gap, speech, gap… filling ``seconds``; returns the audio and the sample where
    each utterance's speech ends (not the recording's end: it has trailing room tone)."""
    bounds = speech_bounds(speech)
    speech_end = bounds[1] if bounds else speech.size
    parts: list[np.ndarray] = []
    ends: list[int] = []
    total = 0
    gap = silence(gap_ms)
    while total + speech.size <= seconds * SAMPLE_RATE or not parts:
        parts += [speech, gap]
        ends.append(total + speech_end)
        total += speech.size + gap.size
    return np.concatenate(parts), ends


async def run_session(
    url: str, agent_id: str, audio: np.ndarray, speech_ends: list[int], chunk_ms: int
) -> SessionResult:
    t0 = time.monotonic()
    try:
        session = await Session.connect(url, agent_id, chunk_ms=chunk_ms, record_audio=False)
    except (SessionError, OSError) as exc:
        return SessionResult(ok=False, error=str(exc))
    setup_ms = (time.monotonic() - t0) * 1000
    pinger = asyncio.create_task(_ping_every(session, 1.0))
    try:
        sent = await session.send_audio(audio, chunk_ms=chunk_ms)
        await asyncio.sleep(1.0)  # let the last reply start
    except SessionError as exc:
        await session.close()
        return SessionResult(ok=False, error=str(exc), setup_ms=setup_ms)
    finally:
        pinger.cancel()
    await session.close()
    tl = session.timeline
    errors = [str(e.data.get("message", "")) for e in tl.of_type("error")]
    ends = [sent.time_at(end) for end in speech_ends]
    pings = [float(e.data["ping_ms"]) for e in tl.of_type("ping") if e.data.get("ping_ms")]
    ws_rtts = [float(e.data["rtt_ms"]) for e in tl.of_type("ws_rtt")]
    clean = session.close_code in (1000, None) and not errors
    return SessionResult(
        ok=clean,
        error=None if clean else (errors[0] if errors else f"closed with {session.close_code}"),
        setup_ms=setup_ms,
        ping_ms=pings,
        ws_rtt_ms=ws_rtts,
        first_audio_ms=first_audio_latencies(tl, ends),
        max_lateness_ms=sent.max_lateness_s * 1000,
        error_events=errors,
        close_code=session.close_code,
    )


async def _ping_every(session: Session, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await session.measure_rtt()
        except (SessionError, TimeoutError):
            return


async def run_transport_bench(
    url: str,
    *,
    sessions: int,
    seconds: float,
    speech_path: Path,
    agent_id: str = "scripted",
    gap_ms: int = 2500,
    chunk_ms: int = 100,
    ramp_s: float = 1.0,
    on_done: Callable[[SessionResult], None] | None = None,
) -> list[SessionResult]:
    speech = load_audio(speech_path)
    audio, ends = mic_stream(speech, gap_ms, seconds)

    async def one(i: int) -> SessionResult:
        await asyncio.sleep(ramp_s * i / max(1, sessions))  # spread connects like a real ramp
        result = await run_session(url, agent_id, audio, ends, chunk_ms)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(i) for i in range(sessions))))


def summarize(results: list[SessionResult], resources: dict[str, Any] | None) -> dict[str, Any]:
    failed = [r for r in results if not r.ok]
    return {
        "sessions": len(results),
        "errors": len(failed),
        "error_samples": sorted({r.error or "" for r in failed})[:5],
        "ping_rtt_ms": Summary.of(p for r in results for p in r.ping_ms).as_dict(),
        "ws_rtt_ms": Summary.of(p for r in results for p in r.ws_rtt_ms).as_dict(3),
        "time_to_first_audio_ms": Summary.of(
            x for r in results for x in r.first_audio_ms
        ).as_dict(),
        "setup_ms": Summary.of(r.setup_ms for r in results if r.setup_ms is not None).as_dict(),
        "send_lateness_ms": Summary.of(r.max_lateness_ms for r in results).as_dict(),
        "server": resources,
    }
