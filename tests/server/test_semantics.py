"""Protocol semantics the reference makes the server responsible for, checked on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sagelab.client import Session


async def test_metadata_first_exactly_once_and_event_ids_increase_per_turn(server):
    async with Session.connect(
        server.http_url, "scripted", tools={"get_weather": lambda p: "warm"}
    ) as s:
        for text in ("one", "two", "three"):
            mark = s.mark()
            await s.send_text(text)
            reply = await s.wait_for("agent_response", since=mark, timeout=10)
            await s.wait_for(
                "audio", since=mark, predicate=lambda e, r=reply: e.event_id == r.event_id
            )
            if text != "three":
                await s.wait_agent_done()
    received = [e for e in s.timeline.events if e.direction == "recv"]
    assert received[0].type == "conversation_initiation_metadata"
    assert sum(e.type == "conversation_initiation_metadata" for e in received) == 1
    turns = [e for e in received if e.type == "agent_response"]
    ids = [e.event_id for e in turns]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    # Every audio frame between a turn's response and the next one carries the turn's id.
    positions = [received.index(t) for t in turns] + [len(received)]
    for turn, start, end in zip(turns, positions, positions[1:], strict=False):
        audio_ids = {e.event_id for e in received[start:end] if e.type == "audio"}
        assert audio_ids == {turn.event_id}
    tool_call = next(e for e in received if e.type == "client_tool_call")
    assert tool_call.event_id == ids[2]
    # All ids on the wire (pings included) only ever increase.
    all_ids = [e.event_id for e in received if e.event_id is not None and e.type != "audio"]
    assert all_ids == sorted(all_ids)


async def test_ping_ms_is_null_first_then_the_measured_round_trip(server):
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("ping", predicate=lambda e: e.data.get("ping_ms") is not None, timeout=5)
    pings = s.timeline.of_type("ping")
    assert pings[0].data["ping_ms"] is None
    measured = [p.data["ping_ms"] for p in pings[1:]]
    assert measured and all(isinstance(m, int) and 1 <= m < 1000 for m in measured)
    assert server.metrics.ping_rtt._sum.get() > 0  # the server recorded what it reported


async def test_interruption_then_next_turn_has_a_higher_id(server, speech_dir):
    async with Session.connect(
        server.http_url, "scripted", tools={"get_weather": lambda p: "ok"}
    ) as s:
        for text in ("first", "second"):
            mark = s.mark()
            await s.send_text(text)
            await s.wait_for("agent_response", since=mark)
            await s.wait_agent_done()
        mark = s.mark()
        await s.send_text("tell me something long")
        long = await s.wait_for("agent_response", since=mark)
        await s.wait_for("audio", since=mark, predicate=lambda e: e.event_id == long.event_id)
        await asyncio.sleep(1.0)
        barge = s.mark()
        await s.send_audio(speech_dir / "cards_002.wav", trailing_silence_ms=700)
        interruption = await s.wait_for("interruption", since=barge, timeout=5)
        correction = await s.wait_for("agent_response_correction", since=barge, timeout=5)
        after = await s.wait_for("agent_response", since=barge, timeout=10)
        await asyncio.sleep(0.3)
    assert interruption.event_id == long.event_id
    assert after.event_id > interruption.event_id
    stale = [
        e
        for e in s.timeline.events[s.timeline.events.index(interruption) :]
        if e.type == "audio" and e.event_id <= interruption.event_id
    ]
    assert stale == [], "audio of the interrupted turn arrived after the interruption"
    heard = correction.data["corrected_agent_response"]
    assert heard and long.data["agent_response"].startswith(heard)
    assert len(heard) < len(long.data["agent_response"])

    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id)
    cut = next(
        t for t in stored["turns"] if t["event_id"] == long.event_id and t["role"] == "agent"
    )
    assert cut["interrupted"] and cut["corrected_text"] == heard


async def test_contextual_update_activity_and_feedback_are_accepted_and_stored(server):
    async with Session.connect(server.http_url, "scripted") as s:
        greeting = await s.wait_for("agent_response", timeout=5)
        mark = s.mark()
        await s.send_contextual_update("the user is on the pricing page")
        await s.send_user_activity()
        await s.send_feedback("like", greeting.event_id)
        await asyncio.sleep(0.3)
        assert s.timeline.of_type("error") == []
        assert not any(e.type == "agent_response" for e in s.timeline.events[mark:])
    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id)
    assert stored["feedback"][0]["score"] == "like"
    assert stored["feedback"][0]["event_id"] == greeting.event_id


async def test_overrides_and_dynamic_variables_shape_the_session(server):
    async with Session.connect(
        server.http_url,
        "scripted",
        first_message="Hi {{user_name}}, welcome back.",
        dynamic_variables={"user_name": "Ann"},
        text_only=True,
    ) as s:
        greeting = await s.wait_for("agent_response", timeout=5)
        await asyncio.sleep(0.5)
    assert greeting.data["agent_response"] == "Hi Ann, welcome back."
    assert s.timeline.of_type("audio") == []  # text-only sessions get no audio
    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id)
    assert stored["metadata"]["dynamic_variables"] == {"user_name": "Ann"}


async def test_unanswered_client_tool_times_out_and_the_turn_goes_on(server):
    server.config.agents[0].tools[0].response_timeout_secs = 0.5
    async with Session.connect(server.http_url, "scripted") as s:  # registers no tools…
        s.tools.clear()
        s._run_tool = _ignore  # type: ignore[method-assign]  # …and never answers
        await s.send_text("one")
        await s.wait_for("agent_response", predicate=lambda e: "heard" in e.data["agent_response"])
        await s.send_text("two")
        reply = await s.wait_for(
            "agent_response", timeout=5, predicate=lambda e: "looked" in e.data["agent_response"]
        )
    assert "unavailable" in reply.data["agent_response"]
    assert "did not answer within 0.5 s" in reply.data["agent_response"]


async def _ignore(call) -> None:  # type: ignore[no-untyped-def]
    return None


async def test_idle_session_is_closed_with_a_reason(server):
    server.config.idle_timeout_s = 0.5
    ws = await connect(f"{server.ws_url}/v1/convai/conversation?agent_id=scripted")
    await ws.send(json.dumps({"type": "conversation_initiation_client_data"}))
    error = None
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            msg = json.loads(frame)
            if msg["type"] == "ping":
                pong = {"type": "pong", "event_id": msg["ping_event"]["event_id"]}
                await ws.send(json.dumps(pong))
            if msg["type"] == "error":
                error = msg["error_event"]
    assert ws.close_code == 1002
    assert error is not None and error["error_type"] == "transport_receive_timeout"
