"""Actions and their parameters: the one description of a tool every other format derives from.

The web application this project grew out of describes each agent tool as an *action* with
typed parameters (``String``, ``Int``, ``Float``, ``Boolean``, ``JSON``, ``Date``). Keeping that
vocabulary as the source of truth, instead of JSON Schema, keeps the model small enough to
validate fully: every action that passes these checks converts losslessly to JSON Schema, an
ElevenLabs client tool and an OpenAI function, and its defaults are checked against their types
here, so a bad default fails when the file is loaded, not mid-conversation.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["SCALAR_TYPES", "Action", "Parameter", "ParameterType", "ScalarType"]

ScalarType = Literal["String", "Int", "Float", "Boolean", "JSON", "Date"]
ParameterType = Literal["String", "Int", "Float", "Boolean", "JSON", "Date", "List"]
SCALAR_TYPES: tuple[ScalarType, ...] = ("String", "Int", "Float", "Boolean", "JSON", "Date")

# Identifier-like, and within OpenAI's 64-character limit for function names.
_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# The ElevenLabs SDK injects this key into the parameters it hands a client tool.
_RESERVED_NAMES = frozenset({"tool_call_id"})


class Parameter(BaseModel):
    """One typed argument of an action.

    ``required`` defaults to "required unless a default is given", which is what both YAML authors
    and Python signatures mean; saying ``required: true`` next to a default is rejected because a
    caller could never tell which of the two wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    type: ParameterType
    description: str = ""
    required: bool = True
    default: Any = None
    enum: tuple[str, ...] | None = None
    items: ScalarType | None = None

    @model_validator(mode="before")
    @classmethod
    def _required_unless_defaulted(cls, data: Any) -> Any:
        if isinstance(data, dict) and "required" not in data:
            return {**data, "required": data.get("default") is None}
        return data

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in _RESERVED_NAMES:
            raise ValueError(f"{value!r} is reserved (the ElevenLabs SDK injects it); rename it")
        return value

    @field_validator("enum")
    @classmethod
    def _enum_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("enum needs at least one value")
            if len(set(value)) != len(value):
                raise ValueError("enum values must be unique")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if self.type == "List" and self.items is None:
            raise ValueError(f"a List parameter needs 'items', one of {', '.join(SCALAR_TYPES)}")
        if self.type != "List" and self.items is not None:
            raise ValueError(f"'items' only applies to List parameters, not {self.type}")
        if self.enum is not None and self.item_type != "String":
            raise ValueError(f"enum only applies to String parameters or lists of them, not {self}")
        if self.default is not None:
            if self.required:
                raise ValueError("a parameter with a default is optional; drop 'required: true'")
            object.__setattr__(self, "default", _checked_default(self))
        return self

    @property
    def item_type(self) -> ScalarType:
        """The scalar type of the value, or of each element for a List."""
        if self.type == "List":
            assert self.items is not None  # guaranteed by _consistent
            return self.items
        return self.type

    def __str__(self) -> str:
        kind = f"List of {self.items}" if self.type == "List" else self.type
        return f"{self.name} ({kind})"


class Action(BaseModel):
    """An application action an agent may call: a name, what it is for, and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = Field(min_length=1)
    parameters: tuple[Parameter, ...] = ()

    @field_validator("description")
    @classmethod
    def _describes_something(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the description tells the agent when to call the tool; write one")
        return value.strip()

    @field_validator("parameters")
    @classmethod
    def _unique_names(cls, value: tuple[Parameter, ...]) -> tuple[Parameter, ...]:
        names = [p.name for p in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"parameter names must be unique; repeated: {', '.join(repeated)}")
        return value

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


def _checked_default(param: Parameter) -> Any:
    """Return the default in its JSON form, or raise naming the type it should have had."""
    default = param.default
    if param.type == "List":
        if not isinstance(default, list | tuple):
            raise ValueError(f"default of {param} must be a list, got {default!r}")
        return [_checked_scalar(param, item) for item in default]
    return _checked_scalar(param, default)


def _checked_scalar(param: Parameter, value: Any) -> Any:
    kind = param.item_type
    ok: bool
    if kind == "String":
        ok = isinstance(value, str) and (param.enum is None or value in param.enum)
    elif kind == "Int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "Float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif kind == "Boolean":
        ok = isinstance(value, bool)
    elif kind == "JSON":
        ok = isinstance(value, dict) and _is_json(value)
    else:  # Date: stored as ISO text so the action stays JSON-serialisable
        value, ok = _iso_date(value)
    if not ok:
        allowed = f"; use one of {list(param.enum)}" if param.enum else ""
        raise ValueError(f"default {value!r} does not fit {param}{allowed}")
    return value


def _iso_date(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dt.date):  # datetime too; YAML turns 2024-05-01 into a date
        return value.isoformat(), True
    if isinstance(value, str):
        for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
            try:
                parse(value)
            except ValueError:
                continue
            return value, True
    return value, False


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
