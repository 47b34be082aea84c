"""``sagelab soak``: many sessions for a long time, watching for what only time reveals.

N workers each hold a conversation with the ``scripted`` agent, streaming real speech in real
time (an utterance, a gap, again: replies, a client tool call, barge-ins), end it normally after
``conversation_s`` and open the next one, until the run is over. The server runs in its own
process so its memory and file descriptors can be sampled alone. What is checked:

* connections stay up: every conversation ends because the client ended it (1000), none is
  dropped or refused, no ``error`` event arrives;
* memory stays flat: RSS growth from the moment all sessions are up to the end of the run
  (the bar), and its trend in MB per session-hour (least squares after warm-up);
* file descriptors stay flat while sessions run, and return to the idle count afterwards;
* the registry is empty afterwards (``/healthz``), and every conversation a client held is in
  the store, ended, with its close code: nothing lost.

Figures go to ``runs/soak-<time>/`` (``summary.json``, ``samples.csv``,
``conversations.jsonl``, ``server.log``, the store).
"""

from __future__ import annotations

import asyncio
import csv
import json
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sagelab.audio import load_audio
from sagelab.bench.serverproc import ServerProcess
from sagelab.bench.transport import mic_stream
from sagelab.client import Session, SessionError
from sagelab.server.store import ConversationStore

MIN_CONVERSATION_S = 5.0


@dataclass
class SoakOptions:
    sessions: int = 10
    minutes: float = 10.0
    conversation_s: float = 120.0
    speech_path: Path = Path("data/speech/goforward.wav")
    agent_id: str = "scripted"
    out_dir: Path | None = None
    sample_s: float = 2.0
    gap_ms: int = 2500
    max_rss_growth_mb: float = 20.0
    max_fd_growth: int = 4

    def check(self) -> None:
        """Refuse settings that cannot make a meaningful run, saying what to change."""
        if self.sessions < 1:
            raise ValueError("--sessions must be at least 1")
        if self.minutes * 60 < 2 * MIN_CONVERSATION_S:
            raise ValueError(f"--minutes must give at least {2 * MIN_CONVERSATION_S:g} s")
        if not MIN_CONVERSATION_S <= self.conversation_s <= 540:
            raise ValueError(
                f"--conversation-s must be {MIN_CONVERSATION_S:g}-540 s "
                "(the server ends conversations after max_duration_s, 600 s by default)"
            )
        if not self.speech_path.is_file():
            raise FileNotFoundError(f"speech file {self.speech_path} not found; pass --speech")


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    active_sessions: int | None
    threads: int


@dataclass
class ConversationResult:
    worker: int
    conversation_id: str | None
    ok: bool
    seconds: float
    replies: int = 0
    close_code: int | None = None
    error: str | None = None


@dataclass
class SoakRun:
    samples: list[Sample] = field(default_factory=list)
    conversations: list[ConversationResult] = field(default_factory=list)
    idle: Sample | None = None
    after: Sample | None = None
    all_up_at_s: float | None = None


def _health(http_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http_url}/healthz", timeout=5) as r:
        return dict(json.loads(r.read()))


def _sample(proc: psutil.Process, http_url: str, t0: float) -> Sample:
    with proc.oneshot():
        rss = proc.memory_info().rss / 2**20
        fds = proc.num_fds()
        threads = proc.num_threads()
    try:
        active: int | None = int(_health(http_url)["active_sessions"])
    except (OSError, ValueError, KeyError):
        active = None
    return Sample(round(time.monotonic() - t0, 2), round(rss, 2), fds, active, threads)


async def _conversation(
    url: str, opts: SoakOptions, worker: int, audio_s: float, speech: Any
) -> ConversationResult:
    audio, _ = mic_stream(speech, opts.gap_ms, audio_s)
    started = time.monotonic()
    try:
        session = await Session.connect(
            url,
            opts.agent_id,
            record_audio=False,
            tools={"get_weather": lambda params: f"sunny in {params.get('city', 'town')}"},
        )
    except (SessionError, OSError) as exc:
        return ConversationResult(worker, None, False, 0.0, error=f"connect failed: {exc}")
    error: str | None = None
    try:
        await session.send_audio(audio)
        await asyncio.sleep(1.0)  # let the last reply start
    except (SessionError, OSError) as exc:
        error = f"dropped mid-conversation: {exc}"
    await session.close()
    errors = [str(e.data.get("message", "")) for e in session.timeline.of_type("error")]
    if error is None and errors:
        error = f"error event: {errors[0]}"
    if error is None and session.close_code not in (1000, None):
        error = f"closed with {session.close_code}: {session.close_reason}"
    return ConversationResult(
        worker,
        session.conversation_id,
        ok=error is None,
        seconds=round(time.monotonic() - started, 2),
        replies=len(session.timeline.of_type("agent_response")),
        close_code=session.close_code,
        error=error,
    )


async def _worker(
    url: str, opts: SoakOptions, worker: int, deadline: float, speech: Any, run: SoakRun
) -> None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining < MIN_CONVERSATION_S:
            return
        audio_s = min(opts.conversation_s, remaining) - 1.0
        run.conversations.append(await _conversation(url, opts, worker, audio_s, speech))


async def _sampler(
    proc: psutil.Process,
    http_url: str,
    t0: float,
    opts: SoakOptions,
    run: SoakRun,
    on_sample: Callable[[Sample, SoakRun], None] | None,
) -> None:
    while True:
        sample = await asyncio.to_thread(_sample, proc, http_url, t0)
        run.samples.append(sample)
        if run.all_up_at_s is None and sample.active_sessions == opts.sessions:
            run.all_up_at_s = sample.t_s
        if on_sample is not None:
            on_sample(sample, run)
        await asyncio.sleep(opts.sample_s)


async def _drive(
    server: ServerProcess,
    opts: SoakOptions,
    on_sample: Callable[[Sample, SoakRun], None] | None,
) -> SoakRun:
    proc = psutil.Process(server.pid)
    run = SoakRun()
    speech = load_audio(opts.speech_path)
    t0 = time.monotonic()
    run.idle = await asyncio.to_thread(_sample, proc, server.http_url, t0)
    deadline = t0 + opts.minutes * 60
    sampler = asyncio.create_task(_sampler(proc, server.http_url, t0, opts, run, on_sample))

    async def staggered(i: int) -> None:
        await asyncio.sleep(min(5.0, opts.conversation_s / 4) * i / opts.sessions)
        await _worker(server.http_url, opts, i, deadline, speech, run)

    try:
        await asyncio.gather(*(staggered(i) for i in range(opts.sessions)))
    finally:
        sampler.cancel()
    # Afterwards: the registry must empty and descriptors return to the idle count.
    settle = time.monotonic() + 15
    while time.monotonic() < settle:
        run.after = await asyncio.to_thread(_sample, proc, server.http_url, t0)
        if run.after.active_sessions == 0 and run.after.fds <= run.idle.fds:
            break
        await asyncio.sleep(0.5)
    return run


def _slope_mb_per_hour(samples: list[Sample]) -> float | None:
    if len(samples) < 3:
        return None
    ts = [s.t_s for s in samples]
    if max(ts) - min(ts) < 1:
        return None
    slope = statistics.linear_regression(ts, [s.rss_mb for s in samples]).slope
    return slope * 3600


def _audit_store(path: Path, run: SoakRun) -> dict[str, Any]:
    """Every conversation a client held must be stored, ended normally, with turns."""
    held = [c for c in run.conversations if c.conversation_id]
    missing: list[str] = []
    unended: list[str] = []
    with ConversationStore(path) as store:
        for c in held:
            assert c.conversation_id is not None
            stored = store.get_conversation(c.conversation_id)
            if stored is None or not stored["turns"]:
                missing.append(c.conversation_id)
            elif stored["ended_at"] is None or stored["close_code"] != 1000:
                unended.append(c.conversation_id)
        total = store.count_conversations()
        still_open = len(store.open_conversations())
    return {
        "conversations": total,
        "held_by_clients": len(held),
        "missing": missing,
        "not_ended_normally": unended,
        "open": still_open,
        "lost": len(missing) + len(unended),
    }


def summarize(opts: SoakOptions, run: SoakRun, store: dict[str, Any]) -> dict[str, Any]:
    duration_s = opts.minutes * 60
    up_from = run.all_up_at_s if run.all_up_at_s is not None else duration_s * 0.1
    running = [s for s in run.samples if s.t_s >= up_from]
    tail = [s for s in running if s.t_s >= duration_s * 0.9] or running[-3:]
    head = running[:3]
    warm = [s for s in running if s.t_s >= up_from + min(60.0, duration_s * 0.2)]

    def med(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 2) if xs else None

    rss_start = med([s.rss_mb for s in head])
    rss_end = med([s.rss_mb for s in tail])
    fds_start = med([float(s.fds) for s in head])
    fds_end = med([float(s.fds) for s in tail])
    growth = round(rss_end - rss_start, 2) if rss_end is not None and rss_start else None
    slope = _slope_mb_per_hour(warm)
    failed = [c for c in run.conversations if not c.ok]
    idle, after = run.idle, run.after
    fd_growth_after = after.fds - idle.fds if after and idle else None
    summary: dict[str, Any] = {
        "sessions": opts.sessions,
        "minutes": opts.minutes,
        "conversation_s": opts.conversation_s,
        "session_hours": round(opts.sessions * duration_s / 3600, 3),
        "conversations": len(run.conversations),
        "conversations_ok": len(run.conversations) - len(failed),
        "dropped_or_refused": len(failed),
        "failure_samples": sorted({c.error or "" for c in failed})[:5],
        "replies": sum(c.replies for c in run.conversations),
        "sessions_held_max": max((s.active_sessions or 0 for s in run.samples), default=0),
        "all_sessions_up_at_s": run.all_up_at_s,
        "rss_mb": {
            "idle": idle.rss_mb if idle else None,
            "all_up": rss_start,
            "end": rss_end,
            "max": max((s.rss_mb for s in run.samples), default=None),
            "growth": growth,
            "trend_mb_per_hour": round(slope, 2) if slope is not None else None,
            "trend_mb_per_session_hour": (
                round(slope / opts.sessions, 3) if slope is not None else None
            ),
        },
        "fds": {
            "idle": idle.fds if idle else None,
            "all_up": fds_start,
            "end": fds_end,
            "max": max((s.fds for s in run.samples), default=None),
            "after": after.fds if after else None,
            "growth_after": fd_growth_after,
        },
        "registry_empty_after": bool(after and after.active_sessions == 0),
        "store": store,
    }
    reasons: list[str] = []
    if growth is None or growth >= opts.max_rss_growth_mb:
        reasons.append(f"RSS growth {growth} MB (limit {opts.max_rss_growth_mb:g} MB)")
    if failed:
        reasons.append(f"{len(failed)} conversations dropped or refused")
    if store["lost"] or store["open"]:
        reasons.append(f"{store['lost']} conversations lost, {store['open']} left open")
    if not summary["registry_empty_after"]:
        reasons.append("sessions left in the registry after the run")
    if fd_growth_after is None or fd_growth_after > opts.max_fd_growth:
        reasons.append(f"{fd_growth_after} more file descriptors than before the run")
    summary["bar"] = {"passed": not reasons, "broken": reasons}
    return summary


def _write(out_dir: Path, run: SoakRun, summary: dict[str, Any]) -> None:
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    with (out_dir / "samples.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(Sample.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(s) for s in run.samples)
    with (out_dir / "conversations.jsonl").open("w", encoding="utf-8") as f:
        for c in run.conversations:
            f.write(json.dumps(asdict(c)) + "\n")


def run_soak(
    opts: SoakOptions, on_sample: Callable[[Sample, SoakRun], None] | None = None
) -> dict[str, Any]:
    """Run the soak against a fresh server process; returns the summary (also on disk)."""
    opts.check()
    out_dir = opts.out_dir or Path("runs") / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    store_path = out_dir / "store.sqlite3"
    server = ServerProcess(
        store_path=str(store_path),
        agents=[opts.agent_id],
        max_sessions=max(50, opts.sessions + 5),
        log_path=out_dir / "server.log",
    )
    server.__enter__()
    try:
        run = asyncio.run(_drive(server, opts, on_sample))
    finally:
        server.__exit__(None, None, None)  # SIGTERM: sessions end, the store is flushed
    summary = summarize(opts, run, _audit_store(store_path, run))
    summary["out_dir"] = str(out_dir)
    _write(out_dir, run, summary)
    return summary
