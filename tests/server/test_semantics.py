"""Protocol semantics the reference makes the server responsible for, checked on the wire."""

from __future__ import annotations

from sagelab.client import Session


async def test_the_route_serves_a_turn_with_pings_and_one_id_per_turn(server):
    # A smoke check of the ConvAI route itself: the conversation's behaviour (event ids,
    # ping_ms, barge-in and correction, tool timeouts, idle and maximum duration) is checked
    # on the simulated clock in tests/conversation/test_server_semantics_simulated.py.
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("agent_response", timeout=5)
        mark = s.mark()
        await s.send_text("one")
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
        await s.wait_for("audio", since=mark, predicate=lambda e: e.event_id == reply.event_id)
        await s.wait_for("ping", predicate=lambda e: e.data.get("ping_ms") is not None, timeout=5)
    received = [e for e in s.timeline.events if e.direction == "recv"]
    assert received[0].type == "conversation_initiation_metadata"
    assert sum(e.type == "conversation_initiation_metadata" for e in received) == 1
    greeting, answer = [e.event_id for e in received if e.type == "agent_response"]
    assert answer > greeting
    pings = s.timeline.of_type("ping")
    assert pings[0].data["ping_ms"] is None
    assert all(isinstance(p.data["ping_ms"], int) for p in pings[1:])
    assert server.metrics.ping_rtt._sum.get() > 0  # the server recorded what it reported


async def test_contextual_update_activity_and_feedback_are_accepted_and_stored(server):
    async with Session.connect(server.http_url, "scripted") as s:
        greeting = await s.wait_for("agent_response", timeout=5)
        mark = s.mark()
        await s.send_contextual_update("the user is on the pricing page")
        await s.send_user_activity()
        await s.send_feedback("like", greeting.event_id)
        # The route handles frames in order: once this text is answered, the three above
        # were handled, and none of them made the agent speak.
        await s.send_text("one")
        await s.wait_for("agent_response", since=mark, timeout=5)
        assert s.timeline.of_type("error") == []
        replies = [e for e in s.timeline.events[mark:] if e.type == "agent_response"]
        assert [e.data["agent_response"] for e in replies] == [
            "I heard you. This reply is a recording, streamed in real time."
        ]
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
        await s.send_text("one")  # answered after anything the greeting would have sent
        await s.wait_for("agent_response", predicate=lambda e: e is not greeting, timeout=5)
    assert greeting.data["agent_response"] == "Hi Ann, welcome back."
    assert s.timeline.of_type("audio") == []  # text-only sessions get no audio
    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id)
    assert stored["metadata"]["dynamic_variables"] == {"user_name": "Ann"}
