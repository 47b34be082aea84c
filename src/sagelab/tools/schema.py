"""Actions in the formats other systems read: JSON Schema, ElevenLabs client tools, OpenAI
functions, and the ``ToolSpec`` of an agents file, plus the way back from a ``ToolSpec``.

Every format is generated from the same :class:`~sagelab.tools.model.Action`, so a tool looks the
same to every LLM. The ElevenLabs dialect is stricter than JSON Schema (leaf properties may carry
only ``type``, ``description`` and ``enum``; each needs a description because that is how the
platform knows the LLM fills the value), so what JSON Schema says with ``default`` and ``format``
is said in the description text there instead.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ValidationError

from sagelab.config import ToolSpec
from sagelab.tools.model import Action, Parameter, ScalarType

__all__ = [
    "from_json_schema",
    "from_tool_spec",
    "to_elevenlabs_client_tool",
    "to_json_schema",
    "to_openai_tool",
    "to_tool_spec",
]

_JSON_TYPES: dict[ScalarType, str] = {
    "String": "string",
    "Int": "integer",
    "Float": "number",
    "Boolean": "boolean",
    "JSON": "object",
    "Date": "string",
}
_FROM_JSON_TYPES: dict[str, ScalarType] = {
    "integer": "Int",
    "number": "Float",
    "boolean": "Boolean",
    "object": "JSON",
}
_DATE_FORMATS = ("date", "date-time")
_DATE_HINT = "ISO 8601 date like 2024-05-31, or date-time like 2024-05-31T14:30:00"


def to_json_schema(action: Action) -> dict[str, Any]:
    """The parameters as a JSON Schema object (draft 2020-12 vocabulary)."""
    return {
        "type": "object",
        "properties": {p.name: _json_property(p) for p in action.parameters},
        "required": [p.name for p in action.parameters if p.required],
        "additionalProperties": False,
    }


def to_openai_tool(action: Action) -> dict[str, Any]:
    """A Chat Completions ``tools`` entry, for any OpenAI-compatible LLM endpoint."""
    return {
        "type": "function",
        "function": {
            "name": action.name,
            "description": action.description,
            "parameters": to_json_schema(action),
        },
    }


def to_elevenlabs_client_tool(
    action: Action, *, expects_response: bool = True, response_timeout_secs: int = 20
) -> dict[str, Any]:
    """The ``tool_config`` body of ``POST /v1/convai/tools`` for a client tool.

    ElevenLabs accepts a timeout of 1–120 s, or -1 to wait indefinitely (only when a response is
    expected); anything else is refused here rather than by the API at deploy time.
    """
    forever = response_timeout_secs == -1 and expects_response
    if not (1 <= response_timeout_secs <= 120 or forever):
        raise ValueError(
            f"response_timeout_secs must be 1–120, or -1 with expects_response=True; "
            f"got {response_timeout_secs}"
        )
    return {
        "type": "client",
        "name": action.name,
        "description": action.description,
        "parameters": {
            "type": "object",
            "required": [p.name for p in action.parameters if p.required],
            "properties": {p.name: _elevenlabs_property(p) for p in action.parameters},
        },
        "expects_response": expects_response,
        "response_timeout_secs": response_timeout_secs,
    }


def to_tool_spec(
    action: Action,
    type: Literal["client", "server"] = "client",
    *,
    expects_response: bool = True,
    response_timeout_secs: float = 20.0,
) -> ToolSpec:
    """The tool as an agents file declares it; ``parameters`` is full JSON Schema so the
    action comes back intact through :func:`from_tool_spec`."""
    return ToolSpec(
        name=action.name,
        description=action.description,
        parameters=to_json_schema(action),
        type=type,
        expects_response=expects_response,
        response_timeout_secs=response_timeout_secs,
    )


def from_tool_spec(spec: ToolSpec) -> Action:
    """Best effort back from a hand-written ``ToolSpec``; raises ``ValueError`` naming the
    property whose schema has no action type (e.g. ``anyOf`` of two real types)."""
    return from_json_schema(spec.name, spec.description or spec.name, spec.parameters)


def from_json_schema(name: str, description: str, schema: dict[str, Any]) -> Action:
    """An action from an object schema: standard JSON Schema or the ElevenLabs dialect."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    params = [
        _parameter(f"{name}.{key}", key, prop, key in required) for key, prop in properties.items()
    ]
    return Action(name=name, description=description, parameters=tuple(params))


def _json_property(p: Parameter) -> dict[str, Any]:
    prop = _json_scalar(p.item_type, p.enum)
    if p.type == "List":
        prop = {"type": "array", "items": prop}
    if p.description:
        prop["description"] = p.description
    if p.default is not None:
        prop["default"] = p.default
    return prop


def _json_scalar(kind: ScalarType, enum: tuple[str, ...] | None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": _JSON_TYPES[kind]}
    if kind == "Date":
        prop["format"] = "date"
    if enum is not None:
        prop["enum"] = list(enum)
    return prop


def _elevenlabs_property(p: Parameter) -> dict[str, Any]:
    description = _spoken_description(p)
    if p.type == "List":
        item = _elevenlabs_scalar(p.item_type, p.enum, f"One {p.name} value.")
        return {"type": "array", "description": description, "items": item}
    return _elevenlabs_scalar(p.item_type, p.enum, description)


def _elevenlabs_scalar(
    kind: ScalarType, enum: tuple[str, ...] | None, description: str
) -> dict[str, Any]:
    if kind == "JSON":
        return {"type": "object", "description": description, "properties": {}, "required": []}
    if kind == "Date" and _DATE_HINT not in description:
        description = f"{description} ({_DATE_HINT})".strip()
    prop: dict[str, Any] = {"type": _JSON_TYPES[kind], "description": description}
    if enum is not None:
        prop["enum"] = list(enum)
    return prop


def _spoken_description(p: Parameter) -> str:
    """A description is mandatory in the ElevenLabs dialect; a default is mentioned in it."""
    text = p.description or p.name.replace("_", " ").capitalize() + "."
    if p.default is not None:
        text = f"{text} Default: {json.dumps(p.default)}."
    return text


def _parameter(where: str, key: str, prop: Any, required: bool) -> Parameter:
    if not isinstance(prop, dict):
        raise ValueError(f"{where}: property schema must be an object, got {prop!r}")
    prop, nullable = _unwrap_nullable(where, prop)
    fields: dict[str, Any] = {
        "name": key,
        "description": prop.get("description", ""),
        "required": required and not nullable,
    }
    if prop.get("type") == "array":
        # Untyped items become strings: the most forgiving type (numbers coerce to text).
        items = prop.get("items") or {"type": "string"}
        if not isinstance(items, dict):
            raise ValueError(f"{where}: 'items' must be one schema, got {items!r}")
        item_type, enum = _scalar_type(f"{where}[]", items)
        fields.update(type="List", items=item_type, enum=enum)
    else:
        kind, enum = _scalar_type(where, prop)
        fields.update(type=kind, enum=enum)
    if prop.get("default") is not None and not fields["required"]:
        fields["default"] = prop["default"]
    try:
        return Parameter(**fields)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from exc


def _unwrap_nullable(where: str, prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    kind = prop.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        if len(rest) != 1:
            raise ValueError(f"{where}: a property of several types {kind} has no action type")
        return {**prop, "type": rest[0]}, len(rest) < len(kind)
    for key in ("anyOf", "oneOf"):
        options = prop.get(key)
        if isinstance(options, list):
            rest = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(rest) != 1 or not isinstance(rest[0], dict):
                raise ValueError(f"{where}: '{key}' of several schemas has no action type")
            merged = {k: v for k, v in prop.items() if k != key}
            return {**rest[0], **merged}, len(rest) < len(options)
    return prop, False


def _scalar_type(where: str, prop: dict[str, Any]) -> tuple[ScalarType, tuple[str, ...] | None]:
    kind = prop.get("type")
    enum = prop.get("enum")
    if "const" in prop and isinstance(prop["const"], str):
        return "String", (prop["const"],)
    if kind == "string" or (kind is None and isinstance(enum, list)):
        if prop.get("format") in _DATE_FORMATS:
            return "Date", None
        if isinstance(enum, list):
            if not all(isinstance(v, str) for v in enum):
                raise ValueError(f"{where}: only string enums have an action type, got {enum}")
            return "String", tuple(enum)
        return "String", None
    if isinstance(kind, str) and kind in _FROM_JSON_TYPES:
        return _FROM_JSON_TYPES[kind], None
    if kind == "array":
        raise ValueError(f"{where}: arrays of arrays have no action type")
    raise ValueError(f"{where}: schema {prop!r} has no action type")
