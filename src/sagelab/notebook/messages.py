"""The messages between the widgets' browser views and the kernel, and the kernel's bookkeeping
of what the browser reports: pure functions and small classes, testable without a browser.

Browser → kernel (``model.send``; audio as a binary buffer, never base64):

=============== ===================================================================
``ready``        the widget's model exists in a browser (one per tab showing the notebook)
``mic``          ``seq``, ``rms``, ``peak`` + one buffer of PCM16 LE at 16 kHz (20–100 ms)
``mic_start``    ``context_rate`` (the capture context's rate), ``device`` (its label)
``mic_stop``     ``chunks``: how many the worklet posted
``mic_error``    ``message``: why the microphone could not start
``player``       ``events``: the player's reports (``kind`` start/underrun/end, ``b_ms``);
                 an ``end`` also lists its turn's chunks as the player got them
                 (``arrivals_ms``, ``durations_ms``, ``arrivals_left_off``)
``clock``        ``k`` (the kernel's stamp, echoed) and ``b_ms`` (``performance.now()``)
``action``       ``action``: a panel button (connect, interrupt, end)
=============== ===================================================================

Kernel → browser: ``audio`` (``event_id`` + one PCM16 buffer),
``flush`` (``event_id``: stop everything queued up to that turn), ``clock`` (``k``: the
kernel's ``time.monotonic_ns()`` as a string, since JavaScript numbers lose nanoseconds),
``mic_cmd`` (``cmd``: start or stop).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sagelab.audio import PCM16

SAMPLE_RATE = 16_000
MIN_CHUNK_MS = 20
MAX_CHUNK_MS = 100
# A mic chunk larger than this is not from our worklet (100 ms at 16 kHz is 3,200 bytes).
MAX_MIC_BYTES = 2 * SAMPLE_RATE  # one second

PLAYER_KINDS = {"start": "playback_start", "underrun": "playback_underrun", "end": "playback_end"}
# Chunks an end report lists (player.js keeps the first MAX_ARRIVALS of a turn, counts the rest).
MAX_ARRIVALS = 4000


class WidgetMessageError(ValueError):
    """A message from a view that the kernel cannot use; the text says what was expected."""


def check_chunk_ms(chunk_ms: int) -> int:
    """Microphone chunks of 20–100 ms: shorter ones flood Jupyter's message path (every chunk is
    one widget message, handled only while the kernel is idle); longer ones add their length to
    every turn's latency."""
    if not isinstance(chunk_ms, int) or not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
        raise ValueError(
            f"chunk_ms must be an integer from {MIN_CHUNK_MS} to {MAX_CHUNK_MS} "
            f"(milliseconds of audio per message), got {chunk_ms!r}"
        )
    return chunk_ms


def pcm_from_buffer(buffers: Sequence[Any] | None) -> PCM16:
    """The PCM16 samples of a ``mic`` message's single buffer (copied: the view's memory is
    reused by the widget machinery)."""
    if not buffers:
        raise WidgetMessageError("a mic message needs one binary buffer of PCM16 samples")
    data = bytes(memoryview(buffers[0]).cast("B"))
    if len(data) % 2:
        raise WidgetMessageError(f"mic buffer of {len(data)} bytes: PCM16 needs an even count")
    if len(data) > MAX_MIC_BYTES:
        raise WidgetMessageError(
            f"mic buffer of {len(data)} bytes is over one second of 16 kHz PCM16; "
            "the recorder sends 20-100 ms chunks"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def pcm_to_buffer(pcm: PCM16) -> bytes:
    """Little-endian PCM16 bytes for a view (browsers read Int16Array in the host's order,
    little-endian on every platform they run on)."""
    return np.ascontiguousarray(pcm, dtype="<i2").tobytes()


class ClockSync:
    """Maps the browser's ``performance.now()`` onto the kernel's ``time.monotonic_ns()``.

    The kernel stamps a ``clock`` message when it sends it (k) and when the echo comes back
    (r); the browser stamps it in between (b). With symmetric transit, b ≈ (k + r) / 2, and the
    error is at most half the round trip. The kernel only reads widget messages while it is
    idle, so a busy kernel yields long round trips: the fastest sample is kept.
    """

    def __init__(self) -> None:
        self.offset_ns: float | None = None  # browser ns − kernel ns
        self.rtt_ns: float = math.inf
        self.samples = 0

    def add(self, sent_ns: int, browser_ms: float, received_ns: int) -> None:
        rtt = received_ns - sent_ns
        if rtt < 0:
            raise WidgetMessageError("a clock echo arrived before it was sent")
        self.samples += 1
        if rtt <= self.rtt_ns:
            self.rtt_ns = float(rtt)
            self.offset_ns = browser_ms * 1e6 - (sent_ns + received_ns) / 2

    @property
    def synced(self) -> bool:
        return self.offset_ns is not None

    @property
    def error_bound_ms(self) -> float:
        """The most the mapping can be off by: half the best round trip."""
        return self.rtt_ns / 2e6

    def to_kernel_ns(self, browser_ms: float) -> int | None:
        if self.offset_ns is None:
            return None
        return round(browser_ms * 1e6 - self.offset_ns)


@dataclass(frozen=True)
class PlayerEvent:
    """One report of the browser's player, in the shape ``sagelab.metrics.player_playout`` reads
    (times on the kernel's monotonic clock; ``t_ns`` is None until the clock is synced)."""

    type: str  # playback_start | playback_underrun | playback_end
    event_id: int | None
    t_ns: int | None
    browser_ms: float
    received_ns: int
    data: Mapping[str, Any]

    def record(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "event_id": self.event_id,
            "t_ns": self.t_ns,
            **self.data,
            "browser_ms": self.browser_ms,
            "received_ns": self.received_ns,
        }


_PLAYER_FIELDS = ("gap_ms", "played_ms", "received_ms", "flushed", "rms_max", "at_audio_ms")
_ARRIVAL_FIELDS = ("arrivals_ms", "durations_ms")


def _numbers(raw: Mapping[str, Any], field: str) -> list[float]:
    """A list of finite numbers, at most ``MAX_ARRIVALS`` long, as floats."""
    values = raw[field]
    if not isinstance(values, list):
        raise WidgetMessageError(f"player event field {field} must be a list of numbers")
    if len(values) > MAX_ARRIVALS:
        raise WidgetMessageError(
            f"player event field {field} lists {len(values)} chunks; the player sends at most "
            f"{MAX_ARRIVALS} per turn and counts the rest in arrivals_left_off"
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise WidgetMessageError(
                f"player event field {field} must hold finite numbers (ms), got {v!r}"
            )
        out.append(float(v))
    return out


def _chunk_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The chunk list of an end report, checked: a browser's message is untrusted, and these
    lists feed the playout model (``sagelab.metrics.delivered_chunk_table``)."""
    present = [f for f in _ARRIVAL_FIELDS if f in raw]
    extra = [f for f in ("arrivals_left_off", "interrupted_ms") if f in raw]
    if not present:
        if extra:
            raise WidgetMessageError(f"player event field {extra[0]} needs arrivals_ms")
        return {}
    if raw.get("kind") != "end":
        raise WidgetMessageError("only a player end event lists its turn's chunk arrivals")
    if len(present) != 2:
        raise WidgetMessageError("a player end event needs both arrivals_ms and durations_ms")
    arrivals, durations = _numbers(raw, "arrivals_ms"), _numbers(raw, "durations_ms")
    if len(arrivals) != len(durations):
        raise WidgetMessageError(
            f"player end event lists {len(arrivals)} arrivals but {len(durations)} durations"
        )
    if any(d < 0 for d in durations):
        raise WidgetMessageError("player end event has a negative chunk duration")
    left_off = raw.get("arrivals_left_off", 0)
    if isinstance(left_off, bool) or not isinstance(left_off, int) or left_off < 0:
        raise WidgetMessageError(
            f"player end event's arrivals_left_off must be a count (integer >= 0), got {left_off!r}"
        )
    out: dict[str, Any] = {
        "arrivals_ms": arrivals,
        "durations_ms": durations,
        "arrivals_left_off": left_off,
    }
    cut = raw.get("interrupted_ms")
    if cut is not None:
        if isinstance(cut, bool) or not isinstance(cut, int | float) or not math.isfinite(cut):
            raise WidgetMessageError(
                f"player end event's interrupted_ms must be a finite number, got {cut!r}"
            )
        out["interrupted_ms"] = float(cut)
    return out


def parse_player_events(
    content: Mapping[str, Any], clock: ClockSync, received_ns: int | None = None
) -> list[PlayerEvent]:
    """The ``events`` of a ``player`` message, put on the kernel's clock."""
    events = content.get("events")
    if not isinstance(events, list):
        raise WidgetMessageError("a player message needs a list of events")
    received = received_ns if received_ns is not None else time.monotonic_ns()
    out = []
    for raw in events:
        if not isinstance(raw, Mapping) or raw.get("kind") not in PLAYER_KINDS:
            raise WidgetMessageError(
                f"player event {raw!r} has no kind of {', '.join(PLAYER_KINDS)}"
            )
        b_ms = raw.get("b_ms")
        if not isinstance(b_ms, int | float):
            raise WidgetMessageError(f"player event {raw!r} needs b_ms (performance.now())")
        event_id = raw.get("event_id")
        data = {k: raw[k] for k in _PLAYER_FIELDS if k in raw} | _chunk_fields(raw)
        out.append(
            PlayerEvent(
                type=PLAYER_KINDS[raw["kind"]],
                event_id=int(event_id) if isinstance(event_id, int | float) else None,
                t_ns=clock.to_kernel_ns(float(b_ms)),
                browser_ms=float(b_ms),
                received_ns=received,
                data=data,
            )
        )
    return out
