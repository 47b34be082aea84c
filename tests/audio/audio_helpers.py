"""Helpers shared by the audio tests: reading the speech set and comparing signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SPEECH_DIR = Path(__file__).resolve().parents[2] / "data" / "speech"


def read_speech(name: str) -> np.ndarray:
    """A 16 kHz mono int16 utterance, read with soundfile rather than the code under test."""
    data, rate = sf.read(SPEECH_DIR / name, dtype="int16")
    assert rate == 16000 and data.ndim == 1
    return data


def best_correlation(reference: np.ndarray, test: np.ndarray, max_lag: int = 800) -> float:
    """Highest normalised cross-correlation over shifts of up to ``max_lag`` samples.

    Codecs and resamplers may delay the signal by a few milliseconds; a fair comparison
    aligns it first.
    """
    a = reference.astype(np.float64)
    b = test.astype(np.float64)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(x.size, y.size)
        if n == 0:
            continue
        denom = float(np.sqrt(np.dot(x[:n], x[:n]) * np.dot(y[:n], y[:n])))
        if denom > 0:
            best = max(best, float(np.dot(x[:n], y[:n])) / denom)
    return best
