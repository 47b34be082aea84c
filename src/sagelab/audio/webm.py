"""Browser microphone audio: WebM/Opus as ``MediaRecorder`` produces it, both directions.

The relay protocol's browser records with ``MediaRecorder`` (``audio/webm;codecs=opus``,
100 ms timeslices) and sends each chunk as it arrives: the first holds the WebM header, the
rest continue the same stream and cannot be decoded on their own. :func:`encode_webm_opus`
produces such chunks from speech so tests and load tests can act as that browser, and
:class:`IncrementalWebmDecoder` turns them back into 16 kHz PCM16 while the user is still
talking, which is what lets a server start recognising speech before the turn ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import TracebackType

import av
import numpy as np
import numpy.typing as npt
import soxr

from .ebml import AudioBlock, WebmDemuxer, WebmFormatError, read_header
from .io import AudioDecodeError
from .pcm import PCM16, SAMPLE_RATE, ensure_pcm16
from .resample import QUALITY, StreamResampler, resample

OPUS_RATE = 48000
"""Opus always runs at 48 kHz inside WebM; other rates are resampled at the encoder."""

_EBML_HEADER_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067
_CLUSTER_ID = 0x1F43B675


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


def _element(data: bytes, pos: int) -> tuple[int, int, int | None]:
    """(element id, offset of its payload, payload size or None if unknown) at ``pos``."""
    head = read_header(data, pos)
    if head is None:
        raise ValueError(f"EBML: truncated at byte {pos}")
    element_id, size, head_len = head
    return element_id, pos + head_len, size


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
    """The WebM/Opus stream could not be decoded, or its reader fell too far behind."""


AudioCallback = Callable[[PCM16], None]


class _MonoFloat:
    """Decoded frames as one mono float32 signal; Opus decodes to planar float already."""

    def __init__(self) -> None:
        self._to_planar: av.AudioResampler | None = None

    def __call__(self, frame: av.AudioFrame) -> npt.NDArray[np.float32]:
        if frame.format.name != "fltp":  # another decoder build: convert, never misread
            if self._to_planar is None:
                self._to_planar = av.AudioResampler(format="fltp")
            return _join([self(f) for f in self._to_planar.resample(frame)])
        planes = [np.frombuffer(memoryview(p), np.float32, frame.samples) for p in frame.planes]
        return planes[0] if len(planes) == 1 else np.mean(planes, axis=0, dtype=np.float32)


def _float_to_pcm16(x: npt.NDArray[np.float32]) -> PCM16:
    """:func:`~sagelab.audio.pcm.to_int16` (round, clip) in float32 and in place, three times
    cheaper per chunk; without its NaN guard, since decoded audio holds no NaN (one would
    become a click, not an error)."""
    y = x * np.float32(32768.0)
    np.rint(y, out=y)
    np.clip(y, -32768.0, 32767.0, out=y)
    return y.astype(np.int16)


def _join(parts: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class IncrementalWebmDecoder:
    """Decode a WebM/Opus stream chunk by chunk to 16 kHz mono PCM16 as it arrives.

    Everything happens on the caller's thread, inside :meth:`decode` (or :meth:`feed`): a
    push demuxer (:mod:`sagelab.audio.ebml`) cuts out each block the chunk completes, FFmpeg's
    Opus decoder decodes it, and one soxr call per chunk brings it to 16 kHz. A 100 ms
    timeslice costs ~0.15 ms of CPU, so an asyncio server decodes on its event loop. This
    replaced a decoder thread per stream fed through FFmpeg's blocking demuxer, whose thread
    switches, GIL hand-offs and one ``call_soon_threadsafe`` per 20 ms frame cost ~7 times
    as much as the decoding (1.1 % of a core per stream against 0.15 %).

    Latency: the frames of a timeslice arrive together, so decoding them together delays
    nothing; a chunk's audio comes out of the call that delivers it, less what soxr holds
    back for its filter (6-37 ms, 20 ms on average, as with the per-frame thread before).

    Memory is bounded twice: at most ``max_pending_bytes`` of input held for an incomplete
    element (a bigger element fails the stream) and, for :meth:`feed` without ``on_audio``,
    at most ``max_buffered_s`` of unread audio plus the chunk that crossed it (beyond that the
    stream fails, since dropping audio silently would corrupt the conversation). One chunk
    may decode to at most ``max_chunk_s`` of audio: a few bytes of Opus can stand for 120 ms,
    so a frame of tiny packets would otherwise cost minutes of decoding and memory. Errors,
    corrupt input included, are raised as :class:`WebmDecodeError`, and again by every later
    call: a broken stream cannot be resynchronised.
    """

    def __init__(
        self,
        on_audio: AudioCallback | None = None,
        *,
        max_pending_bytes: int = 256 * 1024,
        max_buffered_s: float = 30.0,
        max_chunk_s: float = 10.0,
    ) -> None:
        if max_pending_bytes <= 0 or max_buffered_s <= 0 or max_chunk_s <= 0:
            raise ValueError("max_pending_bytes, max_buffered_s and max_chunk_s must be positive")
        self._max_chunk_s = max_chunk_s
        self._max_chunk = int(max_chunk_s * OPUS_RATE)
        self._chunk_samples = 0
        self._demuxer = WebmDemuxer(max_element_bytes=max_pending_bytes)
        self._on_audio = on_audio
        self._max_buffered = int(max_buffered_s * SAMPLE_RATE)
        self._buffered: list[PCM16] = []
        self._buffered_samples = 0
        self._codec: av.AudioCodecContext | None = None
        self._mono = _MonoFloat()
        self._resampler: soxr.ResampleStream | None = None
        self._blocks = 0
        self._bytes_fed = 0
        self._error: WebmDecodeError | None = None
        self._closed = False

    @property
    def bytes_fed(self) -> int:
        """Input bytes accepted so far."""
        return self._bytes_fed

    @property
    def error(self) -> WebmDecodeError | None:
        """The error that stopped decoding, if any (raised again by every later call)."""
        return self._error

    @property
    def closed(self) -> bool:
        return self._closed

    def decode(self, chunk: bytes | bytearray | memoryview) -> PCM16:
        """The next chunk of the stream in; the 16 kHz audio it completes out (maybe empty)."""
        if self._closed:
            raise RuntimeError("decode() called on a closed IncrementalWebmDecoder")
        self._raise_error()
        self._bytes_fed += len(chunk)
        self._chunk_samples = 0
        try:
            blocks = self._demuxer.feed(chunk)
            return self._resample([self._decode_block(b) for b in blocks], last=False)
        except WebmFormatError as exc:
            raise self._fail(WebmDecodeError(f"invalid WebM/Opus input: {exc}"), exc) from exc
        except WebmDecodeError as exc:
            raise self._fail(exc, exc.__cause__) from exc.__cause__

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """:meth:`decode`, with the audio passed to ``on_audio`` or kept for :meth:`read`."""
        self._emit(self.decode(chunk))

    def read(self) -> PCM16:
        """All audio :meth:`feed` and :meth:`close` produced since the last call.

        Audio decoded before an error is still returned; the error is raised by the call
        after that, once nothing is left to read.
        """
        parts, self._buffered, self._buffered_samples = self._buffered, [], 0
        if not parts:
            self._raise_error()
            return np.zeros(0, dtype=np.int16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def finish(self) -> PCM16:
        """End of input: the audio the resampler still held; closes the decoder.

        A stream that carried bytes but no audio at all (a header alone, or not WebM) is an
        error; one cut in the middle of a block is not, since a recorder stopped mid-send
        loses only that block.
        """
        if self._closed:
            self._raise_error()
            return np.zeros(0, dtype=np.int16)
        self._closed = True
        self._raise_error()
        if self._bytes_fed and not self._blocks:
            detail = (
                "not even a complete header"
                if self._demuxer.track is None
                else "a header without audio"
            )
            error = WebmDecodeError(
                f"WebM input ended after {self._bytes_fed} bytes before any audio could be "
                f"decoded ({detail}); send the recording's clusters, not just its first bytes"
            )
            raise self._fail(error, None)
        return self._resample([], last=True)

    def close(self) -> None:
        """:meth:`finish`, with the last audio passed to ``on_audio`` or kept for :meth:`read`."""
        self._emit(self.finish())

    def abort(self) -> None:
        """Stop now: drop buffered input and audio without reporting an error."""
        self._closed = True
        self._buffered, self._buffered_samples = [], 0
        self._codec = self._resampler = None

    def _decode_block(self, block: AudioBlock) -> npt.NDArray[np.float32]:
        codec = self._codec or self._open_codec()
        parts = []
        for frame_bytes in block.frames:
            try:
                frames = codec.decode(av.Packet(frame_bytes))
            except av.FFmpegError as exc:
                raise WebmDecodeError(
                    f"invalid Opus data after {self._demuxer.position} bytes of WebM: "
                    f"{exc.strerror}"
                ) from exc
            parts += [self._mono(f) for f in frames]
            self._chunk_samples += sum(f.samples for f in frames)
            if self._chunk_samples > self._max_chunk:
                raise WebmDecodeError(
                    f"one chunk of WebM holds more than {self._max_chunk_s:g} s of audio; "
                    "send the recording as it is made (MediaRecorder timeslices of 20-1000 ms)"
                )
        self._blocks += 1
        audio = _join(parts)
        if block.discard_padding_ns:
            trim = round(block.discard_padding_ns * OPUS_RATE / 1e9)
            audio = audio[: max(0, audio.size - trim)]
        return audio

    def _open_codec(self) -> av.AudioCodecContext:
        track = self._demuxer.track
        assert track is not None  # the demuxer returns no block before the Tracks element
        if track.codec_id != "A_OPUS":
            raise WebmDecodeError(
                f"the WebM audio track is {track.codec_id!r}, not Opus: record with "
                "MediaRecorder's mimeType 'audio/webm;codecs=opus'"
            )
        codec = av.CodecContext.create("opus", "r")
        assert isinstance(codec, av.AudioCodecContext)
        # OpusHead: channels and pre-skip, which the decoder drops from the first frames.
        codec.extradata = track.codec_private or None
        self._codec = codec
        self._resampler = soxr.ResampleStream(
            OPUS_RATE, SAMPLE_RATE, 1, dtype="float32", quality=QUALITY
        )
        return codec

    def _resample(self, parts: list[npt.NDArray[np.float32]], *, last: bool) -> PCM16:
        """One soxr call per chunk: per 20 ms frame its overhead would cost more than Opus."""
        if self._resampler is None or (not parts and not last):
            return np.zeros(0, dtype=np.int16)
        return _float_to_pcm16(self._resampler.resample_chunk(_join(parts), last=last))

    def _emit(self, pcm: PCM16) -> None:
        if pcm.size == 0:
            return
        if self._on_audio is not None:
            try:
                self._on_audio(pcm)
            except Exception as exc:
                error = WebmDecodeError(f"the on_audio callback raised {exc!r}")
                raise self._fail(error, exc) from exc
            return
        self._buffered.append(pcm)
        self._buffered_samples += pcm.size
        if self._buffered_samples > self._max_buffered:
            limit = self._max_buffered / SAMPLE_RATE
            raise self._fail(
                WebmDecodeError(
                    f"more than {limit:g} s of decoded audio was not read: call read() as "
                    "audio arrives, or pass on_audio"
                ),
                None,
            )

    def _fail(self, error: WebmDecodeError, cause: BaseException | None) -> WebmDecodeError:
        if self._error is None:
            error.__cause__ = cause
            self._error = error
        return self._error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

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
