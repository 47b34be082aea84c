"""Sans-I/O codec for the ElevenLabs Conversational AI WebSocket protocol.

The wire format, as sagelab implements it, is described in the documentation's *Protocols*
page (``docs/protocols.md``). Both sagelab's ConvAI-compatible server and its client go through
this module, so the exact envelope shapes live in one place and the rest of the code deals with
typed models.

Models are flat: a server event's payload fields sit directly on the model (``Ping.event_id``
rather than ``ping_event.event_id``) and base64 audio is decoded to ``bytes``. Every model has a
class-level ``type`` tag equal to the wire ``type``, so ``match`` on classes or on ``msg.type``
both work.

Client → server (:data:`ClientMessage`, read with :func:`parse_client`, written with
:func:`encode_client`): ``user_audio_chunk`` (:class:`UserAudioChunk`, the only message without a
``type`` key), ``conversation_initiation_client_data``, ``pong``, ``client_tool_result``,
``user_message``, ``contextual_update``, ``user_activity``, ``feedback``,
``mcp_tool_approval_result``, ``multimodal_message``; and sagelab's extension
``internal_sagelab_heard`` (:class:`SagelabHeard`), which only sagelab's server reads.

Server → client (:data:`ServerMessage`, read with :func:`parse_server`, written with
:func:`encode_server`): ``conversation_initiation_metadata``, ``ping``, ``audio``,
``agent_response``, ``agent_response_correction``, ``agent_chat_response_part``,
``agent_reasoning_response_part``, ``user_transcript``, ``tentative_user_transcript``,
``internal_tentative_agent_response``, ``internal_turn_probability``, ``interruption``,
``client_tool_call``, ``vad_score``, ``agent_tool_request``, ``agent_tool_response``,
``agent_tool_response_full_payload``, ``mcp_tool_call``, ``mcp_connection_status``,
``context_usage``, ``asr_initiation_metadata``, ``rich_content``, ``guardrail_triggered``,
``agent_typing``, ``external_agent_connected``, ``external_agent_disconnected``, ``error``.
Any other server type parses to :class:`UnknownServerMessage`, because both official SDKs ignore
unknown types and a client must keep working against a newer server. sagelab's own server
events travel that way too (``internal_sagelab_stage``, ``internal_sagelab_tool_call``): built
with :func:`sagelab_event`, read with :func:`sagelab_event_payload`, typed by
:class:`SagelabToolCall`.

Tolerance follows the reference: unknown keys in known messages are ignored, any JSON is accepted
as a tool result, and ``text_only`` is found at either place real clients put it. Missing required
fields, wrong JSON types and bad base64 raise :class:`~sagelab.protocol.errors.ProtocolError`.
"""

import base64
import json
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, ValidationError

from sagelab.protocol.errors import (
    ProtocolError,
    decode_base64,
    describe,
    from_validation_error,
    load_json_object,
    message_type,
)

__all__ = [
    "AgentChatResponsePart",
    "AgentOverride",
    "AgentReasoningResponsePart",
    "AgentResponse",
    "AgentResponseCorrection",
    "AgentToolRequest",
    "AgentToolResponse",
    "AgentToolResponseFullPayload",
    "AgentTyping",
    "Alignment",
    "AsrInitiationMetadata",
    "AsrOverride",
    "AudioEvent",
    "AudioFormatName",
    "ClientMessage",
    "ClientToolCall",
    "ClientToolResult",
    "ContextUsage",
    "ContextualUpdate",
    "ConversationConfigOverride",
    "ConversationInitiationClientData",
    "ConversationInitiationMetadata",
    "ConversationOverride",
    "ErrorEvent",
    "ExternalAgentConnected",
    "ExternalAgentDisconnected",
    "Feedback",
    "FileInput",
    "GuardrailTriggered",
    "InternalTentativeAgentResponse",
    "InternalTurnProbability",
    "Interruption",
    "McpConnectionStatus",
    "McpIntegration",
    "McpToolApprovalResult",
    "McpToolCall",
    "MultimodalMessage",
    "MultimodalText",
    "Ping",
    "Pong",
    "PromptOverride",
    "RichContent",
    "SagelabHeard",
    "SagelabToolCall",
    "ServerMessage",
    "SourceInfo",
    "TentativeUserTranscript",
    "TtsOverride",
    "TurnOverride",
    "UnknownServerMessage",
    "UserActivity",
    "UserAudioChunk",
    "UserMessage",
    "UserTranscript",
    "VadScore",
    "encode_client",
    "encode_server",
    "parse_client",
    "parse_server",
    "sagelab_event",
    "sagelab_event_payload",
]

AudioFormatName = Literal[
    "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"
]
PartType = Literal["start", "delta", "stop"]
JsonObject: TypeAlias = dict[str, JsonValue]

_COMPACT = (",", ":")


def _scalar(value: object) -> object:
    # Checked up front so a bad value gets one clear message instead of one per union member.
    if isinstance(value, str | int | float):  # bool is an int
        return value
    raise ValueError("expected a string, number or boolean")


def _number(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ValueError("expected a number")


DynamicVariable = Annotated[str | int | float | bool, BeforeValidator(_scalar)]
# Alignment timings are ints in every capture, but a float must not make a client drop audio.
Number = Annotated[int | float, BeforeValidator(_number)]


class _Model(BaseModel):
    # strict: JSON types must match (no "7" for 7) so peers learn about their bugs;
    # extra="ignore": newer peers may add keys; frozen: parsed frames are facts, not state.
    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="ignore",
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
    )


class _Message(_Model):
    type: ClassVar[str]
    # Keys written even when None, because a peer indexes them unconditionally.
    _keep_null: ClassVar[tuple[str, ...]] = ()


# ------------------------------------------------------------------------------------------------
# Client → server


class UserAudioChunk(_Message):
    """Microphone audio: raw PCM16 LE mono (or μ-law) at the announced input rate, no header.

    The wire message is ``{"user_audio_chunk": "<base64>"}`` with no ``type`` key; the tag here
    only exists so the union can be matched like every other message.
    """

    type: ClassVar[Literal["user_audio_chunk"]] = "user_audio_chunk"
    audio: bytes


class PromptOverride(_Model):
    prompt: str | None = None
    llm: str | None = None
    reasoning_effort: str | None = None
    tool_ids: list[str] | None = None
    tool_ids_strict: bool | None = None
    native_mcp_server_ids: list[str] | None = None
    knowledge_base: list[JsonObject] | None = None


class AgentOverride(_Model):
    first_message: str | None = None
    language: str | None = None
    max_conversation_duration_message: str | None = None
    prompt: PromptOverride | None = None


class TtsOverride(_Model):
    """Voice overrides. Ranges (speed 0.7-5, stability 0-1) are agent policy, not checked here."""

    voice_id: str | None = None
    model_id: str | None = None
    stability: float | None = None
    speed: float | None = None
    similarity_boost: float | None = None
    clone_strength: float | None = None
    supported_voices: list[JsonObject] | None = None
    pronunciation_dictionary_locators: list[JsonObject] | None = None


class AsrOverride(_Model):
    keywords: list[str] | None = None


class TurnOverride(_Model):
    soft_timeout_config: JsonObject | None = None
    noisy_environment_message: str | None = None


class ConversationOverride(_Model):
    text_only: bool | None = None
    max_duration_seconds: int | None = None
    client_events: list[str] | None = None


class ConversationConfigOverride(_Model):
    """``conversation_config_override``; every part optional, as clients send only what they set.

    ``text_only`` at this level is the Python SDK 2.78.0 quirk (it should live under
    ``conversation``); it is kept as a field so a re-encoded frame stays byte-compatible.
    """

    agent: AgentOverride | None = None
    tts: TtsOverride | None = None
    asr: AsrOverride | None = None
    turn: TurnOverride | None = None
    conversation: ConversationOverride | None = None
    text_only: bool | None = None


class SourceInfo(_Model):
    source: str | None = None
    version: str | None = None


class ConversationInitiationClientData(_Message):
    """The first client message: per-session overrides and variables."""

    type: ClassVar[Literal["conversation_initiation_client_data"]] = (
        "conversation_initiation_client_data"
    )
    custom_llm_extra_body: JsonObject = Field(default_factory=dict)
    conversation_config_override: ConversationConfigOverride = Field(
        default_factory=ConversationConfigOverride
    )
    dynamic_variables: dict[str, DynamicVariable] = Field(default_factory=dict)
    source_info: SourceInfo | None = None
    user_id: str | None = None
    tool_mock_config: JsonObject | None = None
    branch_id: str | None = None
    environment: str | None = None
    starting_workflow_node_id: str | None = None
    procedure_ids: list[str] | None = None
    start_procedure_ids: list[str] | None = None

    @property
    def text_only(self) -> bool:
        """True if text-only mode was asked for at either place clients put the flag."""
        override = self.conversation_config_override
        nested = override.conversation.text_only if override.conversation else None
        return bool(override.text_only or nested)


class Pong(_Message):
    type: ClassVar[Literal["pong"]] = "pong"
    event_id: int


class ClientToolResult(_Message):
    """Answer to a ``client_tool_call``.

    The contract says ``result`` is a string, but the Python SDK sends whatever the tool returned
    (objects, numbers, null), so any JSON is accepted; use :attr:`result_text` for the LLM.
    """

    type: ClassVar[Literal["client_tool_result"]] = "client_tool_result"
    _keep_null: ClassVar[tuple[str, ...]] = ("result",)
    tool_call_id: str
    result: JsonValue
    is_error: bool = False

    @property
    def result_text(self) -> str:
        """The result as text, JSON-encoding non-strings the way the JS SDK does."""
        if isinstance(self.result, str):
            return self.result
        return json.dumps(self.result, ensure_ascii=False)


class UserMessage(_Message):
    """Typed user text, handled like a spoken turn. The SDK always sends ``text``, even null."""

    type: ClassVar[Literal["user_message"]] = "user_message"
    _keep_null: ClassVar[tuple[str, ...]] = ("text",)
    text: str | None = None
    rich_content_id: str | None = None


class ContextualUpdate(_Message):
    """Background information for the agent; the same ``context_id`` replaces an older update."""

    type: ClassVar[Literal["contextual_update"]] = "contextual_update"
    text: str
    context_id: str | None = None


class UserActivity(_Message):
    """Resets the server's idle timeout without saying anything."""

    type: ClassVar[Literal["user_activity"]] = "user_activity"


class Feedback(_Message):
    """Like/dislike on an agent turn (JS SDK only). ``score`` is always sent, null clears it."""

    type: ClassVar[Literal["feedback"]] = "feedback"
    _keep_null: ClassVar[tuple[str, ...]] = ("score",)
    score: Literal["like", "dislike"] | None = None
    event_id: int


class McpToolApprovalResult(_Message):
    type: ClassVar[Literal["mcp_tool_approval_result"]] = "mcp_tool_approval_result"
    tool_call_id: str
    is_approved: bool


class MultimodalText(_Model):
    type: Literal["user_message"] = "user_message"
    text: str | None = None  # a part may carry only rich_content_id (the message contract)
    rich_content_id: str | None = None


class FileInput(_Model):
    type: Literal["file_input"] = "file_input"
    file_id: str


class MultimodalMessage(_Message):
    """Text plus previously uploaded files.

    Kept in wire shape (``file`` is the first of ``files``, which only the Python SDK sends);
    :attr:`file_ids` and :attr:`user_text` hide the difference between clients.
    """

    type: ClassVar[Literal["multimodal_message"]] = "multimodal_message"
    text: MultimodalText | None = None
    file: FileInput | None = None
    files: list[FileInput] | None = None

    @property
    def user_text(self) -> str | None:
        return self.text.text if self.text else None

    @property
    def file_ids(self) -> list[str]:
        if self.files is not None:
            return [f.file_id for f in self.files]
        return [self.file.file_id] if self.file else []


def _non_negative(value: object) -> object:
    _number(value)
    if value < 0:  # type: ignore[operator]
        raise ValueError("expected a number >= 0")
    return value


class SagelabHeard(_Message):
    """sagelab extension: how much of an interrupted agent turn the user really heard.

    ConvAI has no message for it: a server learns of a barge-in from the user's speech and
    guesses what was heard from how much audio it sent. A client that stopped playback itself
    (an Interrupt button) or that knows its player's position sends this after the cut, so the
    server's history and store keep only what was heard. ``played_ms`` is the audio of turn
    ``event_id`` that was played; ``text`` the client's reading of the words heard (by
    alignment, or by share of the audio), which a server may refine from ``played_ms`` with
    its own alignment. Sent only to sagelab servers (other ConvAI servers would answer an
    unknown type with an error event).
    """

    type: ClassVar[Literal["internal_sagelab_heard"]] = "internal_sagelab_heard"
    event_id: int
    played_ms: Annotated[int | float, BeforeValidator(_non_negative)]
    text: str | None = None


ClientMessage: TypeAlias = (
    UserAudioChunk
    | ConversationInitiationClientData
    | Pong
    | ClientToolResult
    | UserMessage
    | ContextualUpdate
    | UserActivity
    | Feedback
    | McpToolApprovalResult
    | MultimodalMessage
    | SagelabHeard
)


# ------------------------------------------------------------------------------------------------
# Server → client


class _ServerMessage(_Message):
    # The key of the envelope's payload object; None for messages that are just a type.
    payload_key: ClassVar[str | None]


class ConversationInitiationMetadata(_ServerMessage):
    """Must be the first and only such message; JS clients refuse a missing output format."""

    type: ClassVar[Literal["conversation_initiation_metadata"]] = "conversation_initiation_metadata"
    payload_key: ClassVar[str | None] = "conversation_initiation_metadata_event"
    conversation_id: str
    agent_output_audio_format: AudioFormatName = "pcm_16000"
    user_input_audio_format: AudioFormatName = "pcm_16000"
    # sagelab's resume extension (server/resume.py), only for clients that asked with
    # ?sagelab_resume=1; SDKs ignore unknown fields. In the metadata, not a later event, so a
    # connection that drops right after it still leaves the client a token.
    sagelab_resume_token: str | None = None
    sagelab_resume_grace_s: float | None = None


class Ping(_ServerMessage):
    """``ping_ms`` is the previous round trip; the key must exist even when null (first ping)."""

    type: ClassVar[Literal["ping"]] = "ping"
    payload_key: ClassVar[str | None] = "ping_event"
    _keep_null: ClassVar[tuple[str, ...]] = ("ping_ms",)
    event_id: int
    ping_ms: int | None = None


class Alignment(_Model):
    chars: list[str]
    char_start_times_ms: list[Number]
    char_durations_ms: list[Number]


class AudioEvent(_ServerMessage):
    """Agent speech. Clients drop chunks whose ``event_id`` is not newer than an interruption."""

    type: ClassVar[Literal["audio"]] = "audio"
    payload_key: ClassVar[str | None] = "audio_event"
    audio: bytes
    event_id: int
    alignment: Alignment | None = None
    is_final: bool | None = None


class AgentResponse(_ServerMessage):
    type: ClassVar[Literal["agent_response"]] = "agent_response"
    payload_key: ClassVar[str | None] = "agent_response_event"
    agent_response: str
    event_id: int


class AgentResponseCorrection(_ServerMessage):
    """What the agent actually got to say before being interrupted."""

    type: ClassVar[Literal["agent_response_correction"]] = "agent_response_correction"
    payload_key: ClassVar[str | None] = "agent_response_correction_event"
    original_agent_response: str
    corrected_agent_response: str
    event_id: int


class AgentChatResponsePart(_ServerMessage):
    """Streaming text. The payload's own ``type`` key (start/delta/stop) is ``part_type`` here."""

    type: ClassVar[Literal["agent_chat_response_part"]] = "agent_chat_response_part"
    payload_key: ClassVar[str | None] = "text_response_part"
    text: str = ""
    # The Python SDK defaults a missing part type to "delta".
    part_type: PartType = Field(
        default="delta", validation_alias="type", serialization_alias="type"
    )
    event_id: int


class AgentReasoningResponsePart(_ServerMessage):
    """Streaming reasoning text; unlike every other event its ``event_id`` is a string."""

    type: ClassVar[Literal["agent_reasoning_response_part"]] = "agent_reasoning_response_part"
    payload_key: ClassVar[str | None] = "reasoning_response_part"
    text: str = ""
    part_type: PartType = Field(
        default="delta", validation_alias="type", serialization_alias="type"
    )
    event_id: str


class UserTranscript(_ServerMessage):
    type: ClassVar[Literal["user_transcript"]] = "user_transcript"
    payload_key: ClassVar[str | None] = "user_transcription_event"
    user_transcript: str
    event_id: int


class TentativeUserTranscript(_ServerMessage):
    type: ClassVar[Literal["tentative_user_transcript"]] = "tentative_user_transcript"
    payload_key: ClassVar[str | None] = "tentative_user_transcription_event"
    user_transcript: str
    event_id: int


class InternalTentativeAgentResponse(_ServerMessage):
    type: ClassVar[Literal["internal_tentative_agent_response"]] = (
        "internal_tentative_agent_response"
    )
    payload_key: ClassVar[str | None] = "tentative_agent_response_internal_event"
    tentative_agent_response: str


class InternalTurnProbability(_ServerMessage):
    type: ClassVar[Literal["internal_turn_probability"]] = "internal_turn_probability"
    payload_key: ClassVar[str | None] = "turn_probability_internal_event"
    turn_probability: float


class Interruption(_ServerMessage):
    """Barge-in: the client flushes playback and drops audio with ``event_id <=`` this id."""

    type: ClassVar[Literal["interruption"]] = "interruption"
    payload_key: ClassVar[str | None] = "interruption_event"
    event_id: int


class ClientToolCall(_ServerMessage):
    """Asks the client to run a tool; the client always answers with ``client_tool_result``."""

    type: ClassVar[Literal["client_tool_call"]] = "client_tool_call"
    payload_key: ClassVar[str | None] = "client_tool_call"
    tool_name: str
    tool_call_id: str
    parameters: JsonObject = Field(default_factory=dict)
    event_id: int


class VadScore(_ServerMessage):
    type: ClassVar[Literal["vad_score"]] = "vad_score"
    payload_key: ClassVar[str | None] = "vad_score_event"
    vad_score: float


class AgentToolRequest(_ServerMessage):
    type: ClassVar[Literal["agent_tool_request"]] = "agent_tool_request"
    payload_key: ClassVar[str | None] = "agent_tool_request"
    tool_name: str
    tool_call_id: str
    # A plain string: the set of tool types keeps growing and clients ignore this event anyway.
    tool_type: str
    event_id: int


class _AgentToolResponseFields(_ServerMessage):
    tool_name: str
    tool_call_id: str
    tool_type: str
    is_error: bool
    is_called: bool
    event_id: int


class AgentToolResponse(_AgentToolResponseFields):
    type: ClassVar[Literal["agent_tool_response"]] = "agent_tool_response"
    payload_key: ClassVar[str | None] = "agent_tool_response"


class AgentToolResponseFullPayload(_AgentToolResponseFields):
    """``agent_tool_response`` plus the tool's output. Deliberately not a subclass of it, so a
    ``case AgentToolResponse()`` does not swallow this one."""

    type: ClassVar[Literal["agent_tool_response_full_payload"]] = "agent_tool_response_full_payload"
    payload_key: ClassVar[str | None] = "agent_tool_response_full_payload"
    full_tool_result: str
    is_blocked: bool = False
    truncated: bool = False


McpToolCallState = Literal["loading", "awaiting_approval", "success", "failure"]


class McpToolCall(_ServerMessage):
    """Progress of an MCP tool call. ``approval_timeout_secs`` absent means the default 300 s."""

    type: ClassVar[Literal["mcp_tool_call"]] = "mcp_tool_call"
    payload_key: ClassVar[str | None] = "mcp_tool_call"
    service_id: str
    tool_call_id: str
    tool_name: str
    tool_description: str | None = None
    parameters: JsonObject = Field(default_factory=dict)
    timestamp: str  # ISO 8601; kept as text so re-encoding is lossless
    state: McpToolCallState
    approval_timeout_secs: int | None = None
    result: list[JsonObject] | None = None
    error_message: str | None = None


class McpIntegration(_Model):
    integration_id: str
    integration_type: Literal["mcp_server", "mcp_integration"]
    is_connected: bool
    tool_count: int


class McpConnectionStatus(_ServerMessage):
    type: ClassVar[Literal["mcp_connection_status"]] = "mcp_connection_status"
    payload_key: ClassVar[str | None] = "mcp_connection_status"
    integrations: list[McpIntegration] = Field(default_factory=list)


class ContextUsage(_ServerMessage):
    type: ClassVar[Literal["context_usage"]] = "context_usage"
    payload_key: ClassVar[str | None] = "context_usage_event"
    event_id: int
    model: str
    context_tokens: int
    context_limit_tokens: int


class AsrInitiationMetadata(_ServerMessage):
    """Its payload has no published schema, so the whole object is kept as ``metadata``."""

    type: ClassVar[Literal["asr_initiation_metadata"]] = "asr_initiation_metadata"
    payload_key: ClassVar[str | None] = "asr_initiation_metadata_event"
    metadata: JsonObject = Field(default_factory=dict)


class RichContent(_ServerMessage):
    """Experimental UI component for the client to render."""

    type: ClassVar[Literal["rich_content"]] = "rich_content"
    payload_key: ClassVar[str | None] = "rich_content"
    rich_content_id: str
    component: str
    props: JsonObject = Field(default_factory=dict)
    event_id: int


class GuardrailTriggered(_ServerMessage):
    type: ClassVar[Literal["guardrail_triggered"]] = "guardrail_triggered"
    payload_key: ClassVar[str | None] = None


class AgentTyping(_ServerMessage):
    type: ClassVar[Literal["agent_typing"]] = "agent_typing"
    payload_key: ClassVar[str | None] = "agent_typing_event"
    is_typing: bool
    duration_ms: int | None = None


class ExternalAgentConnected(_ServerMessage):
    type: ClassVar[Literal["external_agent_connected"]] = "external_agent_connected"
    payload_key: ClassVar[str | None] = "external_agent_connected_event"


class ExternalAgentDisconnected(_ServerMessage):
    type: ClassVar[Literal["external_agent_disconnected"]] = "external_agent_disconnected"
    payload_key: ClassVar[str | None] = "external_agent_disconnected_event"


class ErrorEvent(_ServerMessage):
    """Sent just before an error close; ``code`` is the close code that follows."""

    type: ClassVar[Literal["error"]] = "error"
    payload_key: ClassVar[str | None] = "error_event"
    code: int
    message: str | None = None
    error_type: str | None = None
    reason: str | None = None
    debug_message: str | None = None
    details: JsonValue = None


class SagelabStage(_ServerMessage):
    """sagelab's extension: how long a pipeline stage of turn ``event_id`` took, sent only to
    clients that asked with ``?sagelab_stages=1``; other clients ignore unknown types."""

    type: ClassVar[Literal["internal_sagelab_stage"]] = "internal_sagelab_stage"
    payload_key: ClassVar[str | None] = "internal_sagelab_stage_event"
    event_id: int
    stage: str
    ms: Number


class UnknownServerMessage(BaseModel):
    """A server message type this codec does not know; ``raw`` is the whole frame.

    Not a protocol error: both SDKs ignore unknown types, so a newer server must not break us.
    """

    model_config = ConfigDict(strict=True, frozen=True)
    type: str
    raw: JsonObject


def sagelab_event(type: str, payload: dict[str, Any]) -> UnknownServerMessage:
    """A sagelab server extension event, ``{"type": T, "T_event": payload}``: the envelope of the
    protocol's own events, under a type the official SDKs ignore. Servers send these only to
    clients that asked for them (``?sagelab_stages=1``)."""
    return UnknownServerMessage(type=type, raw={f"{type}_event": payload})


def sagelab_event_payload(msg: "ServerMessage", type: str) -> dict[str, Any] | None:
    """The payload of the sagelab extension event ``type``, or None if ``msg`` is another."""
    if not isinstance(msg, UnknownServerMessage) or msg.type != type:
        return None
    payload = msg.raw.get(f"{type}_event")
    return payload if isinstance(payload, dict) else None


class SagelabToolCall(_Model):
    """sagelab extension event ``internal_sagelab_tool_call``: a server tool's call as the
    agent made it, which ``agent_tool_request`` / ``agent_tool_response`` leave out.

    Sent when the tool has answered, with its ``parameters``, ``result`` and ``is_error`` (a
    server may also send it at the call with no ``result``, then again). Travels as an unknown
    type (:func:`sagelab_event`), so the official SDKs ignore it.
    """

    type: ClassVar[str] = "internal_sagelab_tool_call"
    event_id: int
    tool_call_id: str
    tool_name: str
    parameters: JsonObject = Field(default_factory=dict)
    result: JsonValue = None
    is_error: bool | None = None

    def to_message(self) -> UnknownServerMessage:
        return sagelab_event(self.type, self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def read(cls, msg: "ServerMessage") -> "SagelabToolCall | None":
        """The event in ``msg``; None for any other message. A malformed one raises
        :class:`~sagelab.protocol.errors.ProtocolError`."""
        payload = sagelab_event_payload(msg, cls.type)
        if payload is None:
            return None
        return _validate(cls, payload, f"{cls.type}.{cls.type}_event")


ServerMessage: TypeAlias = (
    ConversationInitiationMetadata
    | Ping
    | AudioEvent
    | AgentResponse
    | AgentResponseCorrection
    | AgentChatResponsePart
    | AgentReasoningResponsePart
    | UserTranscript
    | TentativeUserTranscript
    | InternalTentativeAgentResponse
    | InternalTurnProbability
    | Interruption
    | ClientToolCall
    | VadScore
    | AgentToolRequest
    | AgentToolResponse
    | AgentToolResponseFullPayload
    | McpToolCall
    | McpConnectionStatus
    | ContextUsage
    | AsrInitiationMetadata
    | RichContent
    | GuardrailTriggered
    | AgentTyping
    | ExternalAgentConnected
    | ExternalAgentDisconnected
    | ErrorEvent
    | SagelabStage
    | UnknownServerMessage
)


# ------------------------------------------------------------------------------------------------
# Codec

_CLIENT_MODELS: dict[str, type[_Message]] = {
    m.type: m
    for m in (
        ConversationInitiationClientData,
        Pong,
        ClientToolResult,
        UserMessage,
        ContextualUpdate,
        UserActivity,
        Feedback,
        McpToolApprovalResult,
        MultimodalMessage,
        SagelabHeard,
    )
}

_SERVER_MODELS: dict[str, type[_ServerMessage]] = {
    m.type: m
    for m in (
        SagelabStage,
        ConversationInitiationMetadata,
        Ping,
        AudioEvent,
        AgentResponse,
        AgentResponseCorrection,
        AgentChatResponsePart,
        AgentReasoningResponsePart,
        UserTranscript,
        TentativeUserTranscript,
        InternalTentativeAgentResponse,
        InternalTurnProbability,
        Interruption,
        ClientToolCall,
        VadScore,
        AgentToolRequest,
        AgentToolResponse,
        AgentToolResponseFullPayload,
        McpToolCall,
        McpConnectionStatus,
        ContextUsage,
        AsrInitiationMetadata,
        RichContent,
        GuardrailTriggered,
        AgentTyping,
        ExternalAgentConnected,
        ExternalAgentDisconnected,
        ErrorEvent,
    )
}

# Server messages whose payload object may be absent because nothing in it is required.
_PAYLOAD_OPTIONAL = frozenset(
    name
    for name, model in _SERVER_MODELS.items()
    if not any(f.is_required() for f in model.model_fields.values())
)

_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: dict[str, Any], prefix: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix) from None


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=_COMPACT, allow_nan=False)


def _fields(msg: _Message) -> dict[str, Any]:
    """The model's wire fields: unset optionals omitted, except keys a peer reads blindly."""
    data = msg.model_dump(mode="json", by_alias=True, exclude_none=True)
    for key in msg._keep_null:
        data.setdefault(key, None)
    return data


def parse_client(frame: str | bytes) -> ClientMessage:
    """Parse a frame received by the server. Binary frames are never valid."""
    obj = load_json_object(frame)
    if "type" not in obj and "user_audio_chunk" in obj:
        return UserAudioChunk(audio=decode_base64(obj["user_audio_chunk"], "user_audio_chunk"))
    name = message_type(obj)
    model = _CLIENT_MODELS.get(name)
    if model is None:
        raise ProtocolError(
            "type",
            f"unknown client message type {name!r}; expected one of {', '.join(_CLIENT_MODELS)} "
            "or an untyped user_audio_chunk",
            "unknown_message_type",
        )
    return cast(ClientMessage, _validate(model, obj, name))


def encode_client(msg: ClientMessage) -> str:
    """Serialize a client message exactly as the official SDKs shape it."""
    if isinstance(msg, UserAudioChunk):
        return _dumps({"user_audio_chunk": base64.b64encode(msg.audio).decode("ascii")})
    return _dumps({"type": msg.type, **_fields(msg)})


def _parse_audio_event(payload: dict[str, Any]) -> AudioEvent:
    prefix = "audio.audio_event"
    if "audio_base_64" not in payload:
        raise ProtocolError(
            f"{prefix}.audio_base_64", "required field is missing", "missing_fields"
        )
    audio = decode_base64(payload["audio_base_64"], f"{prefix}.audio_base_64")
    fields = {k: v for k, v in payload.items() if k not in ("audio_base_64", "audio")}
    return _validate(AudioEvent, {**fields, "audio": audio}, prefix)


def parse_server(frame: str | bytes) -> ServerMessage:
    """Parse a frame received by a client; unknown types become :class:`UnknownServerMessage`."""
    obj = load_json_object(frame)
    name = message_type(obj)
    model = _SERVER_MODELS.get(name)
    if model is None:
        try:
            return UnknownServerMessage(type=name, raw=obj)
        except ValidationError as exc:  # only possible for absurdly deep nesting
            raise from_validation_error(exc, name, skip=1) from None
    key = model.payload_key
    if key is None:
        return cast(ServerMessage, _validate(model, {}, name))
    prefix = f"{name}.{key}"
    if key not in obj and name in _PAYLOAD_OPTIONAL:
        payload: object = {}
    elif key not in obj:
        raise ProtocolError(prefix, "required field is missing", "missing_fields")
    else:
        payload = obj[key]
    if not isinstance(payload, dict):
        raise ProtocolError(prefix, f"expected an object, got {describe(payload)}", "value_error")
    if model is AudioEvent:
        return _parse_audio_event(payload)
    if model is AsrInitiationMetadata:
        return _validate(AsrInitiationMetadata, {"metadata": payload}, prefix)
    return cast(ServerMessage, _validate(model, payload, prefix))


def _encode_audio_event(msg: AudioEvent) -> str:
    # Hot path (every agent audio chunk of every session): build the dict by hand instead of
    # going through model_dump.
    event: dict[str, Any] = {
        "audio_base_64": base64.b64encode(msg.audio).decode("ascii"),
        "event_id": msg.event_id,
    }
    if msg.alignment is not None:
        event["alignment"] = {
            "chars": msg.alignment.chars,
            "char_start_times_ms": msg.alignment.char_start_times_ms,
            "char_durations_ms": msg.alignment.char_durations_ms,
        }
    if msg.is_final is not None:
        event["is_final"] = msg.is_final
    return _dumps({"type": "audio", "audio_event": event})


def encode_server(msg: ServerMessage) -> str:
    """Serialize a server message into the reference's ``{"type", "<payload key>"}`` envelope."""
    if isinstance(msg, AudioEvent):
        return _encode_audio_event(msg)
    if isinstance(msg, UnknownServerMessage):
        return _dumps({**msg.raw, "type": msg.type})
    frame: dict[str, Any] = {"type": msg.type}
    if isinstance(msg, AsrInitiationMetadata):
        frame["asr_initiation_metadata_event"] = msg.metadata
    elif msg.payload_key is not None:
        frame[msg.payload_key] = _fields(msg)
    return _dumps(frame)
