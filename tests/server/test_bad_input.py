"""Bad input at the socket: each gets an ``error`` event and its documented close code (or is
reported and skipped), other sessions keep working, and nothing stored is lost."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sagelab.client import Session
from sagelab.protocol import closecodes

INIT = json.dumps({"type": "conversation_initiation_client_data"})


async def _open(server, agent_id: str = "scripted", init: str | None = INIT):  # type: ignore[no-untyped-def]
    ws = await connect(f"{server.ws_url}/v1/convai/conversation?agent_id={agent_id}")
    if init is not None:
        await ws.send(init)
        first = json.loads(await ws.recv())
        assert first["type"] == "conversation_initiation_metadata"
    return ws


async def _error_and_close(ws) -> tuple[dict, int | None]:  # type: ignore[no-untyped-def]
    """Read until the server closes; return the last error event and the close code."""
    error: dict = {}
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            msg = json.loads(frame)
            if msg["type"] == "error":
                error = msg["error_event"]
    return error, ws.close_code


BAD_FRAMES = [
    ("not json", "{not json", "invalid_message", "$"),
    ("json array", "[1, 2]", "invalid_message", "$"),
    (
        "missing tool_call_id",
        json.dumps({"type": "client_tool_result", "result": "x"}),
        "missing_fields",
        "tool_call_id",
    ),
    (
        "mistyped event_id",
        json.dumps({"type": "pong", "event_id": "seven"}),
        "value_error",
        "event_id",
    ),
    (
        "invalid base64",
        json.dumps({"user_audio_chunk": "@@not-base64@@"}),
        "value_error",
        "user_audio_chunk",
    ),
    (
        "odd pcm length",
        json.dumps({"user_audio_chunk": base64.b64encode(b"\x00\x01\x02").decode()}),
        "value_error",
        "user_audio_chunk",
    ),
    ("binary frame", b"\x00\x01binary", "invalid_message", "$"),
    ("second initiation", INIT, "invalid_message", "conversation_initiation_client_data"),
]


@pytest.mark.parametrize(
    ("name", "frame", "error_type", "field"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES]
)
async def test_malformed_frame_gets_error_event_and_1008(server, name, frame, error_type, field):
    ws = await _open(server)
    await ws.send(frame)
    error, code = await _error_and_close(ws)
    assert code == closecodes.INVALID_INPUT
    assert error["error_type"] == error_type
    assert error["code"] == closecodes.INVALID_INPUT
    assert field in error["message"]
    # The server keeps serving: a new session works.
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("agent_response", timeout=5)


async def test_oversized_frame_gets_1009_with_explanation(server):
    ws = await _open(server)
    big = base64.b64encode(b"\x00" * server.config.max_frame_bytes).decode()
    await ws.send(json.dumps({"user_audio_chunk": big}))
    error, code = await _error_and_close(ws)
    assert code == closecodes.TOO_BIG
    assert error["error_type"] == "message_too_large"
    assert "smaller chunks" in error["message"]


async def test_unknown_message_type_is_reported_and_skipped(server):
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("agent_response", timeout=5)
        mark = s.mark()
        await s.send_raw(json.dumps({"type": "teleport", "to": "mars"}))
        error = await s.wait_for("error", since=mark, timeout=5)
        assert error.data["error_type"] == "unknown_message_type"
        assert "teleport" in error.data["message"]
        await s.send_text("still there?")
        reply = await s.wait_for("agent_response", since=mark, timeout=5)
        assert reply.data["agent_response"].startswith("I heard you")
        assert not s.closed


async def test_unknown_agent_is_refused_without_listing_the_others(server):
    ws = await connect(f"{server.ws_url}/v1/convai/conversation?agent_id=nobody")
    error, code = await _error_and_close(ws)
    assert code == closecodes.INVALID_INPUT
    assert error["error_type"] == "agent_not_found"
    assert "'nobody'" in error["message"]
    assert "scripted" not in error["message"]  # which agents exist is not a stranger's business


async def test_first_message_must_be_initiation(server):
    ws = await _open(server, init=None)
    await ws.send(json.dumps({"type": "user_message", "text": "hi"}))
    error, code = await _error_and_close(ws)
    assert code == closecodes.INVALID_INPUT
    assert "conversation_initiation_client_data" in error["message"]


async def test_override_not_allowed_is_refused(server):
    server.config.agents[0].allowed_overrides = ["first_message"]
    init = {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {"agent": {"prompt": {"prompt": "be rude"}}},
    }
    ws = await _open(server, init=None)
    await ws.send(json.dumps(init))
    error, code = await _error_and_close(ws)
    assert code == closecodes.INVALID_INPUT
    assert error["error_type"] == "override_error" and "prompt" in error["message"]


async def test_missing_dynamic_variable_is_refused(server):
    server.config.agents[0].first_message = "Hello {{user_name}}!"
    ws = await _open(server, init=None)
    await ws.send(INIT)
    error, code = await _error_and_close(ws)
    assert code == closecodes.INVALID_INPUT
    assert error["error_type"] == "missing_dynamic_variable" and "user_name" in error["message"]


async def test_over_capacity_gets_1013(server):
    server.registry.max_sessions = 2
    async with (
        Session.connect(server.http_url, "scripted"),
        Session.connect(server.http_url, "scripted"),
    ):
        ws = await connect(f"{server.ws_url}/v1/convai/conversation?agent_id=scripted")
        error, code = await _error_and_close(ws)
        assert code == closecodes.TRY_AGAIN_LATER
        assert error["error_type"] == "capacity_exceeded"
    # Capacity is given back when sessions end.
    await _until(lambda: server.registry.active == 0)
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("agent_response", timeout=5)


async def test_client_vanishing_mid_turn_loses_nothing(server, speech_dir):
    """A client that drops its TCP connection while speaking: the session ends, the store keeps
    what was said, and a concurrent session carries on undisturbed."""
    async with Session.connect(server.http_url, "scripted") as other:
        await other.wait_for("agent_response", timeout=5)
        doomed = await Session.connect(server.http_url, "scripted")
        await doomed.wait_for("agent_response", timeout=5)
        await doomed.send_text("hello")
        await doomed.wait_for(
            "agent_response", since=1, predicate=lambda e: "heard" in e.data["agent_response"]
        )
        doomed_id = doomed.conversation_id
        # Halfway through an utterance, the TCP connection is gone (no close frame).
        task = asyncio.create_task(doomed.send_audio(speech_dir / "goforward.wav"))
        await asyncio.sleep(1.0)
        doomed._ws.transport.abort()  # type: ignore[union-attr]
        await asyncio.gather(task, return_exceptions=True)

        mark = other.mark()
        await other.send_text("are you still fine?")
        await other.wait_for("agent_response", since=mark, timeout=5)

    await _until(lambda: server.registry.active == 0)
    server.store.flush()
    stored = server.store.get_conversation(doomed_id)
    assert stored is not None
    assert stored["ended_at"] is not None and stored["close_code"] == 1006
    texts = [(t["role"], t["text"]) for t in stored["turns"]]
    assert texts[0][1].startswith("Hello!") and texts[1] == ("user", "hello")
    assert texts[2][1].startswith("I heard you")
    assert server.store.open_conversations() == []


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
