"""Capacity search: a staircase of users, each step judged on its own against a budget.

The shape (:mod:`sagelab.loadtest.step_shape`) follows a :class:`StepPlan` and logs when each step
starts; :func:`judge_steps` cuts the raw measurements into those steps by wall time, leaves
out each step's first ``settle_s`` (users still arriving, first turns still in flight), and
measures every step exactly as a whole run is measured. The answer is the largest number of
sessions before the first step that broke the budget: load past a broken step says nothing
about sustainable capacity, so :func:`first_broken` lets the runner stop the test there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sagelab.loadtest.summary import Budget, measure


@dataclass(frozen=True)
class StepPlan:
    step_users: int
    step_time_s: float
    max_users: int
    spawn_rate: float

    def __post_init__(self) -> None:
        if self.step_users < 1 or self.max_users < self.step_users:
            raise ValueError(
                f"need 1 <= step users <= max users, got {self.step_users} and {self.max_users}"
            )
        if not (self.step_time_s > 0 and self.spawn_rate > 0):
            raise ValueError("step time and spawn rate must be positive")

    @property
    def steps(self) -> int:
        return math.ceil(self.max_users / self.step_users)

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_time_s

    def users(self, step: int) -> int:
        return min(self.max_users, (step + 1) * self.step_users)

    def step_at(self, run_time_s: float) -> int | None:
        """The step in force ``run_time_s`` into the test; None once the staircase is over."""
        if run_time_s >= self.duration_s:
            return None
        return int(run_time_s // self.step_time_s)

    def env(self) -> dict[str, str]:
        return {
            "SAGELAB_STEP_USERS": str(self.step_users),
            "SAGELAB_STEP_TIME_S": repr(self.step_time_s),
            "SAGELAB_STEP_MAX_USERS": str(self.max_users),
            "SAGELAB_STEP_SPAWN_RATE": repr(self.spawn_rate),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StepPlan:
        try:
            return cls(
                step_users=int(env["SAGELAB_STEP_USERS"]),
                step_time_s=float(env["SAGELAB_STEP_TIME_S"]),
                max_users=int(env["SAGELAB_STEP_MAX_USERS"]),
                spawn_rate=float(env.get("SAGELAB_STEP_SPAWN_RATE", "10")),
            )
        except KeyError as exc:
            raise RuntimeError(
                f"the step shape needs {exc.args[0]}; run it through `sagelab loadtest --step`"
            ) from exc


@dataclass(frozen=True)
class StepWindow:
    step: int
    users: int
    t_start: float  # wall time the step began
    t_end: float  # wall time the next step began, or the end of the test


def read_step_log(path: Path, t_end: float) -> list[StepWindow]:
    """The steps the shape logged; the last one ends at ``t_end``."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["t"])
    return [
        StepWindow(r["step"], r["users"], r["t"], rows[i + 1]["t"] if i + 1 < len(rows) else t_end)
        for i, r in enumerate(rows)
    ]


def judge_steps(
    raw: pd.DataFrame, windows: list[StepWindow], budget: Budget, settle_s: float
) -> list[dict[str, Any]]:
    """One verdict per step: its figures (from :func:`measure`) and the budget it broke."""
    out = []
    for w in windows:
        start = min(w.t_start + settle_s, (w.t_start + w.t_end) / 2)
        part = raw[(raw["t"] >= start) & (raw["t"] < w.t_end)] if len(raw) else raw
        figures = measure(part)
        m = figures["metrics"]
        out.append(
            {
                "step": w.step,
                "users": w.users,
                "t_start": w.t_start,
                "t_end": w.t_end,
                "judged_from": start,
                "figures": {
                    "first_audio_p95": m["first_audio"]["p95"],
                    "voice_to_voice_p95": m["voice_to_voice"]["p95"],
                    "ping_rtt_p99": m["ping_rtt"]["p99"],
                    "send_lateness_p99": m["send_lateness"]["p99"],
                    "replies": m["first_audio"]["n"],
                    "error_rate": figures["error_rate"],
                    "failures": figures["failures"],
                    "stutter": figures["stutter"],
                    "error_samples": figures["error_samples"],
                },
                "violations": budget.violations(figures),
            }
        )
    return out


def first_broken(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((s for s in steps if s["violations"]), None)


def sustainable_users(steps: list[dict[str, Any]]) -> int:
    """Users of the last step before the first broken one; 0 if the first step broke."""
    best = 0
    for s in steps:
        if s["violations"]:
            break
        best = s["users"]
    return best
