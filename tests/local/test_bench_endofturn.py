"""The end-of-turn benchmark's simulation, with stand-in end-of-turn models (Silero is real)."""

from __future__ import annotations

import numpy as np
import pytest
from local_helpers import SPEECH_DIR

from sagelab.agents.local.endofturn import EndOfTurnPolicy
from sagelab.agents.local.vad import SileroVad, VadTurnDetector
from sagelab.audio import PCM16
from sagelab.bench.endofturn import (
    ModelCache,
    Passage,
    ReplayVad,
    build_passages,
    score,
    speech_probabilities,
    stretch_longest_pause,
)


class Always:
    """An end-of-turn model that always gives the same answer, and counts its calls."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.calls = 0

    def probability(self, audio: PCM16) -> float:
        self.calls += 1
        assert audio.dtype == np.int16 and 0 < audio.size <= 8 * 16000
        return self.p


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return build_passages(SPEECH_DIR / "manifest.jsonl")[0]


@pytest.mark.model
def test_passages_group_speakers_and_keep_every_utterance(passages: list[Passage]) -> None:
    assert {p.name: len(p.spans) for p in passages} == {
        "librivox": 5,
        "cards": 5,
        "goforward": 1,
        "forever": 2,
        "alsa": 8,
    }
    for p in passages:
        starts = [s for s, _ in p.spans]
        assert starts == sorted(starts) and all(s < e for s, e in p.spans)


@pytest.mark.model
def test_a_model_that_always_says_finished_is_the_silence_rule(
    passages: list[Passage],
) -> None:
    """Asked at 200 ms and always "finished", the policy ends exactly where silence 200 does."""
    model = Always(1.0)
    smart = score(passages, EndOfTurnPolicy(200, 0.5, 800), ModelCache(model))
    silence = score(passages, EndOfTurnPolicy.silence_only(200), None)
    assert model.calls > 0
    assert smart["cut_ids"] == silence["cut_ids"] and smart["cut"] >= 5
    assert smart["wait_ms"] == silence["wait_ms"]


@pytest.mark.model
def test_a_model_that_never_says_finished_waits_for_the_fallback(
    passages: list[Passage],
) -> None:
    never = score(passages, EndOfTurnPolicy(200, 0.5, 800), ModelCache(Always(0.0)))
    assert never["cut"] == 0  # no natural pause here reaches 800 ms
    assert never["wait_ms"]["p50"] >= 800


@pytest.mark.model
@pytest.mark.parametrize("chunk", [320, 1600])
def test_replayed_probabilities_make_the_same_turns_as_silero_itself(
    passages: list[Passage], chunk: int
) -> None:
    """The bench computes Silero once per passage and replays it to every detector: the
    detector must decide exactly what it decides on Silero streamed chunk by chunk."""
    passage = next(p for p in passages if p.name == "alsa")

    def events(vad: SileroVad | ReplayVad) -> list[tuple[str, int]]:
        detector = VadTurnDetector(end_silence_ms=400, vad=vad)  # type: ignore[arg-type]
        out = []
        for offset in range(0, passage.pcm.size, chunk):
            out += [(e.kind, e.sample) for e in detector.feed(passage.pcm[offset : offset + chunk])]
        return out

    live = events(SileroVad())
    assert len(live) == 2 * len(passage.spans)
    assert events(ReplayVad(speech_probabilities(passage.pcm))) == live


@pytest.mark.fast
def test_stretching_a_pause_adds_exactly_the_missing_room_tone() -> None:
    rate = 16000
    rng = np.random.default_rng(1)
    word = (rng.standard_normal(rate // 2) * 4000).astype(np.int16)
    gap = (rng.standard_normal(rate // 5) * 30).astype(np.int16)  # 200 ms of room tone
    pcm = np.concatenate([gap, word, gap, word, gap])
    stretched = stretch_longest_pause(pcm, 700)
    assert stretched.size == pcm.size + int(0.5 * rate)
    single = np.concatenate([gap, word, gap])
    assert stretch_longest_pause(single, 700) is single  # no internal pause: unchanged
