"""Run scenarios (each ``repeat`` times), judge every step, and keep what a report needs.

``run_suite`` is what ``sagelab bench run`` and the pytest plugin call: it holds the
conversations one after another (one session at a time, so a scenario's latencies are not
another's load), reads server tool parameters from the store when it can, and returns
``SuiteResult``: per run, per step, every check with what was expected and what was seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagelab.client.session import ToolHandler
from sagelab.scenarios.expectations import Check, Observation, evaluate, word_error_rate
from sagelab.scenarios.model import Scenario, WaitStep
from sagelab.scenarios.observe import observe, read_tool_records
from sagelab.scenarios.runner import ScenarioRun, StepRun, Synthesizer, needs_tts, run_scenario


@dataclass
class StepResult:
    index: int
    label: str
    kind: str
    checks: list[Check]
    observation: Observation | None
    reference: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        obs = self.observation
        return {
            "step": self.index + 1,
            "label": self.label,
            "kind": self.kind,
            "passed": self.passed,
            "error": self.error,
            "reference": self.reference,
            "heard": obs.heard if obs else None,
            "wer": obs.wer if obs else None,
            "reply": obs.reply if obs else None,
            "tools": [
                {"name": t.name, "parameters": t.parameters, "is_error": t.is_error}
                for t in (obs.tools if obs else [])
            ],
            "interrupted": obs.interrupted if obs else None,
            "replies": obs.replies if obs else None,
            "latencies_ms": {k: round(v, 1) for k, v in (obs.latencies_ms if obs else {}).items()},
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass
class ScenarioResult:
    scenario: Scenario
    repeat: int
    steps: list[StepResult]
    run: ScenarioRun
    error: str | None = None

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def checks(self) -> list[Check]:
        return [c for s in self.steps for c in s.checks]

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.passed for s in self.steps)

    def failures(self) -> list[str]:
        """One line per failed check (or the run's own error), for humans."""
        lines = [f"{self.name} run {self.repeat + 1}: {self.error}"] if self.error else []
        for step in self.steps:
            for c in step.checks:
                if not c.passed:
                    lines.append(
                        f"{self.name} run {self.repeat + 1}, step {step.index + 1} "
                        f"({step.label}): {c.name}: expected {c.expected}, got {c.observed}"
                    )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "source": str(self.scenario.source) if self.scenario.source else None,
            "agent": self.scenario.agent,
            "repeat": self.repeat + 1,
            "passed": self.passed,
            "error": self.error,
            "conversation_id": self.run.conversation_id,
            "duration_s": round(self.run.duration_s, 2),
            "checks": len(self.checks),
            "failed_checks": sum(1 for c in self.checks if not c.passed),
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass
class SuiteResult:
    results: list[ScenarioResult]
    url: str
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def failures(self) -> list[str]:
        return [line for r in self.results for line in r.failures()]

    def explain(self) -> str:
        """Every failed check on its own line (for ``assert result.passed, result.explain()``)."""
        if not self.results:
            return "no scenario was run"
        return "\n".join(self.failures()) or "all checks passed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "url": self.url,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 2),
            "runs": len(self.results),
            "failed_runs": sum(1 for r in self.results if not r.passed),
            "checks": sum(len(r.checks) for r in self.results),
            "failed_checks": sum(1 for r in self.results for c in r.checks if not c.passed),
            "results": [r.as_dict() for r in self.results],
        }


def judge(run: ScenarioRun) -> ScenarioResult:
    """Check every step of a finished run against its scenario."""
    observations = observe(run)
    steps = []
    for step_run, obs in zip(run.steps, observations, strict=True):
        step = step_run.step
        if isinstance(step, WaitStep):
            continue
        reference = step.reference
        if obs is not None and reference is not None:
            obs.wer = word_error_rate(reference, obs.heard)
        error: str | None
        if not step_run.ran:
            error = "not run: " + (run.error or "the session ended before this step")
            checks = [Check("ran", False, "the step runs", error)]
        else:
            error = step_run.error
            checks = evaluate(step.expect, obs or Observation(), reference=reference, error=error)
        steps.append(
            StepResult(step_run.index, step.label, step.kind, checks, obs, reference, error)
        )
    return ScenarioResult(run.scenario, run.repeat, steps, run, run.error)


async def run_suite(
    scenarios: Sequence[Scenario],
    url: str,
    *,
    repeat: int = 1,
    store_path: Path | None = None,
    synthesize: Synthesizer | None = None,
    on_step: Callable[[StepRun], None] | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
    tools: Mapping[str, ToolHandler] | None = None,
) -> SuiteResult:
    """Every scenario ``repeat`` times, in order. ``store_path`` is the server's conversation
    store, read for server tool parameters (the bundled server's, or one given with
    ``--store``); ``tools`` are client tool handlers for every run (see ``run_scenario``)."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    if synthesize is None and any(needs_tts(s) for s in scenarios):
        from sagelab.scenarios.runner import piper_synthesizer

        synthesize = piper_synthesizer()
    t0 = time.monotonic()
    suite = SuiteResult([], url)
    for scenario in scenarios:
        for k in range(repeat):
            run = await run_scenario(
                scenario,
                url,
                repeat=k,
                synthesize=synthesize,
                on_step=on_step,
                tools=tools,
            )
            if store_path is not None and run.conversation_id is not None:
                expected = sum(
                    1 for e in run.timeline.events
                    if e.type == "agent_tool_response" and e.direction == "recv"
                )  # fmt: skip
                if expected:
                    run.tool_records = await asyncio.to_thread(
                        read_tool_records, store_path, run.conversation_id, expected
                    )
            result = judge(run)
            suite.results.append(result)
            if on_result is not None:
                on_result(result)
    suite.duration_s = time.monotonic() - t0
    return suite
