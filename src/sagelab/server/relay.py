"""The relay route, ``/voice-conversation``: the web app's browser protocol on the same core.

The browser sends ``MediaRecorder`` WebM/Opus chunks (one continuous stream per session,
header in the first chunk), decoded incrementally on a thread per session; the agent's audio
goes back as small self-contained WAV files, because the browser decodes each chunk on its own
with ``decodeAudioData``. Malformed frames get an ``error`` event and the session goes on, as
the app expects; only audio that cannot be decoded ends it, since the stream cannot recover.
"""

from __future__ import annotations

import asyncio
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
from sagelab.server.conversation import Conversation
from sagelab.server.registry import CapacityError
from sagelab.server.transport import Transport, close_connection, describe_disconnect

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
        await self._send(wire.Ready(session_id=conversation_id))

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


async def _refuse(ws: ServerConnection, code: int, reason: str) -> None:
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
    failure: str | None = None
    if spec is None:
        failure = f"unknown agent {agent_id!r}"
    elif spec.requires_auth:
        failure = f"agent {agent_id!r} requires authentication, which the relay route lacks"
    reservation = None
    if failure is None:
        try:
            reservation = server.registry.reserve()
        except CapacityError as exc:
            failure = exc.message
    if failure is not None or spec is None or reservation is None:
        server.metrics.errors.labels("session_creation_failed").inc()
        await _refuse(ws, closecodes.RELAY_SESSION_FAILED, f"Session creation failed: {failure}")
        return
    try:
        await _serve(ws, server, spec, detail_id)
    finally:
        reservation.release()


async def _serve(
    ws: ServerConnection, server: SagelabServer, spec: AgentSpec, detail_id: str
) -> None:
    try:
        agent = _resolve(spec)
    except KeyError as exc:
        await _refuse(
            ws,
            closecodes.RELAY_SESSION_FAILED,
            f"Session creation failed: the agent needs dynamic variable {exc.args[0]!r}",
        )
        return
    conversation_id = f"relay_{uuid.uuid4().hex[:20]}"
    transport = RelayTransport(ws, server)
    try:
        conv, backend = server.open_conversation(conversation_id, agent, transport)
    except Exception as exc:  # a model that fails to load, bad backend options
        log.warning("agent %s could not start: %s", agent.id, exc)
        await _refuse(ws, closecodes.RELAY_SESSION_FAILED, f"Session creation failed: {exc}")
        return
    if server.store is not None:
        server.store.start_conversation(
            conversation_id, agent.id, "relay", metadata={"conversationDetailId": detail_id}
        )
    loop = asyncio.get_running_loop()
    decoded: asyncio.Queue[np.ndarray] = asyncio.Queue()
    decoder = IncrementalWebmDecoder(
        on_audio=lambda pcm: loop.call_soon_threadsafe(decoded.put_nowait, pcm)
    )
    server.registry.add(conv)
    server.metrics.sessions.labels("relay", agent.id).inc()
    server.metrics.active_sessions.labels("relay").inc()
    feeder = asyncio.create_task(_feed_backend(conv, decoded))
    try:
        await conv.start(backend)
        await _receive_loop(ws, server, conv, decoder)
    except ConnectionClosed:
        pass
    except Exception as exc:
        log.exception("relay session %s crashed", conversation_id)
        await conv.close(closecodes.INTERNAL, f"internal error: {exc}", error_type="internal_error")
    finally:
        feeder.cancel()
        decoder.abort()
        if not conv.closed:
            await conv.close(*describe_disconnect(ws))
        server.registry.remove(conv)
        server.metrics.active_sessions.labels("relay").dec()


async def _feed_backend(conv: Conversation, decoded: asyncio.Queue[np.ndarray]) -> None:
    backend = conv.backend
    while True:
        pcm = await decoded.get()
        if backend is not None:
            await conv.run_backend(backend.on_audio(pcm))


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
        cfg.max_audio_bytes_per_s, cfg.audio_burst_s, cfg.max_messages_per_s, None
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
        exceeded = limiter.message()
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
                    decoder.feed(msg.data)
                except WebmDecodeError as exc:
                    await conv.close(
                        closecodes.INVALID_INPUT,
                        f"audio is not a decodable audio/webm;codecs=opus stream: {exc}",
                        error_type="value_error",
                    )
                    return
            case wire.RelayText():
                conv.touch()
                await conv.run_backend(backend.on_user_message(msg.text))
            case wire.RelayInterrupt():
                conv.touch()
                await conv.run_backend(backend.on_interrupt())
            case wire.RelayEnd():
                await conv.close(closecodes.NORMAL, "client ended the conversation")
                return
        if conv.closed:
            return
