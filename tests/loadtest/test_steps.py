"""The capacity search's staircase and per-step verdicts, on hand-made measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sagelab.loadtest.runner import parse_duration
from sagelab.loadtest.steps import (
    StepPlan,
    StepWindow,
    first_broken,
    judge_steps,
    read_step_log,
    sustainable_users,
)
from sagelab.loadtest.summary import Budget


def test_step_plan_staircase() -> None:
    plan = StepPlan(step_users=10, step_time_s=30, max_users=25, spawn_rate=5)
    assert plan.steps == 3
    assert [plan.users(s) for s in range(3)] == [10, 20, 25]
    assert plan.step_at(0) == 0
    assert plan.step_at(29.9) == 0
    assert plan.step_at(30) == 1
    assert plan.step_at(89.9) == 2
    assert plan.step_at(90) is None
    assert StepPlan.from_env(plan.env()) == plan


def test_step_plan_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="step users"):
        StepPlan(step_users=0, step_time_s=30, max_users=10, spawn_rate=1)
    with pytest.raises(ValueError, match="step users"):
        StepPlan(step_users=5, step_time_s=30, max_users=2, spawn_rate=1)
    with pytest.raises(RuntimeError, match="sagelab loadtest --step"):
        StepPlan.from_env({})


def test_step_log_windows(tmp_path: Path) -> None:
    log = tmp_path / "steps.jsonl"
    log.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"step": 1, "users": 2, "t": 110.0}, {"step": 0, "users": 1, "t": 100.0}]
        )
    )
    assert read_step_log(log, t_end=125.0) == [
        StepWindow(0, 1, 100.0, 110.0),
        StepWindow(1, 2, 110.0, 125.0),
    ]
    assert read_step_log(tmp_path / "none.jsonl", 0.0) == []


def _raw(rows: list[tuple[float, str, float, bool]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "w": 1,
                "user": 1,
                "session": "1:1",
                "metric": m,
                "value_ms": v,
                "t": t,
                "ok": ok,
                "error": None if ok else "failed",
                "code": None,
            }
            for t, m, v, ok in rows
        ]
    )


def test_each_step_is_judged_on_its_own_samples_after_settling() -> None:
    windows = [
        StepWindow(0, 1, 0.0, 10.0),
        StepWindow(1, 2, 10.0, 20.0),
        StepWindow(2, 3, 20.0, 30.0),
    ]
    rows = [(t, "first_audio", 600.0, True) for t in (3.0, 5.0, 8.0)]
    rows += [(1.0, "first_audio", 5000.0, True)]  # settling: ignored
    rows += [(t, "first_audio", 900.0, True) for t in (13.0, 15.0, 18.0)]
    rows += [(t, "first_audio", 1400.0, True) for t in (23.0, 25.0, 28.0)]
    rows += [(t, "voice_to_voice", ms + 40, True) for t, _, ms, _ in rows]
    rows += [(12.0, "connect", 5.0, True)]
    verdicts = judge_steps(_raw(rows), windows, Budget(max_p95_first_audio_ms=1000), 2.0)
    assert [v["users"] for v in verdicts] == [1, 2, 3]
    assert [v["figures"]["first_audio_p95"] for v in verdicts] == [600.0, 900.0, 1400.0]
    assert [v["figures"]["replies"] for v in verdicts] == [3, 3, 3]
    assert verdicts[0]["violations"] == [] and verdicts[1]["violations"] == []
    assert verdicts[2]["violations"] == ["first_audio p95 1400 ms > 1000 ms"]
    assert first_broken(verdicts) is verdicts[2]
    assert sustainable_users(verdicts) == 2


def test_errors_break_a_step_and_capacity_ends_before_it() -> None:
    windows = [
        StepWindow(0, 5, 0.0, 10.0),
        StepWindow(1, 10, 10.0, 20.0),
        StepWindow(2, 15, 20.0, 30.0),
    ]
    rows = [(t, "first_audio", 500.0, True) for t in (3, 5, 7, 13, 15, 17, 23, 25, 27)]
    rows += [(14.0, "connect", 3000.0, False)]  # a refused session in step 2
    verdicts = judge_steps(_raw(rows), windows, Budget(), settle_s=1.0)
    assert verdicts[1]["violations"] == ["error rate 25.00% > 2.00%"]
    assert verdicts[2]["violations"] == []  # recovered, but capacity ends at the first break
    assert sustainable_users(verdicts) == 5
    assert sustainable_users([]) == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match="like 30s"):
        parse_duration("two minutes")
