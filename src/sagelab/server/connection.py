"""The one connection handler: every WebSocket session, whatever its protocol, from handshake
to close.

It owns what both protocols share: the order of the handshake (which agent, credentials,
resume or capacity, the first message, starting the agent), the receive loop with its frame,
rate and audio limits, what a client's input does to the conversation, error reporting, crash
containment and the end of the connection. What differs between ConvAI and the relay is asked
of the protocol's :class:`~sagelab.server.serializer.Route` and
:class:`~sagelab.server.serializer.Serializer` (``convai.py``, ``relay.py``), which build every
frame from the codec models in ``sagelab.protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sagelab.agents import BackendError
from sagelab.conversation import events as ev
from sagelab.protocol import closecodes
from sagelab.server import limits
from sagelab.server import serializer as sz
from sagelab.server.access import AccessDenied, authenticate
from sagelab.server.capacity import CapacityError, Reservation
from sagelab.server.conversation import Conversation
from sagelab.server.resume import LiveSession, ResumeRefused
from sagelab.server.transport import Transport, close_connection

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

log = logging.getLogger(__name__)
#: How long a resumed ConvAI connection may take to send its (ignored) first message.
INITIATION_TIMEOUT_S = 10.0


class WebSocketTransport(Transport):
    """Sends what the conversation says through the protocol's serializer; counts it."""

    def __init__(
        self, ws: ServerConnection, server: SagelabServer, route: sz.Route, codec: sz.Serializer
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.protocol = route.protocol
        self.answers_client_tools = codec.answers_client_tools
        self.metrics = server.metrics
        self.send_timeout_s = server.config.send_timeout_s

    async def emit(self, event: sz.ServerEvent) -> None:
        frame = self.codec.encode(event)
        if frame is None or not await self.send_frame(self.ws, frame.data):
            return
        self.metrics.messages.labels("out", frame.type).inc()
        self.metrics.bytes.labels("out").inc(len(frame.data))

    async def send_metadata(
        self, conversation_id: str, input_format: str, output_format: str
    ) -> None:
        token = self.resume_token
        await self.emit(
            sz.Metadata(
                conversation_id,
                input_format,
                output_format,
                resume_token=token,
                resume_grace_s=self.resume_grace_s if token else None,
            )
        )

    async def send_ping(self, event_id: int, ping_ms: int | None) -> None:
        await self.emit(ev.Ping(event_id, ping_ms))

    async def send_user_transcript(self, text: str, event_id: int, *, tentative: bool) -> None:
        await self.emit(ev.UserTranscript(text, event_id, tentative))

    async def send_agent_response(self, text: str, event_id: int) -> None:
        await self.emit(ev.AgentResponse(text, event_id))

    def encode_audio(self, pcm: np.ndarray, chunk_samples: int) -> list[Any]:
        return self.codec.encode_audio(pcm, chunk_samples)

    async def send_audio(
        self, payload: Any, event_id: int, alignment: dict[str, Any] | None
    ) -> None:
        await self.emit(ev.AgentAudio(payload, event_id, alignment=alignment))

    async def send_interruption(self, event_id: int) -> None:
        await self.emit(ev.Interruption(event_id))

    async def send_correction(self, original: str, corrected: str, event_id: int) -> None:
        await self.emit(ev.Correction(original, corrected, event_id))

    async def send_client_tool_call(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        await self.emit(ev.ClientToolCall(name, tool_call_id, parameters, event_id))

    async def send_tool_request(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        await self.emit(sz.ToolRequest(name, tool_call_id, parameters, event_id))

    async def send_tool_response(
        self, name: str, tool_call_id: str, tool_type: str, is_error: bool, event_id: int
    ) -> None:
        await self.emit(sz.ToolResponse(name, tool_call_id, tool_type, is_error, event_id))

    async def send_tool_detail(
        self,
        name: str,
        tool_call_id: str,
        parameters: dict[str, Any],
        result: Any,
        is_error: bool,
        event_id: int,
    ) -> None:
        await self.emit(sz.ToolDetail(name, tool_call_id, parameters, result, is_error, event_id))

    async def send_vad_score(self, score: float) -> None:
        await self.emit(sz.VadScore(score))

    async def send_stage(self, event_id: int, stage: str, ms: float) -> None:
        await self.emit(sz.Stage(event_id, stage, ms))

    async def send_error(self, code: int, error_type: str, message: str) -> None:
        await self.emit(sz.ErrorReport(code, error_type, message))

    async def close(self, code: int, reason: str) -> None:
        await self.emit(sz.Closing(code, reason))
        await close_connection(self, self.ws, code, reason)


def query_of(ws: ServerConnection) -> dict[str, str]:
    """The handshake's query parameters, first value of each (blank values kept)."""
    path = ws.request.path if ws.request else ""
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}


async def refuse(
    ws: ServerConnection, server: SagelabServer, route: sz.Route, err: sz.SetupError
) -> None:
    """Refuse a connection before its session exists, as the protocol says to."""
    server.metrics.errors.labels(err.error_type).inc()
    refusal = route.refusal(err)
    for frame in refusal.frames:
        with contextlib.suppress(Exception):
            await ws.send(frame.data)
    with contextlib.suppress(Exception):
        await ws.close(refusal.code, refusal.reason[:120])


async def handle(ws: ServerConnection, server: SagelabServer, route: sz.Route) -> None:
    """Serve one WebSocket of ``route``'s protocol: refuse it, resume, or start a session."""
    query = query_of(ws)
    try:
        admission = route.admit(query, server.config)
        # A resume token is the credential of the conversation it resumes (resume.py); any
        # key or signature presented with it must still be valid.
        try:
            key = authenticate(
                server,
                ws.request.headers if ws.request else {},
                query,
                admission.agent_id,
                admission.spec.requires_auth and not admission.resume_token,
            )
        except AccessDenied as exc:
            raise sz.SetupError("unauthorized", "authentication_error", str(exc)) from None
        key_id = key.key_id if key is not None else None
        if admission.resume_token:
            try:
                live = server.sessions.claim(
                    admission.resume_token,
                    ws,
                    protocol=route.protocol,
                    agent_id=admission.agent_id,
                    key_id=key_id,
                    detail_id=admission.detail_id,
                )
            except ResumeRefused as exc:
                raise sz.SetupError("resume_refused", "resume_refused", str(exc)) from None
        else:
            try:
                reservation = server.registry.reserve_for(key)
            except CapacityError as exc:
                raise sz.SetupError("busy", exc.error_type, exc.message) from None
    except sz.SetupError as err:
        await refuse(ws, server, route, err)
        return
    if admission.resume_token:
        await _resume(ws, server, route, live, query)
        return
    try:
        opened = await _open(ws, server, route, admission, reservation, key_id, query)
    except BaseException:
        reservation.release()
        raise
    if opened is None:
        reservation.release()
        return
    live, codec, backend = opened
    await _run(ws, server, route, live, codec, lambda: live.conv.start(backend))


async def _initiation(
    ws: ServerConnection, server: SagelabServer, route: sz.Route, timeout_s: float
) -> Any:
    """The client's first message, when the protocol has one (None otherwise)."""
    if route.initiation_type is None:
        return None
    try:
        frame = await asyncio.wait_for(ws.recv(), timeout=timeout_s)
    except TimeoutError:
        raise sz.SetupError(
            "bad_request",
            "missing_fields",
            f"no {route.initiation_type} within {timeout_s:g} s",
        ) from None
    server.metrics.bytes.labels("in").inc(len(frame))
    if (too_large := limits.initiation_too_large(len(frame), server.config)) is not None:
        raise sz.SetupError("too_large", too_large.error_type, too_large.message)
    initiation = route.initiation(frame)
    server.metrics.messages.labels("in", route.initiation_type).inc()
    return initiation


async def _open(
    ws: ServerConnection,
    server: SagelabServer,
    route: sz.Route,
    admission: sz.Admission,
    reservation: Reservation,
    key_id: str | None,
    query: Mapping[str, str],
) -> tuple[LiveSession, sz.Serializer, Any] | None:
    """Read the first message, start the conversation; None when the client was refused."""
    try:
        timeout_s = limits.initiation_timeout_s(server.config, anonymous=key_id is None)
        initiation = await _initiation(ws, server, route, timeout_s)
        agent = route.resolve(admission.spec, initiation)
    except sz.SetupError as err:
        await refuse(ws, server, route, err)
        return None
    except ConnectionClosed:
        return None
    conversation_id = f"{route.id_prefix}_{uuid.uuid4().hex[:20]}"
    codec = route.serializer(agent, query)
    transport = WebSocketTransport(ws, server, route, codec)
    try:
        conv, backend = server.open_conversation(conversation_id, agent, transport)
    except Exception as exc:  # a model that fails to load, bad backend options
        log.warning("agent %s could not start: %s", agent.id, exc)
        error_type = "cascade_brain_error" if isinstance(exc, BackendError) else "agent_start_error"
        codec.finish()
        await refuse(
            ws,
            server,
            route,
            sz.SetupError("agent_failed", error_type, f"agent {agent.id!r} could not start: {exc}"),
        )
        return None
    if server.store is not None:
        user_id, metadata = route.record(admission, agent, initiation)
        server.store.start_conversation(
            conversation_id, agent.id, route.protocol, user_id=user_id, metadata=metadata
        )
    server.metrics.sessions.labels(route.protocol, agent.id).inc()
    live = server.sessions.open(
        conv,
        reservation,
        protocol=route.protocol,
        key_id=key_id,
        resumable=admission.resumable,
        connection=ws,
        detail_id=admission.detail_id,
    )
    server.sessions.issue_token(live, transport)
    return live, codec, backend


async def _resume(
    ws: ServerConnection,
    server: SagelabServer,
    route: sz.Route,
    live: LiveSession,
    query: Mapping[str, str],
) -> None:
    """Carry a held conversation on this connection (resume.py)."""
    codec = route.serializer(live.conv.agent, query)
    transport = WebSocketTransport(ws, server, route, codec)

    async def begin() -> None:
        # The protocol's first message still comes first; the conversation keeps the settings
        # it started with, so its overrides are not applied again.
        try:
            await _initiation(ws, server, route, INITIATION_TIMEOUT_S)
        except sz.SetupError as err:
            await refuse(ws, server, route, err)
            await live.conv.close(route.refusal(err).code, err.message)
            return
        await server.sessions.resume(live, transport)

    await _run(ws, server, route, live, codec, begin)


async def _run(
    ws: ServerConnection,
    server: SagelabServer,
    route: sz.Route,
    live: LiveSession,
    codec: sz.Serializer,
    begin: Callable[[], Awaitable[None]],
) -> None:
    """One connection of a conversation: ``begin`` (start or resume), then its frames.

    The serializer belongs to the connection, not to the conversation: a relay browser's WebM
    stream starts over (header first) on every connection.
    """
    conv = live.conv
    try:
        await begin()
        if not conv.closed:
            await _receive_loop(ws, server, route, conv, codec)
    except ConnectionClosed:
        pass
    except Exception as exc:  # a bug must end this session only, never the server
        log.exception("%s session %s crashed", route.protocol, conv.conversation_id)
        await conv.close(
            closecodes.INTERNAL,
            f"internal error ({type(exc).__name__}); see the server log",
            error_type="unknown_websocket_crash",
        )
    finally:
        codec.finish()
        await server.sessions.connection_ended(live, ws)


async def _receive_loop(
    ws: ServerConnection,
    server: SagelabServer,
    route: sz.Route,
    conv: Conversation,
    codec: sz.Serializer,
) -> None:
    """Every frame: timestamped, size- and rate-checked, decoded, then applied."""
    limit = server.config.max_frame_bytes
    metrics = server.metrics
    cfg = server.config
    loop = asyncio.get_running_loop()
    limiter = limits.for_session(
        cfg.max_audio_bytes_per_s,
        cfg.audio_burst_s,
        cfg.max_messages_per_s,
        codec.input_format,
        cfg.max_bytes_per_s,
        now=loop.time(),
    )
    async for frame in ws:
        received_at = loop.time()  # the conversation's clock
        size = len(frame)
        metrics.bytes.labels("in").inc(size)
        if size > limit:
            await conv.close(
                closecodes.TOO_BIG,
                f"message of {size} bytes exceeds the limit of {limit} bytes; {route.frame_hint}",
                error_type="message_too_large",
            )
            return
        exceeded = limiter.message(received_at, size)
        if exceeded is not None:
            await conv.close(
                closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
            )
            return
        decoded = codec.decode(frame)
        if decoded.type is not None:
            metrics.messages.labels("in", decoded.type).inc()
        await _apply(server, conv, codec, limiter, decoded.input, received_at)
        if conv.closed:
            return


async def _apply(
    server: SagelabServer,
    conv: Conversation,
    codec: sz.Serializer,
    limiter: limits.InputLimiter,
    item: sz.ClientInput,
    now: float,
) -> None:
    """What one client input does to the conversation (the same for every protocol)."""
    backend = conv.backend
    assert backend is not None
    match item:
        case sz.UserAudio(data=data):
            await _audio(conv, codec, limiter, data, now)
        case sz.UserText(text=text):
            conv.touch()
            if text:
                conv.typed(text)
                await conv.run_backend(backend.on_user_message(text))
        case sz.PongIn(event_id=event_id):
            conv.on_pong(event_id, now)
        case sz.Heard(event_id=event_id, played_ms=played_ms):
            await conv.heard(event_id, played_ms)
        case sz.ContextNote(text=text, context_id=context_id):
            await conv.run_backend(backend.on_contextual_update(text, context_id))
        case sz.Activity():
            conv.touch()
            await conv.run_backend(backend.on_user_activity())
        case sz.InterruptRequest():
            conv.touch()
            await conv.run_backend(backend.on_interrupt())
        case sz.ToolResultIn(call_id=call_id, value=value, is_error=is_error):
            if not conv.on_tool_result(call_id, value, is_error):
                await conv.transport.send_error(
                    closecodes.INVALID_INPUT,
                    "value_error",
                    f"client_tool_result for unknown or expired tool_call_id {call_id!r} ignored",
                )
        case sz.FeedbackIn(event_id=event_id, score=score):
            if server.store is not None:
                server.store.add_feedback(conv.conversation_id, event_id=event_id, score=score)
        case sz.EndRequest():
            await conv.close(closecodes.NORMAL, "client ended the conversation")
        case sz.Invalid(error_type=error_type, message=message, fatal=True):
            await conv.close(closecodes.INVALID_INPUT, message, error_type=error_type)
        case sz.Invalid(error_type=error_type, message=message):
            server.metrics.errors.labels(error_type).inc()
            await conv.transport.send_error(closecodes.INVALID_INPUT, error_type, message)
        case sz.Ignored():
            pass


async def _audio(
    conv: Conversation,
    codec: sz.Serializer,
    limiter: limits.InputLimiter,
    data: bytes,
    now: float,
) -> None:
    """Charge the audio to the session's budget, decode it, hand it to the agent."""
    exceeded = limiter.audio(len(data), now)
    if exceeded is not None:
        await conv.close(closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type)
        return
    try:
        pcm = codec.decode_audio(data)
    except sz.BadAudio as exc:
        await conv.close(closecodes.INVALID_INPUT, str(exc), error_type="value_error")
        return
    compressed = codec.input_format is None
    if compressed:
        # A few bytes of Opus can stand for 120 ms: bound what the stream decodes to as well.
        exceeded = limiter.decoded_audio(pcm.size, now)
        if exceeded is not None:
            await conv.close(
                closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
            )
            return
    conv.touch()
    assert conv.backend is not None
    # A compressed chunk may hold no whole frame yet (the WebM header): no audio to pass on.
    if pcm.size or not compressed:
        await conv.run_backend(conv.backend.on_audio(pcm))
