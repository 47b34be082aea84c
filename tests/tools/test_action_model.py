"""What makes an action or a parameter valid, and the messages for what does not."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from sagelab.tools import Action, Parameter


def test_required_unless_a_default_is_given() -> None:
    assert Parameter(name="q", type="String").required
    assert not Parameter(name="limit", type="Int", default=5).required
    assert not Parameter(name="tag", type="String", required=False).required


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "1st", "type": "String"}, "String should match pattern"),
        ({"name": "with space", "type": "String"}, "String should match pattern"),
        ({"name": "x" * 65, "type": "String"}, "String should match pattern"),
        ({"name": "tool_call_id", "type": "String"}, "reserved"),
        ({"name": "n", "type": "Integer"}, "Input should be 'String'"),
        ({"name": "n", "type": "Int", "enum": ["a"]}, "enum only applies to String"),
        ({"name": "n", "type": "String", "enum": []}, "at least one value"),
        ({"name": "n", "type": "String", "enum": ["a", "a"]}, "unique"),
        ({"name": "n", "type": "List"}, "needs 'items'"),
        ({"name": "n", "type": "Int", "items": "Int"}, "only applies to List"),
        ({"name": "n", "type": "List", "items": "List"}, "Input should be 'String'"),
        ({"name": "n", "type": "Int", "default": "5"}, "does not fit n (Int)"),
        ({"name": "n", "type": "Int", "default": True}, "does not fit n (Int)"),
        ({"name": "n", "type": "Float", "default": "x"}, "does not fit n (Float)"),
        ({"name": "n", "type": "Boolean", "default": 0}, "does not fit n (Boolean)"),
        ({"name": "n", "type": "JSON", "default": [1]}, "does not fit n (JSON)"),
        ({"name": "n", "type": "Date", "default": "31/05/2024"}, "does not fit n (Date)"),
        (
            {"name": "n", "type": "String", "enum": ["a"], "default": "b"},
            "default 'b' does not fit n (String); use one of ['a']",
        ),
        ({"name": "n", "type": "List", "items": "Int", "default": 3}, "must be a list"),
        ({"name": "n", "type": "List", "items": "Int", "default": [1, "x"]}, "does not fit"),
        ({"name": "n", "type": "Int", "default": 5, "required": True}, "drop 'required: true'"),
        ({"name": "n", "type": "String", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_parameters_are_refused_with_a_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Parameter(**fields)


def test_defaults_are_normalised_to_json() -> None:
    import datetime as dt

    assert Parameter(name="d", type="Date", default=dt.date(2024, 5, 31)).default == "2024-05-31"
    assert Parameter(name="f", type="Float", default=2).default == 2.0
    assert Parameter(name="l", type="List", items="Float", default=(1, 2)).default == [1.0, 2.0]
    assert Parameter(name="s", type="List", items="String", enum=("a", "b"), default=["b"]).default


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "do-it", "description": "x"}, "String should match pattern"),
        ({"name": "ok", "description": "   "}, "write one"),
        ({"name": "ok"}, "Field required"),
        (
            {
                "name": "ok",
                "description": "x",
                "parameters": [{"name": "a", "type": "Int"}, {"name": "a", "type": "String"}],
            },
            "repeated: a",
        ),
    ],
)
def test_invalid_actions_are_refused_with_a_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Action(**fields)


def test_parameter_lookup() -> None:
    action = Action(name="a", description="d", parameters=(Parameter(name="x", type="Int"),))
    assert action.parameter("x") == Parameter(name="x", type="Int")
    assert action.parameter("y") is None
