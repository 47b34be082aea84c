"""PCM16 arrays: the one in-memory audio representation inside sagelab.

Everything between the edges is a 1-D ``int16`` array of mono samples at 16 kHz. Keeping to
one representation means no function has to guess a dtype, a scale or a channel layout; the
helpers here are the only places that cross between int16, float and bytes.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

PCM16: TypeAlias = npt.NDArray[np.int16]
"""Mono signed 16-bit samples; 16 kHz unless the name of the variable says otherwise."""

SAMPLE_RATE = 16000
"""The rate of all audio inside sagelab."""

SILENCE_DBFS = -120.0
"""What :func:`rms_dbfs` reports for digital silence, so callers never meet ``-inf``."""

_FULL_SCALE = 32768.0


def ensure_pcm16(x: Any, name: str = "audio") -> PCM16:
    """Return ``x`` if it is a 1-D int16 array, or fail loudly.

    Silently casting a float array would turn a [-1, 1) signal into near-silence, and
    flattening a 2-D array would interleave channels, so both are refused here instead.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy int16 array, got {type(x).__name__}")
    if x.dtype != np.int16:
        raise TypeError(f"{name} must be int16 PCM, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (mono), got shape {x.shape}")
    return x


def to_float32(x: PCM16) -> npt.NDArray[np.float32]:
    """Scale int16 to float32 in [-1, 1), the form DSP libraries and models expect."""
    return ensure_pcm16(x).astype(np.float32) / np.float32(_FULL_SCALE)


def to_int16(x: npt.ArrayLike) -> PCM16:
    """Round float samples in [-1, 1) to int16, clipping instead of wrapping around.

    Resampling and mixing overshoot full scale; a plain cast would wrap +1.01 to a large
    negative value, a loud click. NaN becomes 0 for the same reason.
    """
    samples = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint(samples * _FULL_SCALE), -32768, 32767).astype(np.int16)


def pcm_bytes(x: PCM16) -> bytes:
    """Little-endian bytes, as every wire format in the protocols specifies."""
    return ensure_pcm16(x).astype("<i2", copy=False).tobytes()


def from_bytes(data: bytes | bytearray | memoryview) -> PCM16:
    """Parse little-endian PCM16 bytes into a new, writable array.

    An odd byte count means the sender split a sample or sent something that is not
    PCM16; dropping the stray byte would shift every later sample, so it is an error.
    """
    raw = bytes(data)
    if len(raw) % 2:
        raise ValueError(
            f"PCM16 data must have an even number of bytes (2 per sample), got {len(raw)}"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def rms_dbfs(x: PCM16) -> float:
    """RMS level relative to full scale, floored at :data:`SILENCE_DBFS` for silence."""
    pcm = ensure_pcm16(x)
    if pcm.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * float(np.log10(rms / _FULL_SCALE)))


def ms_to_samples(ms: float, rate: int = SAMPLE_RATE) -> int:
    """Whole samples in ``ms`` milliseconds, rounded to the nearest sample."""
    if ms < 0:
        raise ValueError(f"duration must not be negative, got {ms} ms")
    return round(rate * ms / 1000)


def duration_s(n_samples: int, rate: int = SAMPLE_RATE) -> float:
    """Seconds spanned by ``n_samples`` at ``rate``."""
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    return n_samples / rate


def silence(ms: float, rate: int = SAMPLE_RATE) -> PCM16:
    """Digital silence, e.g. the trailing pause a microphone keeps sending after speech."""
    return np.zeros(ms_to_samples(ms, rate), dtype=np.int16)
