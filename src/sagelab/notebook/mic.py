"""``MicRecorder``: the browser's microphone as 16 kHz PCM16 chunks in the kernel.

The view captures with ``getUserMedia`` into an AudioWorklet that resamples to 16 kHz where the
browser cannot open a 16 kHz context, and sends one binary message per 20–100 ms chunk. Here the
chunks are collected (``audio()``) and handed to callbacks (``on_chunk``), e.g. to stream them
into a ``Session``. Remember that the kernel reads widget messages only while it is idle: a cell
that blocks (``time.sleep``, a long computation) holds the chunks back until it finishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anywidget
import numpy as np
import traitlets

from sagelab.audio import PCM16, speech_bounds
from sagelab.notebook.assets import bundle, css
from sagelab.notebook.messages import (
    SAMPLE_RATE,
    WidgetMessageError,
    check_chunk_ms,
    pcm_from_buffer,
)

ChunkCallback = Callable[[PCM16], None]


@dataclass
class MicInput:
    """The kernel side of a microphone view: chunks in order, gaps counted, levels kept.

    Shared by ``MicRecorder`` and ``ConversationPanel``; ``handle`` takes a view's message and
    says whether it was a microphone message.
    """

    on_chunk: ChunkCallback | None = None
    on_start: Callable[[], None] | None = None
    on_stop: Callable[[], None] | None = None
    chunks: list[PCM16] = field(default_factory=list)
    recording: bool = False
    context_rate: int = 0
    device: str = ""
    error: str = ""
    missing_chunks: int = 0  # sequence numbers that never arrived
    level_rms: float = 0.0
    chunk_times_ns: list[int] = field(default_factory=list)
    _next_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, content: Mapping[str, Any], buffers: Sequence[Any] | None) -> bool:
        kind = content.get("type")
        if kind == "mic":
            self._chunk(content, buffers)
        elif kind == "mic_start":
            with self._lock:
                self.recording = True
                self.error = ""
                self._next_seq = 0
                self.context_rate = int(content.get("context_rate") or 0)
                self.device = str(content.get("device") or "")
            if self.on_start:
                self.on_start()
        elif kind == "mic_stop":
            with self._lock:
                self.recording = False
                self.level_rms = 0.0
            if self.on_stop:
                self.on_stop()
        elif kind == "mic_error":
            with self._lock:
                self.recording = False
                self.error = str(content.get("message") or "the microphone failed")
        else:
            return False
        return True

    def _chunk(self, content: Mapping[str, Any], buffers: Sequence[Any] | None) -> None:
        pcm = pcm_from_buffer(buffers)
        seq = content.get("seq")
        with self._lock:
            if isinstance(seq, int):
                if seq > self._next_seq:
                    self.missing_chunks += seq - self._next_seq
                self._next_seq = seq + 1
            self.chunks.append(pcm)
            self.chunk_times_ns.append(time.monotonic_ns())
            rms = content.get("rms")
            self.level_rms = float(rms) if isinstance(rms, int | float) else 0.0
        if self.on_chunk:
            self.on_chunk(pcm)

    def audio(self) -> PCM16:
        with self._lock:
            return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)

    def clear(self) -> None:
        with self._lock:
            self.chunks.clear()
            self.chunk_times_ns.clear()
            self.missing_chunks = 0


class SpeechSegmenter:
    """Cuts a live stream into utterances by energy, to mark where the user's speech started
    and ended in what was sent: the start point of voice-to-voice latency (the ``user_speech``
    timeline marker that ``sagelab.metrics.turn_table`` reads).

    The threshold is ``speech_bounds``'s -40 dBFS, the same rule recordings are measured with;
    an utterance ends after ``end_silence_ms`` without a loud frame, shorter than any agent's
    end-of-turn wait so the marker exists before the transcript arrives.
    """

    def __init__(self, threshold_dbfs: float = -40.0, end_silence_ms: int = 250) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.end_silence_ns = end_silence_ms * 1_000_000
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.last_chunk_ns: int | None = None

    @property
    def speaking(self) -> bool:
        return self.start_ns is not None

    def feed(self, pcm: PCM16, sent_ns: int) -> tuple[int, int] | None:
        """Feed one chunk and the time it was sent; returns (speech start, end) when an
        utterance has just ended. Times are the send times of the chunks holding the first
        and the last loud sample, as ``SentAudio`` reports them for recordings."""
        self.last_chunk_ns = sent_ns
        bounds = speech_bounds(pcm, threshold_dbfs=self.threshold_dbfs)
        if bounds is not None:
            if self.start_ns is None:
                self.start_ns = sent_ns
            self.end_ns = sent_ns
            return None
        if self.end_ns is not None and sent_ns - self.end_ns >= self.end_silence_ns:
            return self.finish()
        return None

    def finish(self) -> tuple[int, int] | None:
        """End the current utterance (the microphone stopped); None if there is none."""
        if self.start_ns is None or self.end_ns is None:
            return None
        done = (self.start_ns, self.end_ns)
        self.start_ns = self.end_ns = None
        return done


class MicRecorder(anywidget.AnyWidget):
    """A microphone in the notebook: start/stop, a level meter and a device choice.

    >>> mic = MicRecorder(chunk_ms=50)
    >>> mic.on_chunk(lambda pcm: print(len(pcm)))   # 800 samples every 50 ms
    >>> mic                                           # shows the widget; press Record
    >>> pcm = mic.audio()                             # everything recorded, 16 kHz PCM16

    ``start()`` and ``stop()`` do what the buttons do, from Python (they need a rendered view).
    ``force_native_rate=True`` captures at the device's rate and resamples in the worklet, as
    browsers that refuse 16 kHz capture do.
    """

    _esm = bundle("ui.js", "hub.js", "mic.js", "mic_view.js")
    _css = css()

    chunk_ms = traitlets.Int(100).tag(sync=True)
    device_id = traitlets.Unicode("").tag(sync=True)
    force_native_rate = traitlets.Bool(False).tag(sync=True)

    def __init__(self, chunk_ms: int = 100, *, force_native_rate: bool = False) -> None:
        super().__init__(chunk_ms=check_chunk_ms(chunk_ms), force_native_rate=force_native_rate)
        self.input = MicInput(on_chunk=self._dispatch)
        self._callbacks: list[ChunkCallback] = []
        self.on_msg(self._on_view_message)

    @traitlets.validate("chunk_ms")
    def _check_chunk_ms(self, proposal: Any) -> int:
        return check_chunk_ms(proposal["value"])

    def on_chunk(self, callback: ChunkCallback, *, remove: bool = False) -> None:
        """Call ``callback(pcm)`` with every chunk as it arrives (on the kernel's main thread)."""
        if remove:
            self._callbacks.remove(callback)
        else:
            self._callbacks.append(callback)

    def _dispatch(self, pcm: PCM16) -> None:
        for callback in list(self._callbacks):
            callback(pcm)

    def _on_view_message(self, _: Any, content: Any, buffers: Sequence[Any]) -> None:
        if not isinstance(content, dict):
            return
        try:
            self.input.handle(content, buffers)
        except WidgetMessageError as exc:
            self.input.error = str(exc)

    def start(self) -> None:
        """Ask the view to start recording (the browser may ask the user for permission)."""
        self.send({"type": "mic_cmd", "cmd": "start"})

    def stop(self) -> None:
        self.send({"type": "mic_cmd", "cmd": "stop"})

    def audio(self) -> PCM16:
        """Everything recorded so far, as one 16 kHz PCM16 array."""
        return self.input.audio()

    def clear(self) -> None:
        self.input.clear()

    @property
    def recording(self) -> bool:
        return self.input.recording

    @property
    def duration_s(self) -> float:
        return sum(c.size for c in self.input.chunks) / SAMPLE_RATE

    @property
    def error(self) -> str:
        """Why the microphone could not start (permission denied, no device, not https)."""
        return self.input.error
