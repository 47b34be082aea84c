"""``sagelab bench run`` end to end: a real server, a scripted conversation, report, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagelab.cli import app
from sagelab.server.app import SagelabServer

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech" / "goforward.wav"

# The scripted agent answers in order: a short reply, a client tool call (get_weather), a long
# reply (talked over here), then the first again. No models are loaded, so this is quick.
SCENARIO = f"""
name: scripted-smoke
agent: scripted
settings: {{greeting: talk_over, trailing_silence_ms: 800}}
client_tools: {{get_weather: {{result: sunny}}}}
steps:
  - send_text: hello
    expect: {{tools: [], reply_contains: I heard you, replies: 1}}
  - play: {SPEECH}
    expect:
      tool: {{name: get_weather, parameters: {{city: Paris}}, error: false}}
      reply_contains: {{REPLY}}
  - send_text: tell me more
    expect: {{reply_contains: longer answer}}
  - barge_in: {{after_ms: 300, play: {SPEECH}}}
    expect: {{interrupted: true, within_ms: {{interruption: 2000}}}}
"""


def scenario_file(tmp_path: Path, reply: str) -> Path:
    path = tmp_path / "smoke.yaml"
    path.write_text(SCENARIO.replace("{REPLY}", reply), encoding="utf-8")
    return path


def only_run_dir(out: Path) -> Path:
    [run_dir] = list(out.iterdir())
    assert run_dir.name.endswith("-scenarios")
    return run_dir


def test_a_passing_suite_exits_0_and_writes_a_report_with_figures(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["bench", "run", str(scenario_file(tmp_path, "Paris is sunny")), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "all scenarios passed" in result.output
    run_dir = only_run_dir(out)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["passed"] and results["failed_checks"] == 0
    steps = results["results"][0]["steps"]
    assert [s["kind"] for s in steps] == ["send_text", "play", "send_text", "barge_in"]
    assert steps[1]["tools"] == [
        {"name": "get_weather", "parameters": {"city": "Paris"}, "is_error": False}
    ]
    assert steps[3]["interrupted"] is True
    report = (run_dir / "report.md").read_text()
    assert "**PASSED**" in report
    for figure in ("latency_cdf.png", "timeline_scripted-smoke.png"):
        assert f"]({figure})" in report
        assert (run_dir / figure).read_bytes().startswith(b"\x89PNG")
        assert (run_dir / figure).stat().st_size > 10_000
    # The run's timeline is kept, so the report can be redrawn or re-judged later.
    assert (run_dir / "timelines" / "scripted-smoke-1" / "timeline.jsonl").is_file()


def test_a_failed_expectation_exits_1_and_names_it(
    tmp_path: Path, bg_server: SagelabServer
) -> None:
    """Against a running server (``--url``), with an HTML report and JSON on stdout."""
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        ["bench", "run", str(scenario_file(tmp_path, "Paris is rainy")), "--url",
         bg_server.http_url, "--out", str(out), "--format", "html", "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["passed"] is False
    assert summary["failed_checks"] == 1
    [failed] = [c for s in summary["results"][0]["steps"] for c in s["checks"] if not c["passed"]]
    assert failed["name"] == "reply_contains 'Paris is rainy'"
    assert "Paris is sunny" in failed["observed"]
    run_dir = only_run_dir(out)
    html = (run_dir / "report.html").read_text()
    assert "FAILED" in html and "Paris is rainy" in html
    assert '<img src="timeline_scripted-smoke.png"' in html


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "agent: scripted\nsteps: [{say: hi, expect: {max_wer: 2}}]",
            "step 1 (say): expect.max_wer",
        ),
        ("agent: nobody\nsteps: [{send_text: hi}]", "agent(s) nobody, which the agents file"),
    ],
)
def test_a_bad_scenario_exits_2_before_running(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "run", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
