"""Check and coerce an agent's tool arguments against the action, before any handler runs.

LLMs send arguments loosely typed (``"42"`` for an integer, ``"yes"`` for a boolean, a JSON
object serialised into a string), and a voice agent cannot stop to ask a developer. So values
whose meaning is unambiguous are coerced, everything else is rejected, and the rejection message
is written for the agent: it names every problem at once and shows what to send instead, so the
next attempt can be right. Handlers therefore only ever see values of their declared types.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import reprlib
from collections.abc import Mapping
from typing import Any

from sagelab.tools.model import Action, Parameter, ScalarType

__all__ = ["InvalidParameters", "describe_signature", "validate_parameters"]

_INT = re.compile(r"^[+-]?\d+(\.0*)?$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_EXAMPLES: dict[ScalarType, str] = {
    "String": '"text"',
    "Int": "42",
    "Float": "3.5",
    "Boolean": "true or false",
    "JSON": '{"key": "value"}',
    "Date": "2024-05-31",
}
_NAMES: dict[ScalarType, str] = {
    "String": "a string",
    "Int": "a whole number",
    "Float": "a number",
    "Boolean": "true or false",
    "JSON": "a JSON object",
    "Date": "an ISO 8601 date (2024-05-31) or date-time (2024-05-31T14:30:00)",
}


class InvalidParameters(ValueError):
    """The arguments do not fit the action; ``str()`` is the message meant for the agent."""

    def __init__(self, action: Action, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"Invalid parameters for {action.name}: {'; '.join(problems)}. "
            f"Call {action.name} again with {describe_signature(action)}."
        )


class _Problem(ValueError):
    """One value that does not fit; the message completes '<name> must be ...'."""


def validate_parameters(action: Action, params: Any) -> dict[str, Any]:
    """The keyword arguments for the handler: coerced values, defaults filled in.

    Optional parameters that are absent (or ``null``) and have no default are left out, so the
    handler's own default applies. Raises :class:`InvalidParameters` listing every problem.
    """
    if not isinstance(params, Mapping):
        raise InvalidParameters(action, [f"parameters must be a JSON object, got {_show(params)}"])
    problems: list[str] = []
    known = {p.name for p in action.parameters}
    unknown = [str(k) for k in params if k not in known]
    if unknown:
        problems.append(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for p in action.parameters:
        value = params.get(p.name)
        if value is None:
            if p.required:
                problems.append(f"{p.name} is required ({_expected(p)})")
                continue
            if p.default is None:
                continue
            value = p.default
        try:
            kwargs[p.name] = _coerce(p, value)
        except _Problem as exc:
            problems.append(f"{p.name} must be {exc} (got {_show(value)})")
    if problems:
        raise InvalidParameters(action, problems)
    return kwargs


def describe_signature(action: Action) -> str:
    """``query (a string, required), limit (a whole number, optional, default 5)``."""
    if not action.parameters:
        return "no parameters"
    parts = []
    for p in action.parameters:
        need = "required" if p.required else "optional"
        default = f", default {json.dumps(p.default)}" if p.default is not None else ""
        parts.append(f"{p.name} ({_expected(p)}, {need}{default})")
    return "parameters " + ", ".join(parts)


def _expected(p: Parameter) -> str:
    if p.enum is not None:
        choices = _choices(p.enum)
        return f"a list of {choices}" if p.type == "List" else f"one of {choices}"
    if p.type == "List":
        return f"a list of {_NAMES[p.item_type]}, e.g. [{_EXAMPLES[p.item_type]}]"
    return f"{_NAMES[p.type]}, e.g. {_EXAMPLES[p.type]}"


def _coerce(p: Parameter, value: Any) -> Any:
    if p.type != "List":
        return _scalar(p, value)
    if isinstance(value, str):
        value = _loads(value, list)
    if not isinstance(value, list | tuple):
        raise _Problem(_expected(p))
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_scalar(p, item))
        except _Problem as exc:
            raise _Problem(f"{_expected(p)}; item {i} should be {exc}") from None
    return out


def _scalar(p: Parameter, value: Any) -> Any:
    kind = p.item_type
    if kind == "String":
        return _string(p, value)
    if kind == "Int":
        return _int(value)
    if kind == "Float":
        return _float(value)
    if kind == "Boolean":
        return _bool(value)
    if kind == "JSON":
        return _object(value)
    return _date(value)


def _string(p: Parameter, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Problem(_expected(p) if p.enum else "a string")
    if p.enum is None or value in p.enum:
        return value
    # Voice agents capitalise and pad freely ("Active "); forgive that, nothing more.
    folded = [v for v in p.enum if v.casefold() == value.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    raise _Problem(f"one of {_choices(p.enum)}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Problem("a whole number, e.g. 42, not true/false")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.match(value.strip()):
        try:
            return int(value.strip().split(".")[0])
        except ValueError:  # more digits than Python converts from text
            pass
    raise _Problem("a whole number, e.g. 42")


def _float(value: Any) -> float:
    number = math.nan
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT.match(value.strip()):
            number = float(value.strip())
        else:
            raise _Problem("a number, e.g. 3.5")
    except OverflowError:
        pass
    if not math.isfinite(number):
        raise _Problem("a finite number, e.g. 3.5")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Problem("true or false")


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = _loads(value, dict)
    if isinstance(value, dict):
        return value
    raise _Problem('a JSON object, e.g. {"key": "value"}')


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            pass
    raise _Problem(_NAMES["Date"])


def _loads(text: str, kind: type) -> Any:
    """A JSON value serialised into a string; returned unchanged if it is not one of ``kind``."""
    try:
        loaded = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return loaded if isinstance(loaded, kind) else text


def _choices(values: tuple[str, ...]) -> str:
    quoted = [json.dumps(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
