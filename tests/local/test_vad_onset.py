"""Where ``VadTurnDetector`` says speech started, on scripted Silero probabilities.

A short first word can stay under the speech threshold while the words after it cross it
(the model's state and the window alignment decide); the detector's start must reach back
over that weak speech, or the pre-roll alone loses the word. Real speech is in test_vad.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from sagelab.agents.local.vad import WINDOW_SAMPLES, VadTurnDetector


class ScriptedVad:
    """One probability per 512-sample window, from a script, as ``SileroVad`` gives them."""

    def __init__(self, probabilities: list[float]) -> None:
        self.script = probabilities
        self.at = 0

    def reset(self) -> None:
        pass  # the script is the model's output, state included

    def probabilities(self, pcm: np.ndarray) -> np.ndarray:
        n = pcm.size // WINDOW_SAMPLES
        out = np.array(self.script[self.at : self.at + n], dtype=np.float32)
        self.at += n
        return out


def start_window(probabilities: list[float], **options: float) -> int | None:
    """The window where the detector's first ``speech_start`` falls (no padding)."""
    detector = VadTurnDetector(vad=ScriptedVad(probabilities), speech_pad_ms=0, **options)  # type: ignore[arg-type]
    pcm = np.zeros(len(probabilities) * WINDOW_SAMPLES, dtype=np.int16)
    for i in range(0, pcm.size, 1600):  # 100 ms chunks: windows straddle them
        for event in detector.feed(pcm[i : i + 1600]):
            if event.kind == "speech_start":
                assert event.sample % WINDOW_SAMPLES == 0
                return event.sample // WINDOW_SAMPLES
    return None


QUIET = [0.0] * 20
# "Stop. Search for Berlin." as Silero scored it after seconds of silence (test_vad.py):
# "Stop" never reaches 0.5 for two windows running, "Search" does.
STOP_SEARCH = [0.04, 0.28, 0.41, 0.46, 0.44, 0.47, 0.51, 0.23, 0.17, 0.07, 0.37, 0.50, 0.55,
               0.33, 0.15, 0.46, 0.66, 0.86, 0.88, 0.88, 0.90] + [0.9] * 10  # fmt: skip


def test_a_weak_first_word_is_part_of_the_turn() -> None:
    assert start_window(QUIET + STOP_SEARCH) == 20 + 2  # "Stop", not "Search" (20 + 11)
    assert start_window(QUIET + STOP_SEARCH, onset_lookback_ms=0) == 20 + 11


def test_the_onset_does_not_cross_a_long_gap_or_reach_too_far() -> None:
    weak, gap = [0.4] * 3, [0.1] * 6  # 6 windows = 192 ms, longer than the 160 ms allowed
    assert start_window(QUIET + weak + gap + [0.9] * 4) == 20 + 3 + 6
    assert start_window(QUIET + weak + gap + [0.9] * 4, onset_gap_ms=200) == 20
    murmur = [0.4] * 60  # weak speech for 1.9 s: the start reaches back 1 s at most
    at = start_window(QUIET + murmur + [0.9] * 4)
    assert at is not None and (20 + 60 - at) * 32 == pytest.approx(1000, abs=32)


def test_the_onset_never_reaches_into_the_previous_turn() -> None:
    # A turn, 0.6 s of silence that ends it (end_silence 500 ms), then weak speech right away:
    # the second start stays at the end of the first turn's speech at the earliest.
    first = [0.9] * 10 + [0.0] * 16
    second = [0.4] * 2 + [0.9] * 4
    detector = VadTurnDetector(
        vad=ScriptedVad(QUIET + first + second + [0.0] * 20),  # type: ignore[arg-type]
        speech_pad_ms=0,
        end_silence_ms=500,
    )
    events = detector.feed(np.zeros((20 + 26 + 6 + 20) * WINDOW_SAMPLES, dtype=np.int16))
    kinds = [(e.kind, e.sample // WINDOW_SAMPLES) for e in events]
    assert kinds[:3] == [("speech_start", 20), ("speech_end", 30), ("speech_start", 46)]


def test_bad_onset_options_are_refused() -> None:
    with pytest.raises(ValueError, match="onset_lookback_ms"):
        VadTurnDetector(vad=ScriptedVad([]), onset_lookback_ms=-1)  # type: ignore[arg-type]
