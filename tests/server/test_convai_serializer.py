"""The ConvAI serializer and route, without a socket: every frame they build is read back with
the codec (``sagelab.protocol.convai``) and must carry what the neutral event said."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagelab.audio import AudioFormat, encode_pcm16
from sagelab.config import AgentSpec, ServerConfig
from sagelab.conversation import events as ev
from sagelab.protocol import closecodes
from sagelab.protocol import convai as wire
from sagelab.server import serializer as sz
from sagelab.server.convai import ROUTE, ConvaiSerializer

pytestmark = pytest.mark.fast

event_ids = st.integers(min_value=0, max_value=2**31)
texts = st.text(max_size=40)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3),
    max_leaves=6,
)
parameters = st.dictionaries(texts, json_values, max_size=3)


def _codec(**kw: Any) -> ConvaiSerializer:
    return ConvaiSerializer("pcm_16000", "pcm_16000", **kw)


def _sent(event: sz.ServerEvent, codec: ConvaiSerializer | None = None) -> wire.ServerMessage:
    frame = (codec or _codec()).encode(event)
    assert frame is not None, event
    msg = wire.parse_server(frame.data)
    assert frame.type == msg.type  # the metrics label is the wire type
    return msg


# -- server -> client -----------------------------------------------------------------------


@given(text=texts, event_id=event_ids, tentative=st.booleans())
def test_transcripts_round_trip(text: str, event_id: int, tentative: bool) -> None:
    msg = _sent(ev.UserTranscript(text, event_id, tentative))
    cls = wire.TentativeUserTranscript if tentative else wire.UserTranscript
    assert msg == cls(user_transcript=text, event_id=event_id)


@given(text=texts, event_id=event_ids)
def test_agent_response_and_its_correction_round_trip(text: str, event_id: int) -> None:
    assert _sent(ev.AgentResponse(text, event_id)) == wire.AgentResponse(
        agent_response=text, event_id=event_id
    )
    cut = text[: len(text) // 2]
    assert _sent(ev.Correction(text, cut, event_id)) == wire.AgentResponseCorrection(
        original_agent_response=text, corrected_agent_response=cut, event_id=event_id
    )
    assert _sent(ev.Interruption(event_id)) == wire.Interruption(event_id=event_id)


@given(event_id=event_ids, ping_ms=st.none() | st.integers(0, 10_000))
def test_ping_keeps_a_null_round_trip(event_id: int, ping_ms: int | None) -> None:
    assert _sent(ev.Ping(event_id, ping_ms)) == wire.Ping(event_id=event_id, ping_ms=ping_ms)


@given(payload=st.binary(max_size=64), event_id=event_ids, aligned=st.booleans())
def test_audio_round_trips_with_its_alignment(payload: bytes, event_id: int, aligned: bool) -> None:
    alignment = (
        {"chars": ["h", "i"], "char_start_times_ms": [0, 40], "char_durations_ms": [40, 60]}
        if aligned
        else None
    )
    msg = _sent(ev.AgentAudio(payload, event_id, first=True, alignment=alignment))
    assert isinstance(msg, wire.AudioEvent)
    assert (msg.audio, msg.event_id) == (payload, event_id)
    assert (msg.alignment.model_dump() if msg.alignment else None) == alignment


@given(name=st.text(min_size=1, max_size=20), call_id=texts, params=parameters, eid=event_ids)
def test_tool_traffic_round_trips(name: str, call_id: str, params: dict, eid: int) -> None:
    assert _sent(ev.ClientToolCall(name, call_id, params, eid)) == wire.ClientToolCall(
        tool_name=name, tool_call_id=call_id, parameters=params, event_id=eid
    )
    request = _sent(sz.ToolRequest(name, call_id, params, eid))
    assert request == wire.AgentToolRequest(
        tool_name=name, tool_call_id=call_id, tool_type="webhook", event_id=eid
    )
    response = _sent(sz.ToolResponse(name, call_id, "client", True, eid))
    assert isinstance(response, wire.AgentToolResponse)
    assert (response.tool_call_id, response.tool_type, response.is_error) == (
        call_id,
        "client",
        True,
    )


@given(token=st.none() | st.text(min_size=1, max_size=30))
def test_metadata_carries_formats_and_the_resume_token(token: str | None) -> None:
    grace = 30.0 if token else None
    msg = _sent(sz.Metadata("conv_1", "ulaw_8000", "pcm_22050", token, grace))
    assert msg == wire.ConversationInitiationMetadata(
        conversation_id="conv_1",
        user_input_audio_format="ulaw_8000",
        agent_output_audio_format="pcm_22050",
        sagelab_resume_token=token,
        sagelab_resume_grace_s=grace,
    )


def test_extensions_only_for_clients_that_asked() -> None:
    detail = sz.ToolDetail("lookup", "call_1", {"q": "x"}, {"found": 2}, False, 3)
    stage = sz.Stage(3, "stt", 12.34567)
    plain = _codec()
    assert plain.encode(detail) is None and plain.encode(stage) is None
    asked = _codec(stages=True)
    read = wire.SagelabToolCall.read(_sent(detail, asked))
    assert read == wire.SagelabToolCall(
        event_id=3,
        tool_call_id="call_1",
        tool_name="lookup",
        parameters={"q": "x"},
        result={"found": 2},
        is_error=False,
    )
    assert _sent(stage, asked) == wire.SagelabStage(event_id=3, stage="stt", ms=12.346)


def test_errors_and_closing() -> None:
    error = _sent(sz.ErrorReport(1008, "value_error", "bad"))
    assert error == wire.ErrorEvent(code=1008, error_type="value_error", message="bad")
    assert _sent(sz.VadScore(0.5)) == wire.VadScore(vad_score=0.5)
    assert _codec().encode(sz.Closing(closecodes.NORMAL, "bye")) is None  # ConvAI just closes


@pytest.mark.parametrize("fmt", ["pcm_16000", "pcm_8000", "pcm_44100", "ulaw_8000"])
@given(samples=st.integers(0, 5000), chunk=st.sampled_from([160, 320, 1600, 4000]))
def test_audio_chunks_are_the_whole_block_cut_at_chunk_boundaries(
    fmt: str, samples: int, chunk: int
) -> None:
    """Resampled once over the block, then cut: the chunks join into exactly the whole block,
    one chunk per ``chunk`` input samples."""
    pcm = (np.sin(np.arange(samples) / 7) * 8000).astype(np.int16)
    chunks = ConvaiSerializer("pcm_16000", fmt).encode_audio(pcm, chunk)
    assert b"".join(chunks) == encode_pcm16(pcm, AudioFormat.parse(fmt))
    assert len(chunks) == -(-samples // chunk)


# -- client -> server -----------------------------------------------------------------------


@given(
    msg=st.one_of(
        st.builds(wire.UserAudioChunk, audio=st.binary(max_size=64)),
        st.builds(wire.Pong, event_id=event_ids),
        st.builds(wire.UserMessage, text=st.none() | texts),
        st.builds(wire.ContextualUpdate, text=texts, context_id=st.none() | texts),
        st.builds(wire.UserActivity),
        st.builds(
            wire.ClientToolResult, tool_call_id=texts, result=json_values, is_error=st.booleans()
        ),
        st.builds(
            wire.Feedback, event_id=event_ids, score=st.sampled_from(["like", "dislike", None])
        ),
        st.builds(wire.SagelabHeard, event_id=event_ids, played_ms=st.integers(0, 60_000)),
    )
)
def test_client_messages_decode_to_what_they_ask(msg: wire.ClientMessage) -> None:
    decoded = _codec().decode(wire.encode_client(msg))
    assert decoded.type == msg.type
    expected: sz.ClientInput
    match msg:
        case wire.UserAudioChunk():
            expected = sz.UserAudio(msg.audio)
        case wire.Pong():
            expected = sz.PongIn(msg.event_id)
        case wire.UserMessage():
            expected = sz.UserText(msg.text or "")
        case wire.ContextualUpdate():
            expected = sz.ContextNote(msg.text, msg.context_id)
        case wire.UserActivity():
            expected = sz.Activity()
        case wire.ClientToolResult():
            expected = sz.ToolResultIn(msg.tool_call_id, msg.result, msg.is_error)
        case wire.Feedback():
            expected = sz.FeedbackIn(msg.event_id, msg.score)
        case wire.SagelabHeard():
            expected = sz.Heard(msg.event_id, float(msg.played_ms))
    assert decoded.input == expected


def test_multimodal_text_is_a_typed_turn() -> None:
    msg = wire.MultimodalMessage(text=wire.MultimodalText(text="hello"))
    assert _codec().decode(wire.encode_client(msg)).input == sz.UserText("hello")
    files_only = wire.MultimodalMessage(file=wire.FileInput(file_id="f1"))
    assert _codec().decode(wire.encode_client(files_only)).input == sz.UserText("")


INVALID = "Invalid message received: "


@pytest.mark.parametrize(
    ("frame", "error_type", "fatal", "message_start"),
    [
        ('{"type": "from_the_future"}', "unknown_message_type", False, "type: unknown client"),
        ("{not json", "invalid_message", True, INVALID),
        ('{"type": "pong", "event_id": "seven"}', "value_error", True, INVALID),
        (
            '{"type": "conversation_initiation_client_data"}',
            "invalid_message",
            True,
            "conversation_initiation_client_data may only be sent once",
        ),
    ],
)
def test_bad_frames_are_reported_and_fatal_as_the_service_does(
    frame: str, error_type: str, fatal: bool, message_start: str
) -> None:
    item = _codec().decode(frame).input
    assert isinstance(item, sz.Invalid)
    assert (item.error_type, item.fatal) == (error_type, fatal)
    assert item.message.startswith(message_start)


def test_audio_that_is_not_the_announced_format_is_refused() -> None:
    codec = ConvaiSerializer("pcm_16000", "pcm_16000")
    with pytest.raises(sz.BadAudio, match="not valid pcm_16000 audio"):
        codec.decode_audio(b"\x01\x02\x03")  # half a sample
    assert codec.decode_audio(b"\x01\x00\x02\x00").tolist() == [1, 2]


# -- the handshake --------------------------------------------------------------------------


def _config() -> ServerConfig:
    return ServerConfig(agents=[AgentSpec(id="a", name="A", backend="scripted")])


def test_admission_reads_the_query() -> None:
    adm = ROUTE.admit({"agent_id": "a", "resume_token": "t", "sagelab_resume": "1"}, _config())
    assert (adm.agent_id, adm.resume_token, adm.resumable, adm.detail_id) == ("a", "t", True, None)
    with pytest.raises(sz.SetupError) as info:
        ROUTE.admit({"agent_id": "ghost"}, _config())
    assert (info.value.failure, info.value.error_type) == ("unknown_agent", "agent_not_found")


def test_the_first_message_must_be_the_initiation() -> None:
    init = ROUTE.initiation(wire.encode_client(wire.ConversationInitiationClientData(user_id="u")))
    assert init.user_id == "u"
    with pytest.raises(sz.SetupError, match="must be conversation_initiation_client_data"):
        ROUTE.initiation(wire.encode_client(wire.UserActivity()))


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        ("bad_request", closecodes.INVALID_INPUT),
        ("too_large", closecodes.TOO_BIG),
        ("unknown_agent", closecodes.INVALID_INPUT),
        ("unauthorized", closecodes.INVALID_INPUT),
        ("resume_refused", closecodes.RESUME_REFUSED),
        ("busy", closecodes.TRY_AGAIN_LATER),
        ("agent_failed", closecodes.OPERATIONAL),
    ],
)
def test_a_refusal_is_an_error_event_then_the_documented_close(failure: Any, code: int) -> None:
    refusal = ROUTE.refusal(sz.SetupError(failure, "some_type", "why " * 50))
    assert refusal.code == code
    [frame] = refusal.frames
    assert wire.parse_server(frame.data) == wire.ErrorEvent(
        code=code, error_type="some_type", message="why " * 50
    )
