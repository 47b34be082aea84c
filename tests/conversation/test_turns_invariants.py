"""``TurnTaker`` invariants over the inputs users really produce, in simulated time.

Any chunk size from 10 to 500 ms, any pattern of speech and pauses (short hesitations, pauses
just around the end-of-turn wait, long silences), monologues longer than the utterance limit,
and speech-to-text jobs that take anywhere from nothing to two seconds and finish in any
order. Whatever happens: every unit of the user's speech is transcribed exactly once, in
order, and the user's turns come out in order with the last one final.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagelab.agents.local.endofturn import EndOfTurnPolicy
from sagelab.agents.local.vad import VadTurnDetector
from sagelab.agents.turns import EnergyTurnDetector
from sagelab.conversation.fakes import (
    FakeEndOfTurn,
    FakeSTT,
    LevelVad,
    MarkedSpeech,
    heard_units,
    last_unit,
)
from sagelab.conversation.turns import (
    BargeIn,
    CancelEndOfTurn,
    CancelTranscription,
    FalseBargeIn,
    PredictEndOfTurn,
    Transcribe,
    TurnTaker,
    UserTurn,
)

SAMPLE_RATE = 16_000
SILENCE_MS = 400  # the detector's end-of-turn wait


@dataclass
class Outcome:
    turns: list[UserTurn]
    barge_ins: int
    jobs: int
    cancelled: int
    questions: int = 0
    questions_cancelled: int = 0
    barge_log: list[str] = field(default_factory=list)  # "hint", "false", "speech", in order


def simulate(
    speech: MarkedSpeech,
    chunk_ms: int,
    stt_delays: list[float],
    *,
    speculate_after_ms: float | None = 160,
    max_utterance_s: float = 30.0,
    policy: EndOfTurnPolicy | None = None,
    eot: FakeEndOfTurn | None = None,
    eot_delays: list[float] = [0.05],  # noqa: B006 (read only)
    ask_ahead_ms: float = 0.0,
    model_patience_ms: float | None = None,
    split_after_s: float | None = None,
    hinting: bool = False,
) -> Outcome:
    """Stream ``speech`` in ``chunk_ms`` chunks in simulated real time; each transcription job
    takes the next delay from ``stt_delays`` (cycled). With a model ``policy``, the detector
    waits the policy's ``max_silence_ms`` and ``eot`` answers each question after the next
    delay from ``eot_delays``."""
    wait = SILENCE_MS if policy is None or not policy.uses_model else policy.max_silence_ms
    detector: EnergyTurnDetector | VadTurnDetector = (
        VadTurnDetector(vad=LevelVad(), end_silence_ms=wait)  # type: ignore[arg-type]
        if hinting
        else EnergyTurnDetector(silence_ms=int(wait), min_speech_ms=60)
    )
    taker = TurnTaker(
        detector,
        speculate_after_ms=speculate_after_ms,
        max_utterance_s=max_utterance_s,
        end_of_turn=policy,
        ask_ahead_ms=ask_ahead_ms,
        model_patience_ms=model_patience_ms,
        split_after_s=split_after_s,
    )
    eot = eot if eot is not None else FakeEndOfTurn()
    model_delays = itertools.cycle(eot_delays)
    stt = FakeSTT()
    pcm = speech.pcm
    step = chunk_ms * SAMPLE_RATE // 1000
    delays = itertools.cycle(stt_delays)
    queue: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    for k, start in enumerate(range(0, pcm.size, step)):
        heapq.heappush(queue, ((k + 1) * chunk_ms / 1000, next(seq), "audio", start))
    outcome = Outcome([], 0, 0, 0)
    cancelled: set[int] = set()

    def run(actions: list[object], now: float) -> None:
        for action in actions:
            if isinstance(action, Transcribe):
                outcome.jobs += 1
                done = now + next(delays)
                heapq.heappush(queue, (done, next(seq), "stt", action))
            elif isinstance(action, CancelTranscription):
                outcome.cancelled += 1
                cancelled.add(action.job)
            elif isinstance(action, PredictEndOfTurn):
                outcome.questions += 1
                done = now + next(model_delays)
                heapq.heappush(queue, (done, next(seq), "eot", action))
            elif isinstance(action, CancelEndOfTurn):
                outcome.questions_cancelled += 1
            elif isinstance(action, BargeIn):
                outcome.barge_ins += not action.provisional
                outcome.barge_log.append("hint" if action.provisional else "speech")
            elif isinstance(action, FalseBargeIn):
                outcome.barge_log.append("false")
            elif isinstance(action, UserTurn):
                outcome.turns.append(action)

    while queue:
        now, _, kind, payload = heapq.heappop(queue)
        if kind == "audio":
            assert isinstance(payload, int)
            run(list(taker.audio(pcm[payload : payload + step], now)), now)
        elif kind == "eot":
            assert isinstance(payload, PredictEndOfTurn)
            # A cancelled question's answer may still arrive; the turn-taker ignores it.
            p = eot.probability(payload.audio)
            run(list(taker.end_of_turn(payload.job, p, now)), now)
        else:
            assert isinstance(payload, Transcribe)
            result = stt.transcribe(payload.audio)
            # A cancelled job's result may still arrive (the executor ran it anyway).
            run(list(taker.transcribed(payload.job, result.text, 1.0, now)), now)
    return outcome


def assert_lossless(speech: MarkedSpeech, outcome: Outcome) -> None:
    expected = [(u, 160) for u in range(speech.units)]
    heard = heard_units([t.text for t in outcome.turns])
    assert heard == expected, _first_difference(heard, expected)
    starts = [t.start for t in outcome.turns]
    assert starts == sorted(starts)
    for a, b in itertools.pairwise(outcome.turns):
        assert a.end <= b.start, "two turns share samples"
    assert outcome.turns and outcome.turns[-1].final


def _first_difference(heard: list[tuple[int, int]], expected: list[tuple[int, int]]) -> str:
    for i, (h, e) in enumerate(itertools.zip_longest(heard, expected)):
        if h != e:
            return f"first difference at run {i}: heard {h}, expected {e}"
    return "identical"


@st.composite
def conversations(draw: st.DrawFn) -> MarkedSpeech:
    """Speech the way people talk: runs of 100 ms to 4 s, pauses from a hesitation to a
    long silence, with pauses near the end-of-turn wait made likely on purpose."""
    speech = MarkedSpeech().add_silence(draw(st.integers(0, 1500)))
    for _ in range(draw(st.integers(1, 8))):
        speech.add_speech(draw(st.integers(100, 4000)))
        pause = draw(
            st.one_of(
                st.integers(20, 300),  # hesitation inside a turn
                st.integers(SILENCE_MS - 100, SILENCE_MS + 200),  # right around the wait
                st.integers(600, 3000),  # a real end of turn
            )
        )
        speech.add_silence(pause)
    return speech.add_silence(SILENCE_MS + 600)


chunk_sizes = st.integers(10, 500)
stt_delays = st.lists(st.floats(0.0, 2.0), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(speech=conversations(), chunk_ms=chunk_sizes, delays=stt_delays)
def test_every_unit_of_speech_is_transcribed_once_in_order(
    speech: MarkedSpeech, chunk_ms: int, delays: list[float]
) -> None:
    outcome = simulate(speech, chunk_ms, delays)
    assert_lossless(speech, outcome)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speech=conversations(),
    chunk_ms=chunk_sizes,
    delays=stt_delays,
    split=st.sampled_from([0.5, 1.0, 3.0]),
    speculate=st.sampled_from([100, 160, 300]),
)
def test_long_turns_cut_at_their_pauses_lose_nothing(
    speech: MarkedSpeech, chunk_ms: int, delays: list[float], split: float, speculate: int
) -> None:
    outcome = simulate(
        speech,
        chunk_ms,
        delays,
        speculate_after_ms=speculate,
        split_after_s=split,
        max_utterance_s=60.0,  # (the limit's own cuts may split a word)
    )
    assert_lossless(speech, outcome)
    # A cut is made in a pause: no run of speech is split between two pieces. (An end of
    # turn may be decided just as the user starts again; that is not a cut.)
    for turn in outcome.turns:
        if turn.endpointing_ms is None:
            assert not any(s < turn.end < e for s, e in speech.speech_ranges), turn


def test_a_long_turn_is_transcribed_while_the_user_goes_on() -> None:
    # Twelve 1.5 s sentences with 300 ms pauses (shorter than the 400 ms wait): one turn of
    # 22 s. Cut every 3 s, only the audio since the last cut is left at the end.
    speech = MarkedSpeech().add_silence(300)
    for _ in range(12):
        speech.add_speech(1500).add_silence(300)
    speech.add_silence(1000)
    whole = simulate(speech, 100, [0.3])
    cut = simulate(speech, 100, [0.3], split_after_s=3.0)
    assert_lossless(speech, whole)
    assert_lossless(speech, cut)
    assert len(whole.turns) == 1
    assert 5 <= len(cut.turns) <= 7 and [t.final for t in cut.turns].count(True) == 1
    assert all(t.endpointing_ms is None for t in cut.turns[:-1])  # cuts, not ends of turn
    assert cut.turns[-1].utterance_ms < 5000 < whole.turns[0].utterance_ms
    # Every piece but the last was kept from a speculative job: no job more than without.
    assert cut.jobs <= whole.jobs and cut.cancelled < whole.cancelled


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(speech=conversations(), chunk_ms=chunk_sizes, delays=stt_delays)
def test_without_speculation_nothing_is_lost_either(
    speech: MarkedSpeech, chunk_ms: int, delays: list[float]
) -> None:
    assert_lossless(speech, simulate(speech, chunk_ms, delays, speculate_after_ms=None))


@settings(max_examples=60, deadline=None)
@given(chunk_ms=chunk_sizes, delays=stt_delays, seconds=st.integers(5, 14))
def test_a_monologue_longer_than_the_limit_is_split_without_loss(
    chunk_ms: int, delays: list[float], seconds: int
) -> None:
    speech = MarkedSpeech().add_silence(300).add_speech(seconds * 1000).add_silence(1200)
    outcome = simulate(speech, chunk_ms, delays, max_utterance_s=2.0)
    assert_lossless(speech, outcome)
    # A piece is cut at the first chunk boundary past the limit: up to a chunk longer.
    assert len(outcome.turns) >= seconds * 1000 // (2000 + chunk_ms)
    assert all(not t.final for t in outcome.turns[:-1])


@settings(max_examples=100, deadline=None)
@given(speech=conversations(), chunk_ms=chunk_sizes)
def test_a_turn_is_final_only_when_the_user_is_done(speech: MarkedSpeech, chunk_ms: int) -> None:
    # Slow transcription: the user often starts again before the earlier turn is transcribed;
    # then that turn must not be answered on its own.
    outcome = simulate(speech, chunk_ms, [1.5])
    assert_lossless(speech, outcome)
    for turn in outcome.turns:
        if turn.final:
            later_speech = [s for s, _ in speech.speech_ranges if s >= turn.end]
            assert all(s >= turn.end for s in later_speech)


def test_each_utterance_barges_in_once() -> None:
    speech = MarkedSpeech().add_silence(500)
    for _ in range(3):
        speech.add_speech(800).add_silence(1500)
    outcome = simulate(speech, 100, [0.1])
    assert outcome.barge_ins == 3
    assert [t.final for t in outcome.turns] == [True, True, True]


def test_speculation_hides_transcription_inside_the_end_of_turn_wait() -> None:
    speech = MarkedSpeech().add_silence(300).add_speech(1500).add_silence(1500)
    with_guess = simulate(speech, 20, [0.2])
    without = simulate(speech, 20, [0.2], speculate_after_ms=None)
    # The guess started 160 ms into the pause and finished before the 400 ms wait was over.
    assert with_guess.turns[0].stt_wait_ms == 0.0
    assert without.turns[0].stt_wait_ms >= 200.0


def test_a_pause_that_ends_a_turn_while_its_guess_runs_keeps_everything() -> None:
    # The regression the issue describes, at the official SDK's 250 ms chunks: a pause long
    # enough to end the turn, speech again while the first part is still being transcribed.
    speech = MarkedSpeech().add_silence(400)
    for ms, pause in [(2500, 450), (3000, 420), (1800, 700), (2200, 1500)]:
        speech.add_speech(ms).add_silence(pause)
    outcome = simulate(speech, 250, [0.9, 0.3, 1.2])
    assert_lossless(speech, outcome)
    assert outcome.turns[-1].final
    assert sum(t.final for t in outcome.turns) >= 1


def test_cancelled_guesses_are_never_used() -> None:
    # Pauses just over the speculation point but under the end-of-turn wait: every guess is
    # dropped when speech resumes, and the turn is transcribed once at its real end.
    speech = MarkedSpeech().add_silence(300)
    for _ in range(4):
        speech.add_speech(600).add_silence(300)
    speech.add_silence(1000)
    outcome = simulate(speech, 20, [0.05])
    assert outcome.cancelled >= 3
    assert len(outcome.turns) == 1
    assert_lossless(speech, outcome)


def test_silence_only_produces_no_turn() -> None:
    speech = MarkedSpeech().add_silence(5000)
    outcome = simulate(speech, 100, [0.1])
    assert outcome.turns == [] and outcome.jobs == 0


def test_pcm_of_a_turn_is_exactly_its_range() -> None:
    detector = EnergyTurnDetector(silence_ms=SILENCE_MS)
    taker = TurnTaker(detector, speculate_after_ms=None)
    speech = MarkedSpeech().add_silence(1000).add_speech(700).add_silence(1000)
    pcm = speech.pcm
    jobs = []
    for i in range(0, pcm.size, 320):
        jobs += [a for a in taker.audio(pcm[i : i + 320], i / 16000) if isinstance(a, Transcribe)]
    assert len(jobs) == 1
    job = jobs[0]
    np.testing.assert_array_equal(job.audio, pcm[job.start : job.end])
    assert job.start == speech.speech_ranges[0][0] - 300 * 16  # the pre-roll


# -- semantic end of turn: the end-of-turn model's path -----------------------------------

SMART = EndOfTurnPolicy(min_silence_ms=200, threshold=0.9, max_silence_ms=800)
QUICK_MODEL = [0.05]


@pytest.mark.fast
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speech=conversations(),
    chunk_ms=chunk_sizes,
    delays=stt_delays,
    answers=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    model_delays=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=4),
    min_silence=st.sampled_from([100, 200, 400]),
    speculate=st.sampled_from([None, 100, 160, 300]),
    ask_ahead=st.sampled_from([0, 100, 200, 300]),
    patience=st.sampled_from([None, 0, 100, 300]),
    split=st.sampled_from([None, 1.0]),
)
def test_with_an_end_of_turn_model_every_unit_is_transcribed_once_in_order(
    speech: MarkedSpeech,
    chunk_ms: int,
    delays: list[float],
    answers: list[float],
    model_delays: list[float],
    min_silence: int,
    speculate: int | None,
    ask_ahead: int,
    patience: int | None,
    split: float | None,
) -> None:
    # Random answers and model delays from nothing to past the silence fallback: the model
    # may end a pause the user goes on from, answer after the user spoke again, or never.
    policy = EndOfTurnPolicy(min_silence_ms=min_silence, threshold=0.7, max_silence_ms=800)
    outcome = simulate(
        speech,
        chunk_ms,
        delays,
        speculate_after_ms=speculate,
        policy=policy,
        eot=FakeEndOfTurn(answers),
        eot_delays=model_delays,
        ask_ahead_ms=ask_ahead,
        model_patience_ms=patience,
        split_after_s=split,
    )
    assert_lossless(speech, outcome)
    for turn in outcome.turns:  # never sooner than the policy's shortest silence
        if turn.endpointing_ms is not None:
            assert turn.endpointing_ms >= min_silence


@pytest.mark.fast
@settings(max_examples=60, deadline=None)
@given(chunk_ms=chunk_sizes, delays=stt_delays, seconds=st.integers(5, 10))
def test_with_a_model_a_monologue_is_still_split_without_loss(
    chunk_ms: int, delays: list[float], seconds: int
) -> None:
    speech = MarkedSpeech().add_silence(300)
    for _ in range(seconds):
        speech.add_speech(900).add_silence(250)  # pauses the model is asked about
    speech.add_silence(1200)
    outcome = simulate(
        speech, chunk_ms, delays, max_utterance_s=2.0, policy=SMART, eot=FakeEndOfTurn([0.1])
    )
    assert_lossless(speech, outcome)


@pytest.mark.fast
def test_a_confident_model_ends_the_turn_at_its_short_silence() -> None:
    speech = MarkedSpeech().add_silence(300).add_speech(1500).add_silence(1500)
    sure = simulate(speech, 20, [0.05], policy=SMART, eot=FakeEndOfTurn([0.95]))
    unsure = simulate(speech, 20, [0.05], policy=SMART, eot=FakeEndOfTurn([0.2]))
    (turn,) = sure.turns
    # Asked at 200 ms of silence, answered 50 ms later: the turn ends then, not at 800 ms.
    assert turn.endpointing_ms is not None and 240 <= turn.endpointing_ms <= 300
    assert turn.eot_model_ms == pytest.approx(50, abs=1)
    assert turn.stt_wait_ms == 0.0  # the speculative transcript was ready by then
    (late,) = unsure.turns
    assert late.endpointing_ms is not None and late.endpointing_ms >= 800
    assert late.eot_model_ms is None  # silence ended it
    assert sure.questions == unsure.questions == 1


@pytest.mark.fast
def test_asking_ahead_hides_the_model_but_never_ends_before_the_minimum_silence() -> None:
    speech = MarkedSpeech().add_silence(300).add_speech(1500).add_silence(1500)
    policy = EndOfTurnPolicy(400, 0.9, 800)
    on_time = simulate(
        speech, 20, [0.05], policy=policy, eot=FakeEndOfTurn([0.95]), eot_delays=[0.15]
    )
    ahead = simulate(
        speech,
        20,
        [0.05],
        policy=policy,
        eot=FakeEndOfTurn([0.95]),
        eot_delays=[0.15],
        ask_ahead_ms=200,
    )
    (late,), (early,) = on_time.turns, ahead.turns
    assert late.endpointing_ms is not None and late.endpointing_ms >= 540  # 400 + 150 model
    # Asked at 200 ms, answered at 350 ms: the turn ends as the silence reaches 400 ms.
    assert early.endpointing_ms is not None and 400 <= early.endpointing_ms <= 420
    assert early.eot_model_ms == pytest.approx(150, abs=1)


@pytest.mark.fast
def test_a_slow_model_leaves_the_turn_to_the_silence_rule_after_its_patience() -> None:
    speech = MarkedSpeech().add_silence(300).add_speech(1500).add_silence(1500)
    policy = EndOfTurnPolicy(400, 0.9, 800)
    slow = FakeEndOfTurn([0.95])
    patient = simulate(speech, 20, [0.05], policy=policy, eot=slow, eot_delays=[0.6])
    bounded = simulate(
        speech, 20, [0.05], policy=policy, eot=slow, eot_delays=[0.6], model_patience_ms=100
    )
    (waited,), (cut,) = patient.turns, bounded.turns
    assert waited.endpointing_ms is not None and waited.endpointing_ms >= 800
    assert cut.endpointing_ms is not None and 500 <= cut.endpointing_ms <= 520
    assert cut.eot_model_ms is None and bounded.questions_cancelled == 1


@pytest.mark.fast
def test_a_hesitation_the_model_calls_unfinished_does_not_end_the_turn() -> None:
    # "front ... center": a 500 ms pause mid-sentence, longer than the 400 ms silence rule.
    speech = MarkedSpeech().add_silence(300).add_speech(600).add_silence(500)
    speech.add_speech(700).add_silence(1500)
    sentence_end = speech.units - 1

    def model(audio: np.ndarray) -> float:  # the sentence is finished only after "center"
        return 0.95 if last_unit(audio) == sentence_end else 0.1

    silence_rule = simulate(speech, 20, [0.1], policy=EndOfTurnPolicy.silence_only(400))
    smart = simulate(
        speech, 20, [0.1], policy=EndOfTurnPolicy(400, 0.9, 800), eot=FakeEndOfTurn(model)
    )
    assert len(silence_rule.turns) == 2  # cut mid-sentence
    assert len(smart.turns) == 1 and smart.turns[0].final
    assert smart.questions == 2
    assert smart.turns[0].eot_model_ms is not None  # the model, not the fallback, ended it
    assert_lossless(speech, smart)


@pytest.mark.fast
def test_speech_after_a_turn_the_model_ended_is_the_next_utterance() -> None:
    # The model says "finished" at 200 ms, the user goes on 350 ms into the pause: the
    # detector (waiting 800 ms) never announced a new start; the turn-taker still must.
    speech = MarkedSpeech().add_silence(300).add_speech(900).add_silence(350)
    speech.add_speech(900).add_silence(1500)
    outcome = simulate(speech, 20, [0.1], policy=SMART, eot=FakeEndOfTurn([0.95]))
    assert_lossless(speech, outcome)
    assert len(outcome.turns) == 2
    assert outcome.barge_ins == 2
    assert outcome.turns[1].start == outcome.turns[0].end


@pytest.mark.fast
def test_a_late_answer_is_cancelled_and_ignored() -> None:
    # The model takes longer than the pause: the user speaks again, the question is cancelled
    # and its "finished" must not end the turn that is under way.
    speech = MarkedSpeech().add_silence(300).add_speech(800).add_silence(300)
    speech.add_speech(800).add_silence(1500)
    outcome = simulate(speech, 20, [0.1], policy=SMART, eot=FakeEndOfTurn([0.99]), eot_delays=[0.5])
    assert outcome.questions_cancelled >= 1
    assert len(outcome.turns) == 1
    assert_lossless(speech, outcome)


@pytest.mark.fast
def test_a_silence_only_policy_asks_no_model() -> None:
    speech = MarkedSpeech().add_silence(300).add_speech(800).add_silence(1500)
    outcome = simulate(speech, 20, [0.1], policy=EndOfTurnPolicy.silence_only(400))
    assert outcome.questions == 0 and len(outcome.turns) == 1


@pytest.mark.fast
def test_an_answer_outside_zero_one_is_refused() -> None:
    taker = TurnTaker(EnergyTurnDetector(silence_ms=800), end_of_turn=SMART)
    with pytest.raises(ValueError, match="probability"):
        taker.end_of_turn(1, 1.5, 0.0)


@pytest.mark.fast
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speech=st.builds(
        lambda parts: _pattern(parts),
        st.lists(st.tuples(st.integers(150, 3000), st.integers(30, 2000)), min_size=1, max_size=4),
    ),
    clicks=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(5, 150)), max_size=4),
    chunk_ms=st.integers(10, 500),
    stt_delays=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=3),
)
def test_every_hint_is_confirmed_or_withdrawn_and_nothing_is_lost(
    speech: MarkedSpeech, clicks: list[tuple[float, int]], chunk_ms: int, stt_delays: list[float]
) -> None:
    room = speech.samples // 16 - 1200  # the stream ends in a silence long enough to end a turn
    clicked = speech.with_clicks([(int(where * (room - ms)), ms) for where, ms in clicks])
    outcome = simulate(clicked, chunk_ms, stt_delays, hinting=True)
    assert_lossless(clicked, outcome)
    # A provisional barge-in is answered by exactly one verdict before the next one: a
    # withdrawal, or the confirmed barge-in of the utterance it announced.
    open_hint = False
    for entry in outcome.barge_log:
        if entry == "hint":
            assert not open_hint, outcome.barge_log
        elif entry == "false":
            assert open_hint, outcome.barge_log
        open_hint = entry == "hint"
    assert not open_hint  # the stream ends in silence: every hint has its answer


def _pattern(parts: list[tuple[int, int]]) -> MarkedSpeech:
    speech = MarkedSpeech().add_silence(600)
    for talk, pause in parts:
        speech.add_speech(talk).add_silence(pause)
    return speech.add_silence(1500)
