"""The relay protocol (``/voice-conversation``) as the web app's browser speaks it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sagelab.client import Session
from sagelab.protocol import closecodes


async def _closed_with(url: str) -> tuple[int | None, str | None]:
    ws = await connect(url)
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    return ws.close_code, ws.close_reason


async def test_spoken_turn_over_webm_opus(server, speech_dir):
    async with Session.connect_relay(server.http_url, "detail-42") as s:
        assert s.conversation_id and s.conversation_id.startswith("relay_")
        greeting = await s.wait_for("agent_response", timeout=5)
        assert greeting.data["agent_response"].startswith("Hello!")
        await s.wait_agent_done()
        mark = s.mark()
        await s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=900)
        transcript = await s.wait_for("user_transcript", since=mark, timeout=10)
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
        await s.wait_for("audio", since=mark, timeout=10)
        await s.wait_agent_done()
        await s.end()
    assert transcript.data["user_transcript"].startswith("(speech,")
    assert reply.data["agent_response"].startswith("I heard you")
    # Each audio chunk was a self-contained WAV; together they are the whole reply.
    assert s.timeline.agent_audio.size > 16000 * 3
    assert s.timeline.of_type("complete"), "the server did not send complete"
    assert s.close_code == closecodes.NORMAL
    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id)
    assert stored["protocol"] == "relay"
    assert stored["metadata"] == {"conversationDetailId": "detail-42"}
    assert [t["role"] for t in stored["turns"]][:3] == ["agent", "user", "agent"]


async def test_missing_detail_id_closes_4000(server):
    code, reason = await _closed_with(f"{server.ws_url}/voice-conversation")
    assert code == closecodes.RELAY_MISSING_DETAIL_ID
    assert reason == "Missing conversationDetailId"


async def test_unknown_agent_and_capacity_close_4001(server):
    code, reason = await _closed_with(
        f"{server.ws_url}/voice-conversation?conversationDetailId=1&agent_id=ghost"
    )
    assert code == closecodes.RELAY_SESSION_FAILED
    assert reason.startswith("Session creation failed: unknown agent 'ghost'")
    server.registry.max_sessions = 1
    async with Session.connect_relay(server.http_url, "a"):
        code, reason = await _closed_with(
            f"{server.ws_url}/voice-conversation?conversationDetailId=b"
        )
    assert code == closecodes.RELAY_SESSION_FAILED
    assert "limit of" in reason


async def test_bad_frames_get_error_events_and_the_session_goes_on(server):
    async with Session.connect_relay(server.http_url, "x") as s:
        await s.wait_for("agent_response", timeout=5)
        mark = s.mark()
        await s.send_raw("{oops")
        await s.send_raw(json.dumps({"type": "dance"}))
        first = await s.wait_for("error", since=mark, timeout=5)
        second = await s.wait_for("error", since=s.timeline.events.index(first) + 1, timeout=5)
        assert "not valid JSON" in first.data["message"]
        assert "dance" in second.data["message"]
        await s.send_text("hello")
        reply = await s.wait_for("agent_response", since=mark, timeout=5)
        assert reply.data["agent_response"].startswith("I heard you")
        assert not s.closed


async def test_interrupt_stops_agent_audio(server):
    async with Session.connect_relay(server.http_url, "x") as s:
        await s.wait_for("agent_response", timeout=5)
        await s.wait_for("audio", timeout=5)
        await asyncio.sleep(0.5)
        await s.interrupt()
        cut = s.mark()
        await asyncio.sleep(1.0)
        late = [e for e in s.timeline.events[cut:] if e.type == "audio"]
    # Whatever was already in flight may land right after the interrupt; nothing later.
    assert all(e.t_ns - s.timeline.events[cut - 1].t_ns < 200e6 for e in late)
    assert s.timeline.agent_audio.size < 16000 * 3  # far less than the 4.4 s greeting


async def test_client_tools_cannot_answer_over_relay_and_the_agent_is_told(server):
    async with Session.connect_relay(server.http_url, "x") as s:
        await s.wait_for("agent_response", timeout=5)
        await s.send_text("one")
        await s.wait_for("agent_response", predicate=lambda e: "heard" in e.data["agent_response"])
        await s.send_text("two")
        call = await s.wait_for("client_tool_call", timeout=5)
        reply = await s.wait_for(
            "agent_response", timeout=5, predicate=lambda e: "looked" in e.data["agent_response"]
        )
    assert call.data == {"tool_name": "get_weather", "parameters": {"city": "Paris"}}
    assert "cannot run over the relay protocol" in reply.data["agent_response"]


async def test_undecodable_audio_ends_the_session_with_a_reason(server):
    ws = await connect(f"{server.ws_url}/voice-conversation?conversationDetailId=z")
    junk = base64.b64encode(b"this is not webm" * 200).decode()
    for _ in range(5):
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"type": "audio", "data": junk}))
            await asyncio.sleep(0.1)
    errors = []
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            msg = json.loads(frame)
            if msg["type"] == "error":
                errors.append(msg["data"]["message"])
    assert ws.close_code == closecodes.INVALID_INPUT
    assert any("webm" in e.lower() for e in errors)


async def test_relay_events_reach_the_listener_and_events_iterators(server, speech_dir):
    """Relay sessions deliver typed messages (under their ConvAI names) like ConvAI ones."""
    heard = []
    async with Session.connect_relay(server.http_url, "detail-7", listener=heard.append) as s:
        seen = []

        async def collect() -> None:
            async for msg in s.events():
                seen.append(msg)

        reader = asyncio.create_task(collect())
        await s.wait_for("agent_response", timeout=5)
        await s.wait_agent_done()
        await s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=900)
        await s.wait_for("user_transcript", timeout=10)
        await s.wait_for("audio", timeout=10)
        await s.wait_agent_done()
        reader.cancel()
    types = [m.type for m in heard]
    assert types[0] == "conversation_initiation_metadata"
    for kind in ("agent_response", "audio", "user_transcript"):
        assert kind in types and kind in [m.type for m in seen]
    greeting, reply = (m for m in heard if m.type == "agent_response")
    assert reply.event_id > greeting.event_id
