"""Lab files: strict parsing with errors that name the field, reply checks, per-variant agents."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sagelab.cli import app
from sagelab.lab import LabError, ReplyChecks, lab_agents_file, parse_lab, summarize

SCENARIO = {"name": "s", "agent": "audio-sage", "steps": [{"send_text": "What can you do?"}]}


def lab(**changes: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "name": "t",
        "scenario": SCENARIO,
        "variants": [{"name": "a", "prompt": "Be brief."}, {"name": "b", "prompt": "Be long."}],
    }
    raw.update(changes)
    return raw


pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variants": [{"name": "a"}]}, "variants: List should have at least 2 items"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"variants": [{"name": "a"}, {"name": "b", "promt": "x"}]}, "variants.1.promt"),
        (
            {"variants": [{"name": "a"}, {"name": "b", "checks": {"reply_matches": "("}}]},
            "not a valid regular expression",
        ),
        ({"repeat": 0}, "repeat"),
        ({"scenario": 5}, "'scenario' must be"),
    ],
)
def test_bad_lab_files_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LabError, match=message):
        parse_lab(lab(**changes), where="lab.yaml")


def test_a_lab_file_loads_its_scenario_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "sc.yaml").write_text(yaml.safe_dump(SCENARIO), encoding="utf-8")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab(scenario="sc.yaml", agent="audio-sage-llm")))
    from sagelab.lab import load_lab

    spec = load_lab(path)
    assert spec.scenario.name == "s" and spec.base_agent == "audio-sage-llm"


def test_reply_checks_judge_each_reply_and_variant_checks_add_to_shared_ones() -> None:
    shared = ReplyChecks(banned_words=["sorry"], max_words=5)
    mine = shared.merged(ReplyChecks(banned_words=["alas"], reply_matches=r"\boslo\b"))
    assert mine.banned_words == ["sorry", "alas"] and mine.max_words == 5
    assert mine.evaluate("Found two in Oslo.") == {
        "reply_matches": True,
        "banned_words": True,
        "max_words": True,
    }
    verdict = mine.evaluate("Sorry, alas, I found nobody in Osloville today.")
    assert verdict == {"reply_matches": False, "banned_words": False, "max_words": False}
    assert mine.banned_used("Sorry, alas") == ["sorry", "alas"]
    assert ReplyChecks(banned_words=["no"]).evaluate("Nobody knows") == {"banned_words": True}


def test_the_summary_counts_per_variant() -> None:
    rows = pd.DataFrame(
        [
            _row("a", 1, words=4, ttfa=500, calls=1, errors=0, check=True),
            _row("a", 2, words=6, ttfa=700, calls=0, errors=0, check=True),
            _row("b", 1, words=30, ttfa=900, calls=2, errors=1, check=False),
            _row("b", 2, words=40, ttfa=1100, calls=0, errors=0, check=True),
        ]
    )
    s = summarize(rows)
    assert list(s.index) == ["a", "b"]
    assert s.loc["a", "words_mean"] == 5 and s.loc["b", "words_mean"] == 35
    assert s.loc["a", "ttfa_p50_ms"] == 600
    assert s.loc["a", "tool_call_rate"] == 0.5 and s.loc["a", "tool_validity"] == 1.0
    assert s.loc["b", "tool_validity"] == 0.5
    assert s.loc["a", "max_words_rate"] == 1.0 and s.loc["b", "max_words_rate"] == 0.5


def _row(variant: str, run: int, *, words: int, ttfa: float, calls: int, errors: int, check: bool):  # type: ignore[no-untyped-def]
    return {
        "variant": variant,
        "run": run,
        "reply_words": words,
        "time_to_first_audio_ms": ttfa,
        "tool_calls": calls,
        "tool_errors": errors,
        "scenario_checks_passed": True,
        "error": None,
        "check_max_words": check,
    }


def test_each_variant_is_an_agent_of_its_own_with_only_what_it_changes(tmp_path: Path) -> None:
    spec = parse_lab(
        lab(
            agent="audio-sage-llm",
            variants=[
                {"name": "brief", "prompt": "Be brief.", "brain_options": {"max_tokens": 9}},
                {"name": "notools", "tools": [], "first_message": "Yes?"},
            ],
        )
    )
    ids = lab_agents_file(spec, None, tmp_path)
    assert ids == {"brief": "audio-sage-llm.brief", "notools": "audio-sage-llm.notools"}
    agents = {a["id"]: a for a in yaml.safe_load((tmp_path / "agents.yaml").read_text())["agents"]}
    assert set(agents) == set(ids.values())
    brief, notools = agents["audio-sage-llm.brief"], agents["audio-sage-llm.notools"]
    assert brief["prompt"] == "Be brief." and notools["prompt"].startswith("You are Audio Sage")
    assert brief["options"]["brain_options"]["max_tokens"] == 9
    assert brief["options"]["brain_options"]["temperature"] == 0.2  # the base agent's, kept
    assert notools["tools"] == [] and len(brief["tools"]) == 3
    assert notools["first_message"] == "Yes?"
    databases = {a["options"]["server_tools"]["database"] for a in agents.values()}
    assert len(databases) == 2 and all(d.startswith(str(tmp_path)) for d in databases)


def test_a_variant_cannot_keep_a_tool_the_agent_lacks(tmp_path: Path) -> None:
    spec = parse_lab(lab(variants=[{"name": "a"}, {"name": "b", "tools": ["launch_rocket"]}]))
    with pytest.raises(ValueError, match="launch_rocket"):
        lab_agents_file(spec, None, tmp_path)


def test_the_command_reports_a_bad_lab_file_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab(variants=[{"name": "only"}])), encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "prompts", str(path)])
    assert result.exit_code == 2
    assert "at least 2" in result.output
