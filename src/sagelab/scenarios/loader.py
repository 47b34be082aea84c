"""Read scenario files, and say exactly where one is wrong: file, step and field.

A scenario suite is usually edited by hand, so every error names the file, the step (by number
and by what it does, as people count them: from 1) and the field, and says what would be valid.
Recordings are resolved relative to the scenario file and must exist when the file is loaded,
not half-way through a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sagelab.scenarios.model import (
    STEP_KEYS,
    BargeInStep,
    PlayStep,
    Scenario,
    TextStep,
    WaitStep,
)

ACTIONS = (*STEP_KEYS, "barge_in")


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file, step and field, and the fix."""


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path} is not valid YAML: {exc}") from exc
    scenario = parse_scenario(raw, where=path, base_dir=path.parent, default_name=path.stem)
    return scenario.model_copy(update={"source": path.resolve()})


def parse_scenario(
    raw: Any,
    *,
    where: str | Path = "<scenario>",
    base_dir: Path | None = None,
    default_name: str = "scenario",
) -> Scenario:
    """A scenario from already-parsed data (a test's inline dict, say). Recordings are
    resolved against ``base_dir`` (default: the working directory); errors start with
    ``where``."""
    path = Path(where)
    base = base_dir if base_dir is not None else Path.cwd()
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"{path}: a scenario is a mapping with 'agent' and 'steps' (see data/scenarios/)"
        )
    raw = {"name": default_name, **raw}
    steps = raw.get("steps")
    if isinstance(steps, list):
        for n, step in enumerate(steps, 1):
            _check_action(path, n, step)
        raw["steps"] = [_resolve_paths(step, base) for step in steps]
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_describe(path, raw, exc)) from exc
    _check_semantics(path, scenario)
    return scenario


def load_scenarios(path: str | Path) -> list[Scenario]:
    """One file, or every ``*.yaml``/``*.yml`` in a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise ScenarioError(f"{path} holds no scenario files (*.yaml)")
    elif path.exists():
        files = [path]
    else:
        raise ScenarioError(f"{path} does not exist: give a scenario file or a folder of them")
    scenarios = [load_scenario(f) for f in files]
    names = [s.name for s in scenarios]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ScenarioError(f"{path}: scenario names must be unique; repeated: {repeated}")
    return scenarios


def _check_action(path: Path, n: int, step: Any) -> None:
    if not isinstance(step, dict):
        raise ScenarioError(
            f"{path}: step {n}: a step is a mapping with one of {', '.join(ACTIONS)}, got {step!r}"
        )
    found = [a for a in ACTIONS if a in step]
    if len(found) != 1:
        what = "no action" if not found else f"more than one action ({', '.join(found)})"
        raise ScenarioError(
            f"{path}: step {n} has {what}; give exactly one of {', '.join(ACTIONS)} per step"
        )


def _resolve_paths(step: dict[str, Any], base: Path) -> dict[str, Any]:
    step = dict(step)
    if isinstance(step.get("play"), str):
        step["play"] = str(base / step["play"])
    elif isinstance(step.get("play"), list):
        step["play"] = [str(base / p) if isinstance(p, str) else p for p in step["play"]]
    barge = step.get("barge_in")
    if isinstance(barge, dict) and isinstance(barge.get("play"), str):
        step["barge_in"] = {**barge, "play": str(base / barge["play"])}
    return step


def _describe(path: Path, raw: dict[str, Any], exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = "(top level)"
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            n = loc[1] + 1
            # Discriminated unions put the step kind into the location; people don't write it.
            rest = [str(p) for p in loc[3:]]
            step = raw["steps"][loc[1]]
            action = next((a for a in ACTIONS if isinstance(step, dict) and a in step), "?")
            where = f"step {n} ({action})" + (f": {'.'.join(rest)}" if rest else "")
        elif loc:
            where = ".".join(str(p) for p in loc)
        hint = " (WER is a fraction: 0.25 means 25 %)" if loc[-1:] == ["max_wer"] else ""
        lines.append(f"{where}: {_message(err)}{hint}")
    return f"{path}: " + "; ".join(lines)


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see sagelab.scenarios.model)"
    if err["type"] == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def _check_semantics(path: Path, scenario: Scenario) -> None:
    """What the schema cannot say: files exist, WER has a reference, barge-ins follow a turn."""
    for i, step in enumerate(scenario.steps):
        where = f"{path}: step {i + 1} ({step.label})"
        if isinstance(step, WaitStep):
            continue
        recordings = list(step.play) if isinstance(step, PlayStep) else []
        if isinstance(step, BargeInStep):
            recordings = [step.barge_in.play] if step.barge_in.play else []
            previous = scenario.steps[i - 1] if i else None
            if previous is None or isinstance(previous, WaitStep):
                raise ScenarioError(
                    f"{where}: a barge_in talks over the reply to the step just before it; "
                    "put it right after a play, say, send_text or barge_in step"
                )
            if not previous.wait_reply:
                raise ScenarioError(
                    f"{where}: the step before it has wait_reply: false, so there is no reply "
                    "to talk over"
                )
        for recording in recordings:
            if not recording.is_file():
                raise ScenarioError(f"{where}: recording {recording} not found")
        if step.expect.max_wer is not None and step.reference is None:
            fix = (
                "a typed message has no transcript to score"
                if isinstance(step, TextStep)
                else "add 'transcript:' with the words said in the recording"
            )
            raise ScenarioError(f"{where}: expect.max_wer needs a reference transcript; {fix}")
        if step.expect.interrupted is not None and not isinstance(step, BargeInStep):
            raise ScenarioError(
                f"{where}: expect.interrupted only applies to barge_in steps (it checks that "
                "the agent stopped talking when the user talked over it)"
            )
        if not step.wait_reply and not step.expect.empty:
            raise ScenarioError(
                f"{where}: wait_reply is false, so there is no reply to check; "
                "remove 'expect' or the wait_reply setting"
            )
