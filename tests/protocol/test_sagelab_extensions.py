"""sagelab's extensions to the ConvAI wire: ``internal_sagelab_heard`` (client → server) and
``internal_sagelab_tool_call`` (server → client), which other peers ignore."""

from __future__ import annotations

import json

import pytest

from sagelab.protocol import ProtocolError
from sagelab.protocol import convai as c

pytestmark = pytest.mark.fast


def test_heard_round_trips_and_is_a_known_client_message() -> None:
    frame = c.encode_client(c.SagelabHeard(event_id=7, played_ms=1234.5, text="I found two"))
    assert json.loads(frame) == {
        "type": "internal_sagelab_heard",
        "event_id": 7,
        "played_ms": 1234.5,
        "text": "I found two",
    }
    msg = c.parse_client(frame)
    assert isinstance(msg, c.SagelabHeard)
    assert (msg.event_id, msg.played_ms, msg.text) == (7, 1234.5, "I found two")


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "internal_sagelab_heard", "played_ms": 10},
        {"type": "internal_sagelab_heard", "event_id": 3, "played_ms": -1},
        {"type": "internal_sagelab_heard", "event_id": 3, "played_ms": "10"},
        {"type": "internal_sagelab_heard", "event_id": 3, "played_ms": True},
    ],
)
def test_bad_heard_messages_are_protocol_errors(payload: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        c.parse_client(json.dumps(payload))


def test_tool_call_event_travels_as_an_unknown_type() -> None:
    event = c.SagelabToolCall(
        event_id=4,
        tool_call_id="call_1",
        tool_name="search_records",
        parameters={"query": "oslo"},
        result={"count": 2},
        is_error=False,
    )
    frame = c.encode_server(event.to_message())
    obj = json.loads(frame)
    assert obj["type"] == "internal_sagelab_tool_call"
    assert obj["internal_sagelab_tool_call_event"]["parameters"] == {"query": "oslo"}
    parsed = c.parse_server(frame)
    assert isinstance(parsed, c.UnknownServerMessage)  # what an SDK or an old client sees
    assert c.SagelabToolCall.read(parsed) == event


def test_tool_call_event_read_ignores_other_messages_and_rejects_bad_payloads() -> None:
    assert c.SagelabToolCall.read(c.Ping(event_id=1)) is None
    stage = c.sagelab_event("internal_sagelab_stage", {"event_id": 1, "stage": "stt", "ms": 3})
    assert c.SagelabToolCall.read(stage) is None
    assert c.sagelab_event_payload(stage, "internal_sagelab_stage") == {
        "event_id": 1,
        "stage": "stt",
        "ms": 3,
    }
    broken = c.sagelab_event("internal_sagelab_tool_call", {"event_id": 1, "tool_name": "x"})
    with pytest.raises(ProtocolError, match="tool_call_id"):
        c.SagelabToolCall.read(broken)
