"""The relay serializer and route, without a socket: frames read back with the relay codec
(``sagelab.protocol.relay``), events the relay has no message for are not sent, and the
browser's WebM stream decodes through the connection's own decoder."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from sagelab.audio import WebmOpusStreamEncoder
from sagelab.config import AgentSpec, ServerConfig
from sagelab.conversation import events as ev
from sagelab.protocol import closecodes
from sagelab.protocol import relay as wire
from sagelab.server import serializer as sz
from sagelab.server.relay import ROUTE, RelaySerializer

pytestmark = pytest.mark.fast

event_ids = st.integers(min_value=0, max_value=2**31)
texts = st.text(max_size=40)
parameters = st.dictionaries(texts, st.none() | st.booleans() | st.integers() | texts, max_size=3)


def _sent(event: sz.ServerEvent) -> wire.ServerMessage:
    codec = RelaySerializer()
    try:
        frame = codec.encode(event)
    finally:
        codec.finish()
    assert frame is not None, event
    msg = wire.parse_server(frame.data)
    assert frame.type == msg.type
    return msg


def _silent(event: sz.ServerEvent) -> bool:
    codec = RelaySerializer()
    try:
        return codec.encode(event) is None
    finally:
        codec.finish()


@given(text=texts, event_id=event_ids)
def test_final_transcripts_and_replies_round_trip(text: str, event_id: int) -> None:
    assert _sent(ev.UserTranscript(text, event_id)) == wire.Transcript(text=text)
    assert _sent(ev.AgentResponse(text, event_id)) == wire.AgentResponseText(text=text)
    assert _silent(ev.UserTranscript(text, event_id, tentative=True))


@given(name=st.text(min_size=1, max_size=20), call_id=texts, params=parameters, eid=event_ids)
def test_both_kinds_of_tool_call_are_a_tool_call(
    name: str, call_id: str, params: dict, eid: int
) -> None:
    expected = wire.ToolCall(tool_name=name, params=params)
    assert _sent(ev.ClientToolCall(name, call_id, params, eid)) == expected
    assert _sent(sz.ToolRequest(name, call_id, params, eid)) == expected
    assert _silent(sz.ToolResponse(name, call_id, "client", False, eid))


@given(token=st.none() | st.text(min_size=1, max_size=30))
def test_ready_carries_the_session_and_the_resume_token(token: str | None) -> None:
    msg = _sent(sz.Metadata("relay_1", "pcm_16000", "pcm_16000", token, 30.0 if token else None))
    assert msg == wire.Ready(session_id="relay_1", resume_token=token)


@given(samples=st.integers(1, 4000), chunk=st.sampled_from([160, 1600]))
def test_agent_audio_goes_as_self_contained_wav_files(samples: int, chunk: int) -> None:
    pcm = (np.sin(np.arange(samples) / 5) * 9000).astype(np.int16)
    codec = RelaySerializer()
    try:
        payloads = codec.encode_audio(pcm, chunk)
        frames = [codec.encode(ev.AgentAudio(p, 7)) for p in payloads]
    finally:
        codec.finish()
    heard = []
    for frame in frames:
        assert frame is not None
        msg = wire.parse_server(frame.data)
        assert isinstance(msg, wire.AudioChunk)
        data, rate = sf.read(io.BytesIO(msg.audio), dtype="int16")
        assert rate == 16_000
        heard.append(data)
    assert np.array_equal(np.concatenate(heard), pcm)


@pytest.mark.parametrize(
    "event",
    [
        ev.Ping(1, None),
        ev.Interruption(2),
        ev.Correction("a b", "a", 2),
        sz.VadScore(0.4),
        sz.Stage(2, "stt", 10.0),
        sz.ToolDetail("t", "c", {}, None, False, 2),
        sz.Closing(closecodes.INVALID_INPUT, "bad"),
    ],
)
def test_what_the_relay_has_no_event_for_is_not_sent(event: sz.ServerEvent) -> None:
    assert _silent(event)


def test_errors_and_a_normal_end() -> None:
    assert _sent(sz.ErrorReport(1008, "value_error", "no")) == wire.RelayError(message="no")
    assert _sent(sz.Closing(closecodes.NORMAL, "bye")) == wire.Complete()


# -- client -> server -----------------------------------------------------------------------


@given(
    msg=st.one_of(
        st.builds(wire.RelayAudio, data=st.binary(max_size=64)),
        st.builds(wire.RelayText, text=texts),
        st.builds(wire.RelayInterrupt),
        st.builds(wire.RelayEnd),
    )
)
def test_client_events_decode_to_what_they_ask(msg: wire.ClientMessage) -> None:
    codec = RelaySerializer()
    try:
        decoded = codec.decode(wire.encode_client(msg))
    finally:
        codec.finish()
    assert decoded.type == msg.type
    expected = {
        wire.RelayAudio: lambda m: sz.UserAudio(m.data),
        wire.RelayText: lambda m: sz.UserText(m.text),
        wire.RelayInterrupt: lambda m: sz.InterruptRequest(),
        wire.RelayEnd: lambda m: sz.EndRequest(),
    }[type(msg)](msg)
    assert decoded.input == expected


@pytest.mark.parametrize("frame", ["{not json", '{"type": "dance"}', '{"type": "audio"}'])
def test_every_bad_frame_is_reported_and_the_session_goes_on(frame: str) -> None:
    item = RelaySerializer().decode(frame).input
    assert isinstance(item, sz.Invalid) and not item.fatal


def test_the_browsers_webm_stream_decodes_chunk_by_chunk() -> None:
    """A MediaRecorder-like stream (header in the first chunk only) through one connection's
    decoder gives back about as much 16 kHz audio as went in."""
    tone = (np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000) * 8000).astype(np.int16)
    encoder = WebmOpusStreamEncoder(timeslice_ms=100)
    chunks = [encoder.encode(tone[i : i + 1600]) for i in range(0, len(tone), 1600)]
    codec = RelaySerializer()
    try:
        decoded = [codec.decode_audio(c) for c in chunks if c]
    finally:
        codec.finish()
    total = sum(len(d) for d in decoded)
    assert 0.8 * len(tone) <= total <= len(tone)


def test_audio_that_is_not_webm_is_refused() -> None:
    codec = RelaySerializer()
    try:
        with pytest.raises(sz.BadAudio, match="not a decodable audio/webm"):
            codec.decode_audio(b"\x00" * 400)
    finally:
        codec.finish()


# -- the handshake --------------------------------------------------------------------------


def _config() -> ServerConfig:
    return ServerConfig(
        agents=[AgentSpec(id="a"), AgentSpec(id="needs", prompt="Hi {{name}}")],
        relay_agent="a",
    )


def test_admission_needs_a_detail_id_and_defaults_to_the_relay_agent() -> None:
    adm = ROUTE.admit({"conversationDetailId": "d1", "resumeToken": "t", "resume": "1"}, _config())
    assert (adm.agent_id, adm.detail_id, adm.resume_token, adm.resumable) == ("a", "d1", "t", True)
    with pytest.raises(sz.SetupError) as info:
        ROUTE.admit({}, _config())
    assert info.value.error_type == "missing_conversation_detail_id"
    with pytest.raises(sz.SetupError, match="unknown agent 'ghost'"):
        ROUTE.admit({"conversationDetailId": "d1", "agent_id": "ghost"}, _config())


def test_an_agent_that_needs_variables_cannot_run_over_the_relay() -> None:
    with pytest.raises(sz.SetupError, match="needs dynamic variable 'name'"):
        ROUTE.resolve(_config().agents[1], None)


@pytest.mark.parametrize(
    ("err", "code", "reason", "explained"),
    [
        (
            sz.SetupError("bad_request", "missing_conversation_detail_id", "Missing x"),
            closecodes.RELAY_MISSING_DETAIL_ID,
            "Missing x",
            None,
        ),
        (
            sz.SetupError("busy", "capacity", "full"),
            closecodes.RELAY_SESSION_FAILED,
            "Session creation failed: full",
            None,
        ),
        (
            sz.SetupError("unauthorized", "authentication_error", "sign it"),
            closecodes.RELAY_SESSION_FAILED,
            "Session creation failed: sign it",
            "Session creation failed: sign it",
        ),
        (
            sz.SetupError("resume_refused", "resume_refused", "expired"),
            closecodes.RESUME_REFUSED,
            "Resume failed: expired",
            "expired",
        ),
    ],
)
def test_refusals_close_with_the_references_codes(
    err: sz.SetupError, code: int, reason: str, explained: Any
) -> None:
    refusal = ROUTE.refusal(err)
    assert (refusal.code, refusal.reason) == (code, reason)
    sent = [wire.parse_server(f.data) for f in refusal.frames]
    assert sent == ([wire.RelayError(message=explained)] if explained else [])
