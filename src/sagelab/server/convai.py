"""The ConvAI route, ``/v1/convai/conversation``: handshake checks, initiation, receive loop.

Every client frame is timestamped on arrival, size-checked, then parsed by the sans-I/O codec;
what the codec rejects becomes an ``error`` event and close 1008, as the real service does
("Invalid message received"), except unknown message types, which are reported and skipped so
newer clients keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sagelab.agents import BackendError
from sagelab.agents.base import ResolvedAgent
from sagelab.audio import PCM_16000, AudioFormat, decode_to_pcm16, encode_pcm16
from sagelab.config import AgentSpec, substitute_variables
from sagelab.protocol import ProtocolError
from sagelab.protocol import convai as wire
from sagelab.server import closecodes, limits
from sagelab.server.access import AccessDenied, authenticate
from sagelab.server.capacity import CapacityError, Reservation
from sagelab.server.conversation import Conversation
from sagelab.server.resume import LiveSession, ResumeRefused
from sagelab.server.transport import Transport, close_connection

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

log = logging.getLogger(__name__)
INITIATION_TIMEOUT_S = 10.0
STAGE_EVENT = "internal_sagelab_stage"


class SessionSetupError(Exception):
    """The session cannot start; carries the close code and the reference's error type."""

    def __init__(self, code: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.code, self.error_type, self.message = code, error_type, message


class ConvAITransport(Transport):
    protocol = "convai"

    def __init__(self, ws: ServerConnection, server: SagelabServer, output_format: str) -> None:
        self.ws = ws
        self.metrics = server.metrics
        self.send_timeout_s = server.config.send_timeout_s
        self.output_format = AudioFormat.parse(output_format)
        # sagelab clients may ask for per-stage timings with ?sagelab_stages=1; other clients
        # never see this event type (and would ignore it anyway).
        self.stages_enabled = False

    async def _send(self, kind: str, frame: str) -> None:
        if not await self.send_frame(self.ws, frame):
            return
        self.metrics.messages.labels("out", kind).inc()
        self.metrics.bytes.labels("out").inc(len(frame))

    async def send_metadata(
        self, conversation_id: str, input_format: str, output_format: str
    ) -> None:
        # sagelab's resume extension (resume.py): a client that asked with ?sagelab_resume=1
        # gets its token in the metadata's extra fields, which the official SDKs ignore, and
        # presents it on its reconnect as ?resume_token=.
        msg = wire.ConversationInitiationMetadata(
            conversation_id=conversation_id,
            agent_output_audio_format=output_format,  # type: ignore[arg-type]  # checked at load
            user_input_audio_format=input_format,  # type: ignore[arg-type]
            sagelab_resume_token=self.resume_token,
            sagelab_resume_grace_s=self.resume_grace_s if self.resume_token else None,
        )
        await self._send(msg.type, wire.encode_server(msg))

    async def send_ping(self, event_id: int, ping_ms: int | None) -> None:
        await self._send("ping", wire.encode_server(wire.Ping(event_id=event_id, ping_ms=ping_ms)))

    async def send_user_transcript(self, text: str, event_id: int, *, tentative: bool) -> None:
        cls = wire.TentativeUserTranscript if tentative else wire.UserTranscript
        msg = cls(user_transcript=text, event_id=event_id)
        await self._send(msg.type, wire.encode_server(msg))

    async def send_agent_response(self, text: str, event_id: int) -> None:
        msg = wire.AgentResponse(agent_response=text, event_id=event_id)
        await self._send(msg.type, wire.encode_server(msg))

    def encode_audio(self, pcm: np.ndarray, chunk_samples: int) -> list[bytes]:
        data = encode_pcm16(pcm, self.output_format)  # the whole block, resampled at once
        if self.output_format == PCM_16000:
            step = chunk_samples * 2
            return [data[i : i + step] for i in range(0, len(data), step)]
        width = self.output_format.bytes_per_sample
        total = len(data) // width
        ratio = total / max(1, len(pcm))
        cuts = [round(i * ratio) for i in range(0, len(pcm), chunk_samples)] + [total]
        return [data[a * width : b * width] for a, b in itertools.pairwise(cuts)]

    async def send_audio(
        self, payload: bytes, event_id: int, alignment: dict[str, Any] | None
    ) -> None:
        msg = wire.AudioEvent(
            audio=payload,
            event_id=event_id,
            alignment=wire.Alignment.model_validate(alignment) if alignment else None,
        )
        await self._send("audio", wire.encode_server(msg))

    async def send_interruption(self, event_id: int) -> None:
        await self._send("interruption", wire.encode_server(wire.Interruption(event_id=event_id)))

    async def send_correction(self, original: str, corrected: str, event_id: int) -> None:
        msg = wire.AgentResponseCorrection(
            original_agent_response=original, corrected_agent_response=corrected, event_id=event_id
        )
        await self._send(msg.type, wire.encode_server(msg))

    async def send_client_tool_call(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        msg = wire.ClientToolCall(
            tool_name=name, tool_call_id=tool_call_id, parameters=parameters, event_id=event_id
        )
        await self._send(msg.type, wire.encode_server(msg))

    async def send_tool_response(
        self, name: str, tool_call_id: str, tool_type: str, is_error: bool, event_id: int
    ) -> None:
        msg = wire.AgentToolResponse(
            tool_name=name,
            tool_call_id=tool_call_id,
            tool_type=tool_type,
            is_error=is_error,
            is_called=True,
            event_id=event_id,
        )
        await self._send(msg.type, wire.encode_server(msg))

    async def send_vad_score(self, score: float) -> None:
        await self._send("vad_score", wire.encode_server(wire.VadScore(vad_score=score)))

    async def send_tool_request(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        msg = wire.AgentToolRequest(
            tool_name=name, tool_call_id=tool_call_id, tool_type="webhook", event_id=event_id
        )
        await self._send(msg.type, wire.encode_server(msg))

    async def send_tool_detail(
        self,
        name: str,
        tool_call_id: str,
        parameters: dict[str, Any],
        result: Any,
        is_error: bool,
        event_id: int,
    ) -> None:
        if not self.stages_enabled:
            return
        detail = wire.SagelabToolCall.model_validate(
            {
                "event_id": event_id,
                "tool_call_id": tool_call_id,
                "tool_name": name,
                "parameters": parameters,
                "result": result,
                "is_error": is_error,
            }
        )
        msg = detail.to_message()
        await self._send(msg.type, wire.encode_server(msg))

    async def send_stage(self, event_id: int, stage: str, ms: float) -> None:
        if not self.stages_enabled:
            return
        msg = wire.SagelabStage(event_id=event_id, stage=stage, ms=round(ms, 3))
        await self._send(msg.type, wire.encode_server(msg))

    async def send_error(self, code: int, error_type: str, message: str) -> None:
        msg = wire.ErrorEvent(code=code, error_type=error_type, message=message)
        await self._send("error", wire.encode_server(msg))

    async def close(self, code: int, reason: str) -> None:
        await close_connection(self, self.ws, code, reason)


async def reject(ws: ServerConnection, server: SagelabServer, err: SessionSetupError) -> None:
    """Refuse a session before it exists: an ``error`` event, then the documented close."""
    server.metrics.errors.labels(err.error_type).inc()
    frame = wire.encode_server(
        wire.ErrorEvent(code=err.code, error_type=err.error_type, message=err.message)
    )
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)
    with contextlib.suppress(Exception):
        await ws.close(err.code, err.message[:120])


def resolve_agent(spec: AgentSpec, init: wire.ConversationInitiationClientData) -> ResolvedAgent:
    """Apply the session's overrides and dynamic variables to the agent from the agents file."""
    override = init.conversation_config_override
    agent_o = override.agent if override is not None else None
    tts_o = override.tts if override is not None else None
    requested: dict[str, Any] = {}
    if agent_o is not None:
        if agent_o.prompt is not None and agent_o.prompt.prompt is not None:
            requested["prompt"] = agent_o.prompt.prompt
        if agent_o.first_message is not None:
            requested["first_message"] = agent_o.first_message
        if agent_o.language is not None:
            requested["language"] = agent_o.language
    if tts_o is not None and tts_o.voice_id is not None:
        requested["voice"] = tts_o.voice_id
    refused = sorted(set(requested) - set(spec.allowed_overrides))
    if refused:
        raise SessionSetupError(
            closecodes.INVALID_INPUT,
            "override_error",
            f"Override for field(s) {', '.join(refused)} not allowed by agent {spec.id!r}; "
            f"allowed: {', '.join(spec.allowed_overrides) or 'none'}",
        )
    if (too_large := limits.dynamic_variables_refused(init.dynamic_variables)) is not None:
        raise SessionSetupError(closecodes.INVALID_INPUT, too_large.error_type, too_large.message)
    variables = dict(init.dynamic_variables or {})
    prompt = requested.get("prompt", spec.prompt)
    first = requested.get("first_message", spec.first_message)
    try:
        prompt = substitute_variables(prompt, variables)
        first = substitute_variables(first, variables)
    except KeyError as exc:
        raise SessionSetupError(
            closecodes.INVALID_INPUT,
            "missing_dynamic_variable",
            f"Missing required dynamic variable {exc.args[0]!r}: pass it in "
            "conversation_initiation_client_data.dynamic_variables",
        ) from None
    return ResolvedAgent(
        id=spec.id,
        name=spec.name,
        prompt=prompt,
        first_message=first,
        language=requested.get("language", spec.language),
        voice=requested.get("voice", spec.voice),
        tools=tuple(spec.tools),
        backend=spec.backend,
        options=spec.options,
        input_format=spec.input_format,
        output_format=spec.output_format,
        dynamic_variables=variables,
        text_only=init.text_only,
    )


def _query(path: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}


async def _receive_initiation(
    ws: ServerConnection, server: SagelabServer, timeout_s: float = INITIATION_TIMEOUT_S
) -> wire.ConversationInitiationClientData:
    try:
        frame = await asyncio.wait_for(ws.recv(), timeout=timeout_s)
    except TimeoutError:
        raise SessionSetupError(
            closecodes.INVALID_INPUT,
            "missing_fields",
            f"no conversation_initiation_client_data within {timeout_s:g} s",
        ) from None
    server.metrics.bytes.labels("in").inc(len(frame))
    if (too_large := limits.initiation_too_large(len(frame), server.config)) is not None:
        raise SessionSetupError(closecodes.TOO_BIG, too_large.error_type, too_large.message)
    try:
        msg = wire.parse_client(frame)
    except ProtocolError as exc:
        raise SessionSetupError(closecodes.INVALID_INPUT, exc.error_type, str(exc)) from None
    if not isinstance(msg, wire.ConversationInitiationClientData):
        raise SessionSetupError(
            closecodes.INVALID_INPUT,
            "invalid_message",
            f"the first message must be conversation_initiation_client_data, got {msg.type}",
        )
    server.metrics.messages.labels("in", msg.type).inc()
    return msg


async def handle(ws: ServerConnection, server: SagelabServer) -> None:
    """Serve one ConvAI WebSocket from handshake to close."""
    query = _query(ws.request.path if ws.request else "")
    agent_id = query.get("agent_id", "")
    spec = server.config.agent(agent_id)
    if spec is None:
        await reject(
            ws,
            server,
            SessionSetupError(
                closecodes.INVALID_INPUT, "agent_not_found", f"unknown agent_id {agent_id[:128]!r}"
            ),
        )
        return
    headers = ws.request.headers if ws.request else {}
    resume_token = query.get("resume_token", "")
    try:
        # A resume token is the credential of the conversation it resumes (resume.py); any
        # key or signature presented with it must still be valid.
        key = authenticate(
            server, headers, query, agent_id, spec.requires_auth and not resume_token
        )
    except AccessDenied as exc:
        await reject(
            ws,
            server,
            SessionSetupError(closecodes.INVALID_INPUT, "authentication_error", str(exc)),
        )
        return
    if resume_token:
        await _resume(ws, server, resume_token, agent_id, key.key_id if key else None, query)
        return
    try:
        reservation = server.registry.reserve_for(key)
    except CapacityError as exc:
        await reject(
            ws, server, SessionSetupError(closecodes.TRY_AGAIN_LATER, exc.error_type, exc.message)
        )
        return
    try:
        opened = await _open(ws, server, spec, reservation, key.key_id if key else None, query)
    except BaseException:
        reservation.release()
        raise
    if opened is None:
        reservation.release()
        return
    live, backend = opened
    await _run(ws, server, live, lambda: live.conv.start(backend))


async def _open(
    ws: ServerConnection,
    server: SagelabServer,
    spec: AgentSpec,
    reservation: Reservation,
    key_id: str | None,
    query: dict[str, str],
) -> tuple[LiveSession, Any] | None:
    """Read the initiation, start the conversation; None when the client was refused."""
    try:
        timeout_s = limits.initiation_timeout_s(server.config, anonymous=key_id is None)
        init = await _receive_initiation(ws, server, timeout_s)
        agent = resolve_agent(spec, init)
    except SessionSetupError as err:
        await reject(ws, server, err)
        return None
    except ConnectionClosed:
        return None
    conversation_id = f"conv_{uuid.uuid4().hex[:20]}"
    transport = ConvAITransport(ws, server, agent.output_format)
    transport.stages_enabled = _flag(query.get("sagelab_stages"))
    try:
        conv, backend = server.open_conversation(conversation_id, agent, transport)
    except Exception as exc:  # a model that fails to load, bad backend options
        log.warning("agent %s could not start: %s", agent.id, exc)
        error_type = "cascade_brain_error" if isinstance(exc, BackendError) else "agent_start_error"
        await reject(
            ws,
            server,
            SessionSetupError(
                closecodes.OPERATIONAL, error_type, f"agent {agent.id!r} could not start: {exc}"
            ),
        )
        return None
    if server.store is not None:
        server.store.start_conversation(
            conversation_id,
            agent_id=agent.id,
            protocol="convai",
            user_id=init.user_id,
            metadata={
                "overrides": init.conversation_config_override.model_dump(exclude_none=True)
                if init.conversation_config_override is not None
                else {},
                "dynamic_variables": agent.dynamic_variables,
                "source_info": init.source_info.model_dump(exclude_none=True)
                if init.source_info is not None
                else None,
            },
        )
    server.metrics.sessions.labels("convai", agent.id).inc()
    live = server.sessions.open(
        conv,
        reservation,
        protocol="convai",
        key_id=key_id,
        resumable=_flag(query.get("sagelab_resume")),
        connection=ws,
    )
    server.sessions.issue_token(live, transport)
    return live, backend


async def _resume(
    ws: ServerConnection,
    server: SagelabServer,
    token: str,
    agent_id: str,
    key_id: str | None,
    query: dict[str, str],
) -> None:
    """Carry a held conversation on this connection (resume.py), or refuse with 4002."""
    try:
        live = server.sessions.claim(token, ws, protocol="convai", agent_id=agent_id, key_id=key_id)
    except ResumeRefused as exc:
        await reject(
            ws, server, SessionSetupError(closecodes.RESUME_REFUSED, "resume_refused", str(exc))
        )
        return
    transport = ConvAITransport(ws, server, live.conv.agent.output_format)
    transport.stages_enabled = _flag(query.get("sagelab_stages"))

    async def begin() -> None:
        # The protocol's first message still comes first; the conversation keeps the settings
        # it started with, so its overrides are not applied again.
        try:
            await _receive_initiation(ws, server)
        except SessionSetupError as err:
            await reject(ws, server, err)
            await live.conv.close(err.code, err.message)
            return
        await server.sessions.resume(live, transport)

    await _run(ws, server, live, begin)


async def _run(
    ws: ServerConnection,
    server: SagelabServer,
    live: LiveSession,
    begin: Callable[[], Awaitable[None]],
) -> None:
    """One connection of a conversation: ``begin`` (start or resume), then its frames."""
    conv = live.conv
    try:
        await begin()
        if not conv.closed:
            await _receive_loop(ws, server, conv)
    except ConnectionClosed:
        pass
    except Exception as exc:  # a bug must end this session only, never the server
        log.exception("session %s crashed", conv.conversation_id)
        await conv.close(
            closecodes.INTERNAL,
            f"internal error ({type(exc).__name__}); see the server log",
            error_type="unknown_websocket_crash",
        )
    finally:
        await server.sessions.connection_ended(live, ws)


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def _receive_loop(ws: ServerConnection, server: SagelabServer, conv: Conversation) -> None:
    input_format = AudioFormat.parse(conv.agent.input_format)
    limit = server.config.max_frame_bytes
    metrics = server.metrics
    backend = conv.backend
    assert backend is not None
    cfg = server.config
    limiter = limits.for_session(
        cfg.max_audio_bytes_per_s,
        cfg.audio_burst_s,
        cfg.max_messages_per_s,
        input_format.name,
        cfg.max_bytes_per_s,
    )
    async for frame in ws:
        received_at = time.monotonic()
        size = len(frame)
        metrics.bytes.labels("in").inc(size)
        if size > limit:
            await conv.close(
                closecodes.TOO_BIG,
                f"message of {size} bytes exceeds the limit of {limit} bytes; "
                "send audio in smaller chunks (250 ms of 16 kHz PCM is 8000 bytes)",
                error_type="message_too_large",
            )
            return
        exceeded = limiter.message(received_at, size)
        if exceeded is not None:
            await conv.close(
                closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
            )
            return
        try:
            msg = wire.parse_client(frame)
        except ProtocolError as exc:
            if exc.error_type == "unknown_message_type":
                metrics.errors.labels(exc.error_type).inc()
                await conv.transport.send_error(closecodes.INVALID_INPUT, exc.error_type, str(exc))
                continue
            await conv.close(
                closecodes.INVALID_INPUT,
                f"Invalid message received: {exc}",
                error_type=exc.error_type,
            )
            return
        metrics.messages.labels("in", msg.type).inc()
        match msg:
            case wire.UserAudioChunk():
                exceeded = limiter.audio(len(msg.audio), received_at)
                if exceeded is not None:
                    await conv.close(
                        closecodes.INVALID_INPUT, exceeded.message, error_type=exceeded.error_type
                    )
                    return
                try:
                    pcm = decode_to_pcm16(msg.audio, input_format)
                except ValueError as exc:
                    await conv.close(
                        closecodes.INVALID_INPUT,
                        f"user_audio_chunk is not valid {input_format.name} audio: {exc}",
                        error_type="value_error",
                    )
                    return
                conv.touch()
                await conv.run_backend(backend.on_audio(pcm))
            case wire.Pong():
                conv.on_pong(msg.event_id, received_at)
            case wire.UserMessage():
                conv.touch()
                if msg.text:
                    conv.typed(msg.text)
                    await conv.run_backend(backend.on_user_message(msg.text))
            case wire.MultimodalMessage():
                conv.touch()
                text = msg.user_text
                if text:
                    conv.typed(text)
                    await conv.run_backend(backend.on_user_message(text))
            case wire.SagelabHeard():
                await conv.heard(msg.event_id, float(msg.played_ms))
            case wire.ContextualUpdate():
                await conv.run_backend(backend.on_contextual_update(msg.text, msg.context_id))
            case wire.UserActivity():
                conv.touch()
                await conv.run_backend(backend.on_user_activity())
            case wire.ClientToolResult():
                if not conv.on_tool_result(msg.tool_call_id, msg.result, msg.is_error):
                    await conv.transport.send_error(
                        closecodes.INVALID_INPUT,
                        "value_error",
                        f"client_tool_result for unknown or expired tool_call_id "
                        f"{msg.tool_call_id!r} ignored",
                    )
            case wire.Feedback():
                if server.store is not None:
                    server.store.add_feedback(
                        conv.conversation_id, event_id=msg.event_id, score=msg.score
                    )
            case wire.ConversationInitiationClientData():
                await conv.close(
                    closecodes.INVALID_INPUT,
                    "conversation_initiation_client_data may only be sent once, "
                    "as the first message",
                    error_type="invalid_message",
                )
                return
            case _:
                pass  # messages sagelab accepts but has nothing to do with (MCP approvals)
        if conv.closed:
            return
