"""Sample-rate conversion with soxr, for the edges where a wire format is not 16 kHz.

soxr "HQ" is a band-limited polyphase resampler: cheap enough to run per chunk for dozens of
sessions, and clean enough that speech recognition does not notice it. The work is done in
float32 and rounded back with clipping by :func:`~sagelab.audio.pcm.to_int16`, so filter
overshoot on full-scale input saturates instead of wrapping around.
"""

from __future__ import annotations

import numpy as np
import soxr

from .pcm import PCM16, ensure_pcm16, to_float32, to_int16

QUALITY = "HQ"


def _check_rate(rate: int, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")


def resample(x: PCM16, src_rate: int, dst_rate: int) -> PCM16:
    """Resample a whole signal at once.

    Equal rates return ``x`` itself, not a copy: converting 16 kHz to 16 kHz is the common
    case and should cost nothing. For a stream cut into chunks use :class:`StreamResampler`,
    since resampling each chunk on its own leaves filter edges at every chunk boundary.
    """
    pcm = ensure_pcm16(x)
    _check_rate(src_rate, "src_rate")
    _check_rate(dst_rate, "dst_rate")
    if src_rate == dst_rate:
        return pcm
    if pcm.size == 0:
        return np.zeros(0, dtype=np.int16)
    return to_int16(soxr.resample(to_float32(pcm), src_rate, dst_rate, quality=QUALITY))


class StreamResampler:
    """Resample a chunked stream so the output is as if the whole signal were resampled once.

    The filter keeps its history between calls, which one-shot resampling of each chunk
    cannot. soxr holds back a few milliseconds of output until it has seen enough of the
    following input; ``process(chunk, last=True)`` releases that tail and ends the stream.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        _check_rate(src_rate, "src_rate")
        _check_rate(dst_rate, "dst_rate")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._finished = False
        self._stream: soxr.ResampleStream | None = None
        if src_rate != dst_rate:
            self._stream = soxr.ResampleStream(
                src_rate, dst_rate, 1, dtype="float32", quality=QUALITY
            )

    @property
    def finished(self) -> bool:
        """True once a chunk was processed with ``last=True``."""
        return self._finished

    def process(self, chunk: PCM16, last: bool = False) -> PCM16:
        """Feed the next chunk and return all output that is ready (possibly empty)."""
        pcm = ensure_pcm16(chunk, "chunk")
        if self._finished:
            raise RuntimeError("StreamResampler.process() called after last=True ended the stream")
        last = bool(last)  # soxr's binding rejects numpy booleans
        self._finished = last
        if self._stream is None:
            return pcm.copy()
        if pcm.size == 0 and not last:
            return np.zeros(0, dtype=np.int16)
        return to_int16(self._stream.resample_chunk(to_float32(pcm), last=last))
