"""Judge one user turn: what the scenario expected against what was observed.

Every check reports what it expected and what it saw, pass or fail, so a failed run explains
itself in the report without opening the timeline. A value that could not be observed (no stage
events from a server that is not sagelab, server tool parameters that never reach the client)
fails its check with a note saying why: a budget nobody measured is not a budget met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sagelab.metrics import score
from sagelab.scenarios.model import Expect, ToolExpectation


@dataclass(frozen=True)
class ToolCall:
    """A tool call seen during a turn. ``parameters`` is None when it could not be observed
    (server tools over ConvAI, without access to the server's store)."""

    name: str
    parameters: dict[str, Any] | None
    is_error: bool | None


@dataclass
class Observation:
    """What the agent did in answer to one user turn."""

    heard: str = ""
    reply: str = ""
    tools: list[ToolCall] = field(default_factory=list)
    interrupted: bool = False
    replies: int = 0
    latencies_ms: dict[str, float] = field(default_factory=dict)
    wer: float | None = None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    expected: str
    observed: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "expected": self.expected,
            "observed": self.observed,
        }


def word_error_rate(reference: str, heard: str) -> float:
    """WER with sagelab's normalisation; an empty transcript is every word deleted."""
    return score(reference, heard).wer


def evaluate(
    expect: Expect, observed: Observation, *, reference: str | None, error: str | None = None
) -> list[Check]:
    """All the checks ``expect`` asks for. A step that failed to run fails a ``ran`` check."""
    checks: list[Check] = []
    if error is not None:
        checks.append(Check("ran", False, "the step runs to the agent's reply", error))
    if expect.max_wer is not None and reference is not None:
        wer = (
            observed.wer if observed.wer is not None else word_error_rate(reference, observed.heard)
        )
        checks.append(
            Check(
                "max_wer",
                wer <= expect.max_wer,
                f"WER ≤ {expect.max_wer:.0%} of {reference!r}",
                f"{wer:.0%}: heard {observed.heard!r}",
            )
        )
    if expect.tools is not None:
        checks.extend(_tool_checks(expect.tools, observed.tools))
    reply = _fold(observed.reply)
    for text in expect.reply_contains:
        checks.append(
            Check(
                f"reply_contains {text!r}",
                _fold(text) in reply,
                f"contains {text!r}",
                repr(observed.reply),
            )
        )
    for text in expect.reply_not_contains:
        checks.append(
            Check(
                f"reply_not_contains {text!r}",
                _fold(text) not in reply,
                f"does not contain {text!r}",
                repr(observed.reply),
            )
        )
    if expect.interrupted is not None:
        checks.append(
            Check(
                "interrupted",
                observed.interrupted == expect.interrupted,
                "the agent stops talking" if expect.interrupted else "the agent is not cut off",
                "interrupted" if observed.interrupted else "no interruption",
            )
        )
    if expect.replies is not None:
        checks.append(
            Check(
                "replies",
                observed.replies == expect.replies,
                f"{expect.replies} {'reply' if expect.replies == 1 else 'replies'}",
                f"{observed.replies}: {observed.reply!r}",
            )
        )
    for metric, budget in expect.within_ms.items():
        value = observed.latencies_ms.get(metric)
        if value is None or not math.isfinite(value):
            checks.append(
                Check(f"within_ms.{metric}", False, f"≤ {budget:g} ms", _why_missing(metric))
            )
        else:
            checks.append(
                Check(f"within_ms.{metric}", value <= budget, f"≤ {budget:g} ms", f"{value:.0f} ms")
            )
    return checks


def _why_missing(metric: str) -> str:
    if metric == "interruption":
        return "not measured: no interruption event after the barge-in"
    if metric == "voice_to_voice":
        return "not measured: no reply audio after the user's turn"
    return (
        f"not measured: no {metric!r} stage event (stage timings come from a sagelab server, "
        "and only for stages the agent's pipeline has)"
    )


def _tool_checks(expected: list[ToolExpectation], calls: list[ToolCall]) -> list[Check]:
    seen = ", ".join(_describe_call(c) for c in calls) or "no tool calls"
    if not expected:
        return [Check("no tools", not calls, "no tool is called", seen)]
    checks = []
    for want in expected:
        ok = any(_matches(want, call) for call in calls)
        unobservable = any(
            c.name == want.name and c.parameters is None and want.parameters for c in calls
        )
        observed = seen
        if not ok and unobservable:
            observed += (
                " (the server sends no parameters for its own tools; run against the bundled "
                "server or pass --store with the server's conversation store)"
            )
        checks.append(Check(f"tool {want.name}", ok, _describe_want(want), observed))
    return checks


def _matches(want: ToolExpectation, call: ToolCall) -> bool:
    if call.name != want.name:
        return False
    if want.error is not None and call.is_error != want.error:
        return False
    if want.parameters:
        if call.parameters is None:
            return False
        return all(
            key in call.parameters and _same(value, call.parameters[key])
            for key, value in want.parameters.items()
        )
    return True


def _same(expected: Any, actual: Any) -> bool:
    """Scenario values against called values: ``5`` matches ``"5"`` and ``oslo`` ``Oslo``,
    since parameters extracted from speech are text until a tool layer converts them."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _same(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return str(expected).casefold() == str(actual).casefold()
    return _fold(str(expected)) == _fold(str(actual))


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _describe_want(want: ToolExpectation) -> str:
    text = want.name
    if want.parameters:
        text += f"({_params(want.parameters)})"
    if want.error is True:
        text += " failing"
    elif want.error is False:
        text += " succeeding"
    return text


def _describe_call(call: ToolCall) -> str:
    params = "?" if call.parameters is None else _params(call.parameters)
    status = {True: " → error", False: " → ok", None: ""}[call.is_error]
    return f"{call.name}({params}){status}"


def _params(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in parameters.items())
