"""What a wire protocol must provide to be served: the contract between the one connection
handler (``connection.py``) and each protocol (``convai.py``, ``relay.py``).

The handler works in protocol-neutral terms, defined here: what a client asks for
(:data:`ClientInput`), what the server says (the core's :data:`~sagelab.conversation.events.
OutEvent` plus the adapter's :data:`Notice`), and why a connection gets no session
(:class:`SetupError`). A protocol is two objects: a :class:`Route`, which turns a handshake
into a session (which agent, which credentials, what the first message carries) and renders a
refusal, and a :class:`Serializer` per connection, which decodes frames into inputs and encodes
events into frames with the protocol's codec models (``sagelab.protocol``). Neither does any
I/O; an event a protocol has no message for encodes to ``None`` and is not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from sagelab.conversation.events import OutEvent

if TYPE_CHECKING:
    from sagelab.agents.base import ResolvedAgent
    from sagelab.config import AgentSpec, ServerConfig
    from sagelab.server.store import ProtocolName

# -- client -> server, protocol-neutral ----------------------------------------------------


@dataclass(frozen=True)
class UserAudio:
    """Encoded user audio as it arrived; the serializer decodes it (``decode_audio``) after
    the handler has charged its bytes to the session's audio budget."""

    data: bytes = field(repr=False)


@dataclass(frozen=True)
class UserText:
    """A typed user turn; empty text is activity without a turn."""

    text: str


@dataclass(frozen=True)
class PongIn:
    event_id: int


@dataclass(frozen=True)
class Heard:
    """How much of turn ``event_id`` the client's player played (sagelab extension)."""

    event_id: int
    played_ms: float


@dataclass(frozen=True)
class ContextNote:
    text: str
    context_id: str | None = None


@dataclass(frozen=True)
class Activity:
    """The user is active (typing, looking): the idle timer starts again."""


@dataclass(frozen=True)
class ToolResultIn:
    call_id: str
    value: Any
    is_error: bool


@dataclass(frozen=True)
class FeedbackIn:
    event_id: int
    score: Literal["like", "dislike"] | None  # None clears the score


@dataclass(frozen=True)
class InterruptRequest:
    """The client stopped the agent itself (relay ``interrupt``)."""


@dataclass(frozen=True)
class EndRequest:
    """The client ends the conversation (relay ``end``)."""


@dataclass(frozen=True)
class Invalid:
    """A frame the protocol refuses. ``fatal``: the session ends (1008) with ``message``;
    otherwise the client gets an ``error`` event and the session goes on."""

    error_type: str
    message: str
    fatal: bool


@dataclass(frozen=True)
class Ignored:
    """A valid message the server has nothing to do with (e.g. MCP approvals)."""


ClientInput = (
    UserAudio
    | UserText
    | PongIn
    | Heard
    | ContextNote
    | Activity
    | ToolResultIn
    | FeedbackIn
    | InterruptRequest
    | EndRequest
    | Invalid
    | Ignored
)


@dataclass(frozen=True)
class Decoded:
    """One frame decoded: its wire type (the metrics label; None when it did not parse)."""

    type: str | None
    input: ClientInput


class BadAudio(ValueError):
    """User audio that cannot be decoded; the message says what was expected."""


# -- server -> client, beyond the core's events ---------------------------------------------


@dataclass(frozen=True)
class Metadata:
    """The session's first message (again on every resumed connection)."""

    conversation_id: str
    input_format: str
    output_format: str
    resume_token: str | None = None
    resume_grace_s: float | None = None


@dataclass(frozen=True)
class ToolRequest:
    """A server tool starts running."""

    name: str
    call_id: str
    parameters: dict[str, Any]
    event_id: int


@dataclass(frozen=True)
class ToolResponse:
    """A tool (server or client) has answered."""

    name: str
    call_id: str
    tool_type: str
    is_error: bool
    event_id: int


@dataclass(frozen=True)
class ToolDetail:
    """A server tool's call with parameters and result (sagelab extension, on request)."""

    name: str
    call_id: str
    parameters: dict[str, Any]
    result: Any
    is_error: bool
    event_id: int


@dataclass(frozen=True)
class VadScore:
    score: float


@dataclass(frozen=True)
class Stage:
    """A pipeline stage's duration (sagelab extension, on request)."""

    event_id: int
    stage: str
    ms: float


@dataclass(frozen=True)
class ErrorReport:
    """A reported failure; ``code`` is the close code that follows when it is fatal."""

    code: int
    error_type: str
    message: str


@dataclass(frozen=True)
class Closing:
    """The session is about to close with ``code``; some protocols say goodbye first."""

    code: int
    reason: str


Notice = (
    Metadata | ToolRequest | ToolResponse | ToolDetail | VadScore | Stage | ErrorReport | Closing
)
ServerEvent = OutEvent | Notice


@dataclass(frozen=True)
class Frame:
    """One encoded message: its wire type (the metrics label) and the text to send."""

    type: str
    data: str


# -- handshake -----------------------------------------------------------------------------

#: Why a connection gets no session. Each protocol maps these to its own close codes.
SetupFailure = Literal[
    "bad_request",  # a required parameter or first message is missing or malformed
    "too_large",  # the first message is over its size limit
    "unknown_agent",
    "unauthorized",
    "resume_refused",
    "busy",  # capacity: try again later
    "agent_failed",  # the agent's backend could not start
]


class SetupError(Exception):
    """A connection refused before its session exists; the route renders it."""

    def __init__(self, failure: SetupFailure, error_type: str, message: str) -> None:
        super().__init__(message)
        self.failure, self.error_type, self.message = failure, error_type, message


@dataclass(frozen=True)
class Admission:
    """What a handshake asks for, read from its query by the route."""

    agent_id: str
    spec: AgentSpec
    resume_token: str
    resumable: bool
    detail_id: str | None = None  # the relay's conversationDetailId


@dataclass(frozen=True)
class Refusal:
    """How a protocol refuses a connection: frames first, then the close."""

    frames: list[Frame]
    code: int
    reason: str


class Serializer(Protocol):
    """One connection's codec: frames in, neutral inputs out; neutral events in, frames out."""

    #: Whether the client can answer client tool calls (the relay's browser cannot).
    answers_client_tools: bool
    #: The client's audio format, whose real-time byte rate bounds its audio; None for a
    #: compressed stream (the relay's WebM/Opus), bounded by what it decodes to instead.
    input_format: str | None

    def decode(self, frame: str | bytes) -> Decoded:
        """Parse one client frame; never raises (a bad frame is an :class:`Invalid`)."""
        ...

    def decode_audio(self, data: bytes) -> np.ndarray:
        """16 kHz int16 PCM of a :class:`UserAudio`; raises :class:`BadAudio`."""
        ...

    def encode_audio(self, pcm: np.ndarray, chunk_samples: int) -> list[Any]:
        """One block of the agent's 16 kHz audio as the per-chunk payloads of ``AgentAudio``."""
        ...

    def encode(self, event: ServerEvent) -> Frame | None:
        """The frame for ``event``; None when the protocol has no message for it."""
        ...

    def finish(self) -> None:
        """The connection is over: release what decoding holds."""
        ...


class Route(Protocol):
    """How a protocol's handshake becomes a session, and how it refuses one."""

    protocol: ProtocolName
    #: Prefix of the conversation ids this route creates.
    id_prefix: str
    #: How to fix a frame over the size limit (what a real client of this protocol sends).
    frame_hint: str
    #: The wire type of the client's first message when it carries the session's settings
    #: (ConvAI's ``conversation_initiation_client_data``); None: the handshake is all.
    initiation_type: str | None

    def admit(self, query: Mapping[str, str], config: ServerConfig) -> Admission:
        """Which agent, which resume token; raises :class:`SetupError`."""
        ...

    def initiation(self, frame: str | bytes) -> Any:
        """Parse the first message (``initiation_type``); raises :class:`SetupError`."""
        ...

    def resolve(self, spec: AgentSpec, initiation: Any) -> ResolvedAgent:
        """The agent with the session's overrides applied; raises :class:`SetupError`."""
        ...

    def record(
        self, admission: Admission, agent: ResolvedAgent, initiation: Any
    ) -> tuple[str | None, dict[str, Any]]:
        """The stored conversation's ``user_id`` and metadata."""
        ...

    def serializer(self, agent: ResolvedAgent, query: Mapping[str, str]) -> Serializer:
        """A serializer for one connection of a session with ``agent``."""
        ...

    def refusal(self, err: SetupError) -> Refusal: ...
