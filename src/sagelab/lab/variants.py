"""What a prompt-lab file says: one scenario, the prompt variants to run it under, the checks.

A variant is the base agent with some of its settings replaced, so that two variants differ in
exactly what the experiment is about::

    name: terse-vs-chatty
    scenario: ../scenarios/lab_help_and_search.yaml   # relative to this file
    agent: audio-sage-llm          # the base agent; default: the scenario's
    repeat: 10                     # runs per variant
    checks:                        # for every variant, on every reply
      banned_words: [sorry]
    variants:
      - name: terse
        prompt: "You are Audio Sage ... Answer in at most ten words."
        checks: {max_words: 15}
      - name: chatty
        prompt: "You are Audio Sage ... Explain fully, in three or four sentences."
        brain_options: {max_tokens: 96}   # merged into the base agent's
        checks: {reply_matches: "\\\\."}

Checks are per reply and never stop a run; the lab counts how often each holds, per variant.
The models are strict, so a misspelt key fails at load time instead of checking nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sagelab.scenarios.loader import load_scenario, parse_scenario
from sagelab.scenarios.model import Scenario

__all__ = ["LabError", "LabSpec", "ReplyChecks", "Variant", "load_lab", "parse_lab"]


class LabError(ValueError):
    """A lab file is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplyChecks(_Strict):
    """Checks on each reply's text. Absent means not checked."""

    reply_matches: str | None = Field(default=None, description="a regex the reply must match")
    reply_not_matches: str | None = Field(default=None, description="a regex it must not match")
    banned_words: list[str] = Field(
        default_factory=list, description="whole words (case-insensitive) the reply must avoid"
    )
    max_words: int | None = Field(default=None, ge=1)
    min_words: int | None = Field(default=None, ge=0)

    @field_validator("reply_matches", "reply_not_matches")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    def merged(self, other: ReplyChecks) -> ReplyChecks:
        """These checks with ``other``'s given fields on top (banned words add up)."""
        data = self.model_dump()
        for key, value in other.model_dump(exclude_defaults=True).items():
            data[key] = data[key] + value if key == "banned_words" else value
        return ReplyChecks.model_validate(data)

    def evaluate(self, reply: str) -> dict[str, bool]:
        """Each check's verdict on ``reply`` by name (``banned_words`` True when none is used)."""
        words = reply.split()
        out: dict[str, bool] = {}
        if self.reply_matches is not None:
            out["reply_matches"] = re.search(self.reply_matches, reply, re.IGNORECASE) is not None
        if self.reply_not_matches is not None:
            out["reply_not_matches"] = (
                re.search(self.reply_not_matches, reply, re.IGNORECASE) is None
            )
        if self.banned_words:
            out["banned_words"] = not self.banned_used(reply)
        if self.max_words is not None:
            out["max_words"] = len(words) <= self.max_words
        if self.min_words is not None:
            out["min_words"] = len(words) >= self.min_words
        return out

    def banned_used(self, reply: str) -> list[str]:
        return [
            w
            for w in self.banned_words
            if re.search(rf"\b{re.escape(w)}\b", reply, re.IGNORECASE) is not None
        ]


class Variant(_Strict):
    """The base agent with these settings replaced; anything not given is the base agent's."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]{1,40}$")
    prompt: str | None = None
    first_message: str | None = None
    brain_options: dict[str, Any] = Field(default_factory=dict)
    tools: list[str] | None = Field(
        default=None, description="keep only these of the base agent's tools ([] for none)"
    )
    checks: ReplyChecks = Field(default_factory=ReplyChecks)


class LabSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    scenario: Scenario
    agent: str | None = None
    repeat: int = Field(default=10, ge=1, le=1000)
    checks: ReplyChecks = Field(default_factory=ReplyChecks)
    variants: list[Variant] = Field(min_length=2)

    @field_validator("variants")
    @classmethod
    def _unique(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(twice)}")
        return variants

    @property
    def base_agent(self) -> str:
        return self.agent or self.scenario.agent

    def checks_for(self, variant: Variant) -> ReplyChecks:
        return self.checks.merged(variant.checks)


def load_lab(path: str | Path) -> LabSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LabError(f"cannot read lab file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise LabError(f"{path} is not valid YAML: {exc}") from exc
    return parse_lab(raw, where=path, base_dir=path.parent)


def parse_lab(raw: Any, *, where: str | Path = "<lab>", base_dir: Path | None = None) -> LabSpec:
    """A lab from parsed data; ``scenario`` is a path (relative to ``base_dir``) or inline."""
    if not isinstance(raw, dict):
        raise LabError(f"{where}: a lab file is a mapping with 'scenario' and 'variants'")
    base = base_dir if base_dir is not None else Path.cwd()
    scenario = raw.get("scenario")
    if isinstance(scenario, str):
        scenario = load_scenario(base / scenario)
    elif isinstance(scenario, dict):
        scenario = parse_scenario(scenario, where=where, base_dir=base)
    else:
        raise LabError(f"{where}: 'scenario' must be a scenario file's path or a scenario")
    try:
        return LabSpec.model_validate({**raw, "scenario": scenario})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(lab)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise LabError(f"{where}: {problems}") from exc
