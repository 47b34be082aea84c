"""What the server says to a client, independent of the wire protocol.

The core decides these; each protocol's serializer renders them (``sagelab.server.convai`` for
ConvAI frames, ``sagelab.server.relay`` for the web app's relay events), and an event with no
equivalent in a protocol is simply not sent there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ping:
    event_id: int
    ping_ms: int | None


@dataclass(frozen=True)
class UserTranscript:
    text: str
    event_id: int
    tentative: bool = False


@dataclass(frozen=True)
class AgentResponse:
    text: str
    event_id: int


@dataclass(frozen=True)
class AgentAudio:
    """One chunk of a turn's audio, already in the client's format (``payload``)."""

    payload: Any = field(repr=False)
    event_id: int
    first: bool = False
    turn_age_s: float | None = None  # first chunk only: seconds since the turn began
    # ``chars``, ``char_start_times_ms``, ``char_durations_ms`` of the characters spoken in
    # this chunk, when the TTS gave an alignment (the protocol's optional ``alignment``).
    alignment: dict[str, list[Any]] | None = None


@dataclass(frozen=True)
class Interruption:
    event_id: int


@dataclass(frozen=True)
class Correction:
    original: str
    corrected: str
    event_id: int


@dataclass(frozen=True)
class ClientToolCall:
    name: str
    call_id: str
    parameters: dict[str, Any]
    event_id: int


OutEvent = (
    Ping | UserTranscript | AgentResponse | AgentAudio | Interruption | Correction | ClientToolCall
)
