"""What a run does when it cannot prepare, or cannot reach the agent: explain, never hang."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sagelab.bench.serverproc import free_port
from sagelab.scenarios import ScenarioError, parse_scenario, run_scenario, run_suite


def test_an_unreadable_recording_is_a_scenario_error_naming_the_step(tmp_path: Path) -> None:
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    scenario = parse_scenario(
        {"agent": "scripted", "steps": [{"send_text": "hi"}, {"play": "broken.wav"}]},
        where=tmp_path / "s.yaml",
        base_dir=tmp_path,
    )
    with pytest.raises(ScenarioError, match=r"step 2: cannot prepare its audio"):
        asyncio.run(run_scenario(scenario, "http://127.0.0.1:1"))


def test_an_unreachable_server_fails_every_step_with_the_reason() -> None:
    scenario = parse_scenario(
        {"agent": "scripted", "steps": [{"send_text": "hi", "expect": {"reply_contains": "x"}},
                                        {"send_text": "again"}]},
        where="inline",
    )  # fmt: skip
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    suite = asyncio.run(run_suite([scenario], url))
    assert not suite.passed
    [result] = suite.results
    assert result.error is not None and "cannot connect" in result.error
    assert [s.passed for s in result.steps] == [False, False]
    assert all("not run: cannot connect" in line or "cannot connect" in line
               for line in suite.failures())  # fmt: skip
