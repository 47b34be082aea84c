"""soxr resampling: lengths, frequency content, clipping and chunked streams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.audio import StreamResampler, resample, rms_dbfs, to_int16

RATES = [8000, 16000, 22050, 24000, 44100, 48000]


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return to_int16(amplitude * np.sin(2 * np.pi * freq * t))


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


def test_equal_rates_return_the_input_itself(goforward: np.ndarray) -> None:
    assert resample(goforward, 16000, 16000) is goforward


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5000), st.sampled_from(RATES), st.sampled_from(RATES))
def test_output_length_follows_the_rate_ratio(n: int, src: int, dst: int) -> None:
    x = np.random.default_rng(n).integers(-8000, 8000, n).astype(np.int16)
    y = resample(x, src, dst)
    assert y.dtype == np.int16
    assert abs(y.size - n * dst / src) <= 1


@pytest.mark.parametrize("dst", [8000, 22050, 48000])
def test_a_tone_keeps_its_pitch_and_level(dst: int) -> None:
    x = tone(440.0, 16000)
    y = resample(x, 16000, dst)
    assert peak_frequency(y, dst) == pytest.approx(440.0, abs=2.0)
    assert rms_dbfs(y) == pytest.approx(rms_dbfs(x), abs=0.1)


def test_content_above_the_new_nyquist_is_filtered_out() -> None:
    y = resample(tone(6000.0, 16000), 16000, 8000)  # 6 kHz cannot exist at 8 kHz
    steady = y[800:-800]  # away from the clicks where the tone starts and stops
    assert rms_dbfs(steady) < -80.0


def test_filter_overshoot_clips_rather_than_wraps() -> None:
    # A full-scale square wave makes the band-limited result ring past full scale.
    square = np.where((np.arange(16000) // 20) % 2 == 0, 32767, -32768).astype(np.int16)
    y = resample(square, 16000, 8000)
    half = resample((square // 2).astype(np.int16), 16000, 8000)
    assert y.max() == 32767 and y.min() == -32768
    assert np.all(y[half > 16383] > 0)
    assert np.all(y[half < -16384] < 0)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=30), dst=st.sampled_from(RATES))
def test_chunked_stream_equals_one_shot(sizes: list[int], dst: int, goforward: np.ndarray) -> None:
    stream = StreamResampler(16000, dst)
    cuts = np.cumsum([0, *sizes])
    cuts = np.unique(np.append(cuts[cuts < goforward.size], goforward.size))
    parts = [
        stream.process(goforward[a:b], last=(b == goforward.size))
        for a, b in itertools.pairwise(cuts)
    ]
    chunked = np.concatenate(parts)
    whole = resample(goforward, 16000, dst)
    assert chunked.size == whole.size
    assert np.abs(chunked.astype(np.int32) - whole).max() <= 2


def test_stream_refuses_input_after_the_last_chunk(goforward: np.ndarray) -> None:
    stream = StreamResampler(16000, 8000)
    stream.process(goforward[:1600])
    assert stream.process(goforward[1600:3200], last=True).size > 0
    assert stream.finished
    with pytest.raises(RuntimeError, match="after last=True"):
        stream.process(goforward[:160])


def test_stream_at_equal_rates_passes_chunks_through(goforward: np.ndarray) -> None:
    stream = StreamResampler(16000, 16000)
    assert np.array_equal(stream.process(goforward[:500]), goforward[:500])


@pytest.mark.parametrize("bad", [0, -16000, 16000.5, True])
def test_invalid_rates_are_rejected(bad: object, goforward: np.ndarray) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        resample(goforward, 16000, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        StreamResampler(bad, 16000)  # type: ignore[arg-type]
