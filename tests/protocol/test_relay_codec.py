"""Relay codec: round trips, robustness against garbage, and the shapes in relay-protocol.md."""

import base64
import json
import time
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.protocol import ProtocolError
from sagelab.protocol import relay as r

ERROR_TYPES = {"invalid_message", "missing_fields", "value_error", "unknown_message_type"}

text = st.text(max_size=20)
ints = st.integers(min_value=-(2**63), max_value=2**63)
json_scalars = (
    st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(text, json_values, max_size=3)
timestamps = st.integers(min_value=0, max_value=2**53)

CLIENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    r.RelayAudio: st.builds(r.RelayAudio, data=st.binary(max_size=64)),
    r.RelayText: st.builds(r.RelayText, text=text),
    r.RelayInterrupt: st.builds(r.RelayInterrupt),
    r.RelayEnd: st.builds(r.RelayEnd),
}
KNOWN_SERVER_TYPES = {m.type for m in get_args(r.ServerMessage) if m is not r.UnknownRelayEvent}
SERVER_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    r.Ready: st.builds(r.Ready, session_id=text),
    r.AudioChunk: st.builds(r.AudioChunk, audio=st.binary(max_size=64)),
    r.Transcript: st.builds(r.Transcript, text=text),
    r.AgentResponseText: st.builds(r.AgentResponseText, text=text),
    r.ToolCall: st.builds(r.ToolCall, tool_name=text, params=json_objects),
    r.RelayError: st.builds(r.RelayError, message=text),
    r.Complete: st.builds(r.Complete),
    r.UnknownRelayEvent: st.builds(
        r.UnknownRelayEvent,
        type=text.filter(lambda t: t not in KNOWN_SERVER_TYPES),
        data=json_objects,
    ),
}


def test_every_message_type_has_a_strategy() -> None:
    assert set(CLIENT_STRATEGIES) == set(get_args(r.ClientMessage))
    assert set(SERVER_STRATEGIES) == set(get_args(r.ServerMessage))


@pytest.mark.parametrize("model", list(CLIENT_STRATEGIES), ids=lambda m: m.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_client_round_trip(model: type, data: st.DataObject) -> None:
    msg = data.draw(CLIENT_STRATEGIES[model])
    frame = r.encode_client(msg)
    parsed = r.parse_client(frame)
    assert parsed == msg and type(parsed) is model
    assert r.encode_client(parsed) == frame


@pytest.mark.parametrize("model", list(SERVER_STRATEGIES), ids=lambda m: m.__name__)
@settings(max_examples=60)
@given(data=st.data(), timestamp=timestamps)
def test_server_round_trip(model: type, data: st.DataObject, timestamp: int) -> None:
    msg = data.draw(SERVER_STRATEGIES[model])
    frame = r.encode_server(msg, timestamp=timestamp)
    assert r.parse_server_with_timestamp(frame) == (msg, timestamp)
    assert r.parse_server(frame) == msg
    assert r.encode_server(r.parse_server(frame), timestamp=timestamp) == frame


def check_client(frame: str | bytes) -> None:
    try:
        msg = r.parse_client(frame)
    except ProtocolError as exc:
        assert exc.error_type in ERROR_TYPES
        assert str(exc) == f"{exc.field}: {exc.problem}"
        return
    assert isinstance(msg, get_args(r.ClientMessage))
    assert r.parse_client(r.encode_client(msg)) == msg


def check_server(frame: str | bytes) -> None:
    try:
        msg, timestamp = r.parse_server_with_timestamp(frame)
    except ProtocolError as exc:
        assert exc.error_type in ERROR_TYPES - {"unknown_message_type"}
        return
    assert isinstance(msg, get_args(r.ServerMessage))
    assert timestamp is None or isinstance(timestamp, int)
    assert r.parse_server(r.encode_server(msg)) == msg


any_text = st.text(st.characters(exclude_categories=()), max_size=60)
type_names = st.sampled_from(["audio", "text", "interrupt", "end", *sorted(KNOWN_SERVER_TYPES)])
field_names = st.sampled_from(["data", "text", "sessionId", "audioBase64", "toolName", "params"])
random_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": type_names | text | json_values,
        "data": st.dictionaries(field_names | text, json_values | st.just("AAAA"), max_size=4)
        | json_values,
        "text": json_values,
        "timestamp": json_values,
    },
)


@settings(max_examples=200)
@given(frame=any_text | st.binary(max_size=60))
def test_garbage_text_and_bytes(frame: str | bytes) -> None:
    check_client(frame)
    check_server(frame)


@settings(max_examples=200)
@given(value=json_values)
def test_arbitrary_json_values(value: Any) -> None:
    check_client(json.dumps(value))
    check_server(json.dumps(value))


@settings(max_examples=200)
@given(obj=random_objects)
def test_random_objects(obj: dict[str, Any]) -> None:
    check_client(json.dumps(obj))
    check_server(json.dumps(obj))


@settings(max_examples=200)
@given(
    msg=st.one_of(list(SERVER_STRATEGIES.values()) + list(CLIENT_STRATEGIES.values())),
    data=st.data(),
)
def test_mutated_frames(msg: Any, data: st.DataObject) -> None:
    frame = r.encode_client(msg) if isinstance(msg, get_args(r.ClientMessage)) else None
    frame = frame or r.encode_server(msg, timestamp=1)
    obj = json.loads(frame)
    key = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = data.draw(json_values)
    check_client(json.dumps(obj))
    check_server(json.dumps(obj))
    i = data.draw(st.integers(0, len(frame)))
    mangled = frame[:i] + data.draw(any_text.map(lambda s: s[:2])) + frame[i + 2 :]
    check_client(mangled)
    check_server(mangled)


# ------------------------------------------------------------------------------------------------
# Shapes from relay-protocol.md


def test_client_shapes() -> None:
    assert (
        r.encode_client(r.RelayAudio(data=b"\x1aE\xdf\xa3")) == '{"type":"audio","data":"GkXfow=="}'
    )
    assert r.encode_client(r.RelayText(text="hi")) == '{"type":"text","text":"hi"}'
    assert r.encode_client(r.RelayInterrupt()) == '{"type":"interrupt"}'
    assert r.encode_client(r.RelayEnd()) == '{"type":"end"}'
    assert r.parse_client('{"type":"audio","data":"GkXfow=="}') == r.RelayAudio(
        data=b"\x1aE\xdf\xa3"
    )


@pytest.mark.parametrize(
    ("msg", "data"),
    [
        (r.Ready(session_id="s-1"), {"sessionId": "s-1"}),
        (r.AudioChunk(audio=b"RIFF"), {"audioBase64": "UklGRg=="}),
        (r.Transcript(text="hello"), {"text": "hello"}),
        (r.AgentResponseText(text="hi there"), {"text": "hi there"}),
        (
            r.ToolCall(tool_name="Search Data", params={"q": "x"}),
            {"toolName": "Search Data", "params": {"q": "x"}},
        ),
        (r.RelayError(message="boom"), {"message": "boom"}),
        (r.Complete(), {}),
    ],
    ids=lambda v: getattr(v, "type", ""),
)
def test_server_envelopes(msg: Any, data: dict[str, Any]) -> None:
    frame = json.loads(r.encode_server(msg, timestamp=1_700_000_000_123))
    assert frame == {"type": msg.type, "data": data, "timestamp": 1_700_000_000_123}


def test_default_timestamp_is_now_in_ms() -> None:
    before = int(time.time() * 1000)
    stamp = json.loads(r.encode_server(r.Complete()))["timestamp"]
    after = int(time.time() * 1000)
    assert isinstance(stamp, int) and before - 1 <= stamp <= after + 1


def test_tolerant_server_parsing() -> None:
    # Field-less events may omit data; a missing timestamp is not an error.
    assert r.parse_server_with_timestamp('{"type":"complete"}') == (r.Complete(), None)
    assert r.parse_server('{"type":"transcript","data":{"text":"x","extra":1}}') == r.Transcript(
        text="x"
    )
    assert r.parse_server('{"type":"new_thing","data":{"a":1},"timestamp":5}') == (
        r.UnknownRelayEvent(type="new_thing", data={"a": 1})
    )


def error_of(parse: Any, frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(frame)
    return info.value


@pytest.mark.parametrize(
    ("parse", "frame", "field", "error_type"),
    [
        (r.parse_client, b'{"type":"end"}', "$", "invalid_message"),
        (r.parse_client, "not json", "$", "invalid_message"),
        (r.parse_client, "[1]", "$", "invalid_message"),
        (r.parse_client, '{"type":"dance"}', "type", "unknown_message_type"),
        (r.parse_client, '{"text":"hi"}', "type", "missing_fields"),
        (r.parse_client, '{"type":"audio"}', "audio.data", "missing_fields"),
        (r.parse_client, '{"type":"audio","data":"@@@"}', "audio.data", "value_error"),
        (r.parse_client, '{"type":"text","text":5}', "text.text", "value_error"),
        (r.parse_server, b"{}", "$", "invalid_message"),
        (r.parse_server, '{"data":{}}', "type", "missing_fields"),
        (r.parse_server, '{"type":"ready","data":{}}', "ready.data.sessionId", "missing_fields"),
        (r.parse_server, '{"type":"ready","data":[]}', "ready.data", "value_error"),
        (
            r.parse_server,
            '{"type":"complete","timestamp":"now"}',
            "complete.timestamp",
            "value_error",
        ),
        (
            r.parse_server,
            '{"type":"audio_chunk","data":{"audioBase64":"A"}}',
            "audio_chunk.data.audioBase64",
            "value_error",
        ),
        (
            r.parse_server,
            '{"type":"tool_call","data":{"toolName":"t","params":[]}}',
            "tool_call.data.params",
            "value_error",
        ),
    ],
)
def test_errors_name_the_field(parse: Any, frame: str | bytes, field: str, error_type: str) -> None:
    exc = error_of(parse, frame)
    assert (exc.field, exc.error_type) == (field, error_type)


def test_unknown_client_type_names_it() -> None:
    assert "dance" in str(error_of(r.parse_client, '{"type":"dance"}'))


def test_close_codes() -> None:
    assert (r.CLOSE_MISSING_DETAIL_ID, r.CLOSE_SESSION_FAILED) == (4000, 4001)


def test_audio_is_standard_base64() -> None:
    payload = bytes(range(256))
    frame = json.loads(r.encode_server(r.AudioChunk(audio=payload), timestamp=0))
    assert base64.b64decode(frame["data"]["audioBase64"], validate=True) == payload
