"""``sagelab bench streaming``: does streaming lose words that offline transcription keeps?

The same Whisper model hears the same speech twice:

* **offline**: the agent's own speech-to-text object (``get_stt`` with the agent's ``stt``
  options) transcribes each case's whole speech at once (split at pauses only past 28 s);
* **streaming**: a ``sagelab.client.Session`` talks to the real server and agent like a
  microphone would: an unbroken real-time stream of ``chunk_ms`` chunks on an absolute
  schedule, silence before and after the speech, the agent's greeting and replies playing,
  barge-in when the user speaks over them. Every ``user_transcript`` of the conversation is
  kept, in order (also those after an interruption), and joined.

Both are scored against the case's reference with ``sagelab.metrics.accuracy`` (one
normalisation). The check passes when the pooled streaming WER is within ``tolerance``
(1 point) of the pooled offline WER at every chunk size: transcription by turns may differ
from one pass by a word, but audio lost between turns shows up as many deleted words.

Several sessions run at once (``sessions``); each runs in real time, so the model calls of
one session queue behind the others' on the shared model executor. That delays transcripts,
which is part of real use; the number of sessions is reported with the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.audio import SAMPLE_RATE, RealtimeSchedule, silence
from sagelab.bench.streamcases import CaseAudio, windows
from sagelab.client import Session, SessionError
from sagelab.metrics.accuracy import score

DEFAULT_CHUNKS_MS = (20, 32, 100, 250)
TOLERANCE = 0.01  # one WER point
OFFLINE = "offline"
STAGE = "internal_sagelab_stage"  # per-turn timings a sagelab server sends when asked


@dataclass(frozen=True)
class Heard:
    """What one transcription path made of one case."""

    case: str
    mode: str  # "offline" or "<n> ms"
    chunk_ms: int | None
    transcripts: tuple[str, ...]
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.transcripts if t.strip())


def mode_name(chunk_ms: int | None) -> str:
    return OFFLINE if chunk_ms is None else f"{chunk_ms} ms"


# -- offline -------------------------------------------------------------------------------


def transcribe_offline(cases: Sequence[CaseAudio], stt: Any) -> list[Heard]:
    """Each case's whole speech through ``stt.transcribe`` (the agent's STT object)."""
    out = []
    for audio in cases:
        texts = tuple(stt.transcribe(piece).text for piece in windows(audio))
        out.append(Heard(audio.case.id, OFFLINE, None, texts))
    return out


def agent_stt(agent: Any) -> Any:
    """The speech-to-text object a ``local`` agent spec uses (same weights, same options)."""
    from sagelab.agents.local.stt import get_stt

    options = dict((agent.options or {}).get("stt") or {})
    return get_stt(**options)


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
            first, last = mic.play(audio.pcm)
            mic.play(silence(tail_s * 1000))
            speech_index = len(s.timeline.events)
            speech_ns = await _unless_stopped(first, sending)
            end_ns = await _unless_stopped(last, sending)
            details["greeting_playing"] = _agent_playing_at(s, speech_ns)
            deadline = time.monotonic() + max_wait_s
            while True:
                quiet_since = max(_last_activity_ns(s), end_ns + int(tail_s * 1e9))
                quiet = time.monotonic_ns() - quiet_since >= settle_s * 1e9
                if quiet and not _transcription_pending(s, speech_index):
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
        transcripts = tuple(
            str(e.data.get("user_transcript", "")) for e in events if e.type == "user_transcript"
        )
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


def _transcription_pending(session: Session, since: int) -> bool:
    """Whether a transcript of the user's speech (timeline events from ``since`` on) may
    still come.

    With stages, a sagelab server reports an ``utterance`` stage when it starts transcribing
    a turn and an ``stt`` stage when the transcript is there: pending is the newest turn
    without ``stt`` (an older one was dropped for a newer turn, which is a loss to measure,
    not something to wait for). Without them, an agent that answers every transcript is
    done when the last transcript has its ``agent_response``, and pending while there is
    no transcript at all.
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
    kinds = [e.type for e in events if e.type in ("user_transcript", "agent_response")]
    return "user_transcript" not in kinds or kinds[-1] == "user_transcript"


async def _unless_stopped(mark: asyncio.Future[int], sending: asyncio.Task[None]) -> int:
    """The send time ``mark`` resolves to; an error if the microphone stopped first."""
    await asyncio.wait({mark, sending}, return_when=asyncio.FIRST_COMPLETED)
    if not mark.done():
        raise SessionError("the session closed before all the speech was sent")
    return mark.result()


def _last_activity_ns(session: Session) -> int:
    for event in reversed(session.timeline.events):
        if event.type in _ACTIVITY:
            return event.t_ns
    return 0


def _agent_playing_at(session: Session, t_ns: int) -> bool:
    """Whether agent audio received before ``t_ns`` was still playing then (ideal player)."""
    playout_end = 0
    for e in session.timeline.events:
        if e.t_ns >= t_ns:
            break
        if e.type == "interruption":
            playout_end = e.t_ns
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


# -- scoring -------------------------------------------------------------------------------


def per_case_table(cases: Sequence[CaseAudio], heard: Sequence[Heard]) -> Any:
    """One row per (case, mode): reference, hypothesis, WER and its edit counts."""
    import pandas as pd

    by_id = {a.case.id: a for a in cases}
    rows = []
    for h in heard:
        audio = by_id[h.case]
        acc = score(audio.reference, h.text)
        rows.append({
            "case": h.case, "kind": audio.case.kind, "mode": h.mode, "chunk_ms": h.chunk_ms,
            "wer": acc.wer, "word_errors": acc.word_errors, "ref_words": acc.ref_words,
            "transcripts": len(h.transcripts), "reference": acc.reference,
            "hypothesis": acc.hypothesis, "error": h.error, **h.details,
        })  # fmt: skip
    order = [mode_name(None), *sorted({h.mode for h in heard} - {OFFLINE}, key=_chunk_of)]
    df = pd.DataFrame(rows)
    df["mode"] = pd.Categorical(df["mode"], categories=order, ordered=True)
    return df.sort_values(["mode", "case"], kind="stable").reset_index(drop=True)


def _chunk_of(mode: str) -> int:
    return int(mode.split()[0])


def pooled_table(per_case: Any, tolerance: float = TOLERANCE) -> Any:
    """Pooled WER per mode (total edits / total reference words), its difference from
    offline in points, and whether it is within ``tolerance``; ``attrs["passed"]`` says
    whether every chunk size is."""
    grouped = per_case.groupby("mode", observed=True)
    table = grouped.agg(
        cases=("case", "count"),
        ref_words=("ref_words", "sum"),
        word_errors=("word_errors", "sum"),
        failed_sessions=("error", lambda s: int(s.notna().sum())),
    )
    table["wer"] = table["word_errors"] / table["ref_words"]
    if OFFLINE not in table.index:
        raise ValueError("the per-case table has no offline rows to compare with")
    offline = float(table.loc[OFFLINE, "wer"])
    table["delta_points"] = (table["wer"] - offline) * 100
    table["within_1_point"] = (table["delta_points"].abs() <= tolerance * 100 + 1e-9) & (
        table["failed_sessions"] == 0
    )
    streaming = table.drop(index=OFFLINE)
    table.attrs["passed"] = bool(len(streaming) and streaming["within_1_point"].all())
    table.attrs["tolerance_points"] = tolerance * 100
    return table.reset_index()


def failures(per_case: Any, tolerance: float = TOLERANCE) -> Any:
    """Streaming rows that lost more than ``tolerance`` against offline on the same case,
    with both transcripts side by side."""
    offline = per_case[per_case["mode"] == OFFLINE].set_index("case")
    streaming = per_case[per_case["mode"] != OFFLINE].copy()
    streaming["offline_wer"] = streaming["case"].map(offline["wer"])
    streaming["offline_hypothesis"] = streaming["case"].map(offline["hypothesis"])
    worse = streaming["wer"] - streaming["offline_wer"] > tolerance + 1e-9
    columns = ["case", "mode", "wer", "offline_wer", "reference", "hypothesis",
               "offline_hypothesis", "transcripts", "error"]  # fmt: skip
    if "timed_out" in streaming.columns:
        columns.append("timed_out")
    return streaming.loc[worse | streaming["error"].notna(), columns].reset_index(drop=True)


def wer_bars(per_case: Any, pooled: Any) -> Any:
    """Grouped bars: WER per case and pooled, one bar per mode (offline, then each chunk
    size), so a chunk size that loses words stands out against offline."""
    from matplotlib.figure import Figure

    modes = list(pooled["mode"])
    cases = list(dict.fromkeys(per_case["case"]))
    labels = [*cases, "pooled"]
    values = np.full((len(modes), len(labels)), np.nan)
    for i, mode in enumerate(modes):
        rows = per_case[per_case["mode"] == mode].set_index("case")["wer"]
        for j, case in enumerate(cases):
            if case in rows.index:
                values[i, j] = float(rows[case]) * 100
        values[i, -1] = float(pooled.loc[pooled["mode"] == mode, "wer"].iloc[0]) * 100
    fig = Figure(figsize=(max(8, 0.9 * len(labels) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(labels))
    colors = ["#444444", "#1b6ca8", "#6a994e", "#e9a23b", "#c1121f", "#7b2cbf"]
    for i, mode in enumerate(modes):
        ax.bar(x + (i - (len(modes) - 1) / 2) * width, np.nan_to_num(values[i]), width,
               label=mode, color=colors[i % len(colors)])  # fmt: skip
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("WER (%)")
    passed = pooled.attrs.get("passed")
    verdict = "" if passed is None else (" — within 1 point" if passed else " — NOT within 1 pt")
    ax.set_title(f"Streaming vs offline WER per case and pooled{verdict}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, ncols=len(modes))
    return fig


# -- the whole check -----------------------------------------------------------------------


@dataclass
class StreamingReport:
    per_case: Any
    pooled: Any
    failures: Any
    conditions: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.pooled.attrs["passed"])

    def as_dict(self) -> dict[str, Any]:
        import json

        def records(df: Any) -> Any:
            return json.loads(df.to_json(orient="records"))

        return {"passed": self.passed, "conditions": self.conditions,
                "pooled": records(self.pooled), "per_case": records(self.per_case),
                "failures": records(self.failures)}  # fmt: skip


def report(
    cases: Sequence[CaseAudio], heard: Sequence[Heard], conditions: dict[str, Any]
) -> StreamingReport:
    per_case = per_case_table(cases, heard)
    pooled = pooled_table(per_case)
    return StreamingReport(per_case, pooled, failures(per_case), conditions)


def save_plot(result: StreamingReport, folder: Path) -> Path:
    from sagelab.metrics.plots import save_figure

    return save_figure(wer_bars(result.per_case, result.pooled), folder / "streaming_wer.png")


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
    """Offline first (nothing else running), then every (case, chunk size) conversation
    against ``url`` or an in-process server with the bundled ``agent_id``."""
    import tempfile

    from sagelab.server.app import BackgroundServer

    with tempfile.TemporaryDirectory(prefix="sagelab-streaming-") as tmp:
        cfg = server_config(config, agent_id, Path(tmp))
        stt = agent_stt(cfg.agents[0])
        offline = []
        for audio in cases:
            (heard,) = transcribe_offline([audio], stt)
            offline.append(heard)
            if on_offline is not None:
                on_offline(heard)
        conditions: dict[str, Any] = {
            "agent": agent_id, "chunks_ms": list(chunks_ms), "sessions": sessions,
            "stages": bool(options.get("stages", False)),
            "server": url or "in-process (bundled)", "cases": len(cases),
            "speech_s": round(sum(a.duration_s for a in cases), 1),
            "ref_words": sum(len(a.reference.split()) for a in cases),
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
