"""Voice-agent scenarios: YAML steps a simulated user takes, and what the agent must do.

``load_scenarios`` reads scenario files (``sagelab.scenarios.model`` documents the format; the
bundled ones are in ``sagelab/assets/scenarios``), ``run_suite`` holds the conversations
through ``Session`` and judges them, ``write_report`` writes Markdown or HTML with figures.
``sagelab bench run`` (:mod:`sagelab.bench.scenarios`) does all three; ``sagelab.testing``
lets a pytest suite do it with a fixture.
"""

from sagelab.scenarios.expectations import Check, Observation, ToolCall
from sagelab.scenarios.loader import ScenarioError, load_scenario, load_scenarios, parse_scenario
from sagelab.scenarios.model import Expect, Scenario
from sagelab.scenarios.report import write_report
from sagelab.scenarios.runner import run_scenario
from sagelab.scenarios.suite import ScenarioResult, StepResult, SuiteResult, judge, run_suite

__all__ = [
    "Check",
    "Expect",
    "Observation",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "StepResult",
    "SuiteResult",
    "ToolCall",
    "judge",
    "load_scenario",
    "load_scenarios",
    "parse_scenario",
    "run_scenario",
    "run_suite",
    "write_report",
]
