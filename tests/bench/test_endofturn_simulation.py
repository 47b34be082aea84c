"""The end-of-turn bench drives the server's ``TurnTaker``: ask-ahead, re-asks, the patience
limit and the model's own time must change its decisions exactly as they change the server's.

Scripted Silero probabilities (one per 512-sample window: speech 0.9, silence 0.0) go through
the real ``VadTurnDetector``, so a pause starts exactly where its speech stops; the end-of-turn
model is scripted by the trailing silence of the audio it is asked about, and its answer time
is fixed, so every decision falls on a known 20 ms chunk. Real speech is in
tests/local/test_bench_endofturn.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sagelab.agents.local.endofturn import EndOfTurnPolicy
from sagelab.bench.endofturn import (
    DEPLOYED_AHEAD_MS,
    DEPLOYED_PATIENCE_MS,
    DEPLOYED_POLICY,
    SPECULATE_AFTER_MS,
    ModelCache,
    Passage,
    Setting,
    default_policies,
    deployed,
    score,
    simulate,
)

pytestmark = pytest.mark.fast

W = 512  # samples per Silero window
RATE = 16_000


def scripted(*utterances: list[int]) -> tuple[Passage, np.ndarray]:
    """A passage of utterances, each a list of window counts: speech, pause, speech, ...;
    2 s of silence between utterances, 3 s after the last. Returns it with its probabilities."""
    probs: list[float] = [0.0] * 16
    spans = []
    for k, utterance in enumerate(utterances):
        start = len(probs) * W
        for i, n in enumerate(utterance):
            probs += [0.9 if i % 2 == 0 else 0.0] * n
        spans.append((start, len(probs) * W))
        probs += [0.0] * (94 if k == len(utterances) - 1 else 63)
    script = np.array(probs, dtype=np.float32)
    pcm = np.where(np.repeat(script, W) > 0.5, 3000, 0).astype(np.int16)
    ids = [f"u{k}" for k in range(len(utterances))]
    return Passage("scripted", pcm, spans, ids), script


class ByTrailingSilence:
    """An end-of-turn model whose answer depends on the silence at the end of its audio."""

    def __init__(self, answer: Callable[[float], float]) -> None:
        self.answer = answer
        self.asked_ms: list[float] = []  # the trailing silence of every question

    def probability(self, audio: np.ndarray) -> float:
        loud = np.flatnonzero(audio)
        trailing = (audio.size - (loud[-1] + 1 if loud.size else 0)) * 1000 / RATE
        self.asked_ms.append(trailing)
        return self.answer(trailing)


def waits(
    setting: Setting, model: ByTrailingSilence | None, *, model_ms: float, chunk_ms: float = 20
) -> list[float]:
    """Ms from the end of the one utterance's speech to each turn end after it."""
    passage, probs = scripted([30])
    cache = ModelCache(model) if model is not None else None
    decisions = simulate(
        passage, setting, cache, probabilities=probs, chunk_ms=chunk_ms, model_time=model_ms
    )
    end = passage.spans[0][1]
    return [(d.sample - end) * 1000 / RATE for d in decisions]


POLICY = EndOfTurnPolicy(400, 0.9, 800)


def test_ask_ahead_asks_early_so_the_model_time_hides_in_the_silence() -> None:
    """Asked at 200 ms and answering in 150 ms, "finished" ends the turn at 400 ms of silence;
    asked at 400 ms, the same answer ends it at 550 ms."""
    ahead = ByTrailingSilence(lambda _: 1.0)
    assert len(early := waits(Setting(POLICY, ask_ahead_ms=200), ahead, model_ms=150)) == 1
    assert 200 <= ahead.asked_ms[0] < 220
    assert 400 <= early[0] < 440  # once the detector has judged 400 ms: 13 windows, 416 ms

    plain = ByTrailingSilence(lambda _: 1.0)
    (late,) = waits(Setting(POLICY), plain, model_ms=150)
    assert 400 <= plain.asked_ms[0] < 420
    assert 550 <= late < 570


def test_reask_asks_again_as_the_silence_grows() -> None:
    """Unsure at 200 ms, sure at 400 ms: the re-ask ends the turn when its answer comes;
    without it the first "not finished" stands until the 800 ms fallback."""

    def answer(silence: float) -> float:
        return 0.5 if silence < 350 else 0.95

    policy = EndOfTurnPolicy(400, 0.9, 800, reask_ms=200)
    model = ByTrailingSilence(answer)
    (wait,) = waits(Setting(policy, ask_ahead_ms=200), model, model_ms=50)
    first, second = model.asked_ms
    assert 200 <= first < 220 and 400 <= second < 420
    assert 450 <= wait < 470

    once = ByTrailingSilence(answer)
    (fallback,) = waits(Setting(POLICY, ask_ahead_ms=200), once, model_ms=50)
    assert len(once.asked_ms) == 1 and 800 <= fallback < 820


def test_a_slow_model_is_waited_for_no_longer_than_the_patience() -> None:
    """Asked at 200 ms, answering in 400 ms: the patience ends the turn at 500 ms of silence,
    without it the answer does at 600 ms."""
    patient = Setting(POLICY, ask_ahead_ms=200, model_patience_ms=100)
    (wait,) = waits(patient, ByTrailingSilence(lambda _: 1.0), model_ms=400)
    assert 500 <= wait < 540  # 16 whole windows judged
    (unbounded,) = waits(
        Setting(POLICY, ask_ahead_ms=200), ByTrailingSilence(lambda _: 1.0), model_ms=400
    )
    assert 600 <= unbounded < 620


def test_the_model_time_delays_the_end_by_exactly_that_much() -> None:
    finished = ByTrailingSilence(lambda _: 1.0)
    # (An answer quicker than the detector's judging of the 400 ms would wait for it.)
    (quick,) = waits(Setting(POLICY), finished, model_ms=50)
    (slow,) = waits(Setting(POLICY), finished, model_ms=280)
    assert slow - quick == pytest.approx(230, abs=1)


def test_chunk_size_sets_when_the_silence_is_seen() -> None:
    """At 100 ms chunks the turn-taker sees 400 ms of silence only at a chunk's end."""
    rule = Setting(EndOfTurnPolicy.silence_only(400))
    (fine,) = waits(rule, None, model_ms=0, chunk_ms=20)
    (coarse,) = waits(rule, None, model_ms=0, chunk_ms=100)
    assert 400 <= fine < 440 and 400 <= coarse < 500 and coarse >= fine


def test_a_finished_answer_in_a_pause_inside_an_utterance_is_a_cut() -> None:
    """A 500 ms pause mid-utterance: the model's "finished" at 400 ms cuts it; silence 600
    does not, and both end the turn after the utterance."""
    passage, probs = scripted([20, 16, 20], [25])  # 16 windows = 512 ms
    model = ByTrailingSilence(lambda _: 1.0)
    smart = score([passage], POLICY, ModelCache(model), probabilities={"scripted": probs})
    assert smart["cut_ids"] == ["u0"] and smart["late"] == 0
    assert smart["by_model_time"]["none"]["cut"] == 1
    rule = score(
        [passage], EndOfTurnPolicy.silence_only(600), None, probabilities={"scripted": probs}
    )
    assert rule["cut"] == 0 and rule["late"] == 0
    assert 600 <= rule["wait_ms"]["p50"] < 620


def test_the_vad_rule_ends_a_turn_only_after_whole_windows_of_silence() -> None:
    """``vad 400`` is the detector's own wait, 13 windows (416 ms): a 13-window pause ends the
    turn (a cut), a 12-window one (384 ms) does not."""
    vad = Setting(EndOfTurnPolicy.silence_only(400), detector_only=True)
    assert vad.label == "vad 400" and Setting(vad.policy).label == "silence 400"
    for windows, cuts in ((13, 1), (12, 0)):
        passage, probs = scripted([20, windows, 20])
        assert score([passage], vad, None, probabilities={"scripted": probs})["cut"] == cuts


def test_the_policy_rule_does_not_end_a_pause_shorter_than_its_silence() -> None:
    """``silence 400`` (the agents file's ``{silence_only: 400}``) must not end a 384 ms pause.
    It does when the chunk that brings the silence to 400 ms ends inside the window where the
    speech resumes: that window is not judged yet, so it still counts as silence (here the
    chunk ending at 24960 samples, 400 ms after the pause began at 18432, inside the speech
    window 24576-25088). On real speech this cuts "rear ... right" (alsa_Rear_Right)."""
    passage, probs = scripted([20, 12, 20])
    rule = score(
        [passage], EndOfTurnPolicy.silence_only(400), None, probabilities={"scripted": probs}
    )
    assert rule["cut"] == 0


def test_labels_name_ask_ahead_reask_and_patience() -> None:
    policy = EndOfTurnPolicy(400, 0.9, 800, reask_ms=200)
    assert Setting(POLICY).label == "smart 400/0.9/800"
    assert deployed(policy).label == "smart 400/0.9/800 reask 200 ahead 200 patience 100"
    labels = [s.label for s in default_policies()]
    assert len(set(labels)) == len(labels)  # every row tells its setting apart
    for wanted in (
        "silence 400",
        "silence 500",
        "smart 400/0.9/800 ahead 200 patience 100",
        "smart 400/0.9/800 patience 100",
        "smart 400/0.9/800 reask 200 ahead 200 patience 100",
        "smart 400/0.9/800 reask 100 ahead 200 patience 100",
        "smart 400/0.9/700 ahead 200 patience 100",
        "smart 400/0.9/700 reask 200 ahead 200 patience 100",
    ):
        assert wanted in labels


def test_the_deployed_row_is_audio_sage_as_bundled() -> None:
    """The bench's "deployed" settings are the bundled agents file's, not a copy gone stale."""
    from sagelab.agents.local.factory import _taker_options, end_of_turn_policy
    from sagelab.config import load_config

    agent = next(a for a in load_config(None, env={}).agents if a.id == "audio-sage")
    assert end_of_turn_policy(agent.options) == DEPLOYED_POLICY
    assert deployed(DEPLOYED_POLICY).label in {s.label for s in default_policies()}
    assert _taker_options(agent.options) == {
        "ask_ahead_ms": DEPLOYED_AHEAD_MS,
        "model_patience_ms": DEPLOYED_PATIENCE_MS,
    }
    assert agent.options["speculate_after_ms"] == SPECULATE_AFTER_MS


def test_a_finished_answer_is_not_thrown_away_for_a_reask() -> None:
    """Asked at 200 ms, "finished" by 300 ms: the turn should end at 400 ms of silence, as
    without re-asks. The policy re-asks only after a "not finished" (EndOfTurnPolicy)."""
    policy = EndOfTurnPolicy(400, 0.9, 800, reask_ms=200)
    model = ByTrailingSilence(lambda _: 0.95)
    (wait,) = waits(Setting(policy, ask_ahead_ms=200), model, model_ms=100)
    assert 400 <= wait < 440 and len(model.asked_ms) == 1
