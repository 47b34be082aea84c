"""``sagelab bench streaming``: does streaming lose words that offline transcription keeps?

The same Whisper model (the agent's own speech-to-text object: ``get_stt`` with the agent's
``stt`` options) hears the same speech three ways:

* **offline**: each case's whole speech at once (split at pauses only past 28 s), with all
  its context;
* **offline per turn**: the case cut at every pause at least as long as the agent's
  end-of-turn silence (``vad.end_silence_ms`` in the agents file, rounded up to whole VAD
  windows as the detector counts it), each piece transcribed alone and the texts joined:
  what a turn-taker that loses nothing hears when it ends a turn at each such pause;
* **streaming**: a ``sagelab.client.Session`` talks to the real server and agent like a
  microphone would: an unbroken real-time stream of ``chunk_ms`` chunks on an absolute
  schedule, silence before and after the speech, the agent's greeting and replies playing,
  barge-in when the user speaks over them. Every ``user_transcript`` of the conversation is
  kept, in order (also those after an interruption), and joined.

All are scored against the case's reference (``sagelab.bench.streamreport``, with
``sagelab.metrics.accuracy``'s normalisation). The check passes when the pooled streaming
WER is within 1 point of the pooled per-turn WER at every chunk size: both baselines come from
the case definition alone, so audio the server loses between turns shows up as deleted words
against them. The gap from the whole-case WER is reported too: it is what ending turns at
pauses costs Whisper in context, whatever the transport.

Several sessions run at once (``sessions``); each runs in real time, so the model calls of
one session queue behind the others' on the shared model executor. That delays transcripts,
which is part of real use; the number of sessions is reported with the figures.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.audio import SAMPLE_RATE, RealtimeSchedule, silence
from sagelab.bench.streamcases import PREROLL_S, CaseAudio, speech_runs, turns, windows
from sagelab.bench.streamreport import (
    OFFLINE,
    PER_TURN,
    Heard,
    StreamingReport,
    mode_name,
    report,
)
from sagelab.client import Session, SessionError

DEFAULT_CHUNKS_MS = (20, 32, 100, 250)
STAGE = "internal_sagelab_stage"  # per-turn timings a sagelab server sends when asked


# -- offline -------------------------------------------------------------------------------


def transcribe_offline(cases: Sequence[CaseAudio], stt: Any) -> list[Heard]:
    """Each case's whole speech through ``stt.transcribe`` (the agent's STT object)."""
    out = []
    for audio in cases:
        texts = tuple(stt.transcribe(piece).text for piece in windows(audio))
        out.append(Heard(audio.case.id, OFFLINE, None, texts))
    return out


def transcribe_per_turn(cases: Sequence[CaseAudio], stt: Any, end_silence_s: float) -> list[Heard]:
    """Each case cut at its pauses of at least ``end_silence_s`` (``streamcases.turns``),
    every piece through ``stt.transcribe`` alone, the texts kept in order."""
    out = []
    for audio in cases:
        pieces = turns(audio, end_silence_s)
        texts = tuple(stt.transcribe(piece).text for piece in pieces)
        out.append(Heard(audio.case.id, PER_TURN, None, texts))  # one transcript per turn
    return out


def agent_stt(agent: Any) -> Any:
    """The speech-to-text object a ``local`` agent spec uses (same weights, same options)."""
    from sagelab.agents.local.stt import get_stt

    options = dict((agent.options or {}).get("stt") or {})
    return get_stt(**options)


def end_of_turn_silence_s(agent: Any) -> tuple[float, float]:
    """The agent's end-of-turn silence: as configured (``end_of_turn``'s ``silence_only`` or
    ``min_silence_ms`` — the earliest a turn can end — else ``vad.end_silence_ms``, else the
    detector's default) and as the detector counts it, in whole 32 ms Silero windows
    (400 ms is 13 windows, 416 ms), both in seconds.

    The counted figure is the one that decides: a 0.40 s pause does not end an audio-sage
    turn and a 0.45 s one does. Cutting the per-turn baseline at the configured figure
    would split turns the agent keeps whole.
    """
    from sagelab.agents.local.vad import WINDOW_MS, VadTurnDetector

    options = agent.options or {}
    vad = dict(options.get("vad") or {})
    default = inspect.signature(VadTurnDetector).parameters["end_silence_ms"].default
    policy = options.get("end_of_turn") or {}
    configured = policy.get("silence_only", policy.get("min_silence_ms"))
    ms = float(configured if configured is not None else vad.get("end_silence_ms", default))
    return ms / 1000, math.ceil(ms / WINDOW_MS - 1e-9) * WINDOW_MS / 1000


# -- streaming -----------------------------------------------------------------------------


class Microphone:
    """Sends an unbroken real-time stream: queued audio when there is some, silence otherwise.

    The official SDKs' audio interfaces never stop sending while a conversation is open; a
    turn detector sees the silence before and after speech, not a gap in the stream. Chunks go
    out on an absolute schedule (chunk ``k`` at ``start + k * chunk_ms``), as
    ``Session.send_audio`` paces a recording, and queued pieces follow one another without a
    gap (a chunk may hold the end of one and the start of the next).
    """

    def __init__(self, session: Session, chunk_ms: int) -> None:
        self.session = session
        self.chunk_ms = chunk_ms
        self._size = SAMPLE_RATE * chunk_ms // 1000
        self._pending: list[np.ndarray] = []
        self._sent = 0  # samples of queued audio sent so far
        self._queued = 0
        self._log_ns: list[int] = []  # send time of each chunk ...
        self._log_sent: list[int] = []  # ... and the queued samples sent by then
        self._marks: list[tuple[int, asyncio.Future[int]]] = []
        self.max_late_s = 0.0
        self.error: str | None = None

    def play(self, pcm: np.ndarray) -> tuple[asyncio.Future[int], asyncio.Future[int]]:
        """Queue ``pcm`` (not empty); futures for the send times (monotonic ns) of the chunks
        holding its first and its last sample."""
        if pcm.size == 0:
            raise ValueError("Microphone.play needs some audio")
        loop = asyncio.get_running_loop()
        first, last = loop.create_future(), loop.create_future()
        self._marks += [(self._queued, first), (self._queued + pcm.size - 1, last)]
        self._pending.append(pcm)
        self._queued += pcm.size
        return first, last

    @property
    def queued(self) -> int:
        """Samples queued so far: where the next ``play`` starts in the queued stream."""
        return self._queued

    def sent_by(self, t_ns: int) -> int:
        """Queued samples sent at or before ``t_ns`` (monotonic ns)."""
        i = bisect.bisect_right(self._log_ns, t_ns)
        return self._log_sent[i - 1] if i else 0

    def _take(self) -> np.ndarray:
        parts: list[np.ndarray] = []
        need = self._size
        while need and self._pending:
            head = self._pending[0]
            parts.append(head[:need])
            if head.size <= need:
                self._pending.pop(0)
            else:
                self._pending[0] = head[need:]
            need -= parts[-1].size
        taken = sum(p.size for p in parts)
        self._sent += taken
        if need:
            parts.append(np.zeros(need, dtype=np.int16))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    async def run(self) -> None:
        schedule = RealtimeSchedule(self.chunk_ms / 1000)
        k = 0
        while not self.session.closed:
            await schedule.wait_async(k)
            self.max_late_s = max(self.max_late_s, schedule.lateness(k, time.monotonic()))
            chunk = self._take()
            try:
                sent_ns = await self.session.send_audio_chunk(chunk)
            except SessionError as exc:
                self.error = str(exc)
                return
            self._log_ns.append(sent_ns)
            self._log_sent.append(self._sent)
            due = [m for m in self._marks if m[0] < self._sent]
            for mark in due:
                self._marks.remove(mark)
                if not mark[1].done():
                    mark[1].set_result(sent_ns)
            k += 1


_ACTIVITY = ("user_transcript", "agent_response", "audio", "interruption", STAGE)


async def stream_case(
    base_url: str,
    agent_id: str,
    audio: CaseAudio,
    chunk_ms: int,
    *,
    tail_s: float = 1.5,
    settle_s: float = 3.0,
    greeting_timeout_s: float = 30.0,
    max_wait_s: float = 45.0,
    stages: bool = False,
) -> Heard:
    """One conversation: the case's speech streamed at ``chunk_ms``, all transcripts kept.

    After the speech (and ``tail_s`` of silence) the microphone keeps sending silence until
    nothing has arrived for ``settle_s`` and no transcription is pending, or ``max_wait_s``
    passed: a transcript that comes late still counts, one that never comes is a loss.

    ``stages`` asks a sagelab server for its per-turn timings, which tell exactly when the
    greeting is over and whether a transcription is still running. Off by default: the
    official SDKs do not ask for them, and sending them adds awaits inside the agent's turn
    handling, which changes the very timing this check is about.
    """
    case = audio.case
    t0 = time.monotonic_ns()
    details: dict[str, Any] = {"speech_s": round(audio.duration_s, 2)}
    error: str | None = None
    speech_end_ns: int | None = None
    connect = Session.connect(base_url, agent_id, chunk_ms=chunk_ms, record_audio=False,
                              stages=stages)  # fmt: skip
    async with connect as s:
        mic = Microphone(s, chunk_ms)
        sending = asyncio.create_task(mic.run())
        try:
            if case.start == "after_greeting":
                await _greeting_done(s, greeting_timeout_s)
            else:  # during the greeting: once its first audio has arrived
                with contextlib.suppress(TimeoutError):
                    await s.wait_for("audio", timeout=greeting_timeout_s)
            if case.lead_s > 0:
                mic.play(silence(case.lead_s * 1000))
            offset = mic.queued
            first, last = mic.play(audio.pcm)
            runs = speech_runs(audio.pcm, 0.0)

            def speech_after(t_ns: int) -> float:  # seconds of the case's speech sent later
                sent = min(max(0, mic.sent_by(t_ns) - offset), audio.pcm.size)
                return sum(max(0, end - max(start, sent)) for start, end in runs) / SAMPLE_RATE

            mic.play(silence(tail_s * 1000))
            speech_index = len(s.timeline.events)
            speech_ns = await _unless_stopped(first, sending)
            end_ns = speech_end_ns = await _unless_stopped(last, sending)
            details["greeting_playing"] = _agent_playing_at(s, speech_ns)
            deadline = time.monotonic() + max_wait_s
            while True:
                quiet_since = max(_last_activity_ns(s), end_ns + int(tail_s * 1e9))
                quiet = time.monotonic_ns() - quiet_since >= settle_s * 1e9
                if quiet and not _transcription_pending(s, speech_index, speech_after):
                    break
                if s.closed:
                    error = f"session closed ({s.close_code}: {s.close_reason})"
                    break
                if time.monotonic() > deadline:  # a transcript that never came: a loss
                    details["timed_out"] = True
                    break
                await asyncio.sleep(0.05)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        events = s.timeline.events
        said = [e for e in events if e.type == "user_transcript"]
        transcripts = tuple(str(e.data.get("user_transcript", "")) for e in said)
        if said and speech_end_ns is not None:  # how long after the speech the last came
            details["last_transcript_s"] = round((said[-1].t_ns - speech_end_ns) / 1e9, 2)
        details.update(
            turns=sum(1 for e in events if e.type == "agent_response"),
            interruptions=sum(1 for e in events if e.type == "interruption"),
            max_late_ms=round(mic.max_late_s * 1000, 1),
            wall_s=round((time.monotonic_ns() - t0) / 1e9, 1),
        )
    return Heard(case.id, mode_name(chunk_ms), chunk_ms, transcripts, error, details)


async def _greeting_done(session: Session, timeout: float) -> None:
    """Wait until the agent's greeting has arrived in full and has played out.

    Audio comes sentence by sentence, paced by the server and, on a busy machine, with
    stalls, so a pause in the audio is no proof the greeting is over. A sagelab server says
    how much audio a turn has once its synthesis is done (the ``tts_audio`` stage, in ms);
    the greeting is over when that much has arrived and played. Without stages, 2.5 s
    without audio ends it.
    """
    try:
        first = await session.wait_for("audio", timeout=timeout)
    except TimeoutError:
        return  # an agent that does not greet
    greeting = first.event_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not session.closed:
        events = session.timeline.events
        if any(e.type == "interruption" for e in events):
            break
        total_ms = [e.data.get("ms") for e in events
                    if e.type == STAGE and e.event_id == greeting
                    and e.data.get("stage") == "tts_audio"]  # fmt: skip
        received_ms = 1000 * sum(
            e.data.get("duration_s", 0.0)
            for e in events
            if e.type == "audio" and e.direction == "recv" and e.event_id == greeting
        )
        if total_ms and received_ms >= float(total_ms[0] or 0) - 1:
            break
        stages = any(e.type == STAGE for e in events)
        if not stages and time.monotonic_ns() - _last_activity_ns(session) > 2.5e9:
            break
        await asyncio.sleep(0.05)
    remaining = max(0.1, deadline - time.monotonic())
    with contextlib.suppress(TimeoutError):
        await session.wait_agent_done(quiet_s=0.3, timeout=remaining)


UNANSWERED_S = 0.5  # speech sent after the agent's last reply that it must still answer


def _transcription_pending(
    session: Session, since: int, speech_after: Callable[[int], float]
) -> bool:
    """Whether a transcript of the user's speech (timeline events from ``since`` on) may
    still come.

    With stages, a sagelab server reports an ``utterance`` stage when it starts transcribing
    a turn and an ``stt`` stage when the transcript is there: pending is the newest turn
    without ``stt`` (an older one was dropped for a newer turn, which is a loss to measure,
    not something to wait for).

    Without them, the client cannot see a transcription under way, but it knows the agent
    answers only once the user is done. So it is pending while the last transcript has no
    ``agent_response`` yet, or while more than ``UNANSWERED_S`` of the case's speech
    (``speech_after``: seconds of speech, by the energy reference, sent after a time) went
    out after the last ``agent_response``. A reply to an earlier turn does not settle it: on
    a loaded machine the later turns may still be queued for the model (seen at load 20+: a
    reply to the second turn of a passage came 15 s before the speech ended, and the wait
    gave up before the other two turns' transcripts). The margin lets a quiet breath after
    the last word, which the detector does not count as speech, go unanswered.
    """
    events = session.timeline.events[since:]
    if any(e.type == STAGE for e in events):
        latest: int | None = None
        done: set[int | None] = set()
        for e in events:
            if e.type == STAGE and e.data.get("stage") == "utterance":
                latest = e.event_id
            elif (e.type == STAGE and e.data.get("stage") == "stt") or e.type == "user_transcript":
                done.add(e.event_id)
        return latest is not None and latest not in done
    said = [e for e in events if e.type in ("user_transcript", "agent_response")]
    if not said or said[-1].type == "user_transcript":
        return True
    return speech_after(said[-1].t_ns) > UNANSWERED_S


async def _unless_stopped(mark: asyncio.Future[int], sending: asyncio.Task[None]) -> int:
    """The send time ``mark`` resolves to; an error if the microphone stopped first."""
    waiting: set[asyncio.Future[object]] = {mark, sending}  # type: ignore[arg-type]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not mark.done():
        raise SessionError("the session closed before all the speech was sent")
    return mark.result()


def _last_activity_ns(session: Session) -> int:
    for event in reversed(session.timeline.events):
        if event.type in _ACTIVITY:
            return event.t_ns
    return 0


def _agent_playing_at(session: Session, t_ns: int, lead_ns: int = 500_000_000) -> bool:
    """Whether agent audio received before ``t_ns`` was still playing then (ideal player).

    An interruption in the ``lead_ns`` before ``t_ns`` counts as playing: the agent stops on
    the first hint of the user's voice, which can be the breath or click just before the
    first word (``VadTurnDetector.voice_at``)."""
    playout_end = 0
    for e in session.timeline.events:
        if e.t_ns >= t_ns:
            break
        if e.type == "interruption":
            playout_end = max(playout_end, t_ns + 1) if e.t_ns >= t_ns - lead_ns else e.t_ns
        elif e.type == "audio" and e.direction == "recv":
            playout_end = max(playout_end, e.t_ns) + int(e.data.get("duration_s", 0) * 1e9)
    return playout_end > t_ns


def jobs(cases: Sequence[CaseAudio], chunks_ms: Sequence[int]) -> Iterator[tuple[CaseAudio, int]]:
    """Every (case, chunk size), interleaved so each chunk size progresses at the same pace
    and the longest cases start first (the run ends sooner)."""
    by_length = sorted(cases, key=lambda a: -a.duration_s)
    for audio in by_length:
        for chunk in chunks_ms:
            yield audio, chunk


async def stream_all(
    base_url: str,
    agent_id: str,
    cases: Sequence[CaseAudio],
    chunks_ms: Sequence[int],
    *,
    sessions: int = 3,
    on_done: Callable[[Heard], None] | None = None,
    **options: Any,
) -> list[Heard]:
    """All (case, chunk size) conversations, at most ``sessions`` at a time."""
    if sessions < 1:
        raise ValueError(f"sessions must be at least 1, got {sessions}")
    gate = asyncio.Semaphore(sessions)

    async def one(audio: CaseAudio, chunk: int) -> Heard:
        async with gate:
            try:
                heard = await stream_case(base_url, agent_id, audio, chunk, **options)
            except Exception as exc:  # a failed conversation scores as all words lost
                heard = Heard(audio.case.id, mode_name(chunk), chunk, (), f"{exc!r}")
        if on_done is not None:
            on_done(heard)
        return heard

    return list(await asyncio.gather(*(one(a, c) for a, c in jobs(cases, chunks_ms))))


def server_config(config: Path | None, agent_id: str, workdir: Path) -> Any:
    """The agents file's config with only ``agent_id``, on a free port, storing in
    ``workdir`` (conversation store and any server-tool database), so a run leaves nothing
    behind in the package or the repository."""
    from sagelab.config import load_config

    cfg = load_config(config, env={}, port=0, store_path=str(workdir / "store.sqlite3"))
    cfg.agents = [a for a in cfg.agents if a.id == agent_id]
    if not cfg.agents:
        raise ValueError(f"no agent {agent_id!r} in the agents file")
    spec = cfg.agents[0]
    options = dict(spec.options or {})
    tools = options.get("server_tools")
    if isinstance(tools, dict) and "database" in tools:
        options["server_tools"] = {**tools, "database": str(workdir / "tools.sqlite3")}
    spec.options = options
    return cfg


def run_check(
    cases: Sequence[CaseAudio],
    *,
    chunks_ms: Sequence[int] = DEFAULT_CHUNKS_MS,
    sessions: int = 3,
    agent_id: str = "audio-sage",
    config: Path | None = None,
    url: str | None = None,
    on_offline: Callable[[Heard], None] | None = None,
    on_done: Callable[[Heard], None] | None = None,
    **options: Any,
) -> StreamingReport:
    """Both offline baselines first (nothing else running), then every (case, chunk size)
    conversation against ``url`` or an in-process server with the bundled ``agent_id``.
    ``on_offline`` is called once per case, when both baselines have it."""
    import tempfile

    from sagelab.server.app import BackgroundServer

    with tempfile.TemporaryDirectory(prefix="sagelab-streaming-") as tmp:
        cfg = server_config(config, agent_id, Path(tmp))
        stt = agent_stt(cfg.agents[0])
        configured_s, end_silence_s = end_of_turn_silence_s(cfg.agents[0])
        offline = []
        for audio in cases:
            (whole,) = transcribe_offline([audio], stt)
            (per_turn,) = transcribe_per_turn([audio], stt, end_silence_s)
            offline += [whole, per_turn]
            if on_offline is not None:
                on_offline(per_turn)
        conditions: dict[str, Any] = {
            "agent": agent_id, "chunks_ms": list(chunks_ms), "sessions": sessions,
            "stages": bool(options.get("stages", False)),
            "server": url or "in-process (bundled)", "cases": len(cases),
            "speech_s": round(sum(a.duration_s for a in cases), 1),
            "ref_words": sum(len(a.reference.split()) for a in cases),
            "end_silence_ms": round(configured_s * 1000),
            "turn_cut_ms": round(end_silence_s * 1000), "preroll_ms": round(PREROLL_S * 1000),
        }  # fmt: skip
        t0 = time.monotonic()

        def stream(base: str) -> list[Heard]:
            return asyncio.run(
                stream_all(base, agent_id, cases, chunks_ms, sessions=sessions,
                           on_done=on_done, **options)
            )  # fmt: skip

        if url is None:
            with BackgroundServer(cfg) as server:
                streamed = stream(server.http_url)
        else:
            streamed = stream(url)
        conditions["wall_s"] = round(time.monotonic() - t0, 1)
    return report(cases, offline + streamed, conditions)
