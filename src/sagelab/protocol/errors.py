"""The one exception every codec in :mod:`sagelab.protocol` raises, and the frame-level checks
that produce it.

A server has to answer a bad frame with the reference's ``error`` event (error types
``invalid_message``, ``missing_fields``, ``value_error``...) rather than crash, and a client has to
tell a broken peer from a newer one. Funnelling every failure (JSON syntax, pydantic validation,
base64) into :class:`ProtocolError` gives both sides a single ``except`` clause and a field path
precise enough to show to whoever wrote the offending client.

Field paths follow one rule: ``<message type>.<JSON path inside the frame>``, e.g.
``client_tool_result.tool_call_id`` or ``audio.audio_event.event_id``. Problems with the frame as a
whole use ``$``; problems with the ``type`` key itself use ``type``. The ConvAI audio message has no
type, so its only field is reported as ``user_audio_chunk``.
"""

import base64
import binascii
import json
import re
from typing import Any, Literal, NoReturn

from pydantic import ValidationError

__all__ = [
    "ErrorType",
    "ProtocolError",
    "decode_base64",
    "describe",
    "from_validation_error",
    "load_json_object",
    "message_type",
]

ErrorType = Literal["invalid_message", "missing_fields", "value_error", "unknown_message_type"]


class ProtocolError(ValueError):
    """A frame that does not follow the protocol.

    Subclasses ``ValueError`` so generic "bad input" handlers still catch it; the extra
    attributes let a server build the reference's ``error_event`` without parsing strings.
    """

    field: str
    problem: str
    error_type: ErrorType

    def __init__(self, field: str, problem: str, error_type: ErrorType) -> None:
        # Passing everything to ValueError keeps the exception picklable (args round-trip).
        super().__init__(field, problem, error_type)
        self.field = field
        self.problem = problem
        self.error_type = error_type

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
}


def describe(value: object, limit: int = 40) -> str:
    """Name a received value in JSON terms, short enough for an error message sent to a peer."""
    if value is None:
        return "null"
    name = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return f"{name} of {len(value)} item(s)"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{name} {text}"


def _reject_constant(name: str) -> NoReturn:
    # NaN/Infinity are accepted by Python's json module but are not JSON; letting them in would
    # produce models that cannot be encoded again.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def load_json_object(frame: str | bytes) -> dict[str, Any]:
    """Decode one WebSocket frame into a JSON object, or explain why it is not one.

    Both protocols are JSON text only, so a binary frame is an error however valid its bytes are.
    """
    if not isinstance(frame, str):
        raise ProtocolError(
            "$",
            f"binary frame of {len(frame)} bytes; expected a JSON text frame",
            "invalid_message",
        )
    try:
        value = json.loads(frame, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("$", f"not valid JSON ({exc})", "invalid_message") from None
    if not isinstance(value, dict):
        raise ProtocolError(
            "$", f"expected a JSON object, got {describe(value)}", "invalid_message"
        )
    if _SURROGATE_ESCAPE.search(frame):
        # A text frame is valid UTF-8, so a lone surrogate can only come from a \uD8xx escape
        # without its pair; it could not be encoded again, so it is refused here.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(
                "$", "a \\u escape encodes a lone UTF-16 surrogate", "invalid_message"
            ) from None
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def message_type(obj: dict[str, Any]) -> str:
    """Return the frame's ``type`` key, which every message except ConvAI audio must carry."""
    if "type" not in obj:
        raise ProtocolError(
            "type", "missing; every message needs a string 'type'", "missing_fields"
        )
    value = obj["type"]
    if not isinstance(value, str):
        raise ProtocolError("type", f"expected a string, got {describe(value)}", "value_error")
    return value


def decode_base64(value: object, field: str) -> bytes:
    """Strictly decode a base64 audio field.

    Strict (no stray characters, correct padding) because silently dropping garbage would hand
    corrupted PCM to the audio pipeline, which is much harder to diagnose than a rejected frame.
    """
    if not isinstance(value, str):
        raise ProtocolError(
            field, f"expected a base64 string, got {describe(value)}", "value_error"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(field, f"invalid base64 ({exc})", "value_error") from None


def from_validation_error(exc: ValidationError, prefix: str, skip: int = 0) -> ProtocolError:
    """Translate pydantic's first complaint into a ProtocolError naming the wire field.

    Only the first error is reported: a peer fixing its frame needs one precise pointer, and the
    reference's error event carries a single message anyway. ``skip`` drops leading location parts
    that are model plumbing rather than wire keys.
    """
    error = exc.errors(include_url=False)[0]
    parts = [str(part) for part in error["loc"][skip:]]
    if error["type"] == "recursion_depth_exceeded":
        # Past the first JSON container pydantic's location is a string of union tags
        # ("list.0.list.0..."); the container's own key is the useful pointer.
        cut = next((i for i, part in enumerate(parts) if part in _UNION_TAGS), len(parts))
        field = ".".join([prefix, *parts[:cut]]).strip(".") or "$"
        return ProtocolError(field, "JSON nested too deeply", "value_error")
    field = ".".join([prefix, *parts]).strip(".") or "$"
    if error["type"] == "missing":
        return ProtocolError(field, "required field is missing", "missing_fields")
    message = error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    return ProtocolError(field, f"{message}, got {describe(error['input'])}", "value_error")


_UNION_TAGS = frozenset({"list", "dict", "str", "int", "float", "bool"})
