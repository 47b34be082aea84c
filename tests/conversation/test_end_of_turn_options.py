"""The agents file's ``options.end_of_turn``: parsed into a policy, checked before any session."""

from __future__ import annotations

import sys

import pytest

from sagelab.agents.local.endofturn import EndOfTurnPolicy
from sagelab.agents.local.factory import _vad_options, end_of_turn_policy

pytestmark = pytest.mark.fast


def test_no_option_keeps_the_vad_silence_alone() -> None:
    options = {"vad": {"end_silence_ms": 400}}
    assert end_of_turn_policy(options) is None
    assert _vad_options(options, None) == {"end_silence_ms": 400}


def test_a_model_policy_sets_the_vad_wait_to_its_fallback() -> None:
    options = {"end_of_turn": {"min_silence_ms": 400, "threshold": 0.9, "max_silence_ms": 800}}
    policy = end_of_turn_policy(options)
    assert policy == EndOfTurnPolicy(400, 0.9, 800)
    assert _vad_options(options, policy) == {"end_silence_ms": 800}


def test_a_graded_wait_is_read_from_the_options() -> None:
    raw = {"min_silence_ms": 400, "threshold": 0.9, "max_silence_ms": 800}
    raw |= {"likely_threshold": 0.7, "likely_silence_ms": 600}
    assert end_of_turn_policy({"end_of_turn": raw}) == EndOfTurnPolicy(
        400, 0.9, 800, likely_threshold=0.7, likely_silence_ms=600
    )


def test_without_the_turn_extra_the_silence_rule_at_min_silence_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pipecat", None)  # as when sagelab[turn] is absent
    options = {"end_of_turn": {"min_silence_ms": 400, "threshold": 0.9, "max_silence_ms": 800}}
    policy = end_of_turn_policy(options)
    assert policy == EndOfTurnPolicy.silence_only(400)
    assert _vad_options(options, policy) == {"end_silence_ms": 400}
    # A model file named explicitly is not second-guessed: loading it will say what is wrong.
    named = {"end_of_turn": {**options["end_of_turn"], "model": "./smart-turn.onnx"}}
    assert end_of_turn_policy(named) == EndOfTurnPolicy(400, 0.9, 800)


def test_silence_only() -> None:
    policy = end_of_turn_policy({"end_of_turn": {"silence_only": 300}})
    assert policy is not None and not policy.uses_model and policy.max_silence_ms == 300


def test_a_conflicting_vad_wait_is_refused() -> None:
    options = {"vad": {"end_silence_ms": 400}, "end_of_turn": {"max_silence_ms": 800}}
    with pytest.raises(ValueError, match=r"conflicts with options\.end_of_turn"):
        _vad_options(options, end_of_turn_policy(options))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"min_silence_ms": 400, "treshold": 0.9}, "unknown key"),
        ({"silence_only": 400, "threshold": 0.9}, "takes no other key"),
        ({"min_silence_ms": 900, "max_silence_ms": 800}, "must not exceed"),
        ({"threshold": 1.5}, "threshold"),
        ("fast", "must be a mapping"),
    ],
)
def test_mistakes_are_named(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        end_of_turn_policy({"end_of_turn": raw})


def test_the_bundled_audio_sage_policy_never_ends_before_the_400_ms_rule() -> None:
    from sagelab.config import load_config

    agent = next(a for a in load_config(None, env={}).agents if a.id == "audio-sage")
    policy = end_of_turn_policy(agent.options)
    assert policy is not None and policy.uses_model
    assert policy.min_silence_ms >= 400


@pytest.mark.model
def test_the_bundled_audio_sage_gets_smart_turn_and_an_800_ms_vad_wait() -> None:
    from pathlib import Path

    import numpy as np

    from sagelab.agents.local.endofturn import SmartTurn
    from sagelab.agents.local.factory import _end_of_turn_model
    from sagelab.config import load_config

    agent = next(a for a in load_config(None, env={}).agents if a.id == "audio-sage")
    policy = end_of_turn_policy(agent.options)
    model = _end_of_turn_model(agent.options, policy, Path("."))
    assert isinstance(model, SmartTurn)
    assert _vad_options(agent.options, policy)["end_silence_ms"] == policy.max_silence_ms
    p = model.probability(np.zeros(16000, dtype=np.int16))
    assert 0.0 <= p <= 1.0
