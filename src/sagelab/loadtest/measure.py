"""How a load-test user turns sent speech and received frames into measurements.

Kept free of locust, gevent and sockets so the arithmetic (when a turn is "new", what counts as
a stutter) is unit-tested without a server, and so the locustfile stays a thin I/O shell.

Metric names (locust request names, raw-log ``metric`` values), all in milliseconds:

* ``signed_url``: the ``get-signed-url`` request (only with ``--signed-url``).
* ``connect``: TCP + WebSocket handshake.
* ``metadata``: connect start → ``conversation_initiation_metadata`` (relay: ``ready``).
* ``ping_rtt``: the server's ``ping_ms`` (ConvAI only): its own clock from sending a ``ping``
  to receiving our ``pong``, so it includes how long this user took to answer, exactly as
  ElevenLabs reports it. Integer milliseconds, as the protocol has it.
* ``ws_ping_rtt``: a WebSocket ping frame sent by this user → its pong, both protocols; the
  server's network stack answers it, so it is transport round trip plus both event loops.
* ``first_audio``: the chunk holding the end of speech sent → first audio frame of an agent
  turn newer than every turn seen at that moment (includes the agent's end-of-turn wait).
* ``voice_to_voice``: the user's last loud sample → that same first frame. A microphone sends a
  chunk once it is recorded, so this is ``first_audio`` plus the part of the last chunk after
  the speech (up to one chunk): the delay a person talking to the agent would perceive.
* ``interruption`` (ConvAI only; the relay protocol has no such event): the user's first loud
  sample of a new utterance → the server's ``interruption`` arriving, i.e. barge-in latency
  as the user would perceive it (like ``voice_to_voice``, it includes the microphone's chunk).
* ``stutter``: per agent turn, the total time a player that starts on the turn's first frame
  and plays frames back to back would have run dry waiting for the next frame. The server
  sends ahead of real time (200 ms by default), so a stutter means a frame was that late.
* ``audio_gap``: for every pair of consecutive frames of one turn, how much later the second
  arrived than the end of the first frame's audio (``max(0, …)``), zeros included, so the
  percentiles say how often and how badly frames bunch up (jitter), not only how bad the bad
  pairs are.
* ``send_lateness``: how far past its due time each chunk was sent: whether the load generator
  itself fell behind. Non-zero tails here make every other figure suspect.
* ``close`` (one per session: ok for a normal end, a failure for an unexpected close code or
  lost connection) and ``error_event`` (always a failure).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

METRICS = (
    "signed_url",
    "connect",
    "metadata",
    "ping_rtt",
    "ws_ping_rtt",
    "first_audio",
    "voice_to_voice",
    "interruption",
    "stutter",
    "audio_gap",
    "send_lateness",
)
#: Names that carry session ends and failures (error events, unexpected closes).
FAILURE_NAMES = ("close", "error_event")
#: Measurements that never fail and come by the thousand (per frame, per ping, per turn) or
#: repeat another event; left out of the error rate's denominator so that a flood of samples
#: does not dilute a handful of failed sessions into "0.0 %".
NOT_COUNTED = (
    "ping_rtt",
    "ws_ping_rtt",
    "voice_to_voice",
    "interruption",
    "stutter",
    "audio_gap",
    "send_lateness",
)


@dataclass(frozen=True)
class FrameResult:
    """What one received audio frame resolved."""

    first_audio_ms: list[float]  # speech ends answered by this frame
    gap_ms: float | None  # jitter against the previous frame of the same turn
    stutter_ms: float | None  # total underrun of the turn this frame closed (a newer turn)


@dataclass
class _Playout:
    turn: int
    end: float  # when the queued audio would finish playing
    underrun_s: float = 0.0


@dataclass
class TurnTracker:
    """Per-session state between speech sent and audio received. Times: ``time.monotonic()`` s.

    A speech end waits for the first frame of a turn newer than any turn seen when the speech
    ended, so audio of a reply still playing from the previous utterance (or the greeting) is
    not mistaken for the answer. Turn ids are ConvAI event ids, or any increasing counter.
    """

    timeout_s: float = 10.0
    max_seen_id: int = 0
    pending: list[tuple[float, int]] = field(default_factory=list)
    _last: tuple[int, float, float] | None = None  # turn id, arrival, duration of last frame
    _play: _Playout | None = None
    _speech_start: float | None = None

    def speech_started(self, t: float) -> None:
        self._speech_start = t

    def speech_ended(self, t: float) -> None:
        self.pending.append((t, self.max_seen_id))
        self._speech_start = None

    def audio(self, turn: int, t: float, duration_s: float) -> FrameResult:
        """Record a frame of ``duration_s`` seconds of agent audio that arrived at ``t``."""
        first = [(t - end) * 1000 for end, base in self.pending if turn > base and t >= end]
        self.pending = [(e, b) for e, b in self.pending if not (turn > b and t >= e)]
        gap = None
        if self._last is not None and self._last[0] == turn:
            gap = max(0.0, t - (self._last[1] + self._last[2])) * 1000
        self._last = (turn, t, duration_s)
        self.max_seen_id = max(self.max_seen_id, turn)
        stutter = None
        play = self._play
        if play is not None and play.turn == turn:
            if t > play.end:
                play.underrun_s += t - play.end
                play.end = t
            play.end += duration_s
        else:
            stutter = self.finish_turn()
            self._play = _Playout(turn, t + duration_s)
        return FrameResult(first, gap, stutter)

    def interrupted(self, t: float) -> tuple[float | None, float | None]:
        """The agent was cut off: (barge-in latency ms or None, the cut turn's stutter ms).

        The player flushes its queue, so the turn's next frame (if any) must not count as a
        gap, and its stutter is final.
        """
        self._last = None
        latency = None
        if self._speech_start is not None:
            latency = (t - self._speech_start) * 1000
            self._speech_start = None
        return latency, self.finish_turn()

    def finish_turn(self) -> float | None:
        """Close the turn being played (at a newer turn, a cut or the session end)."""
        play, self._play = self._play, None
        return None if play is None else play.underrun_s * 1000

    def expired(self, now: float) -> list[float]:
        """Speech ends with no reply within ``timeout_s``; removed and returned (ms waited)."""
        late = [(now - e) * 1000 for e, _ in self.pending if now - e > self.timeout_s]
        self.pending = [(e, b) for e, b in self.pending if now - e <= self.timeout_s]
        return late


class RawLog:
    """Append-only JSONL of every measurement, unrounded (locust rounds what it stores).

    One line per value: worker ``w``, user, metric, ``value_ms`` (null for failures), wall time
    ``t``, ``ok``, ``error`` and extra fields (a close's ``code``): the format of the master's
    per-worker logs too (:mod:`sagelab.loadtest.collect`). Lines are written whole under a
    lock, so greenlets of one process never interleave. Used by a standalone locust process
    (``locust -f …/locustfile.py`` without a master, ``SAGELAB_RAW_LOG``); workers send their
    rows to the master instead. The buffer is flushed at least once a second.
    """

    FLUSH_S = 1.0

    def __init__(self, path: str | Path | None, worker: int = 0) -> None:
        self.path = Path(path) if path else None
        self.worker = worker
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        self._flushed = time.monotonic()

    @classmethod
    def from_env(cls) -> RawLog:
        return cls(
            os.environ.get("SAGELAB_RAW_LOG") or None, int(os.environ.get("SAGELAB_WORKER", "0"))
        )

    def write(
        self,
        user: int,
        metric: str,
        value_ms: float | None,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        if self.path is None:
            return
        row: dict[str, Any] = {
            "w": self.worker,
            "user": user,
            "metric": metric,
            "value_ms": None if value_ms is None or not math.isfinite(value_ms) else value_ms,
            "t": time.time(),
            "ok": error is None,
            "error": error,
            **extra,
        }
        line = json.dumps(row) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(line)
            now = time.monotonic()
            if now - self._flushed >= self.FLUSH_S:
                self._fh.flush()
                self._flushed = now

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
