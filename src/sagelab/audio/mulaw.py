"""G.711 μ-law, the ``ulaw_8000`` wire format (telephony), vectorised with numpy.

This is the classic ITU-T G.711 algorithm for 16-bit input (bias 0x84, clip 32635), as in
the reference C code most telephony stacks carry. It is written out here rather than routed
through a codec library because it is a few lines, runs on whole arrays at once and has no
per-call setup cost. Decoding matches FFmpeg's ``pcm_mulaw`` bit for bit. Encoding matches
it on 98.7 % of all int16 values; on the rest, which sit on a decision boundary, FFmpeg picks
the neighbouring level because its table floors samples to 14 bits first (negative samples
round away from zero). Quiet speech meets those boundaries more often, about one sample in
eight; the two choices are always the levels either side of the input, and the SNR on
speech is the same (36.8 dB against FFmpeg's 36.7 dB on ``goforward.wav``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .pcm import PCM16, ensure_pcm16

_BIAS = 0x84
_CLIP = 32635


def _linear_to_ulaw(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """The G.711 encoder: sign, 3-bit segment (exponent) and 4-bit step, all inverted."""
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS  # in [0x84, 0x7FFF]
    exponent = _EXPONENT_OF_HIGH_BYTE[magnitude >> 7]
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    codes: npt.NDArray[np.int32] = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return codes.astype(np.uint8)


def _ulaw_to_linear(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    """The G.711 decoder: the middle of the step each code stands for."""
    inverted = ~codes & 0xFF
    exponent = (inverted >> 4) & 0x07
    magnitude = (((inverted & 0x0F) << 3) + _BIAS) << exponent
    return np.where(inverted & 0x80, _BIAS - magnitude, magnitude - _BIAS).astype(np.int16)


# The segment is the position of the highest set bit of (magnitude >> 7), 0 for 0 and 1.
_EXPONENT_OF_HIGH_BYTE = np.maximum(
    np.floor(np.log2(np.maximum(np.arange(256), 1))).astype(np.int32), 0
)
# Both directions have small domains, so tables built once from the formulas turn every later
# call into a single indexing operation.
_ENCODE_TABLE = _linear_to_ulaw(np.arange(-32768, 32768, dtype=np.int32))
_DECODE_TABLE = _ulaw_to_linear(np.arange(256, dtype=np.int32))


def encode(pcm: PCM16) -> bytes:
    """Encode int16 samples (at any rate) to one μ-law byte per sample."""
    samples = ensure_pcm16(pcm)
    return _ENCODE_TABLE[samples.astype(np.int32) + 32768].tobytes()


def decode(data: bytes | bytearray | memoryview) -> PCM16:
    """Decode μ-law bytes to int16 samples at the same rate."""
    codes = np.frombuffer(bytes(data), dtype=np.uint8)
    return _DECODE_TABLE[codes]
