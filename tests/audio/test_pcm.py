"""PCM16 conversions: scaling, clipping, byte order, levels and durations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sagelab.audio import (
    SILENCE_DBFS,
    duration_s,
    from_bytes,
    pcm_bytes,
    rms_dbfs,
    silence,
    to_float32,
    to_int16,
)

int16_arrays = arrays(np.int16, st.integers(0, 2000))


def test_to_float32_spans_minus_one_to_just_below_one() -> None:
    x = to_float32(np.array([-32768, 0, 32767], dtype=np.int16))
    assert x.dtype == np.float32
    assert x[0] == -1.0 and x[1] == 0.0 and 0.9999 < x[2] < 1.0


def test_to_int16_clips_overshoot_instead_of_wrapping() -> None:
    x = to_int16(np.array([1.5, -1.5, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf]))
    assert x.dtype == np.int16
    assert x.tolist() == [32767, -32768, 32767, -32768, 16384, 0, 32767, -32768]


@given(int16_arrays)
def test_float_round_trip_is_exact(x: np.ndarray) -> None:
    assert np.array_equal(to_int16(to_float32(x)), x)


@given(int16_arrays)
def test_bytes_round_trip_is_exact(x: np.ndarray) -> None:
    data = pcm_bytes(x)
    assert len(data) == 2 * x.size
    back = from_bytes(data)
    assert back.dtype == np.int16 and np.array_equal(back, x)
    back[:1] = 7  # a new, writable array, not a view of the bytes


def test_pcm_bytes_are_little_endian() -> None:
    assert pcm_bytes(np.array([1, -2], dtype=np.int16)) == b"\x01\x00\xfe\xff"
    assert from_bytes(b"\x01\x00\xfe\xff").tolist() == [1, -2]


@given(st.binary(min_size=1, max_size=501).filter(lambda b: len(b) % 2 == 1))
def test_odd_byte_counts_are_rejected(data: bytes) -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        from_bytes(data)


def test_pcm_bytes_refuses_float_and_multichannel_arrays() -> None:
    with pytest.raises(TypeError, match="int16"):
        pcm_bytes(np.zeros(4, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        pcm_bytes(np.zeros((2, 4), dtype=np.int16))


def test_rms_dbfs_of_known_signals(goforward: np.ndarray) -> None:
    assert rms_dbfs(np.zeros(1600, dtype=np.int16)) == SILENCE_DBFS
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == SILENCE_DBFS
    assert rms_dbfs(np.full(100, -32768, dtype=np.int16)) == pytest.approx(0.0)
    t = np.arange(16000) / 16000
    half_scale_sine = to_int16(0.5 * np.sin(2 * np.pi * 440 * t))
    assert rms_dbfs(half_scale_sine) == pytest.approx(-9.03, abs=0.01)
    assert -45.0 < rms_dbfs(goforward) < -10.0


def test_durations_and_silence() -> None:
    assert duration_s(4000) == 0.25
    assert duration_s(22050, rate=22050) == 1.0
    quiet = silence(250)
    assert quiet.dtype == np.int16 and quiet.size == 4000 and not quiet.any()
    assert silence(20, rate=8000).size == 160
    with pytest.raises(ValueError):
        silence(-1)
