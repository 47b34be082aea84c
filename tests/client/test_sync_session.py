"""``SyncSession``: the blocking facade, as a notebook or a script uses it.

These tests are synchronous on purpose (that is the facade's caller), so they use the
``bg_server`` fixture: a real server on its own thread, serving while the test blocks.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from typing import Any

import pytest

from sagelab.client import Session, SessionError
from sagelab.client.blocking import SyncSession
from sagelab.server.app import SagelabServer


def thread_ids() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


async def _async_weather(params: dict[str, Any]) -> str:
    await asyncio.sleep(0.01)
    return f"async sunny in {params['city']}"


def _sync_weather(params: dict[str, Any]) -> str:
    return f"sync sunny in {params['city']}"


def test_connect_takes_the_same_arguments_as_session_connect() -> None:
    def shape(f: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert shape(SyncSession.connect) == shape(Session.connect)


@pytest.mark.parametrize(
    ("tool", "expected"),
    [(_sync_weather, "sync sunny in Paris"), (_async_weather, "async sunny in Paris")],
    ids=["sync", "async"],
)
def test_typed_turns_tools_and_feedback_through_blocking_calls(
    bg_server: SagelabServer, tool: Any, expected: str
) -> None:
    with SyncSession.connect(
        bg_server.http_url, "scripted", tools={"get_weather": tool}, text_only=True
    ) as s:
        assert not s.closed
        greeting = s.wait_for("agent_response", timeout=10)
        mark = s.mark()
        s.send_text("one")
        first = s.wait_for("agent_response", since=mark, timeout=10)
        mark = s.mark()
        s.send_text("two")
        second = s.wait_for("agent_response", since=mark, timeout=10)
        s.send_contextual_update("the user is on the weather page")
        s.send_user_activity()
        s.send_feedback("like", second.event_id)
        # A round trip after the feedback: the server has read everything sent before it.
        assert s.measure_rtt() > 0
        conversation_id = s.conversation_id
    assert s.closed and s.close_code == 1000
    assert greeting.data["agent_response"].startswith("Hello!")
    assert "heard you" in first.data["agent_response"]
    assert second.data["agent_response"].endswith(f"The weather in Paris is {expected}.")
    assert s.timeline.of_type("error") == []

    assert bg_server.store is not None and conversation_id is not None
    bg_server.store.flush()
    stored = bg_server.store.get_conversation(conversation_id)
    assert stored is not None
    assert stored["tool_calls"][0]["result"] == expected
    assert [(f["event_id"], f["score"]) for f in stored["feedback"]] == [(second.event_id, "like")]


def test_spoken_turn_through_blocking_calls(bg_server: SagelabServer, speech_dir: Path) -> None:
    with SyncSession.connect(bg_server.http_url, "scripted", first_message="") as s:
        mark = s.mark()
        sent = s.send_audio(speech_dir / "cards_001.wav", trailing_silence_ms=700)
        reply = s.wait_for("agent_response", since=mark, timeout=15)
        s.wait_agent_done()
        done = s.mark()
    assert sent.speech_end_ns < sent.end_ns
    assert (sent.end_ns - sent.start_ns) / 1e9 >= sent.duration_s - 0.2  # real time, not a burst
    assert "heard you" in reply.data["agent_response"]
    # wait_agent_done returned only after the reply's audio had arrived.
    audio = [e for e in s.timeline.events[:done] if e.type == "audio"]
    assert audio and all(e.event_id == reply.event_id for e in audio)
    assert sum(e.data["duration_s"] for e in audio) > 3.0


def test_timeout_propagates_as_timeout_error_and_the_session_goes_on(
    bg_server: SagelabServer,
) -> None:
    with SyncSession.connect(bg_server.http_url, "scripted", first_message="", text_only=True) as s:
        with pytest.raises(TimeoutError):
            s.wait_for("agent_response", since=s.mark(), timeout=0.3)
        with pytest.raises(TimeoutError):
            s.wait_for("no_such_event", timeout=0.2)
        mark = s.mark()
        s.send_text("still there?")
        assert "heard you" in s.wait_for("agent_response", since=mark).data["agent_response"]


def test_server_side_close_propagates_as_session_error(bg_server: SagelabServer) -> None:
    bg_server.config.idle_timeout_s = 0.5
    with SyncSession.connect(bg_server.http_url, "scripted", first_message="", text_only=True) as s:
        with pytest.raises(SessionError, match="code 1002"):
            s.wait_for("agent_response", since=s.mark(), timeout=10)
        assert s.closed and s.close_code == 1002
        error = s.wait_for("error")
        assert error.data["error_type"] == "transport_receive_timeout"
        with pytest.raises(SessionError):
            s.send_text("too late")


def test_failed_connect_raises_session_error_and_leaves_no_thread(
    bg_server: SagelabServer,
) -> None:
    before = thread_ids()
    with pytest.raises(SessionError, match="unknown agent_id"):
        SyncSession.connect(bg_server.http_url, "no-such-agent")
    assert thread_ids() <= before


def test_close_stops_the_loop_thread_and_tool_workers(bg_server: SagelabServer) -> None:
    before = thread_ids()
    s = SyncSession.connect(
        bg_server.http_url,
        "scripted",
        tools={"get_weather": _sync_weather},
        first_message="",
        text_only=True,
    )
    during = {t.name for t in threading.enumerate() if t.ident not in before}
    assert "sagelab-sync-session" in during
    s.send_text("one")
    s.wait_for("agent_response", timeout=10)
    s.send_text("two")  # a sync tool: it runs on a worker thread of the session's loop
    s.wait_for("client_tool_result", timeout=10)
    s.close()
    s.close()  # twice is fine
    assert s.closed
    assert thread_ids() <= before, [t.name for t in threading.enumerate()]
    with pytest.raises(SessionError, match="closed"):
        s.send_text("after close")


def test_works_from_a_thread_whose_event_loop_is_running(bg_server: SagelabServer) -> None:
    """What a Jupyter cell is: sync code called from inside the kernel's running loop."""

    def cell() -> tuple[str, bool]:
        with SyncSession.connect(
            bg_server.http_url, "scripted", first_message="", text_only=True
        ) as s:
            mark = s.mark()
            s.send_text("hello from a notebook")
            reply = s.wait_for("agent_response", since=mark, timeout=10)
        return reply.data["agent_response"], s.closed

    async def kernel() -> tuple[str, bool]:
        asyncio.get_running_loop()  # raises unless a loop is running in this thread
        return cell()

    before = thread_ids()
    text, closed = asyncio.run(kernel())
    assert "heard you" in text
    assert closed
    assert thread_ids() <= before


def test_calling_the_facade_from_its_own_async_tool_fails_instead_of_hanging(
    bg_server: SagelabServer,
) -> None:
    sessions: list[SyncSession] = []

    async def reentrant_weather(params: dict[str, Any]) -> float:
        return sessions[0].measure_rtt()  # would block the loop it needs to run on

    with SyncSession.connect(
        bg_server.http_url,
        "scripted",
        tools={"get_weather": reentrant_weather},
        first_message="",
        text_only=True,
    ) as s:
        sessions.append(s)
        s.send_text("one")
        s.wait_for("agent_response", timeout=10)
        mark = s.mark()
        s.send_text("two")
        reply = s.wait_for("agent_response", since=mark, timeout=10)
    assert (
        "unavailable (SyncSession methods cannot be called from its own loop"
        in (reply.data["agent_response"])
    )
