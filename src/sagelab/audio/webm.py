"""Browser microphone audio: WebM/Opus as ``MediaRecorder`` produces it, both directions.

The relay protocol's browser records with ``MediaRecorder`` (``audio/webm;codecs=opus``,
100 ms timeslices) and sends each chunk as it arrives: the first holds the WebM header, the
rest continue the same stream and cannot be decoded on their own. :func:`encode_webm_opus`
produces such chunks from speech so tests and load tests can act as that browser, and
:class:`IncrementalWebmDecoder` turns them back into 16 kHz PCM16 while the user is still
talking, which is what lets a server start recognising speech before the turn ends.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref
from collections.abc import Callable
from types import TracebackType

import av
import numpy as np
import numpy.typing as npt

from .io import AudioDecodeError
from .pcm import PCM16, SAMPLE_RATE, ensure_pcm16, to_int16
from .resample import StreamResampler, resample

OPUS_RATE = 48000
"""Opus always runs at 48 kHz inside WebM; other rates are resampled at the encoder."""

_EBML_HEADER_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067
_CLUSTER_ID = 0x1F43B675

_thread_numbers = itertools.count(1)


class _ByteSink:
    """A write-only, non-seekable file for PyAV, so the muxer writes a live stream.

    Without ``seek`` the Matroska muxer cannot go back to patch sizes or add an index,
    which is also true of ``MediaRecorder``: the segment has an unknown size and every
    cluster is final once written.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


def _read_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int, bool]:
    """Decode an EBML variable-length integer: (value, length in bytes, is "unknown size")."""
    if pos >= len(data):
        raise ValueError(f"EBML: truncated at byte {pos}")
    first = data[pos]
    length = 9 - first.bit_length()  # the leading 1 bit marks the length
    if first == 0 or pos + length > len(data):
        raise ValueError(f"EBML: invalid variable-length integer at byte {pos}")
    value = first if keep_marker else first & ((0x80 >> (length - 1)) - 1)
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, length, unknown


def _element(data: bytes, pos: int) -> tuple[int, int, int | None]:
    """(element id, offset of its payload, payload size or None if unknown) at ``pos``."""
    element_id, id_len, _ = _read_vint(data, pos, keep_marker=True)
    size, size_len, unknown = _read_vint(data, pos + id_len, keep_marker=False)
    return element_id, pos + id_len + size_len, None if unknown else size


def _cluster_offsets(webm: bytes) -> list[int]:
    """Byte offsets of the top-level clusters of a WebM file written by FFmpeg."""
    element_id, payload, size = _element(webm, 0)
    if element_id != _EBML_HEADER_ID or size is None:
        raise ValueError("EBML: the stream does not start with an EBML header")
    element_id, pos, size = _element(webm, payload + size)
    if element_id != _SEGMENT_ID:
        raise ValueError("EBML: no Segment after the EBML header")
    end = len(webm) if size is None else min(len(webm), pos + size)
    offsets = []
    while pos < end:
        element_id, payload, size = _element(webm, pos)
        if element_id == _CLUSTER_ID:
            offsets.append(pos)
        if size is None:
            raise ValueError(f"EBML: element {element_id:#x} of unknown size at byte {pos}")
        pos = payload + size
    return offsets


def split_at_clusters(webm: bytes) -> list[bytes]:
    """Cut a live WebM stream the way a ``MediaRecorder`` timeslice delivers it.

    The first chunk is the header plus the first cluster of audio; every further chunk is one
    cluster. Joining the chunks gives back ``webm`` exactly.
    """
    offsets = _cluster_offsets(webm)
    if not offsets:
        return [webm]
    cuts = [0, *offsets[1:], len(webm)]
    return [webm[a:b] for a, b in itertools.pairwise(cuts)]


def encode_webm_opus(
    pcm16k: PCM16, timeslice_ms: int = 100, *, bitrate: int | None = None
) -> list[bytes]:
    """Encode 16 kHz speech as ``audio/webm;codecs=opus`` chunks, like a browser recorder.

    Clusters are limited to ``timeslice_ms`` so each chunk carries one timeslice of audio.
    ``bitrate`` (bit/s) defaults to libopus's own choice.
    """
    pcm = ensure_pcm16(pcm16k, "pcm16k")
    if timeslice_ms <= 0:
        raise ValueError(f"timeslice_ms must be positive, got {timeslice_ms}")
    sink = _ByteSink()
    with av.open(
        sink,
        "w",
        format="webm",
        options={"live": "1", "cluster_time_limit": str(timeslice_ms)},
    ) as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        if bitrate is not None:
            stream.codec_context.bit_rate = bitrate
        if pcm.size:
            samples = resample(pcm, SAMPLE_RATE, OPUS_RATE)
            frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
            frame.sample_rate = OPUS_RATE
            frame.pts = 0
            # PyAV cuts the frame into the 20 ms frames libopus requires.
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return split_at_clusters(b"".join(sink.parts))


class WebmDecodeError(AudioDecodeError):
    """The WebM/Opus stream could not be decoded, or the decoder was overrun."""


AudioCallback = Callable[[PCM16], None]


class _Pipe:
    """The hand-off between the caller's thread and the decoder thread.

    Its ``read`` is the blocking file PyAV demuxes from. It deliberately has no ``seek``,
    ``tell`` or ``close``: PyAV then treats it as a live, non-seekable stream and never
    tries to jump ahead for an index that a recording in progress does not have.
    """

    def __init__(self, max_pending_bytes: int, max_buffered_samples: int) -> None:
        self.cond = threading.Condition()
        self.pending = bytearray()
        self.max_pending_bytes = max_pending_bytes
        self.output: list[PCM16] = []
        self.output_samples = 0
        self.max_buffered_samples = max_buffered_samples
        self.eof = False
        self.aborted = False
        self.error: WebmDecodeError | None = None
        self.bytes_fed = 0
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        """Block until input is available; ``b""`` (end of file) once closed or aborted.

        Returns at most ``size`` bytes: PyAV copies the result into a buffer of that size.
        """
        with self.cond:
            while not self.pending and not self.eof and not self.aborted:
                self.cond.wait()
            if self.aborted:
                return b""
            data = bytes(self.pending[:size])
            del self.pending[:size]
            self.bytes_read += len(data)
            return data

    def put(self, chunk: bytes) -> None:
        with self.cond:
            if len(self.pending) + len(chunk) > self.max_pending_bytes:
                self.fail_locked(
                    WebmDecodeError(
                        f"WebM input backlog exceeded {self.max_pending_bytes} bytes: audio "
                        "arrives faster than it can be decoded and read"
                    )
                )
                return
            self.pending += chunk
            self.bytes_fed += len(chunk)
            self.cond.notify_all()

    def push(self, pcm: PCM16) -> None:
        """Queue decoded audio; wait while the reader is more than the limit behind.

        Waiting stops the decoder, so unread input then piles up in ``pending`` until
        ``put`` refuses it: memory stays bounded and the caller learns why. After end of
        input the remaining audio is bounded by the input backlog, so nobody waits.
        """
        with self.cond:
            while (
                self.output_samples >= self.max_buffered_samples
                and not self.eof
                and not self.aborted
            ):
                self.cond.wait()
            if self.aborted:
                return
            self.output.append(pcm)
            self.output_samples += pcm.size

    def take(self) -> PCM16:
        with self.cond:
            parts, self.output, self.output_samples = self.output, [], 0
            self.cond.notify_all()
        if not parts:
            return np.zeros(0, dtype=np.int16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def fail_locked(self, error: WebmDecodeError) -> None:
        if self.error is None:
            self.error = error
        self.abort_locked()

    def abort_locked(self) -> None:
        self.aborted = True
        self.pending.clear()
        self.cond.notify_all()

    def abort(self) -> None:
        with self.cond:
            self.abort_locked()

    def finish_input(self) -> None:
        with self.cond:
            self.eof = True
            self.cond.notify_all()


def _to_mono_float(frame: av.AudioFrame, to_planar: av.AudioResampler) -> npt.NDArray[np.float32]:
    parts = [p.to_ndarray().mean(axis=0, dtype=np.float32) for p in to_planar.resample(frame)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _decode_loop(pipe: _Pipe, on_audio: AudioCallback | None) -> None:
    """Body of the decoder thread; holds no reference to the decoder object itself."""

    def emit(pcm: PCM16) -> None:
        if pcm.size == 0:
            return
        if on_audio is None:
            pipe.push(pcm)
            return
        try:
            on_audio(pcm)
        except Exception as exc:
            raise WebmDecodeError(f"the on_audio callback raised {exc!r}") from exc

    stage = "opening the WebM stream"
    try:
        # format="webm" skips probing, which would wait for 2 KiB of input before starting.
        with av.open(pipe, "r", format="webm") as container:
            if not container.streams.audio:
                raise WebmDecodeError("the WebM stream has no audio track")
            stream = container.streams.audio[0]
            to_planar = av.AudioResampler(format="fltp")
            resampler: StreamResampler | None = None
            stage = "decoding audio"
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = StreamResampler(frame.sample_rate, SAMPLE_RATE)
                elif frame.sample_rate != resampler.src_rate:
                    raise WebmDecodeError(
                        f"sample rate changed mid-stream from {resampler.src_rate} "
                        f"to {frame.sample_rate} Hz"
                    )
                emit(resampler.process(to_int16(_to_mono_float(frame, to_planar))))
            if resampler is not None:
                emit(resampler.process(np.zeros(0, dtype=np.int16), last=True))
    except Exception as exc:
        with pipe.cond:
            if pipe.aborted:
                return  # a deliberate stop truncates the stream; that is not an error
            if isinstance(exc, WebmDecodeError):
                error = exc
            elif isinstance(exc, av.EOFError) and pipe.bytes_read:
                error = WebmDecodeError(
                    f"WebM input ended after {pipe.bytes_read} bytes before any audio could "
                    "be decoded (a header without audio, or not WebM at all)"
                )
            elif isinstance(exc, av.FFmpegError):
                error = WebmDecodeError(
                    f"invalid WebM/Opus input while {stage} "
                    f"(after {pipe.bytes_read} bytes): {exc.strerror}"
                )
            else:
                error = WebmDecodeError(f"WebM decoder failed while {stage}: {exc!r}")
            error.__cause__ = exc
            pipe.fail_locked(error)


class IncrementalWebmDecoder:
    """Decode a WebM/Opus stream chunk by chunk to 16 kHz mono PCM16 as it arrives.

    ``feed`` only appends to a buffer under a short lock, so an asyncio server can call it
    from the event loop. Decoding runs in a background thread (started by the first
    non-empty chunk) that reads the buffer as a blocking file; FFmpeg's Matroska demuxer
    and Opus decoder do the work. Decoded audio is either buffered for :meth:`read` or, when
    ``on_audio`` is given, passed to it on the decoder thread (wrap it with
    ``loop.call_soon_threadsafe`` to get back to asyncio).

    Memory is bounded twice: at most ``max_pending_bytes`` of undecoded input (beyond that
    ``feed`` fails the stream, since dropping bytes would corrupt it anyway) and at most
    ``max_buffered_s`` of unread audio (beyond that the thread waits for :meth:`read`).
    Errors, including corrupt input, end the thread and are raised as
    :class:`WebmDecodeError` by the next ``feed``, ``read`` or ``close``.
    """

    def __init__(
        self,
        on_audio: AudioCallback | None = None,
        *,
        max_pending_bytes: int = 256 * 1024,
        max_buffered_s: float = 30.0,
    ) -> None:
        if max_pending_bytes <= 0 or max_buffered_s <= 0:
            raise ValueError("max_pending_bytes and max_buffered_s must be positive")
        self._pipe = _Pipe(max_pending_bytes, int(max_buffered_s * SAMPLE_RATE))
        self._on_audio = on_audio
        self._thread: threading.Thread | None = None
        self._closed = False
        # A decoder dropped without close() must not leave its thread blocked forever.
        weakref.finalize(self, self._pipe.abort)

    @property
    def bytes_fed(self) -> int:
        """Input bytes accepted so far."""
        return self._pipe.bytes_fed

    @property
    def running(self) -> bool:
        """True while the decoder thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> WebmDecodeError | None:
        """The error that stopped decoding, if any (also raised by feed/read/close)."""
        return self._pipe.error

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append the next chunk of the WebM stream; never waits for decoding."""
        if self._closed:
            raise RuntimeError("feed() called on a closed IncrementalWebmDecoder")
        self._raise_error()
        if not chunk:
            return
        self._pipe.put(bytes(chunk))
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(
                target=_decode_loop,
                args=(self._pipe, self._on_audio),
                name=f"webm-decoder-{next(_thread_numbers)}",
                daemon=True,
            )
            self._thread.start()

    def read(self) -> PCM16:
        """All audio decoded since the last call (possibly empty); never blocks.

        Audio decoded before an error is still returned; the error is raised by the call
        after that, once nothing is left to read.
        """
        pcm = self._pipe.take()
        if pcm.size == 0:
            self._raise_error()
        return pcm

    def close(self, timeout: float = 5.0) -> None:
        """End the input, let the thread decode what is left, and wait for it to finish.

        Audio decoded at the end remains available from :meth:`read`. If the thread has not
        finished within ``timeout`` seconds it is stopped and WebmDecodeError is raised.
        """
        self._closed = True
        self._pipe.finish_input()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._pipe.cond:
                    self._pipe.fail_locked(
                        WebmDecodeError(f"WebM decoder did not finish within {timeout} s")
                    )
                thread.join(1.0)
        self._raise_error()

    async def aclose(self, timeout: float = 5.0) -> None:
        """:meth:`close` for asyncio: the wait for the thread happens off the event loop."""
        await asyncio.to_thread(self.close, timeout)

    def abort(self) -> None:
        """Stop now: drop pending input and end the thread without reporting an error."""
        self._closed = True
        self._pipe.abort()
        if self._thread is not None:
            self._thread.join(1.0)

    def _raise_error(self) -> None:
        error = self._pipe.error
        if error is not None:
            raise error

    def __enter__(self) -> IncrementalWebmDecoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class WebmOpusStreamEncoder:
    """One continuous ``audio/webm;codecs=opus`` stream, fed in real time like a microphone.

    A browser's ``MediaRecorder`` writes a single WebM stream for the whole session: the
    header once, then a cluster per timeslice. ``encode`` returns whatever bytes the muxer has
    written since the last call (header included the first time), so a client can send each
    timeslice as it is recorded. A small I/O buffer keeps bytes from lingering in PyAV.
    """

    def __init__(self, timeslice_ms: int = 100, *, bitrate: int | None = None) -> None:
        self._sink = _ByteSink()
        self._container = av.open(
            self._sink,
            "w",
            format="webm",
            options={"live": "1", "cluster_time_limit": str(timeslice_ms)},
            buffer_size=512,
        )
        self._stream = self._container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        if bitrate is not None:
            self._stream.codec_context.bit_rate = bitrate
        self._resampler = StreamResampler(SAMPLE_RATE, OPUS_RATE)
        self._pts = 0
        self._closed = False

    def _drain(self) -> bytes:
        data = b"".join(self._sink.parts)
        self._sink.parts.clear()
        return data

    def _mux(self, samples: npt.NDArray[np.int16] | None) -> None:
        if samples is not None and samples.size:
            frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
            frame.sample_rate = OPUS_RATE
            frame.pts = self._pts
            self._pts += samples.size
            packets = self._stream.encode(frame)
        elif samples is None:
            packets = self._stream.encode(None)
        else:
            return
        for packet in packets:
            self._container.mux(packet)

    def encode(self, pcm16k: PCM16) -> bytes:
        """Add 16 kHz speech; returns the stream bytes produced so far (may be empty)."""
        if self._closed:
            raise RuntimeError("the WebM stream is closed")
        pcm = ensure_pcm16(pcm16k, "pcm16k")
        self._mux(self._resampler.process(pcm))
        return self._drain()

    def close(self) -> bytes:
        """End the stream; returns the last bytes (the final cluster)."""
        if self._closed:
            return b""
        self._closed = True
        self._mux(self._resampler.process(np.zeros(0, dtype=np.int16), last=True))
        self._mux(None)
        self._container.close()
        return self._drain()
