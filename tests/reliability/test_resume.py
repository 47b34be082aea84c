"""Reconnection and resume, over real sockets: a client whose TCP connection dies gets its
conversation back (same id, no replay, the next turn works) within the grace window; tokens
work once; a conversation nobody comes back for ends cleanly and frees its slot; a restarted
server cannot resume, and the client gives up or starts over as its policy says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import INIT, until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sagelab.client import ReconnectPolicy, Session, SessionError, SyncSession
from sagelab.config import ServerConfig
from sagelab.protocol import closecodes
from sagelab.server.app import SagelabServer
from sagelab.server.store import ConversationStore

FAST = ReconnectPolicy(initial_backoff_s=0.05, max_backoff_s=0.3, max_attempts=20, seed=1)


@pytest.fixture
def resumable(server_config: ServerConfig) -> ServerConfig:
    server_config.resume_grace_s = 10.0  # longer than any test waits: expiry has its own test
    return server_config


@pytest.fixture
async def server(resumable: ServerConfig) -> AsyncIterator[SagelabServer]:
    async with SagelabServer(resumable) as srv:
        yield srv


def _quiet(config: ServerConfig) -> ServerConfig:
    """No greeting and rare pings, for raw clients that read only what a test asks for."""
    config.agents[0].first_message = ""
    config.ping_interval_s = 30.0
    return config


def _url(server: SagelabServer, agent: str = "scripted", **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"agent_id": agent, **params}.items())
    return f"{server.ws_url}/v1/convai/conversation?{query}"


async def _open(url: str) -> tuple[ClientConnection, str, str | None]:
    """A raw ConvAI session: (socket, conversation id, resume token or None)."""
    ws = await connect(url)
    await ws.send(INIT)
    meta = json.loads(await ws.recv())
    assert meta["type"] == "conversation_initiation_metadata", meta
    event = meta["conversation_initiation_metadata_event"]
    return ws, event["conversation_id"], event.get("sagelab_resume_token")


async def _refusal(url: str) -> tuple[dict[str, Any], int | None]:
    """Connect expecting a refusal: the error event and the close code."""
    ws = await connect(url)
    error: dict[str, Any] = {}
    with contextlib.suppress(ConnectionClosed):
        await ws.send(INIT)  # a refused session may already be closing
    try:
        while True:
            msg = json.loads(await ws.recv())
            assert msg["type"] == "error", f"expected a refusal, got {msg}"
            error = msg["error_event"]
    except ConnectionClosed:
        pass
    return error, ws.close_code


async def _reply(ws: ClientConnection) -> dict[str, Any]:
    """Read until the agent answers; its ``agent_response`` message."""
    while True:
        msg: dict[str, Any] = json.loads(await ws.recv())
        if msg["type"] == "agent_response":
            return msg


def _cut(ws: ClientConnection) -> None:
    """Reset the TCP connection (SO_LINGER 0): no close frame, the peer sees an RST."""
    assert ws.transport is not None
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def _healthz(server: SagelabServer) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with urllib.request.urlopen(f"{server.http_url}/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))

    return await asyncio.to_thread(get)


async def _stored(server: SagelabServer, conversation_id: str) -> dict[str, Any]:
    assert server.store is not None
    await asyncio.to_thread(server.store.flush)
    record = server.store.get_conversation(conversation_id)
    assert record is not None
    return dict(record)


def _local(session: Session) -> list[str]:
    return [e.type for e in session.timeline.events if e.direction == "local"]


# ------------------------------------------------------------------------------ the Session


async def test_session_resumes_the_same_conversation_after_a_tcp_reset(server):
    async with Session.connect(server.http_url, "scripted", reconnect=FAST) as s:
        conversation_id = s.conversation_id
        greeting = await s.wait_for("audio", timeout=10)  # the greeting is being spoken
        await s.drop_connection()
        resumed = await s.wait_for("resumed", timeout=10)
        assert s.conversation_id == conversation_id
        assert resumed.data["conversation_id"] == conversation_id
        assert server.registry.active == 1 and server.sessions.held == 0

        mark = s.mark()
        await s.send_text("are you still there?")
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
        await s.wait_for("audio", since=mark, timeout=10, predicate=lambda e: e.event_id > 0)
        await s.wait_agent_done()
    # Event ids go on from where they were; the cut turn's audio never came again.
    assert reply.event_id > greeting.event_id
    after = s.timeline.events[s.timeline.events.index(resumed) :]
    assert not [e for e in after if e.type == "audio" and e.event_id == greeting.event_id]
    locals_ = _local(s)
    assert locals_.index("connection_dropped") < locals_.index("disconnected")
    assert locals_.index("disconnected") < locals_.index("reconnecting") < locals_.index("resumed")

    await until(lambda: server.registry.active == 0 and server.registry.reserved == 0)
    stored = await _stored(server, conversation_id)
    assert [c["id"] for c in server.store.list_conversations()] == [conversation_id]
    [resume] = stored["metadata"]["resumes"]
    assert resume["close_code"] == 1006 and resume["reason"] == "client disconnected"
    assert resume["resumed_at"] >= resume["disconnected_at"]
    assert stored["turns"][0]["role"] == "agent" and stored["turns"][0]["interrupted"]
    assert (stored["close_code"], stored["end_reason"]) == (1000, "client ended the conversation")


async def test_a_message_sent_during_the_outage_waits_for_the_resume(server):
    async with Session.connect(
        server.http_url, "scripted", first_message="", text_only=True, reconnect=FAST
    ) as s:
        await s.drop_connection()
        await s.send_text("hello after the drop")  # returns once it went out on the new socket
        reply = await s.wait_for("agent_response", timeout=10)
    sent = next(e for e in s.timeline.events if e.type == "user_message")
    resumed = next(e for e in s.timeline.events if e.type == "resumed")
    assert sent.t_ns >= resumed.t_ns
    assert reply.data["agent_response"].startswith("I heard you")


async def test_a_session_behind_a_simulated_network_resumes_through_a_new_link(server):
    async with Session.connect(
        server.http_url, "scripted", first_message="", network="4g", reconnect=FAST
    ) as s:
        conversation_id = s.conversation_id
        await s.drop_connection()
        await s.wait_for("resumed", timeout=10)
        mark = s.mark()
        await s.send_text("over 4g")
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
        assert await s.measure_rtt() >= 0.05  # 4g: 25 ms one way at least, both ways simulated
    assert s.conversation_id == conversation_id
    assert reply.data["agent_response"].startswith("I heard you")


async def test_speech_during_the_outage_is_dropped_like_a_live_microphones(server, speech_dir):
    outage = ReconnectPolicy(initial_backoff_s=0.5, max_backoff_s=0.5, jitter=0)
    async with Session.connect(
        server.http_url, "scripted", first_message="", reconnect=outage
    ) as s:
        speaking = asyncio.create_task(
            s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=900)
        )
        await s.wait_for("user_audio_chunk", timeout=5)
        await s.drop_connection()
        sent = await speaking  # the microphone never noticed
        await s.wait_for("resumed", timeout=10)
        mark = s.mark()
        await s.send_text("did you get that?")
        await s.wait_for("agent_response", since=mark, timeout=10)
    events = s.timeline.events
    dropped = [e for e in events if e.type == "audio_dropped"]
    went = [e for e in events if e.type == "user_audio_chunk"]
    assert dropped and len(dropped) + len(went) == len(sent.chunk_times_ns)
    start = next(e.t_ns for e in events if e.type == "disconnected")
    end = next(e.t_ns for e in events if e.type == "resumed")
    assert all(start <= e.t_ns <= end for e in dropped)
    # The recorded user track holds only what was really sent.
    assert s.timeline.user_audio.size == sum(e.data["samples"] for e in went)


async def test_a_restarted_server_cannot_resume_and_the_client_gives_up_by_default(
    resumable: ServerConfig,
):
    resumable.port = _free_port()
    async with SagelabServer(resumable) as first:
        s = await Session.connect(first.http_url, "scripted", first_message="", reconnect=FAST)
        waiting = asyncio.create_task(s.wait_for("agent_response", since=s.mark(), timeout=60))
    # The first server is gone (its sessions got 1001); the client retries until one answers.
    async with SagelabServer(resumable):
        with pytest.raises(SessionError, match="refused to resume") as failed:
            await waiting
        await s.wait_closed(timeout=10)
    assert "start a new conversation" in str(failed.value)
    assert s.close_code == closecodes.RESUME_REFUSED and s.failure
    locals_ = _local(s)
    assert "resume_refused" in locals_ and locals_[-2:] == ["reconnect_gave_up", "closed"]
    assert "resumed" not in locals_ and "reconnected_new" not in locals_
    await s.close()


async def test_a_restarted_server_gets_a_new_conversation_when_the_policy_allows(
    resumable: ServerConfig,
):
    resumable.port = _free_port()
    policy = ReconnectPolicy(
        initial_backoff_s=0.05, max_backoff_s=0.3, max_attempts=20, new_conversation=True
    )
    async with SagelabServer(resumable) as first:
        s = await Session.connect(first.http_url, "scripted", first_message="", reconnect=policy)
        old = s.conversation_id
    async with SagelabServer(resumable) as second:
        new = await s.wait_for("reconnected_new", timeout=20)
        assert s.conversation_id != old and new.data["previous_conversation_id"] == old
        mark = s.mark()
        await s.send_text("hello again")
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
        await s.close()
        await until(lambda: second.registry.active == 0)
    assert reply.data["agent_response"].startswith("I heard you")
    assert "resume_refused" in _local(s)
    store = ConversationStore(resumable.store_path)
    try:
        ended = {c["id"]: c for c in store.list_conversations()}
    finally:
        store.close()
    assert ended[old]["close_code"] == closecodes.GOING_AWAY
    assert ended[s.conversation_id]["close_code"] == 1000


async def test_when_every_attempt_fails_waiters_get_a_session_error_not_a_hang(server_config):
    server_config.resume_grace_s = 10.0
    server_config.port = _free_port()
    policy = ReconnectPolicy(initial_backoff_s=0.01, max_backoff_s=0.05, max_attempts=3)
    async with SagelabServer(server_config) as server:
        s = await Session.connect(server.http_url, "scripted", first_message="", reconnect=policy)
        waiting = asyncio.create_task(s.wait_for("agent_response", since=s.mark(), timeout=60))
    with pytest.raises(SessionError, match="could not reconnect in 3 attempts"):
        await waiting  # the server never comes back
    assert _local(s).count("reconnect_failed") == 3
    with pytest.raises(SessionError):
        await s.send_text("anyone?")
    await s.close()


def test_a_sync_session_resumes_while_the_caller_blocks(bg_server: SagelabServer) -> None:
    with SyncSession.connect(
        bg_server.http_url, "scripted", first_message="", text_only=True, reconnect=FAST
    ) as s:
        conversation_id = s.conversation_id
        s.drop_connection()
        s.wait_for("resumed", timeout=10)
        mark = s.mark()
        s.send_text("hello from a script")
        reply = s.wait_for("agent_response", since=mark, timeout=10)
        assert s.conversation_id == conversation_id
    assert reply.data["agent_response"].startswith("I heard you")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ the server


async def test_a_resume_token_works_once(resumable):
    async with SagelabServer(_quiet(resumable)) as server:
        ws, conversation_id, first = await _open(_url(server, sagelab_resume="1"))
        assert first and len(first) >= 43  # 32 random bytes, in the metadata's extra fields
        _cut(ws)
        await until(lambda: server.sessions.held == 1, what="the conversation is held")

        ws, again, second = await _open(_url(server, sagelab_resume="1", resume_token=first))
        assert again == conversation_id and second and second != first
        _cut(ws)
        await until(lambda: server.sessions.held == 1, what="held again")

        error, code = await _refusal(_url(server, resume_token=first))
        assert code == closecodes.RESUME_REFUSED and error["error_type"] == "resume_refused"
        assert "already used" in error["message"] and "newest" in error["message"]
        assert server.sessions.held == 1  # a refused token costs the conversation nothing

        error, code = await _refusal(_url(server, resume_token="x" * 43))
        assert code == closecodes.RESUME_REFUSED and "unknown or expired" in error["message"]

        ws, again, _ = await _open(_url(server, sagelab_resume="1", resume_token=second))
        assert again == conversation_id
        await ws.send(json.dumps({"type": "user_message", "text": "still here"}))
        await _reply(ws)
        await ws.close()
        await until(lambda: server.registry.active == 0 and server.registry.reserved == 0)
        stored = await _stored(server, conversation_id)
        assert len(stored["metadata"]["resumes"]) == 2
        assert stored["close_code"] == 1000


async def test_a_token_for_another_agent_is_refused_and_stays_usable(resumable):
    twin = resumable.agents[0].model_copy(update={"id": "scripted-twin"})
    resumable.agents.append(twin)
    async with SagelabServer(_quiet(resumable)) as server:
        ws, conversation_id, token = await _open(_url(server, sagelab_resume="1"))
        _cut(ws)
        await until(lambda: server.sessions.held == 1)
        error, code = await _refusal(_url(server, "scripted-twin", resume_token=str(token)))
        assert code == closecodes.RESUME_REFUSED
        assert "agent 'scripted'" in error["message"]
        ws, again, _ = await _open(_url(server, sagelab_resume="1", resume_token=str(token)))
        assert again == conversation_id
        await ws.close()


async def test_a_conversation_nobody_resumes_ends_and_frees_its_slot(server_config):
    config = _quiet(server_config)
    config.resume_grace_s = 2.0
    config.max_sessions = 1
    async with SagelabServer(config) as server:
        ws, conversation_id, token = await _open(_url(server, sagelab_resume="1"))
        _cut(ws)
        await until(lambda: server.sessions.held == 1, what="held")
        health = await _healthz(server)
        assert (health["active_sessions"], health["held_sessions"]) == (1, 1)
        # A held conversation keeps its slot: a newcomer is refused while it waits.
        error, code = await _refusal(_url(server))
        assert code == closecodes.TRY_AGAIN_LATER and error["error_type"] == "capacity_exceeded"

        await until(lambda: server.registry.active == 0, what="the grace window passed")
        assert server.registry.reserved == 0 and server.sessions.held == 0
        health = await _healthz(server)
        assert (health["active_sessions"], health["held_sessions"]) == (0, 0)
        stored = await _stored(server, conversation_id)
        assert stored["close_code"] == 1006
        assert stored["end_reason"] == "client disconnected; not resumed within 2 s"
        assert "resumes" not in stored["metadata"]
        assert 'sagelab_resumes_total{outcome="expired",protocol="convai"} 1.0' in (
            server.metrics.render().decode()
        )

        error, code = await _refusal(_url(server, resume_token=str(token)))
        assert code == closecodes.RESUME_REFUSED and "unknown or expired" in error["message"]
        ws, _, _ = await _open(_url(server))  # the slot is free again
        await ws.close()


async def test_shutdown_ends_held_conversations(resumable):
    server = SagelabServer(_quiet(resumable))
    await server.start()
    ws, conversation_id, _ = await _open(_url(server, sagelab_resume="1"))
    _cut(ws)
    await until(lambda: server.sessions.held == 1)
    await server.stop()
    assert server.registry.active == 0 and server.registry.reserved == 0
    assert server.sessions.held == 0
    store = ConversationStore(resumable.store_path)
    try:
        stored = store.get_conversation(conversation_id)
    finally:
        store.close()
    assert stored is not None
    assert (stored["close_code"], stored["end_reason"]) == (1001, "server shutting down")


async def test_a_token_takes_over_a_connection_the_server_still_thinks_alive(resumable):
    async with SagelabServer(_quiet(resumable)) as server:
        old, conversation_id, token = await _open(_url(server, sagelab_resume="1"))
        # Half-open: the old connection was never closed; a reconnect comes in anyway.
        new, again, _ = await _open(_url(server, sagelab_resume="1", resume_token=str(token)))
        assert again == conversation_id
        await old.wait_closed()
        assert old.close_code == 1006  # the server dropped it without a close frame
        await new.send(json.dumps({"type": "user_message", "text": "moved over"}))
        await _reply(new)
        assert server.registry.active == 1 and server.sessions.held == 0
        await new.close()
        await until(lambda: server.registry.active == 0 and server.registry.reserved == 0)
        stored = await _stored(server, conversation_id)
        assert stored["metadata"]["resumes"][0]["reason"] == "taken over by a resume"


async def test_clients_that_do_not_ask_get_no_token_and_are_not_held(resumable):
    async with SagelabServer(_quiet(resumable)) as server:
        ws, conversation_id, token = await _open(_url(server))
        assert token is None
        await ws.send(json.dumps({"type": "user_message", "text": "hi"}))
        await _reply(ws)
        _cut(ws)
        await until(lambda: server.registry.active == 0, what="ended at once")
        assert server.sessions.held == 0
        stored = await _stored(server, conversation_id)
        assert (stored["close_code"], stored["end_reason"]) == (1006, "client disconnected")


async def test_a_clean_close_is_never_held(resumable):
    async with SagelabServer(_quiet(resumable)) as server:
        ws, conversation_id, token = await _open(_url(server, sagelab_resume="1"))
        await ws.close()
        await until(lambda: server.registry.active == 0)
        _, code = await _refusal(_url(server, resume_token=str(token)))
        assert code == closecodes.RESUME_REFUSED
        stored = await _stored(server, conversation_id)
        assert stored["close_code"] == 1000


# ------------------------------------------------------------------------------ the relay


async def test_relay_session_resumes_and_the_next_spoken_turn_works(server, speech_dir: Path):
    async with Session.connect_relay(server.http_url, "detail-7", reconnect=FAST) as s:
        session_id = s.conversation_id
        await s.wait_for("audio", timeout=10)
        await s.drop_connection()
        await s.wait_for("resumed", timeout=10)
        assert s.conversation_id == session_id
        mark = s.mark()
        # A fresh WebM stream (header first) on the new socket, decoded from its start.
        await s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=900)
        transcript = await s.wait_for("user_transcript", since=mark, timeout=10)
        await s.wait_for("agent_response", since=mark, timeout=10)
        await s.wait_for("audio", since=mark, timeout=10)
        await s.end()
    assert transcript.data["user_transcript"].startswith("(speech,")
    await until(lambda: server.registry.active == 0 and server.registry.reserved == 0)
    stored = await _stored(server, str(session_id))
    assert stored["protocol"] == "relay" and len(stored["metadata"]["resumes"]) == 1
    assert stored["metadata"]["conversationDetailId"] == "detail-7"
    assert stored["close_code"] == 1000


async def _relay_ready(url: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(url)
    msg = json.loads(await ws.recv())
    assert msg["type"] == "ready", msg
    return ws, msg["data"]


async def _relay_refusal(url: str) -> tuple[list[str], int | None, str | None]:
    ws = await connect(url)
    errors = []
    try:
        while True:
            msg = json.loads(await ws.recv())
            assert msg["type"] == "error", msg
            errors.append(msg["data"]["message"])
    except ConnectionClosed:
        pass
    return errors, ws.close_code, ws.close_reason


async def test_relay_tokens_come_in_ready_and_work_once_for_their_detail_id(server):
    base = f"{server.ws_url}/voice-conversation?conversationDetailId=d1"
    ws, ready = await _relay_ready(base)
    assert "resumeToken" not in ready  # not asked for
    await ws.close()

    ws, ready = await _relay_ready(base + "&resume=1")
    token = ready["resumeToken"]
    _cut(ws)
    await until(lambda: server.sessions.held == 1)

    other = f"{server.ws_url}/voice-conversation?conversationDetailId=d2&resumeToken={token}"
    errors, code, _ = await _relay_refusal(other)
    assert code == closecodes.RESUME_REFUSED and "conversationDetailId" in errors[0]

    ws, again = await _relay_ready(f"{base}&resumeToken={token}")
    assert again["sessionId"] == ready["sessionId"] and again["resumeToken"] != token
    errors, code, reason = await _relay_refusal(f"{base}&resumeToken={token}")
    assert code == closecodes.RESUME_REFUSED and "already used" in errors[0]
    assert reason and reason.startswith("Resume failed:")
    await ws.close()
