"""Scenario files: the shipped suite loads, and every mistake is named by file, step and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagelab.bundled import asset
from sagelab.scenarios import ScenarioError, load_scenario, load_scenarios, parse_scenario
from sagelab.scenarios.model import BargeInStep, PlayStep, SayStep, TextStep, WaitStep

SCENARIOS = asset("scenarios")
SPEECH = asset("speech")


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_suite_loads_and_covers_the_issue() -> None:
    scenarios = {s.name: s for s in load_scenarios(SCENARIOS)}
    assert {"demo-conversation", "tool-failure", "barge-in", "long-monologue"} <= set(scenarios)
    assert any(isinstance(s, BargeInStep) for s in scenarios["barge-in"].steps)
    monologue = scenarios["long-monologue"].steps[0]
    assert isinstance(monologue, PlayStep) and len(monologue.play) == 5
    failing = [t for _, s in scenarios["tool-failure"].turns for t in s.expect.tools or []]
    assert any(t.error is True for t in failing)
    for scenario in scenarios.values():
        assert scenario.source is not None and scenario.source.parent == SCENARIOS
        for step in scenario.steps:
            for path in getattr(step, "play", None) or []:
                assert path.is_file()


def test_steps_are_typed_by_their_action_and_paths_resolve_against_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes((SPEECH / "goforward.wav").read_bytes())
    path = write(
        tmp_path,
        """
agent: scripted
steps:
  - play: audio/a.wav
    transcript: go forward ten meters
    expect: {max_wer: 0.3, tool: get_weather, reply_contains: weather}
  - wait_ms: 200
  - say: hello there
  - send_text: hi
  - barge_in: {after_ms: 100, say: stop}
    expect: {interrupted: true, within_ms: {interruption: 500}}
""",
    )
    scenario = load_scenario(path)
    assert scenario.name == "s"  # from the file name
    kinds = [type(s) for s in scenario.steps]
    assert kinds == [PlayStep, WaitStep, SayStep, TextStep, BargeInStep]
    play = scenario.steps[0]
    assert isinstance(play, PlayStep)
    assert play.play == [tmp_path / "audio" / "a.wav"]
    assert play.expect.tools is not None and play.expect.tools[0].name == "get_weather"
    assert play.expect.reply_contains == ["weather"]
    assert scenario.steps[2].reference == "hello there"  # a said line is its own reference


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("  - {expect: {}}", "step 1 has no action; give exactly one of play, say"),
        ("  - {say: a, send_text: b}", "step 1 has more than one action (say, send_text)"),
        ("  - {say: hi, expct: {}}", "step 1 (say): expct: unknown field"),
        (
            "  - {say: hi, expect: {max_wer: 20}}",
            "step 1 (say): expect.max_wer: Input should "
            "be less than or equal to 1 (WER is a fraction",
        ),
        (
            "  - {say: hi, expect: {within_ms: {v2v: 300}}}",
            "step 1 (say): expect.within_ms: unknown budget v2v; within_ms may name voice_to_voice",
        ),
        ("  - {wait_ms: -5}", "step 1 (wait_ms): wait_ms: Input should be greater than 0"),
        ("  - {play: missing.wav}", "recording"),
        (
            "  - {play: ../speech/goforward.wav, expect: {max_wer: 0.2}}",
            "step 1 (play goforward.wav): expect.max_wer needs a reference transcript; add "
            "'transcript:'",
        ),
        ("  - {send_text: hi, expect: {max_wer: 0.2}}", "a typed message has no transcript"),
        ("  - {barge_in: {after_ms: 10, say: x}}", "put it right after a play, say, send_text"),
        ("  - {say: hi}\n  - {wait_ms: 10}\n  - {barge_in: {after_ms: 10, say: x}}", "step 3"),
        ("  - {barge_in: {after_ms: 10}}", "barge_in needs exactly one of 'play'"),
        ("  - {say: hi, expect: {interrupted: true}}", "only applies to barge_in steps"),
        ("  - {say: hi, wait_reply: false, expect: {reply_contains: x}}", "wait_reply is false"),
        ("  - {say: hi, expect: {tool: a, tools: [b]}}", "either 'tool' or 'tools'"),
    ],
)
def test_errors_name_the_file_step_and_field(steps: str, message: str) -> None:
    # Written next to data/speech so relative recordings resolve like a real suite's.
    path = SCENARIOS / "_test_invalid.yaml"
    with pytest.raises(ScenarioError) as err:
        parse_scenario_text(f"agent: audio-sage\nsteps:\n{steps}\n", path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def parse_scenario_text(text: str, where: Path) -> None:
    import yaml

    parse_scenario(yaml.safe_load(text), where=where, base_dir=where.parent)


def test_top_level_mistakes(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="is not valid YAML"):
        load_scenario(write(tmp_path, "agent: [unclosed"))
    with pytest.raises(ScenarioError, match="a scenario is a mapping"):
        load_scenario(write(tmp_path, "- just a list"))
    with pytest.raises(ScenarioError, match=r"agent: required field is missing"):
        load_scenario(write(tmp_path, "steps: [{say: hi}]"))
    with pytest.raises(ScenarioError, match=r"steps: List should have at least 1 item"):
        load_scenario(write(tmp_path, "agent: x\nsteps: []"))
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="client tool gives either 'result' or 'error'"):
        load_scenario(
            write(
                tmp_path, "agent: x\nclient_tools: {t: {result: 1, error: e}}\nsteps: [{say: hi}]"
            )
        )


def test_folders(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="holds no scenario files"):
        load_scenarios(tmp_path)
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios(tmp_path / "missing")
    write(tmp_path, "name: same\nagent: x\nsteps: [{say: hi}]", "a.yaml")
    write(tmp_path, "name: same\nagent: x\nsteps: [{say: ho}]", "b.yaml")
    with pytest.raises(ScenarioError, match=r"scenario names must be unique; repeated: \['same'\]"):
        load_scenarios(tmp_path)


def test_inline_scenarios_resolve_recordings_against_the_given_folder() -> None:
    scenario = parse_scenario(
        {"agent": "scripted", "steps": [{"play": "goforward.wav"}]},
        where="inline",
        base_dir=SPEECH,
    )
    step = scenario.steps[0]
    assert isinstance(step, PlayStep) and step.play == [SPEECH / "goforward.wav"]
    with pytest.raises(ScenarioError, match=r"^inline: step 1 \(play goforward.wav\)"):
        parse_scenario({"agent": "scripted", "steps": [{"play": "goforward.wav"}]},
                       where="inline", base_dir=SCENARIOS)  # fmt: skip
