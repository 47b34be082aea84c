"""Where ``VadTurnDetector`` says speech started, on scripted Silero probabilities.

A short first word can stay under the speech threshold while the words after it cross it
(the model's state and the window alignment decide); the detector's start must reach back
over that weak speech, or the pre-roll alone loses the word. Real speech is in test_vad.py.

The barge-in hint (``voice_at``) comes before any of that is confirmed: its tests check when
it appears, that it is withdrawn for what never becomes speech, and that neither depends on
the chunk size.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def hints(probabilities: list[float], chunk: int = 1600, **options: float) -> list[tuple[str, int]]:
    """The hint's appearances and withdrawals and the turn starts, by window, in order."""
    detector = VadTurnDetector(vad=ScriptedVad(probabilities), speech_pad_ms=0, **options)  # type: ignore[arg-type]
    pcm = np.zeros(len(probabilities) * WINDOW_SAMPLES, dtype=np.int16)
    seen: list[tuple[str, int]] = []
    hint: int | None = None
    for i in range(0, pcm.size, chunk):
        fed = min(pcm.size, i + chunk) // WINDOW_SAMPLES
        for event in detector.feed(pcm[i : i + chunk]):
            if event.kind == "speech_start":
                seen.append(("start", fed))
        now = detector.voice_at
        if now is not None and now != hint:
            assert now % WINDOW_SAMPLES == 0
            seen.append(("hint", now // WINDOW_SAMPLES))
        elif now is None and hint is not None and (not seen or seen[-1][0] != "start"):
            seen.append(("gone", fed))
        hint = now
    return seen


def test_the_hint_comes_on_the_first_weak_window_and_holds_until_confirmed() -> None:
    # "Stop" scores 0.28, 0.41, ...: the hint is at its second window (64 ms into the word);
    # the turn is confirmed on "Search", 10 windows later, and the hint held until then.
    assert hints(QUIET + STOP_SEARCH, chunk=WINDOW_SAMPLES) == [("hint", 22), ("start", 33)]


def test_a_click_or_a_hum_is_hinted_and_withdrawn() -> None:
    click = QUIET + [0.7] + [0.05] * 12
    assert hints(click, chunk=WINDOW_SAMPLES) == [("hint", 20), ("gone", 26)]  # 5 quiet windows
    hum = QUIET + [0.4] * 40 + [0.0] * 10
    # Held at most 600 ms (19 windows), then none until it has been quiet.
    assert hints(hum, chunk=WINDOW_SAMPLES) == [("hint", 20), ("gone", 40)]
    assert hints(QUIET + [0.25] * 10 + [0.0] * 10, chunk=WINDOW_SAMPLES) == []  # below 0.3


def states(script: list[float], chunk: int) -> list[tuple[int, int | None, list[int]]]:
    """After each chunk: windows fed, ``voice_at``, and the starts the chunk reported."""
    detector = VadTurnDetector(vad=ScriptedVad(script), speech_pad_ms=0)  # type: ignore[arg-type]
    pcm = np.zeros(len(script) * WINDOW_SAMPLES, dtype=np.int16)
    out = []
    for i in range(0, pcm.size, chunk):
        events = detector.feed(pcm[i : i + chunk])
        starts = [e.sample for e in events if e.kind == "speech_start"]
        out.append((min(pcm.size, i + chunk) // WINDOW_SAMPLES, detector.voice_at, starts))
    return out


@pytest.mark.fast
@settings(max_examples=80, deadline=None)
@given(
    probabilities=st.lists(
        st.sampled_from([0.0, 0.05, 0.2, 0.32, 0.45, 0.55, 0.9]), min_size=5, max_size=120
    ),
    chunk_ms=st.integers(10, 500),
)
def test_the_hint_does_not_depend_on_the_chunk_size(
    probabilities: list[float], chunk_ms: int
) -> None:
    # Window by window is the reference: after any chunk, the hint is what it was after the
    # same number of windows fed one at a time, and the starts are the same samples.
    script = QUIET + probabilities + [0.0] * 30
    reference = states(script, WINDOW_SAMPLES)
    hint_after = {fed: hint for fed, hint, _ in reference}
    hint_after[0] = None
    chunked = states(script, chunk_ms * 16)
    for fed, hint, _ in chunked:
        assert hint == hint_after[fed]
    starts = [s for _, _, found in chunked for s in found]
    assert starts == [s for _, _, found in reference for s in found]
