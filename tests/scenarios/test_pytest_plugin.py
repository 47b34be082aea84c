"""``-p sagelab.testing``: a user's own pytest suite asserting on voice-agent behaviour.

The plugin runs in a pytest of its own (a subprocess), as a user would run it: it starts the
bundled server itself, serves plain and async tests, and a failing expectation fails the test
with a message naming the step and the check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TESTS = """
import pytest

SCRIPTED = {"agent": "scripted", "settings": {"greeting": "talk_over"},
            "client_tools": {"get_weather": {"result": "sunny"}}}


def test_text_turn(run_scenario):
    result = run_scenario({**SCRIPTED, "steps": [
        {"send_text": "hi", "expect": {"reply_contains": "I heard you", "tools": []}}]})
    assert result.passed, result.explain()
    assert result.results[0].steps[0].observation.replies == 1


@pytest.mark.asyncio
async def test_from_an_async_test(run_scenario):
    result = run_scenario({**SCRIPTED, "steps": [
        {"send_text": "hi", "expect": {"reply_contains": "I heard you"}},
        {"play": "goforward.wav", "expect": {"tool": {"name": "get_weather",
                                                      "parameters": {"city": "Paris"}}}}]})
    assert result.passed, result.explain()


def test_wrong_expectation(run_scenario):
    result = run_scenario({**SCRIPTED, "steps": [
        {"send_text": "hi", "expect": {"reply_contains": "goodbye"}}]})
    assert result.passed, result.explain()
"""


def test_plugin_fixtures_in_a_users_test_suite(tmp_path: Path, speech_dir: Path) -> None:
    (tmp_path / "test_agent.py").write_text(USER_TESTS, encoding="utf-8")
    (tmp_path / "goforward.wav").write_bytes((speech_dir / "goforward.wav").read_bytes())
    report = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "sagelab.testing", "-p", "no:locust",
         "-p", "no:cacheprovider", "-q", "--sagelab-report", str(report), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "test_wrong_expectation" in out
    assert "step 1 (text \"hi\"): reply_contains 'goodbye': expected contains 'goodbye'" in out
    assert (report / "test_wrong_expectation" / "report.md").is_file()
    assert (report / "test_text_turn" / "results.json").is_file()
