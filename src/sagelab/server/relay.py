"""The relay route, ``/voice-conversation``: the web app's browser protocol on the same core.

The browser sends ``MediaRecorder`` WebM/Opus chunks (one continuous stream per session,
header in the first chunk), decoded on the event loop as each chunk arrives (a fraction of a
millisecond; no thread per session, see ``sagelab.audio.webm``); the agent's audio goes back
as small self-contained WAV files, because the browser decodes each chunk on its own with
``decodeAudioData``. Malformed frames get an ``error`` event and the session goes on, as
the app expects; only audio that cannot be decoded ends it, since the stream cannot recover.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sagelab.agents.base import ResolvedAgent
from sagelab.audio import IncrementalWebmDecoder, WebmDecodeError, wav_bytes
from sagelab.config import AgentSpec, substitute_variables
from sagelab.protocol import ProtocolError
from sagelab.protocol import relay as wire
from sagelab.server import closecodes, limits
from sagelab.server.access import AccessDenied, authenticate
from sagelab.server.capacity import CapacityError, Reservation
from sagelab.server.conversation import Conversation
from sagelab.server.resume import LiveSession, ResumeRefused
from sagelab.server.transport import Transport, close_connection

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

log = logging.getLogger(__name__)


class RelayTransport(Transport):
    """Renders core events as relay events; ConvAI-only events have no relay equivalent."""

    protocol = "relay"
    answers_client_tools = False

    def __init__(self, ws: ServerConnection, server: SagelabServer) -> None:
        self.ws = ws
        self.metrics = server.metrics
        self.send_timeout_s = server.config.send_timeout_s
        self.ended_normally = False

    async def _send(self, msg: wire.ServerMessage) -> None:
        frame = wire.encode_server(msg)
        if not await self.send_frame(self.ws, frame):
            return
        self.metrics.messages.labels("out", msg.type).inc()
        self.metrics.bytes.labels("out").inc(len(frame))

    async def send_metadata(
        self, conversation_id: str, input_format: str, output_format: str
    ) -> None:
        await self._send(wire.Ready(session_id=conversation_id, resume_token=self.resume_token))

    async def send_ping(self, event_id: int, ping_ms: int | None) -> None:
        return  # the relay protocol has no application-level ping

    async def send_user_transcript(self, text: str, event_id: int, *, tentative: bool) -> None:
        if not tentative:
            await self._send(wire.Transcript(text=text))

    async def send_agent_response(self, text: str, event_id: int) -> None:
        await self._send(wire.AgentResponseText(text=text))

    async def send_audio(
        self, pcm: np.ndarray, event_id: int, alignment: dict[str, Any] | None
    ) -> None:
        await self._send(wire.AudioChunk(audio=wav_bytes(pcm)))

    async def send_interruption(self, event_id: int) -> None:
        return  # the browser flushes its own queue; the server just stops sending

    async def send_correction(self, original: str, corrected: str, event_id: int) -> None:
        return

    async def send_client_tool_call(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        await self._send(wire.ToolCall(tool_name=name, params=parameters))

    async def send_tool_request(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        await self._send(wire.ToolCall(tool_name=name, params=parameters))

    async def send_tool_response(
        self, name: str, tool_call_id: str, tool_type: str, is_error: bool, event_id: int
    ) -> None:
        return

    async def send_vad_score(self, score: float) -> None:
        return

    async def send_error(self, code: int, error_type: str, message: str) -> None:
        await self._send(wire.RelayError(message=message))

    async def close(self, code: int, reason: str) -> None:
        if code == closecodes.NORMAL:
            await self._send(wire.Complete())
        await close_connection(self, self.ws, code, reason)


async def _refuse(
    ws: ServerConnection, code: int, reason: str, *, explain: str | None = None
) -> None:
    """Close before a session exists; ``explain`` goes first as an ``error`` event, since a
    close reason is cut at 123 bytes."""
    if explain is not None:
        with contextlib.suppress(Exception):
            await ws.send(wire.encode_server(wire.RelayError(message=explain)))
    with contextlib.suppress(Exception):
        await ws.close(code, reason[:120])


def _resolve(spec: AgentSpec) -> ResolvedAgent:
    """Relay sessions carry no initiation message: the agent runs as configured."""
    return ResolvedAgent(
        id=spec.id,
        name=spec.name,
        prompt=substitute_variables(spec.prompt, {}),
        first_message=substitute_variables(spec.first_message, {}),
        language=spec.language,
        voice=spec.voice,
        tools=tuple(spec.tools),
        backend=spec.backend,
        options=spec.options,
        input_format="pcm_16000",
        output_format="pcm_16000",
    )


async def handle(ws: ServerConnection, server: SagelabServer) -> None:
    """Serve one relay WebSocket: refuse it (4000, 4001, 4002), resume, or start a session.

    Credentials are ConvAI's (``access.authenticate``), as a browser can present them: a
    ``conversation_signature`` from ``get-signed-url`` for the relay agent in the query, or an
    ``xi-api-key`` header from clients that are not browsers. Refusals are session-creation
    failures, so they close 4001 as the relay reference says; an authentication refusal sends
    its whole message (how to get in) as an ``error`` event first.
    """
    query = {
        k: v[0] for k, v in parse_qs(urlsplit(ws.request.path if ws.request else "").query).items()
    }
    detail_id = query.get("conversationDetailId", "")
    if not detail_id:
        server.metrics.errors.labels("missing_conversation_detail_id").inc()
        await _refuse(ws, closecodes.RELAY_MISSING_DETAIL_ID, "Missing conversationDetailId")
        return
    agent_id = query.get("agent_id") or server.config.relay_agent
    spec = server.config.agent(agent_id)
    if spec is None:
        await _creation_failed(ws, server, "session_creation_failed", f"unknown agent {agent_id!r}")
        return
    resume_token = query.get("resumeToken", "")
    headers = ws.request.headers if ws.request else {}
    try:
        key = authenticate(
            server, headers, query, agent_id, spec.requires_auth and not resume_token
        )
    except AccessDenied as exc:
        await _creation_failed(ws, server, "authentication_error", str(exc), explain=True)
        return
    key_id = key.key_id if key is not None else None
    if resume_token:
        try:
            live = server.sessions.claim(
                resume_token,
                ws,
                protocol="relay",
                agent_id=agent_id,
                key_id=key_id,
                detail_id=detail_id,
            )
        except ResumeRefused as exc:
            server.metrics.errors.labels("resume_refused").inc()
            await _refuse(ws, closecodes.RESUME_REFUSED, f"Resume failed: {exc}", explain=f"{exc}")
            return
        await _serve(ws, server, live, None)
        return
    try:
        reservation = server.registry.reserve_for(key)
    except CapacityError as exc:
        await _creation_failed(ws, server, exc.error_type, exc.message)
        return
    try:
        opened = await _open(ws, server, spec, detail_id, reservation, key_id, query)
    except BaseException:
        reservation.release()
        raise
    if opened is None:
        reservation.release()
        return
    await _serve(ws, server, *opened)


async def _creation_failed(
    ws: ServerConnection,
    server: SagelabServer,
    error_type: str,
    message: str,
    *,
    explain: bool = False,
) -> None:
    """Close 4001 as the reference says; ``explain`` sends the whole message first as an
    ``error`` event, for messages (how to authenticate) longer than a close reason may be."""
    server.metrics.errors.labels(error_type).inc()
    reason = f"Session creation failed: {message}"
    await _refuse(ws, closecodes.RELAY_SESSION_FAILED, reason, explain=reason if explain else None)


async def _open(
    ws: ServerConnection,
    server: SagelabServer,
    spec: AgentSpec,
    detail_id: str,
    reservation: Reservation,
    key_id: str | None,
    query: dict[str, str],
) -> tuple[LiveSession, Any] | None:
    """Start the conversation; None when it could not be (the client was told)."""
    try:
        agent = _resolve(spec)
    except KeyError as exc:
        await _refuse(
            ws,
            closecodes.RELAY_SESSION_FAILED,
            f"Session creation failed: the agent needs dynamic variable {exc.args[0]!r}",
        )
        return None
    conversation_id = f"relay_{uuid.uuid4().hex[:20]}"
    transport = RelayTransport(ws, server)
    try:
        conv, backend = server.open_conversation(conversation_id, agent, transport)
    except Exception as exc:  # a model that fails to load, bad backend options
        log.warning("agent %s could not start: %s", agent.id, exc)
        await _refuse(ws, closecodes.RELAY_SESSION_FAILED, f"Session creation failed: {exc}")
        return None
    if server.store is not None:
        server.store.start_conversation(
            conversation_id, agent.id, "relay", metadata={"conversationDetailId": detail_id}
        )
    server.metrics.sessions.labels("relay", agent.id).inc()
    live = server.sessions.open(
        conv,
        reservation,
        protocol="relay",
        key_id=key_id,
        resumable=query.get("resume", "").lower() in ("1", "true", "yes"),
        connection=ws,
        detail_id=detail_id,
    )
    server.sessions.issue_token(live, transport)
    return live, backend


async def _serve(
    ws: ServerConnection, server: SagelabServer, live: LiveSession, backend: Any | None
) -> None:
    """One connection of a relay conversation: start it (``backend``) or resume it (None).

    The browser's WebM stream starts over on every connection (its header comes first), so the
    decoder belongs to the connection, not to the conversation.
    """
    conv = live.conv
    decoder = IncrementalWebmDecoder()
    try:
        if backend is not None:
            await conv.start(backend)
        else:
            await server.sessions.resume(live, RelayTransport(ws, server))
        await _receive_loop(ws, server, conv, decoder)
    except ConnectionClosed:
        pass
    except Exception as exc:
        log.exception("relay session %s crashed", conv.conversation_id)
        await conv.close(closecodes.INTERNAL, f"internal error: {exc}", error_type="internal_error")
    finally:
        decoder.abort()
        await server.sessions.connection_ended(live, ws)


async def _receive_loop(
    ws: ServerConnection,
    server: SagelabServer,
    conv: Conversation,
    decoder: IncrementalWebmDecoder,
) -> None:
    backend = conv.backend
    assert backend is not None
    limit = server.config.max_frame_bytes
    cfg = server.config
    limiter = limits.for_session(
        cfg.max_audio_bytes_per_s,
        cfg.audio_burst_s,
        cfg.max_messages_per_s,
        None,
        cfg.max_bytes_per_s,
    )
    async for frame in ws:
        server.metrics.bytes.labels("in").inc(len(frame))
        if len(frame) > limit:
            await conv.close(
                closecodes.TOO_BIG,
                f"message of {len(frame)} bytes exceeds the limit of {limit} bytes; "
                "send MediaRecorder timeslices of 100-250 ms",
                error_type="message_too_large",
            )
            return
        exceeded = limiter.message(nbytes=len(frame))
        if exceeded is not None:
            await conv.close(
                closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
            )
            return
        try:
            msg = wire.parse_client(frame)
        except ProtocolError as exc:
            server.metrics.errors.labels(exc.error_type).inc()
            await conv.transport.send_error(closecodes.INVALID_INPUT, exc.error_type, str(exc))
            continue
        server.metrics.messages.labels("in", msg.type).inc()
        match msg:
            case wire.RelayAudio():
                exceeded = limiter.audio(len(msg.data))
                if exceeded is not None:
                    await conv.close(
                        closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
                    )
                    return
                conv.touch()
                try:
                    pcm = decoder.decode(msg.data)  # ~0.15 ms per 100 ms timeslice
                except WebmDecodeError as exc:
                    await conv.close(
                        closecodes.INVALID_INPUT,
                        f"audio is not a decodable audio/webm;codecs=opus stream: {exc}",
                        error_type="value_error",
                    )
                    return
                exceeded = limiter.decoded_audio(pcm.size)
                if exceeded is not None:
                    await conv.close(
                        closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
                    )
                    return
                if pcm.size:
                    await conv.run_backend(backend.on_audio(pcm))
            case wire.RelayText():
                conv.touch()
                conv.typed(msg.text)
                await conv.run_backend(backend.on_user_message(msg.text))
            case wire.RelayInterrupt():
                conv.touch()
                await conv.run_backend(backend.on_interrupt())
            case wire.RelayEnd():
                await conv.close(closecodes.NORMAL, "client ended the conversation")
                return
        if conv.closed:
            return
