"""Coercion and validation of an agent's arguments, including arbitrary JSON thrown at it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sagelab.tools import Action, InvalidParameters, Parameter, ToolRegistry, validate_parameters


def _one(param: dict[str, Any]) -> Action:
    return Action.model_validate(
        {"name": "t", "description": "d", "parameters": [{"name": "v", **param}]}
    )


@pytest.mark.parametrize(
    ("param", "sent", "received"),
    [
        ({"type": "Int"}, "42", 42),
        ({"type": "Int"}, " -7 ", -7),
        ({"type": "Int"}, 42.0, 42),
        ({"type": "Int"}, "42.0", 42),
        ({"type": "Float"}, "3.5", 3.5),
        ({"type": "Float"}, 3, 3.0),
        ({"type": "Float"}, "1e3", 1000.0),
        ({"type": "Boolean"}, "true", True),
        ({"type": "Boolean"}, "Yes", True),
        ({"type": "Boolean"}, "off", False),
        ({"type": "Boolean"}, 0, False),
        ({"type": "String"}, 12, "12"),
        ({"type": "String", "enum": ["open", "closed"]}, "Open ", "open"),
        ({"type": "JSON"}, '{"a": [1, 2]}', {"a": [1, 2]}),
        ({"type": "JSON"}, {"a": 1}, {"a": 1}),
        ({"type": "Date"}, "2024-05-31", dt.date(2024, 5, 31)),
        ({"type": "Date"}, "2024-05-31T14:30:00", dt.datetime(2024, 5, 31, 14, 30)),
        (
            {"type": "Date"},
            "2024-05-31T14:30:00Z",
            dt.datetime(2024, 5, 31, 14, 30, tzinfo=dt.UTC),
        ),
        ({"type": "List", "items": "Int"}, ["1", 2], [1, 2]),
        ({"type": "List", "items": "Int"}, "[1, 2]", [1, 2]),
        ({"type": "List", "items": "String", "enum": ["a", "b"]}, ["A", "b"], ["a", "b"]),
        ({"type": "List", "items": "Date"}, ["2024-01-02"], [dt.date(2024, 1, 2)]),
    ],
)
def test_unambiguous_values_are_coerced(param: dict[str, Any], sent: Any, received: Any) -> None:
    value = validate_parameters(_one(param), {"v": sent})["v"]
    assert value == received
    assert type(value) is type(received)


@pytest.mark.parametrize(
    ("param", "sent", "message"),
    [
        ({"type": "Int"}, "forty", 'v must be a whole number, e.g. 42 (got "forty")'),
        ({"type": "Int"}, 4.5, "v must be a whole number"),
        ({"type": "Int"}, True, "not true/false"),
        ({"type": "Int"}, "1" * 5000, "v must be a whole number"),
        ({"type": "Float"}, "abc", "v must be a number, e.g. 3.5"),
        ({"type": "Float"}, "nan", "v must be a number"),
        ({"type": "Float"}, 10**400, "v must be a finite number"),
        ({"type": "Float"}, "1e999", "v must be a finite number"),
        ({"type": "Boolean"}, "maybe", "v must be true or false"),
        ({"type": "Boolean"}, 2, "v must be true or false"),
        ({"type": "String"}, ["a"], "v must be a string"),
        ({"type": "String"}, True, "v must be a string"),
        ({"type": "String", "enum": ["open", "closed"]}, "shut", 'one of "open" or "closed"'),
        ({"type": "JSON"}, "[1]", "v must be a JSON object"),
        ({"type": "JSON"}, 3, "v must be a JSON object"),
        ({"type": "Date"}, "31/05/2024", "v must be an ISO 8601 date (2024-05-31)"),
        ({"type": "Date"}, 20240531, "v must be an ISO 8601 date"),
        ({"type": "List", "items": "Int"}, 3, "v must be a list of a whole number"),
        ({"type": "List", "items": "Int"}, [1, "x"], "item 1 should be a whole number"),
    ],
)
def test_ambiguous_values_are_refused(param: dict[str, Any], sent: Any, message: str) -> None:
    with pytest.raises(InvalidParameters) as info:
        validate_parameters(_one(param), {"v": sent})
    assert message in str(info.value)


def test_required_unknown_and_defaults_in_one_message() -> None:
    action = Action(
        name="book",
        description="Book a room.",
        parameters=(
            Parameter(name="guests", type="Int"),
            Parameter(name="nights", type="Int", default=1),
            Parameter(name="note", type="String", required=False),
        ),
    )
    assert validate_parameters(action, {"guests": 2}) == {"guests": 2, "nights": 1}
    assert validate_parameters(action, {"guests": 2, "note": None}) == {"guests": 2, "nights": 1}
    with pytest.raises(InvalidParameters) as info:
        validate_parameters(action, {"nights": "two", "colour": "red"})
    message = str(info.value)
    assert message.startswith("Invalid parameters for book: unknown parameter colour; ")
    assert "guests is required (a whole number, e.g. 42)" in message
    assert 'nights must be a whole number, e.g. 42 (got "two")' in message
    assert message.endswith(
        "Call book again with parameters guests (a whole number, e.g. 42, required), "
        "nights (a whole number, e.g. 42, optional, default 1), "
        'note (a string, e.g. "text", optional).'
    )
    assert len(info.value.problems) == 3


@pytest.mark.parametrize("params", [None, [], "x", 3])
def test_parameters_must_be_an_object(params: Any) -> None:
    with pytest.raises(InvalidParameters, match="parameters must be a JSON object"):
        validate_parameters(_one({"type": "Int"}), params)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


# The fixture is an immutable Action, so sharing it across examples is safe.
SHARED_FIXTURE = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _all_optional(action: Action, name: str) -> Action:
    params = tuple(p.model_copy(update={"required": False}) for p in action.parameters)
    return Action(name=name, description=action.description, parameters=params)


# Values that often fit some parameter, mixed with anything at all.
PLAUSIBLE = st.sampled_from(["Oslo", "42", 3, 2.5, "yes", "2024-05-31", "window", {"a": 1}, [1]])
KEYS = st.sampled_from(["city", "nights", "start", "seat", "guests", "extras", "rating"])


@settings(max_examples=400, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(
    params=JSON
    | st.dictionaries(KEYS, JSON, max_size=3)
    | st.dictionaries(KEYS, PLAUSIBLE | st.none() | JSON, max_size=3),
    name=st.sampled_from(["plan_trip", "optional_sync", "optional_async", "missing"]),
)
def test_arbitrary_json_never_raises(params: Any, name: str, trip_action: Action) -> None:
    """Whatever JSON arrives, ``execute`` returns: a result, or an error with a message."""
    registry = ToolRegistry(max_workers=2)

    def handler(**kwargs: Any) -> dict[str, Any]:
        return {"received": sorted(kwargs)}

    async def async_handler(**kwargs: Any) -> dict[str, Any]:
        return {"received": sorted(kwargs)}

    registry.register(trip_action, handler)
    registry.register(_all_optional(trip_action, "optional_sync"), handler)
    registry.register(_all_optional(trip_action, "optional_async"), async_handler)
    with registry:
        outcome = asyncio.run(registry.execute(name, params))
    if outcome.is_error:
        assert isinstance(outcome.value, str) and outcome.value
        assert outcome.error_kind in ("invalid_parameters", "unknown_tool")
    else:
        # Every declared default was filled in, whatever else was sent.
        assert {"note", "rating", "late_checkout", "rooms"} <= set(outcome.value["received"])
    event(f"{name}: {'error' if outcome.is_error else 'ran'}")


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(value=JSON)
def test_every_type_gives_its_type_or_a_message(value: Any, trip_action: Action) -> None:
    for param in trip_action.parameters:
        action = Action(name="t", description="d", parameters=(param,))
        try:
            out = validate_parameters(action, {param.name: value})
        except InvalidParameters as exc:
            assert param.name in str(exc)
            continue
        if param.name in out and param.type != "List":
            expected = {"String": str, "Int": int, "Float": float, "Boolean": bool}
            expected |= {"JSON": dict, "Date": dt.date}
            assert isinstance(out[param.name], expected[param.type])
