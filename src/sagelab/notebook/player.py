"""``AudioPlayer``: the agent's audio played in the browser, and what the listener heard.

Chunks go to the view as binary messages; the view schedules them with the Web Audio API behind
a jitter buffer (the playout rule of ``sagelab.metrics.stutter``) and reports back when a turn
started playing, every underrun (when it ran dry and for how long) and how much it played. Those
reports land on the kernel's monotonic clock (``ClockSync``), so stutter is measured where the
user hears it and compared with the model run on the network arrival times of the same chunks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import anywidget
import numpy as np
import traitlets

from sagelab.audio import PCM16, load_audio
from sagelab.notebook.assets import bundle, css
from sagelab.notebook.messages import (
    SAMPLE_RATE,
    ClockSync,
    PlayerEvent,
    WidgetMessageError,
    parse_player_events,
    pcm_to_buffer,
)

Send = Callable[[dict[str, Any], list[bytes]], None]


class PlayerOutput:
    """The kernel side of a player, shared by ``AudioPlayer`` and ``ConversationPanel``.

    Audio is sent at once: the browser's player belongs to the widget model (created with the
    widget, before any view renders), so nothing waits for a ``ready`` that a busy kernel would
    only read once its cell finishes. With no browser attached (a headless run) the messages
    simply go nowhere.

    The player's reports carry browser times; they are put on the kernel's clock with
    ``ClockSync``. A report that arrives before a good clock sample (a round trip under
    ``GOOD_RTT_MS``) waits, and ``on_event`` sees it once it can be placed. Safe to use from
    any thread: the session's loop thread sends audio while the kernel's main thread handles
    the view's messages.
    """

    GOOD_RTT_MS = 100.0

    def __init__(
        self,
        send: Send,
        *,
        on_event: Callable[[PlayerEvent], None] | None = None,
    ) -> None:
        self._send = send
        self.on_event = on_event
        self.frontends_ready = 0  # models that said "ready" (one per browser tab)
        self.clock = ClockSync()
        self.events: list[PlayerEvent] = []
        self.sent_chunks = 0
        self.sent_s = 0.0
        self._pending: list[PlayerEvent] = []
        self._pending_clock: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- from the browser --------------------------------------------------------------------

    def handle(self, content: Mapping[str, Any], buffers: Sequence[Any] | None = None) -> bool:
        kind = content.get("type")
        if kind == "ready":
            with self._lock:
                self.frontends_ready += 1
            for _ in range(3):
                self.ping_clock()
        elif kind == "clock":
            self._clock_echo(content)
        elif kind == "player":
            with self._lock:
                self._pending += parse_player_events(content, self.clock)
            self._release()
        else:
            return False
        return True

    def ping_clock(self) -> None:
        """Start a clock round trip (the browser echoes it at once; the kernel reads the echo
        when it is idle, so pings sent while a cell runs give slow samples that are ignored)."""
        with self._lock:
            k = time.monotonic_ns()
            self._pending_clock[str(k)] = k
            while len(self._pending_clock) > 64:  # echoes that never came (no browser)
                self._pending_clock.pop(next(iter(self._pending_clock)))
            self._send({"type": "clock", "k": str(k)}, [])

    def _clock_echo(self, content: Mapping[str, Any]) -> None:
        received = time.monotonic_ns()
        b_ms = content.get("b_ms")
        if not isinstance(b_ms, int | float):
            raise WidgetMessageError(f"clock echo {dict(content)!r} needs b_ms")
        with self._lock:
            k = self._pending_clock.pop(str(content.get("k")), None)
            if k is not None:  # else a second browser tab echoing the same ping
                self.clock.add(k, float(b_ms), received)
        self._release()

    @property
    def clock_good(self) -> bool:
        return self.clock.synced and self.clock.rtt_ns <= self.GOOD_RTT_MS * 1e6

    def _release(self, force: bool = False) -> None:
        """Hand reports on to ``events`` / ``on_event`` once they can be put on the clock."""
        with self._lock:
            if not (self._pending and (force or self.clock_good)):
                return
            ready = [replace(e, t_ns=self.clock.to_kernel_ns(e.browser_ms)) for e in self._pending]
            self._pending.clear()
            self.events += ready
        if self.on_event:
            for event in ready:
                self.on_event(event)

    def release_pending(self) -> None:
        """Place waiting reports with the best clock sample there is (at the end of a session)."""
        self._release(force=True)

    # -- to the browser ----------------------------------------------------------------------

    def audio(self, pcm: PCM16, event_id: int = 0) -> None:
        """Send one chunk of 16 kHz PCM16 for playback as part of turn ``event_id``."""
        if pcm.size == 0:
            return
        with self._lock:
            self._send({"type": "audio", "event_id": event_id}, [pcm_to_buffer(pcm)])
            self.sent_chunks += 1
            self.sent_s += pcm.size / SAMPLE_RATE

    def flush(self, event_id: int | None = None) -> None:
        """Stop what is queued for turns up to ``event_id`` (all turns when None), at once."""
        with self._lock:
            self._send({"type": "flush", "event_id": event_id}, [])

    # -- what the listener heard -------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """The reports as ``sagelab.metrics.player_playout`` reads them, on the kernel's clock
        (re-mapped with the best clock sample so far; ``t_ns`` None before any)."""
        with self._lock:
            events = self.events + self._pending
        rows = []
        for e in events:
            row = e.record()
            row["t_ns"] = self.clock.to_kernel_ns(e.browser_ms)
            rows.append(row)
        return rows

    def report(self) -> dict[str, Any]:
        """Totals: what was sent to the browser, played, and the underruns heard."""
        rows = self.records()
        ends: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r["type"] == "playback_end":
                ends[r["event_id"]] = r  # the last end of a turn has its full count
        underruns = [r for r in rows if r["type"] == "playback_underrun"]
        return {
            "turns_started": len({r["event_id"] for r in rows if r["type"] == "playback_start"}),
            "sent_s": round(self.sent_s, 3),
            "played_s": round(sum(float(r.get("played_ms", 0)) for r in ends.values()) / 1000, 3),
            "underruns": len(underruns),
            "underrun_gap_ms": round(sum(float(r["gap_ms"]) for r in underruns), 1),
            "flushed_turns": sum(1 for r in ends.values() if r.get("flushed")),
            "clock_error_ms": round(self.clock.error_bound_ms, 2) if self.clock.synced else None,
        }


class AudioPlayer(anywidget.AnyWidget):
    """Plays 16 kHz PCM16 in the browser behind a jitter buffer and reports what was heard.

    >>> player = AudioPlayer(jitter_ms=100)
    >>> player                                  # shows it (audio plays even without a view)
    >>> player.play("data/demo/user/01_search.wav")
    >>> player.report()                         # played_s, underruns, ...
    >>> sagelab.metrics.player_playout(player.events)

    ``stream(pcm, event_id)`` queues one chunk of a turn (as a voice client receives them);
    ``flush()`` stops playback at once (an interruption).
    """

    _esm = bundle("ui.js", "hub.js", "player.js", "player_view.js")
    _css = css()

    jitter_ms = traitlets.Int(100).tag(sync=True)

    def __init__(self, jitter_ms: int = 100) -> None:
        if not 0 <= jitter_ms <= 2000:
            raise ValueError(f"jitter_ms must be 0 to 2000 (ms of buffering), got {jitter_ms}")
        super().__init__(jitter_ms=jitter_ms)
        self.output = PlayerOutput(lambda c, b: self.send(c, b))
        self._turn = 0
        self.on_msg(self._on_view_message)

    def _on_view_message(self, _: Any, content: Any, buffers: Sequence[Any]) -> None:
        if isinstance(content, dict):
            try:
                self.output.handle(content, buffers)
            except WidgetMessageError as exc:
                self.log.warning("sagelab AudioPlayer: %s", exc)

    def play(self, audio: PCM16 | str | Any, *, chunk_ms: int = 100) -> int:
        """Play a whole clip (array or audio file) as a new turn; returns its turn number."""
        pcm = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        self.output.ping_clock()
        self._turn += 1
        step = SAMPLE_RATE * chunk_ms // 1000
        for start in range(0, pcm.size, step):
            self.output.audio(pcm[start : start + step], self._turn)
        return self._turn

    def stream(self, pcm: PCM16, event_id: int) -> None:
        """Queue one chunk of turn ``event_id`` (chunks of one turn play back to back)."""
        self._turn = max(self._turn, event_id)
        self.output.audio(pcm, event_id)

    def flush(self, event_id: int | None = None) -> None:
        self.output.flush(event_id)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The player's reports, one dict each (``playback_start`` / ``playback_underrun`` /
        ``playback_end``, ``t_ns`` on the kernel's clock): a DataFrame's records."""
        return self.output.records()

    def report(self) -> dict[str, Any]:
        return self.output.report()
