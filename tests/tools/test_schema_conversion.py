"""Every parameter type through every format: JSON Schema, ElevenLabs, OpenAI, ToolSpec."""

from __future__ import annotations

from typing import Any

import pytest
from elevenlabs.types import ClientToolConfigInput

from sagelab.config import ToolSpec
from sagelab.tools import (
    Action,
    Parameter,
    from_tool_spec,
    to_elevenlabs_client_tool,
    to_json_schema,
    to_openai_tool,
    to_tool_spec,
)

# (parameter, JSON Schema property, ElevenLabs property)
CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        {"name": "s", "type": "String", "description": "Text."},
        {"type": "string", "description": "Text."},
        {"type": "string", "description": "Text."},
    ),
    (
        {"name": "e", "type": "String", "enum": ["a", "b"], "description": "Pick."},
        {"type": "string", "enum": ["a", "b"], "description": "Pick."},
        {"type": "string", "enum": ["a", "b"], "description": "Pick."},
    ),
    (
        {"name": "i", "type": "Int", "description": "Count."},
        {"type": "integer", "description": "Count."},
        {"type": "integer", "description": "Count."},
    ),
    (
        {"name": "f", "type": "Float", "description": "Amount.", "default": 2.5},
        {"type": "number", "description": "Amount.", "default": 2.5},
        {"type": "number", "description": "Amount. Default: 2.5."},
    ),
    (
        {"name": "b", "type": "Boolean", "description": "Flag.", "default": False},
        {"type": "boolean", "description": "Flag.", "default": False},
        {"type": "boolean", "description": "Flag. Default: false."},
    ),
    (
        {"name": "j", "type": "JSON", "description": "Blob."},
        {"type": "object", "description": "Blob."},
        {"type": "object", "description": "Blob.", "properties": {}, "required": []},
    ),
    (
        {"name": "d", "type": "Date", "description": "Day."},
        {"type": "string", "format": "date", "description": "Day."},
        {
            "type": "string",
            "description": "Day. (ISO 8601 date like 2024-05-31, or date-time like "
            "2024-05-31T14:30:00)",
        },
    ),
    (
        {"name": "l", "type": "List", "items": "Int", "description": "Ids."},
        {"type": "array", "items": {"type": "integer"}, "description": "Ids."},
        {
            "type": "array",
            "description": "Ids.",
            "items": {"type": "integer", "description": "One l value."},
        },
    ),
    (
        {"name": "le", "type": "List", "items": "String", "enum": ["x", "y"], "required": False},
        {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}},
        {
            "type": "array",
            "description": "Le.",
            "items": {"type": "string", "description": "One le value.", "enum": ["x", "y"]},
        },
    ),
    (
        {"name": "lj", "type": "List", "items": "JSON", "description": "Objects."},
        {"type": "array", "items": {"type": "object"}, "description": "Objects."},
        {
            "type": "array",
            "description": "Objects.",
            "items": {
                "type": "object",
                "description": "One lj value.",
                "properties": {},
                "required": [],
            },
        },
    ),
    (
        {"name": "ld", "type": "List", "items": "Date", "default": ["2024-01-02"]},
        {
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "default": ["2024-01-02"],
        },
        {
            "type": "array",
            "description": 'Ld. Default: ["2024-01-02"].',
            "items": {
                "type": "string",
                "description": "One ld value. (ISO 8601 date like 2024-05-31, or date-time "
                "like 2024-05-31T14:30:00)",
            },
        },
    ),
]
IDS = [c[0]["name"] for c in CASES]


def _action(param: dict[str, Any]) -> Action:
    return Action.model_validate({"name": "t", "description": "A tool.", "parameters": [param]})


@pytest.mark.parametrize(("param", "json_prop", "_el"), CASES, ids=IDS)
def test_json_schema(param: dict[str, Any], json_prop: dict[str, Any], _el: Any) -> None:
    schema = to_json_schema(_action(param))
    required = [param["name"]] if Parameter(**param).required else []
    assert schema == {
        "type": "object",
        "properties": {param["name"]: json_prop},
        "required": required,
        "additionalProperties": False,
    }


@pytest.mark.parametrize(("param", "_js", "el_prop"), CASES, ids=IDS)
def test_elevenlabs_client_tool(param: dict[str, Any], _js: Any, el_prop: dict[str, Any]) -> None:
    config = to_elevenlabs_client_tool(_action(param), expects_response=False)
    assert config["parameters"]["properties"] == {param["name"]: el_prop}
    assert config["type"] == "client"
    assert config["expects_response"] is False
    assert config["response_timeout_secs"] == 20
    # The official SDK's own model of the request body accepts it.
    parsed = ClientToolConfigInput.model_validate(config)
    assert parsed.parameters is not None
    assert parsed.parameters.properties is not None
    assert set(parsed.parameters.properties) == {param["name"]}


@pytest.mark.parametrize(("param", "json_prop", "_el"), CASES, ids=IDS)
def test_openai_tool(param: dict[str, Any], json_prop: dict[str, Any], _el: Any) -> None:
    tool = to_openai_tool(_action(param))
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "t"
    assert tool["function"]["description"] == "A tool."
    assert tool["function"]["parameters"]["properties"][param["name"]] == json_prop


@pytest.mark.parametrize(("param", "_js", "_el"), CASES, ids=IDS)
@pytest.mark.parametrize("kind", ["client", "server"])
def test_tool_spec_round_trip(param: dict[str, Any], _js: Any, _el: Any, kind: str) -> None:
    action = _action(param)
    spec = to_tool_spec(action, kind, response_timeout_secs=7.5)  # type: ignore[arg-type]
    assert spec.type == kind
    assert spec.response_timeout_secs == 7.5
    # Through the agents-file model and back, as a config loader would.
    reloaded = ToolSpec.model_validate(spec.model_dump())
    assert from_tool_spec(reloaded) == action


def test_every_type_at_once(trip_action: Action) -> None:
    assert from_tool_spec(to_tool_spec(trip_action)) == trip_action
    ClientToolConfigInput.model_validate(to_elevenlabs_client_tool(trip_action))
    leaves = to_elevenlabs_client_tool(trip_action)["parameters"]["properties"].values()
    assert all(leaf["description"] for leaf in leaves)
    assert all(leaf["items"]["description"] for leaf in leaves if leaf["type"] == "array")


def test_openai_sdk_accepts_the_tool(trip_action: Action) -> None:
    chat = pytest.importorskip("openai.types.chat")
    from pydantic import TypeAdapter

    TypeAdapter(chat.ChatCompletionToolParam).validate_python(to_openai_tool(trip_action))


@pytest.mark.parametrize("timeout", [0, 121, -2])
def test_elevenlabs_timeout_range(timeout: int, trip_action: Action) -> None:
    with pytest.raises(ValueError, match="response_timeout_secs must be 1–120"):
        to_elevenlabs_client_tool(trip_action, response_timeout_secs=timeout)


def test_elevenlabs_waits_forever_only_when_expecting_a_response(trip_action: Action) -> None:
    assert to_elevenlabs_client_tool(trip_action, response_timeout_secs=-1)
    with pytest.raises(ValueError):
        to_elevenlabs_client_tool(trip_action, expects_response=False, response_timeout_secs=-1)


def test_from_hand_written_spec_best_effort() -> None:
    spec = ToolSpec(
        name="lookup",
        description="Look something up.",
        parameters={
            "type": "object",
            "required": ["city", "when", "kind"],
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "when": {"type": ["string", "null"], "format": "date-time"},
                "kind": {"enum": ["a", "b"]},
                "mode": {"const": "fast"},
                "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 3},
                "ids": {"type": "array"},
                "nested": {"type": "object", "properties": {"x": {"type": "integer"}}},
            },
        },
    )
    action = from_tool_spec(spec)
    by_name = {p.name: p for p in action.parameters}
    assert by_name["city"] == Parameter(name="city", type="String", description="City name")
    assert by_name["when"].type == "Date" and not by_name["when"].required
    assert by_name["kind"].enum == ("a", "b") and by_name["kind"].required
    assert by_name["mode"].enum == ("fast",)
    assert by_name["n"].type == "Int" and by_name["n"].default == 3
    assert by_name["ids"].type == "List" and by_name["ids"].items == "String"
    assert by_name["nested"].type == "JSON"


def test_the_bundled_agents_file_tool_converts() -> None:
    from sagelab.config import load_config

    spec = load_config(None, env={}).agent("scripted").tool("get_weather")  # type: ignore[union-attr]
    assert spec is not None
    action = from_tool_spec(spec)
    assert action.parameters == (Parameter(name="city", type="String", description="City name"),)


@pytest.mark.parametrize(
    ("prop", "message"),
    [
        ({"type": ["string", "integer"]}, "several types"),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "several schemas"),
        ({"type": "array", "items": {"type": "array"}}, "arrays of arrays"),
        ({"type": "string", "enum": [1, 2]}, "only string enums"),
        ({"type": "integer", "default": "x"}, "does not fit"),
        ({}, "has no action type"),
        ("string", "must be an object"),
    ],
)
def test_from_spec_names_the_property_it_cannot_map(prop: Any, message: str) -> None:
    spec = ToolSpec(name="t", parameters={"type": "object", "properties": {"p": prop}})
    with pytest.raises(ValueError, match=rf"t\.p.*{message}"):
        from_tool_spec(spec)
