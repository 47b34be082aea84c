"""The ConvAI protocol as the server speaks it (``/v1/convai/conversation``): how its handshake
becomes a session (:class:`ConvaiRoute`) and how its frames map to the conversation's inputs
and events (:class:`ConvaiSerializer`). The connection handler (``connection.py``) does the rest.

Every client frame is parsed by the sans-I/O codec (``sagelab.protocol.convai``); what the codec
rejects ends the session with an ``error`` event and close 1008, as the real service does
("Invalid message received"), except unknown message types, which are reported and skipped so
newer clients keep working.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import ServerConnection

from sagelab.agents.base import ResolvedAgent
from sagelab.audio import PCM_16000, AudioFormat, decode_to_pcm16, encode_pcm16
from sagelab.config import AgentSpec, substitute_variables
from sagelab.conversation import events as ev
from sagelab.protocol import ProtocolError, closecodes
from sagelab.protocol import convai as wire
from sagelab.server import connection, limits
from sagelab.server import serializer as sz
from sagelab.server.serializer import SetupError

if TYPE_CHECKING:
    from sagelab.config import ServerConfig
    from sagelab.server.app import SagelabServer
    from sagelab.server.store import ProtocolName

STAGE_EVENT = "internal_sagelab_stage"
INITIATION = wire.ConversationInitiationClientData.type

#: The close code of each reason a connection gets no session.
CLOSE_CODES: dict[str, int] = {
    "bad_request": closecodes.INVALID_INPUT,
    "too_large": closecodes.TOO_BIG,
    "unknown_agent": closecodes.INVALID_INPUT,
    "unauthorized": closecodes.INVALID_INPUT,
    "resume_refused": closecodes.RESUME_REFUSED,
    "busy": closecodes.TRY_AGAIN_LATER,
    "agent_failed": closecodes.OPERATIONAL,
}


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _frame(msg: wire.ServerMessage) -> sz.Frame:
    return sz.Frame(msg.type, wire.encode_server(msg))


class ConvaiSerializer:
    """ConvAI frames of one connection, in the agent's input and output audio formats.

    sagelab clients may ask for per-stage timings and server tool details with
    ``?sagelab_stages=1``; other clients never see those event types (and would ignore them).
    """

    answers_client_tools = True

    def __init__(self, input_format: str, output_format: str, *, stages: bool = False) -> None:
        self.input_format: str | None = input_format
        self._input = AudioFormat.parse(input_format)
        self._output = AudioFormat.parse(output_format)
        self.stages = stages

    # -- client -> server ---------------------------------------------------------------

    def decode(self, frame: str | bytes) -> sz.Decoded:
        try:
            msg = wire.parse_client(frame)
        except ProtocolError as exc:
            if exc.error_type == "unknown_message_type":
                return sz.Decoded(None, sz.Invalid(exc.error_type, str(exc), fatal=False))
            return sz.Decoded(
                None, sz.Invalid(exc.error_type, f"Invalid message received: {exc}", fatal=True)
            )
        return sz.Decoded(msg.type, self._input_of(msg))

    @staticmethod
    def _input_of(msg: wire.ClientMessage) -> sz.ClientInput:
        match msg:
            case wire.UserAudioChunk():
                return sz.UserAudio(msg.audio)
            case wire.Pong():
                return sz.PongIn(msg.event_id)
            case wire.UserMessage():
                return sz.UserText(msg.text or "")
            case wire.MultimodalMessage():
                return sz.UserText(msg.user_text or "")
            case wire.SagelabHeard():
                return sz.Heard(msg.event_id, float(msg.played_ms))
            case wire.ContextualUpdate():
                return sz.ContextNote(msg.text, msg.context_id)
            case wire.UserActivity():
                return sz.Activity()
            case wire.ClientToolResult():
                return sz.ToolResultIn(msg.tool_call_id, msg.result, msg.is_error)
            case wire.Feedback():
                return sz.FeedbackIn(msg.event_id, msg.score)
            case wire.ConversationInitiationClientData():
                return sz.Invalid(
                    "invalid_message",
                    f"{INITIATION} may only be sent once, as the first message",
                    fatal=True,
                )
            case _:
                return sz.Ignored()  # accepted, nothing to do (MCP approvals)

    def decode_audio(self, data: bytes) -> np.ndarray:
        try:
            return decode_to_pcm16(data, self._input)
        except ValueError as exc:
            raise sz.BadAudio(
                f"user_audio_chunk is not valid {self._input.name} audio: {exc}"
            ) from None

    # -- server -> client ---------------------------------------------------------------

    def encode_audio(self, pcm: np.ndarray, chunk_samples: int) -> list[Any]:
        data = encode_pcm16(pcm, self._output)  # the whole block, resampled at once
        if self._output == PCM_16000:
            step = chunk_samples * 2
            return [data[i : i + step] for i in range(0, len(data), step)]
        width = self._output.bytes_per_sample
        total = len(data) // width
        ratio = total / max(1, len(pcm))
        cuts = [round(i * ratio) for i in range(0, len(pcm), chunk_samples)] + [total]
        return [data[a * width : b * width] for a, b in itertools.pairwise(cuts)]

    def encode(self, event: sz.ServerEvent) -> sz.Frame | None:
        msg = self._message(event)
        return None if msg is None else _frame(msg)

    def _message(self, event: sz.ServerEvent) -> wire.ServerMessage | None:
        match event:
            case sz.Metadata():
                # sagelab's resume extension (resume.py): a client that asked with
                # ?sagelab_resume=1 gets its token in the metadata's extra fields, which the
                # official SDKs ignore, and presents it on its reconnect as ?resume_token=.
                return wire.ConversationInitiationMetadata(
                    conversation_id=event.conversation_id,
                    agent_output_audio_format=event.output_format,  # type: ignore[arg-type]
                    user_input_audio_format=event.input_format,  # type: ignore[arg-type]
                    sagelab_resume_token=event.resume_token,
                    sagelab_resume_grace_s=event.resume_grace_s,
                )
            case ev.Ping():
                return wire.Ping(event_id=event.event_id, ping_ms=event.ping_ms)
            case ev.UserTranscript(tentative=True):
                return wire.TentativeUserTranscript(
                    user_transcript=event.text, event_id=event.event_id
                )
            case ev.UserTranscript():
                return wire.UserTranscript(user_transcript=event.text, event_id=event.event_id)
            case ev.AgentResponse():
                return wire.AgentResponse(agent_response=event.text, event_id=event.event_id)
            case ev.AgentAudio():
                alignment = event.alignment
                return wire.AudioEvent(
                    audio=event.payload,
                    event_id=event.event_id,
                    alignment=wire.Alignment.model_validate(alignment) if alignment else None,
                )
            case ev.Interruption():
                return wire.Interruption(event_id=event.event_id)
            case ev.Correction():
                return wire.AgentResponseCorrection(
                    original_agent_response=event.original,
                    corrected_agent_response=event.corrected,
                    event_id=event.event_id,
                )
            case ev.ClientToolCall():
                return wire.ClientToolCall(
                    tool_name=event.name,
                    tool_call_id=event.call_id,
                    parameters=event.parameters,
                    event_id=event.event_id,
                )
            case sz.ToolRequest():
                return wire.AgentToolRequest(
                    tool_name=event.name,
                    tool_call_id=event.call_id,
                    tool_type="webhook",
                    event_id=event.event_id,
                )
            case sz.ToolResponse():
                return wire.AgentToolResponse(
                    tool_name=event.name,
                    tool_call_id=event.call_id,
                    tool_type=event.tool_type,
                    is_error=event.is_error,
                    is_called=True,
                    event_id=event.event_id,
                )
            case sz.ToolDetail() if self.stages:
                return wire.SagelabToolCall(
                    event_id=event.event_id,
                    tool_call_id=event.call_id,
                    tool_name=event.name,
                    parameters=event.parameters,
                    result=event.result,
                    is_error=event.is_error,
                ).to_message()
            case sz.Stage() if self.stages:
                return wire.SagelabStage(
                    event_id=event.event_id, stage=event.stage, ms=round(event.ms, 3)
                )
            case sz.VadScore():
                return wire.VadScore(vad_score=event.score)
            case sz.ErrorReport():
                return wire.ErrorEvent(
                    code=event.code, error_type=event.error_type, message=event.message
                )
            case _:
                return None  # extensions not asked for; ConvAI says nothing before a close

    def finish(self) -> None:
        return


class ConvaiRoute:
    """The ConvAI handshake: ``?agent_id=``, credentials, then the initiation message."""

    protocol: ProtocolName = "convai"
    id_prefix = "conv"
    frame_hint = "send audio in smaller chunks (250 ms of 16 kHz PCM is 8000 bytes)"
    initiation_type: str | None = INITIATION

    def admit(self, query: Mapping[str, str], config: ServerConfig) -> sz.Admission:
        agent_id = query.get("agent_id", "")
        spec = config.agent(agent_id)
        if spec is None:
            raise SetupError(
                "unknown_agent", "agent_not_found", f"unknown agent_id {agent_id[:128]!r}"
            )
        return sz.Admission(
            agent_id=agent_id,
            spec=spec,
            resume_token=query.get("resume_token", ""),
            resumable=_flag(query.get("sagelab_resume")),
        )

    def initiation(self, frame: str | bytes) -> wire.ConversationInitiationClientData:
        try:
            msg = wire.parse_client(frame)
        except ProtocolError as exc:
            raise SetupError("bad_request", exc.error_type, str(exc)) from None
        if not isinstance(msg, wire.ConversationInitiationClientData):
            raise SetupError(
                "bad_request",
                "invalid_message",
                f"the first message must be {INITIATION}, got {msg.type}",
            )
        return msg

    def resolve(
        self, spec: AgentSpec, initiation: wire.ConversationInitiationClientData
    ) -> ResolvedAgent:
        return resolve_agent(spec, initiation)

    def record(
        self,
        admission: sz.Admission,
        agent: ResolvedAgent,
        initiation: wire.ConversationInitiationClientData,
    ) -> tuple[str | None, dict[str, Any]]:
        override = initiation.conversation_config_override
        source = initiation.source_info
        return initiation.user_id, {
            "overrides": override.model_dump(exclude_none=True) if override is not None else {},
            "dynamic_variables": agent.dynamic_variables,
            "source_info": source.model_dump(exclude_none=True) if source is not None else None,
        }

    def serializer(self, agent: ResolvedAgent, query: Mapping[str, str]) -> ConvaiSerializer:
        return ConvaiSerializer(
            agent.input_format, agent.output_format, stages=_flag(query.get("sagelab_stages"))
        )

    def refusal(self, err: SetupError) -> sz.Refusal:
        """An ``error`` event, then the documented close."""
        code = CLOSE_CODES[err.failure]
        error = wire.ErrorEvent(code=code, error_type=err.error_type, message=err.message)
        return sz.Refusal([_frame(error)], code, err.message)


ROUTE = ConvaiRoute()


async def handle(ws: ServerConnection, server: SagelabServer) -> None:
    """Serve one ConvAI WebSocket from handshake to close."""
    await connection.handle(ws, server, ROUTE)


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
        raise SetupError(
            "bad_request",
            "override_error",
            f"Override for field(s) {', '.join(refused)} not allowed by agent {spec.id!r}; "
            f"allowed: {', '.join(spec.allowed_overrides) or 'none'}",
        )
    if (too_large := limits.dynamic_variables_refused(init.dynamic_variables)) is not None:
        raise SetupError("bad_request", too_large.error_type, too_large.message)
    variables = dict(init.dynamic_variables or {})
    prompt = requested.get("prompt", spec.prompt)
    first = requested.get("first_message", spec.first_message)
    try:
        prompt = substitute_variables(prompt, variables)
        first = substitute_variables(first, variables)
    except KeyError as exc:
        raise SetupError(
            "bad_request",
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
