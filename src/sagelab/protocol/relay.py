"""Sans-I/O codec for the relay protocol (``/voice-conversation``) of the Audio Sage web app.

The protocol as sagelab implements it is described in the documentation's *Protocols* page
(``docs/protocols.md``). sagelab both serves this protocol (standing in for the app's server)
and speaks it as a client (load tests against a real deployment), so the frame shapes are
defined once here, in the same style as :mod:`sagelab.protocol.convai`.

Client → server (:data:`ClientMessage`), top-level fields: ``audio`` (:class:`RelayAudio`, base64
``data``), ``text`` (:class:`RelayText`), ``interrupt`` (:class:`RelayInterrupt`), ``end``
(:class:`RelayEnd`).

Server → client (:data:`ServerMessage`), envelope ``{"type", "data": {...}, "timestamp": <ms>}``:
``ready`` (:class:`Ready`), ``audio_chunk`` (:class:`AudioChunk`), ``transcript``
(:class:`Transcript`), ``agent_response`` (:class:`AgentResponseText`), ``tool_call``
(:class:`ToolCall`), ``error`` (:class:`RelayError`), ``complete`` (:class:`Complete`). Unknown
server types parse to :class:`UnknownRelayEvent` so an older client survives a newer server.

The timestamp belongs to the envelope, not to the event: models compare equal whenever they were
sent, and :func:`parse_server_with_timestamp` exposes it for latency measurements.
"""

import base64
import json
import time
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from sagelab.protocol.errors import (
    ProtocolError,
    decode_base64,
    describe,
    from_validation_error,
    load_json_object,
    message_type,
)

__all__ = [
    "CLOSE_MISSING_DETAIL_ID",
    "CLOSE_SESSION_FAILED",
    "AgentResponseText",
    "AudioChunk",
    "ClientMessage",
    "Complete",
    "Ready",
    "RelayAudio",
    "RelayEnd",
    "RelayError",
    "RelayInterrupt",
    "RelayText",
    "ServerMessage",
    "ToolCall",
    "Transcript",
    "UnknownRelayEvent",
    "encode_client",
    "encode_server",
    "parse_client",
    "parse_server",
    "parse_server_with_timestamp",
]

# Close code when ``?conversationDetailId=`` is missing (reason "Missing conversationDetailId").
CLOSE_MISSING_DETAIL_ID = 4000
# Close code when the session cannot be created (reason "Session creation failed: <message>").
CLOSE_SESSION_FAILED = 4001

_COMPACT = (",", ":")


class _Model(BaseModel):
    # Same policy as the ConvAI codec: strict JSON types, unknown keys ignored, immutable.
    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="ignore",
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
    )
    type: ClassVar[str]


# ------------------------------------------------------------------------------------------------
# Client → server


class RelayAudio(_Model):
    """One ``MediaRecorder`` timeslice (WebM/Opus); only the first chunk carries the header."""

    type: ClassVar[Literal["audio"]] = "audio"
    data: bytes


class RelayText(_Model):
    type: ClassVar[Literal["text"]] = "text"
    text: str


class RelayInterrupt(_Model):
    """Stop the current agent response now; the client drops its queued audio itself."""

    type: ClassVar[Literal["interrupt"]] = "interrupt"


class RelayEnd(_Model):
    type: ClassVar[Literal["end"]] = "end"


ClientMessage: TypeAlias = RelayAudio | RelayText | RelayInterrupt | RelayEnd


# ------------------------------------------------------------------------------------------------
# Server → client


class Ready(_Model):
    type: ClassVar[Literal["ready"]] = "ready"
    session_id: str = Field(validation_alias="sessionId", serialization_alias="sessionId")
    # sagelab's resume extension: present on reconnect as ?resumeToken= (server/resume.py).
    # Only sent to clients that asked with ?resume=1; the app's browser ignores it.
    resume_token: str | None = Field(
        default=None, validation_alias="resumeToken", serialization_alias="resumeToken"
    )


class AudioChunk(_Model):
    """Agent speech. Browsers decode each chunk alone, so it must be a complete file (e.g. WAV)."""

    type: ClassVar[Literal["audio_chunk"]] = "audio_chunk"
    audio: bytes


class Transcript(_Model):
    """What the user said."""

    type: ClassVar[Literal["transcript"]] = "transcript"
    text: str


class AgentResponseText(_Model):
    """What the agent says (wire type ``agent_response``)."""

    type: ClassVar[Literal["agent_response"]] = "agent_response"
    text: str


class ToolCall(_Model):
    type: ClassVar[Literal["tool_call"]] = "tool_call"
    tool_name: str = Field(validation_alias="toolName", serialization_alias="toolName")
    params: dict[str, JsonValue] = Field(default_factory=dict)


class RelayError(_Model):
    """A reported failure; the session may continue (not an exception)."""

    type: ClassVar[Literal["error"]] = "error"
    message: str


class Complete(_Model):
    type: ClassVar[Literal["complete"]] = "complete"


class UnknownRelayEvent(BaseModel):
    """A server event type this codec does not know; ``data`` is its payload, possibly empty."""

    model_config = ConfigDict(strict=True, frozen=True)
    type: str
    data: dict[str, JsonValue] = Field(default_factory=dict)


ServerMessage: TypeAlias = (
    Ready
    | AudioChunk
    | Transcript
    | AgentResponseText
    | ToolCall
    | RelayError
    | Complete
    | UnknownRelayEvent
)


# ------------------------------------------------------------------------------------------------
# Codec

_CLIENT_MODELS: dict[str, type[_Model]] = {
    m.type: m for m in (RelayAudio, RelayText, RelayInterrupt, RelayEnd)
}
_SERVER_MODELS: dict[str, type[_Model]] = {
    m.type: m
    for m in (Ready, AudioChunk, Transcript, AgentResponseText, ToolCall, RelayError, Complete)
}

_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: dict[str, Any], prefix: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix) from None


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=_COMPACT, allow_nan=False)


def parse_client(frame: str | bytes) -> ClientMessage:
    """Parse a frame received by the relay server; the caller answers failures with an
    ``error`` event rather than dropping the connection."""
    obj = load_json_object(frame)
    name = message_type(obj)
    model = _CLIENT_MODELS.get(name)
    if model is None:
        raise ProtocolError(
            "type",
            f"unknown client message type {name!r}; expected one of {', '.join(_CLIENT_MODELS)}",
            "unknown_message_type",
        )
    if model is RelayAudio:
        if "data" not in obj:
            raise ProtocolError("audio.data", "required field is missing", "missing_fields")
        return RelayAudio(data=decode_base64(obj["data"], "audio.data"))
    return cast(ClientMessage, _validate(model, obj, name))


def encode_client(msg: ClientMessage) -> str:
    """Serialize a message the way the Audio Sage browser client sends it."""
    if isinstance(msg, RelayAudio):
        return _dumps({"type": "audio", "data": base64.b64encode(msg.data).decode("ascii")})
    return _dumps({"type": msg.type, **msg.model_dump(mode="json", by_alias=True)})


def _timestamp(obj: dict[str, Any], name: str) -> int | None:
    # Optional on input (it only feeds latency statistics) but, when present, it must be the
    # integer milliseconds JavaScript's Date.now() produces.
    if "timestamp" not in obj:
        return None
    value = obj["timestamp"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            f"{name}.timestamp",
            f"expected integer milliseconds since the epoch, got {describe(value)}",
            "value_error",
        )
    return value


def parse_server_with_timestamp(frame: str | bytes) -> tuple[ServerMessage, int | None]:
    """Parse a frame received by a relay client, keeping the envelope's send time (if any)."""
    obj = load_json_object(frame)
    name = message_type(obj)
    timestamp = _timestamp(obj, name)
    data = obj.get("data", {})  # events without fields may omit it
    if not isinstance(data, dict):
        raise ProtocolError(
            f"{name}.data", f"expected an object, got {describe(data)}", "value_error"
        )
    model = _SERVER_MODELS.get(name)
    event: ServerMessage
    if model is None:
        try:
            event = UnknownRelayEvent(type=name, data=data)
        except ValidationError as exc:  # only possible for absurdly deep nesting
            raise from_validation_error(exc, f"{name}.data", skip=1) from None
    elif model is AudioChunk:
        if "audioBase64" not in data:
            raise ProtocolError(
                "audio_chunk.data.audioBase64", "required field is missing", "missing_fields"
            )
        event = AudioChunk(audio=decode_base64(data["audioBase64"], "audio_chunk.data.audioBase64"))
    else:
        event = cast(ServerMessage, _validate(model, data, f"{name}.data"))
    return event, timestamp


def parse_server(frame: str | bytes) -> ServerMessage:
    """Parse a frame received by a relay client."""
    return parse_server_with_timestamp(frame)[0]


def encode_server(msg: ServerMessage, timestamp: int | None = None) -> str:
    """Wrap an event in the relay envelope; ``timestamp`` defaults to now (ms since epoch)."""
    if timestamp is None:
        timestamp = time.time_ns() // 1_000_000
    if isinstance(msg, AudioChunk):
        data: dict[str, Any] = {"audioBase64": base64.b64encode(msg.audio).decode("ascii")}
    elif isinstance(msg, UnknownRelayEvent):
        data = msg.data
    else:
        data = msg.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _dumps({"type": msg.type, "data": data, "timestamp": timestamp})
