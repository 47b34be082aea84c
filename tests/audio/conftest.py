"""Real recorded speech for the audio tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_helpers import SPEECH_DIR, read_speech


@pytest.fixture(scope="session")
def goforward() -> np.ndarray:
    """'go forward ten meters': 2.79 s of 16 kHz mono PCM16."""
    return read_speech("goforward.wav")


@pytest.fixture(scope="session")
def goforward_path() -> Path:
    return SPEECH_DIR / "goforward.wav"
