"""A staircase of users for the capacity search (``sagelab loadtest --step``).

Loaded next to the users (``-f …/locustfile.py,…/step_shape.py``, both shipped in this
package), so a plain load test never sees it. Every ``SAGELAB_STEP_TIME_S`` seconds it adds
``SAGELAB_STEP_USERS`` users, up to ``SAGELAB_STEP_MAX_USERS``, and ends after the last step
(``sagelab loadtest`` stops it sooner, at the first step that breaks the budget). Each step
start is appended to ``SAGELAB_STEP_LOG`` (JSONL: step, users, the master's wall time) so the
measurements can be cut into steps by wall time, while the test runs or afterwards. The shape
runs on the master only. When the staircase is over it does not return ``None`` (locust would
quit at once and lose the workers' last measurements) but asks
:func:`sagelab.loadtest.locustplugin.finish` to end the run, holding the last step meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gevent
from locust import LoadTestShape

from sagelab.loadtest import locustplugin
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
            gevent.spawn(locustplugin.finish, "the last step is over")
            return self.plan.users(self.step), self.plan.spawn_rate
        if step != self.step:
            self.step = step
            if self.log is not None:
                row = {"step": step, "users": self.plan.users(step), "t": time.time()}
                with self.log.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        return self.plan.users(step), self.plan.spawn_rate
