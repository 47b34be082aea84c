"""The relay protocol as the server speaks it (``/voice-conversation``, the web app's browser
protocol): how its handshake becomes a session (:class:`RelayRoute`) and how its events map to
the conversation's inputs and events (:class:`RelaySerializer`). The connection handler
(``connection.py``) does the rest.

The browser sends ``MediaRecorder`` WebM/Opus chunks (one continuous stream per connection,
header in the first chunk), decoded on the event loop as each chunk arrives (a fraction of a
millisecond; no thread per session, see ``sagelab.audio.webm``); the agent's audio goes back
as small self-contained WAV files, because the browser decodes each chunk on its own with
``decodeAudioData``. Malformed frames get an ``error`` event and the session goes on, as
the app expects; only audio that cannot be decoded ends it, since the stream cannot recover.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import ServerConnection

from sagelab.agents.base import ResolvedAgent
from sagelab.audio import IncrementalWebmDecoder, WebmDecodeError, wav_bytes
from sagelab.config import AgentSpec, substitute_variables
from sagelab.conversation import events as ev
from sagelab.protocol import ProtocolError, closecodes
from sagelab.protocol import relay as wire
from sagelab.server import connection
from sagelab.server import serializer as sz
from sagelab.server.serializer import SetupError

if TYPE_CHECKING:
    from sagelab.config import ServerConfig
    from sagelab.server.app import SagelabServer
    from sagelab.server.store import ProtocolName


def _frame(msg: wire.ServerMessage) -> sz.Frame:
    return sz.Frame(msg.type, wire.encode_server(msg))


class RelaySerializer:
    """Relay events of one connection; ConvAI-only events have no relay equivalent.

    The browser's WebM stream starts over on every connection (its header comes first), so
    the decoder is the connection's, not the conversation's.
    """

    answers_client_tools = False
    input_format: str | None = None  # WebM/Opus: bounded by what it decodes to

    def __init__(self) -> None:
        self._decoder = IncrementalWebmDecoder()

    # -- client -> server ---------------------------------------------------------------

    def decode(self, frame: str | bytes) -> sz.Decoded:
        try:
            msg = wire.parse_client(frame)
        except ProtocolError as exc:
            return sz.Decoded(None, sz.Invalid(exc.error_type, str(exc), fatal=False))
        match msg:
            case wire.RelayAudio():
                item: sz.ClientInput = sz.UserAudio(msg.data)
            case wire.RelayText():
                item = sz.UserText(msg.text)
            case wire.RelayInterrupt():
                item = sz.InterruptRequest()
            case wire.RelayEnd():
                item = sz.EndRequest()
        return sz.Decoded(msg.type, item)

    def decode_audio(self, data: bytes) -> np.ndarray:
        try:
            return self._decoder.decode(data)  # ~0.15 ms per 100 ms timeslice
        except WebmDecodeError as exc:
            raise sz.BadAudio(
                f"audio is not a decodable audio/webm;codecs=opus stream: {exc}"
            ) from None

    # -- server -> client ---------------------------------------------------------------

    def encode_audio(self, pcm: np.ndarray, chunk_samples: int) -> list[Any]:
        return [pcm[i : i + chunk_samples] for i in range(0, len(pcm), chunk_samples)]

    def encode(self, event: sz.ServerEvent) -> sz.Frame | None:
        msg = self._message(event)
        return None if msg is None else _frame(msg)

    @staticmethod
    def _message(event: sz.ServerEvent) -> wire.ServerMessage | None:
        match event:
            case sz.Metadata():
                return wire.Ready(session_id=event.conversation_id, resume_token=event.resume_token)
            case ev.UserTranscript(tentative=False):
                return wire.Transcript(text=event.text)
            case ev.AgentResponse():
                return wire.AgentResponseText(text=event.text)
            case ev.AgentAudio():
                return wire.AudioChunk(audio=wav_bytes(event.payload))
            case ev.ClientToolCall() | sz.ToolRequest():
                return wire.ToolCall(tool_name=event.name, params=event.parameters)
            case sz.ErrorReport():
                return wire.RelayError(message=event.message)
            case sz.Closing(code=closecodes.NORMAL):
                return wire.Complete()
            case _:
                # No application-level ping; the browser flushes its own queue on barge-in
                # and the server just stops sending, so interruption and correction have no
                # event; nor have tool responses, VAD scores and sagelab's extensions.
                return None

    def finish(self) -> None:
        self._decoder.abort()


#: The close code and reason prefix of each reason a connection gets no session: 4001 for
#: every session-creation failure, as the relay reference says.
_REFUSALS: dict[str, tuple[int, str]] = {
    "bad_request": (closecodes.RELAY_SESSION_FAILED, "Session creation failed: "),
    "too_large": (closecodes.RELAY_SESSION_FAILED, "Session creation failed: "),
    "unknown_agent": (closecodes.RELAY_SESSION_FAILED, "Session creation failed: "),
    "unauthorized": (closecodes.RELAY_SESSION_FAILED, "Session creation failed: "),
    "busy": (closecodes.RELAY_SESSION_FAILED, "Session creation failed: "),
    "agent_failed": (closecodes.RELAY_SESSION_FAILED, "Session creation failed: "),
    "resume_refused": (closecodes.RESUME_REFUSED, "Resume failed: "),
}


class RelayRoute:
    """The relay handshake: ``?conversationDetailId=`` (required), credentials, nothing else."""

    protocol: ProtocolName = "relay"
    id_prefix = "relay"
    frame_hint = "send MediaRecorder timeslices of 100-250 ms"
    initiation_type: str | None = None

    def admit(self, query: Mapping[str, str], config: ServerConfig) -> sz.Admission:
        detail_id = query.get("conversationDetailId", "")
        if not detail_id:
            raise SetupError(
                "bad_request", "missing_conversation_detail_id", "Missing conversationDetailId"
            )
        agent_id = query.get("agent_id") or config.relay_agent
        spec = config.agent(agent_id)
        if spec is None:
            raise SetupError(
                "unknown_agent", "session_creation_failed", f"unknown agent {agent_id!r}"
            )
        return sz.Admission(
            agent_id=agent_id,
            spec=spec,
            resume_token=query.get("resumeToken", ""),
            resumable=query.get("resume", "").lower() in ("1", "true", "yes"),
            detail_id=detail_id,
        )

    def initiation(self, frame: str | bytes) -> None:
        return None  # the relay has no initiation message

    def resolve(self, spec: AgentSpec, initiation: None) -> ResolvedAgent:
        """Relay sessions carry no initiation message: the agent runs as configured."""
        try:
            prompt = substitute_variables(spec.prompt, {})
            first_message = substitute_variables(spec.first_message, {})
        except KeyError as exc:
            raise SetupError(
                "bad_request",
                "missing_dynamic_variable",
                f"the agent needs dynamic variable {exc.args[0]!r}",
            ) from None
        return ResolvedAgent(
            id=spec.id,
            name=spec.name,
            prompt=prompt,
            first_message=first_message,
            language=spec.language,
            voice=spec.voice,
            tools=tuple(spec.tools),
            backend=spec.backend,
            options=spec.options,
            input_format="pcm_16000",
            output_format="pcm_16000",
        )

    def record(
        self, admission: sz.Admission, agent: ResolvedAgent, initiation: None
    ) -> tuple[str | None, dict[str, Any]]:
        return None, {"conversationDetailId": admission.detail_id}

    def serializer(self, agent: ResolvedAgent, query: Mapping[str, str]) -> RelaySerializer:
        return RelaySerializer()

    def refusal(self, err: SetupError) -> sz.Refusal:
        """Close with the reference's code. A message longer than a close reason may be (how
        to authenticate, why a resume failed) goes first, whole, as an ``error`` event."""
        if err.error_type == "missing_conversation_detail_id":
            return sz.Refusal([], closecodes.RELAY_MISSING_DETAIL_ID, err.message)
        code, prefix = _REFUSALS[err.failure]
        reason = prefix + err.message
        if err.failure == "unauthorized":
            return sz.Refusal([_frame(wire.RelayError(message=reason))], code, reason)
        if err.failure == "resume_refused":
            return sz.Refusal([_frame(wire.RelayError(message=err.message))], code, reason)
        return sz.Refusal([], code, reason)


ROUTE = RelayRoute()


async def handle(ws: ServerConnection, server: SagelabServer) -> None:
    """Serve one relay WebSocket: refuse it (4000, 4001, 4002), resume, or start a session.

    Credentials are ConvAI's (``access.authenticate``), as a browser can present them: a
    ``conversation_signature`` from ``get-signed-url`` for the relay agent in the query, or an
    ``xi-api-key`` header from clients that are not browsers.
    """
    await connection.handle(ws, server, ROUTE)
