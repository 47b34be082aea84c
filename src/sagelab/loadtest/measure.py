"""What one load-test user sends and how it turns received frames into measurements.

Kept free of locust, gevent and sockets so the arithmetic (which chunk ends the speech, when a
turn is "new", what counts as a stutter) is unit-tested without a server, and so the locustfile
stays a thin I/O shell around it.

Metric names (locust request names, raw-log ``metric`` values):

* ``connect``: TCP + WebSocket handshake.
* ``metadata``: connect start → ``conversation_initiation_metadata``.
* ``ping_rtt``: the server's ``ping_ms`` (its previous ping → our pong), as ElevenLabs reports it.
* ``first_audio``: end of speech in the audio actually sent → first audio frame of an agent turn
  newer than every turn seen at that moment (includes the agent's end-of-turn silence window).
* ``audio_gap``: for each pair of consecutive audio frames of one turn, how much later the
  second frame arrived than the end of the first frame's audio (``max(0, …)``). Reported for
  *every* pair, zeros included: then n is the number of frame pairs and p95/p99 say how often
  and how badly a listener would hear a stutter; reporting only gaps > 0 would make the
  percentiles describe the bad pairs alone and hide how rare they are. The server sends with a
  lead (200 ms by default), so its first frames arrive early and count as 0.
* ``send_lateness``: how far past its due time each chunk was sent, i.e. whether the load
  generator itself fell behind; non-zero values here invalidate the latency figures.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from sagelab.audio import SAMPLE_RATE, load_audio, pcm_bytes, silence, speech_bounds

METRICS = ("connect", "metadata", "ping_rtt", "first_audio", "audio_gap", "send_lateness")
#: Names that only ever carry failures (error events, unexpected closes).
FAILURE_NAMES = ("error_event", "close")
#: Per-frame measurements that never fail; excluded from the error rate's denominator so that
#: thousands of audio frames do not dilute a handful of failed sessions into "0.0 %".
PER_FRAME = ("audio_gap", "send_lateness")


def ws_url(host: str, agent_id: str, path: str = "/v1/convai/conversation") -> str:
    """``http://h:p[/prefix]`` → ``ws://h:p[/prefix]/v1/convai/conversation?agent_id=…``.

    Mirrors the SDK's ``build_ws_url`` (scheme swapped, path prefix kept) so a load test
    reaches the same endpoint the official client would for the same ``--host``.
    """
    parts = urlsplit(host)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    base = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, base + path, urlencode({"agent_id": agent_id}), ""))


def bytes_per_second(audio_format: str | None) -> int:
    """Bytes per second of agent audio for an announced format (``pcm_16000``, ``ulaw_8000``)."""
    kind, _, rate = (audio_format or "pcm_16000").partition("_")
    return int(rate or SAMPLE_RATE) * (1 if kind == "ulaw" else 2)


@dataclass(frozen=True)
class MicLoop:
    """One cycle of a microphone that never stops: an utterance, then silence, as wire messages.

    The cycle is padded to whole chunks so it can repeat forever on one absolute schedule;
    ``speech_end_chunk`` is the chunk holding the last loud sample (a recording's trailing room
    tone is not speech), whose send time is the start of ``first_audio``.
    """

    messages: tuple[str, ...]
    chunk_s: float
    speech_end_chunk: int

    @classmethod
    def from_file(cls, path: str | Path, *, gap_ms: int = 2500, chunk_ms: int = 100) -> MicLoop:
        speech = load_audio(path)
        bounds = speech_bounds(speech)
        end = bounds[1] if bounds else speech.size
        chunk = SAMPLE_RATE * chunk_ms // 1000
        cycle = np.concatenate([speech, silence(gap_ms)])
        pad = (-cycle.size) % chunk
        cycle = np.concatenate([cycle, np.zeros(pad, dtype=np.int16)])
        messages = tuple(
            json.dumps({"user_audio_chunk": b64encode(pcm_bytes(cycle[i : i + chunk])).decode()})
            for i in range(0, cycle.size, chunk)
        )
        return cls(messages, chunk_ms / 1000, max(0, end - 1) // chunk)


@dataclass
class TurnTracker:
    """Turns received audio frames and sent speech ends into ``first_audio`` and ``audio_gap``.

    A speech end waits for the first frame of a turn newer than any turn seen when the speech
    ended, so audio of the reply still playing from the previous utterance (or the greeting) is
    not mistaken for the answer. Times are ``time.monotonic()`` seconds.
    """

    timeout_s: float = 10.0
    max_seen_id: int = 0
    pending: list[tuple[float, int]] = field(default_factory=list)
    _last: tuple[int, float, float] | None = None  # event id, arrival, duration of last frame

    def speech_ended(self, t: float) -> None:
        self.pending.append((t, self.max_seen_id))

    def audio(self, event_id: int, t: float, duration_s: float) -> tuple[list[float], float | None]:
        """Record a frame; return (first_audio ms resolved by it, audio_gap ms or None)."""
        first = [(t - end) * 1000 for end, base in self.pending if event_id > base and t >= end]
        self.pending = [(e, b) for e, b in self.pending if not (event_id > b and t >= e)]
        gap = None
        if self._last is not None and self._last[0] == event_id:
            gap = max(0.0, t - (self._last[1] + self._last[2])) * 1000
        self._last = (event_id, t, duration_s)
        self.max_seen_id = max(self.max_seen_id, event_id)
        return first, gap

    def interrupted(self) -> None:
        """The turn was cut off: its next frame (if any) must not count as a gap."""
        self._last = None

    def expired(self, now: float) -> list[float]:
        """Speech ends with no reply within ``timeout_s``; removed and returned (ms waited)."""
        late = [(now - e) * 1000 for e, _ in self.pending if now - e > self.timeout_s]
        self.pending = [(e, b) for e, b in self.pending if now - e <= self.timeout_s]
        return late


class RawLog:
    """Append-only JSONL of every measurement, unrounded (locust rounds what it stores).

    One line per value: user id, metric, ``value_ms`` (null for failures), wall time ``t``,
    ``ok`` and ``error``. Writes are whole lines under a lock, so greenlets or threads of one
    process never interleave; several locust worker processes need one file each.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> RawLog:
        return cls(os.environ.get("SAGELAB_RAW_LOG") or None)

    def write(
        self, user: int, metric: str, value_ms: float | None, error: str | None = None
    ) -> None:
        if self.path is None:
            return
        row: dict[str, Any] = {
            "user": user,
            "metric": metric,
            "value_ms": None if value_ms is None or not math.isfinite(value_ms) else value_ms,
            "t": time.time(),
            "ok": error is None,
            "error": error,
        }
        line = json.dumps(row) + "\n"
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", buffering=1, encoding="utf-8")
            self._fh.write(line)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
