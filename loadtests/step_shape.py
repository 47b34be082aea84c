"""A staircase of users for the capacity search (``sagelab loadtest --step``).

Loaded next to the users (``-f loadtests/locustfile.py,loadtests/step_shape.py``), so a plain
load test never sees it. Every ``SAGELAB_STEP_TIME_S`` seconds it adds ``SAGELAB_STEP_USERS``
users, up to ``SAGELAB_STEP_MAX_USERS``, and ends after the last step (``sagelab loadtest``
stops it sooner, at the first step that breaks the budget). Each step start is appended to
``SAGELAB_STEP_LOG`` (JSONL: step, users, wall time) so the measurements can be cut into steps
by wall time, while the test runs or afterwards. In a distributed run the shape runs on the
master only.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from locust import LoadTestShape

from sagelab.loadtest.steps import StepPlan


class StepShape(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        self.plan = StepPlan.from_env(os.environ)
        log = os.environ.get("SAGELAB_STEP_LOG")
        self.log = Path(log) if log else None
        self.step = -1

    def tick(self) -> tuple[int, float] | None:
        step = self.plan.step_at(self.get_run_time())
        if step is None:
            return None
        if step != self.step:
            self.step = step
            if self.log is not None:
                row = {"step": step, "users": self.plan.users(step), "t": time.time()}
                with self.log.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        return self.plan.users(step), self.plan.spawn_rate
