"""Faults, each a test: the failing session ends (or goes on) with its reason recorded, other
sessions are unaffected, nothing is orphaned in the registry or the store."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from reliability_helpers import INIT, RawClient, until

from sagelab.audio import load_audio, pcm_bytes
from sagelab.bench.serverproc import ServerProcess
from sagelab.client import Session
from sagelab.config import AgentSpec, ServerConfig, ToolSpec, load_config
from sagelab.protocol import closecodes
from sagelab.server.app import SagelabServer
from sagelab.server.store import ORPHAN_REASON, ConversationStore
from sagelab.tools import ToolRegistry


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _errors(server: SagelabServer) -> str:
    return server.metrics.render().decode()


async def _quiet_end(server: SagelabServer) -> None:
    """Nothing left behind: no session in the registry, no conversation open in the store."""
    await until(lambda: server.registry.active == 0 and server.registry.reserved == 0)
    assert server.store is not None
    server.store.flush()
    assert server.store.open_conversations() == []
    assert "unknown_websocket_crash" not in _errors(server)


# ------------------------------------------------------------------- client-side network faults


async def test_tcp_reset_mid_utterance(server, speech_dir):
    speech = load_audio(speech_dir / "goforward.wav")
    chunks = [pcm_bytes(speech[i : i + 1600]) for i in range(0, speech.size, 1600)]
    async with Session.connect(server.http_url, "scripted") as witness:
        await witness.wait_for("agent_response", timeout=5)
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        client = await asyncio.to_thread(RawClient, url)

        def speak_then_crash() -> None:
            client.send_text(INIT)
            for chunk in chunks[: len(chunks) // 2]:  # half the utterance, in real time
                client.send_text(json.dumps({"user_audio_chunk": _b64(chunk)}))
                time.sleep(0.1)
            client.reset()

        await asyncio.to_thread(speak_then_crash)
        await until(lambda: server.registry.active == 1, what="the reset session is gone")

        mark = witness.mark()
        await witness.send_text("are you still there?")
        await witness.wait_for("agent_response", since=mark, timeout=5)
    await _quiet_end(server)
    crashed = [c for c in server.store.list_conversations() if c["close_code"] == 1006]
    assert len(crashed) == 1 and crashed[0]["end_reason"] == "client disconnected"


async def test_half_open_connection_is_found_by_keepalive(server_config):
    """A peer that stays connected but answers nothing (no pong): found within the ping
    interval plus the ping timeout, then the session ends with the reason recorded."""
    server_config.ws_ping_interval_s = 0.3
    server_config.ws_ping_timeout_s = 0.5
    server_config.close_timeout_s = 0.3
    async with SagelabServer(server_config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        client = await asyncio.to_thread(RawClient, url)
        try:
            await asyncio.to_thread(client.send_text, INIT)
            await until(lambda: server.registry.active == 1, what="session registered")
            # Interval + timeout + close timeout is 1.1 s; the margin is for a loaded machine.
            await until(lambda: server.registry.active == 0, timeout=6, what="half-open found")
        finally:
            client.close()
        await _quiet_end(server)
        [stored] = server.store.list_conversations()
    assert stored["close_code"] == 1006
    assert "no pong to a keepalive ping within 0.5 s" in stored["end_reason"]


# ----------------------------------------------------------------------------- tool faults


def faulty_tools() -> ToolRegistry:
    """Server tools that hang and raise (loaded by import path, like any server tools)."""
    registry = ToolRegistry()

    @registry.tool
    async def slow_lookup(city: str) -> str:
        """Never answers in time.

        Args:
            city: City name.
        """
        await asyncio.sleep(3600)  # cancelled by the call's timeout
        return "too late"

    @registry.tool
    def broken_lookup(city: str) -> str:
        """Always raises.

        Args:
            city: City name.
        """
        raise RuntimeError(f"database for {city} is gone")

    return registry


def _tool_config(config: ServerConfig) -> ServerConfig:
    params = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    config.agents = [
        AgentSpec(
            id="toolish",
            first_message="",
            backend="scripted",
            tools=[
                ToolSpec(
                    name="slow_lookup", type="server", parameters=params, response_timeout_secs=0.5
                ),
                ToolSpec(name="broken_lookup", type="server", parameters=params),
            ],
            options={
                "server_tools": {"factory": f"{__name__}:faulty_tools"},
                "replies": [
                    {
                        "text": "Slow: {result}",
                        "tool_call": {"name": "slow_lookup", "parameters": {"city": "Oslo"}},
                    },
                    {
                        "text": "Broken: {result}",
                        "tool_call": {"name": "broken_lookup", "parameters": {"city": "Oslo"}},
                    },
                    {"text": "Still here."},
                ],
            },
        )
    ]
    return config


async def test_a_tool_that_hangs_or_raises_is_an_error_result_and_the_session_goes_on(
    server_config,
):
    async with SagelabServer(_tool_config(server_config)) as server:
        async with Session.connect(server.http_url, "toolish") as s:
            replies = []
            for _ in range(3):
                mark = s.mark()
                await s.send_text("look it up")
                replies.append(await s.wait_for("agent_response", since=mark, timeout=10))
            results = s.timeline.of_type("agent_tool_response")
            assert [r.data["is_error"] for r in results] == [True, True]
            texts = [r.data["agent_response"] for r in replies]
            assert "slow_lookup did not finish within 0.5 s" in texts[0]
            assert "broken_lookup failed: database for Oslo is gone" in texts[1]
            assert texts[2] == "Still here." and not s.closed
        await _quiet_end(server)
        stored = server.store.get_conversation(s.conversation_id)
    assert [c["is_error"] for c in stored["tool_calls"]] == [True, True]


# ------------------------------------------------------------------ model faults (audio-sage)


def _sage(tmp_path: Path, agent_id: str, **changes: object) -> AgentSpec:
    config = load_config(None, env={})
    spec = next(a for a in config.agents if a.id == "audio-sage").model_copy(deep=True)
    spec.id = agent_id
    options = dict(spec.options)
    options["server_tools"] = {**options["server_tools"], "database": str(tmp_path / "db.sqlite3")}
    options.update(changes)
    spec.options = options
    return spec


async def test_stt_and_tts_exceptions_are_reported_and_the_session_goes_on(
    server_config, tmp_path, speech_dir
):
    """Faults injected through configuration, into the real models: a decoding option Whisper
    chokes on at transcription time, and a Piper speed that makes the ONNX graph fail."""
    server_config.agents = [
        _sage(tmp_path, "deaf-sage", stt={"temperature": "hot"}),
        _sage(tmp_path, "mute-sage", tts={"length_scale": float("nan")}),
    ]
    async with SagelabServer(server_config) as server:
        async with Session.connect(server.http_url, "deaf-sage") as deaf:
            await deaf.wait_for("agent_response", timeout=30)
            await deaf.wait_agent_done(timeout=30)
            mark = deaf.mark()
            await deaf.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=800)
            error = await deaf.wait_for("error", since=mark, timeout=30)
            assert error.data["error_type"] == "asr_transcription_error"
            assert "speech-to-text failed" in error.data["message"]
            mark = deaf.mark()
            await deaf.send_text("what can you do")
            await deaf.wait_for("audio", since=mark, timeout=30)  # typed turns still work
            assert not deaf.closed

        async with Session.connect(server.http_url, "mute-sage") as mute:
            error = await mute.wait_for("error", timeout=30)  # the greeting cannot be spoken
            assert error.data["error_type"] == "tts_cascade_error"
            mark = mute.mark()
            await mute.send_text("what can you do")
            reply = await mute.wait_for("agent_response", since=mark, timeout=30)
            assert "search" in reply.data["agent_response"]  # the text still arrives
            assert not mute.closed
        await _quiet_end(server)


# --------------------------------------------------------------------- upstream (relay) fault


async def test_upstream_disconnect_in_the_relay_ends_the_session_with_the_reason(server, tmp_path):
    """``server`` plays ElevenLabs; its side of the upstream connection drops without a
    close frame. The middle server tells its client why and closes 1002; a new session works."""
    config = load_config(None, env={}, port=0, store_path=str(tmp_path / "middle.sqlite3"))
    config.agents = [
        AgentSpec(
            id="relayed",
            backend="elevenlabs",
            first_message="Hello from upstream.",
            options={"base_url": server.http_url, "agent_id": "scripted"},
        )
    ]
    async with SagelabServer(config) as middle:
        async with Session.connect(middle.http_url, "relayed") as client:
            await client.wait_for("agent_response", timeout=10)
            await until(lambda: server.registry.active == 1, what="upstream session open")
            upstream = server.registry.get(server.registry.ids()[0])
            upstream.transport.ws.transport.abort()  # type: ignore[union-attr]
            error = await client.wait_for("error", timeout=10)
            await client.wait_closed(timeout=10)
        assert error.data["error_type"] == "upstream_error"
        assert "upstream closed (1006" in error.data["message"]
        assert client.close_code == closecodes.OPERATIONAL

        async with Session.connect(middle.http_url, "relayed") as again:
            await again.wait_for("agent_response", timeout=10)
        await _quiet_end(middle)
        stored = middle.store.get_conversation(client.conversation_id)
        assert stored["close_code"] == 1002 and "upstream closed" in stored["end_reason"]


# ------------------------------------------------------------------- the server process dies


async def test_sigkill_mid_session_keeps_the_store_and_a_restart_serves(tmp_path: Path):
    store_path = tmp_path / "store.sqlite3"
    first = ServerProcess(store_path=str(store_path), agents=["scripted"])
    await asyncio.to_thread(first.__enter__)
    try:
        async with Session.connect(first.http_url, "scripted") as s:
            await s.wait_for("agent_response", timeout=10)
            mark = s.mark()
            await s.send_text("hello there")
            reply = await s.wait_for("agent_response", since=mark, timeout=10)
            await s.wait_for("audio", since=mark, timeout=10)  # mid-reply
            await asyncio.sleep(0.3)  # the store commits within milliseconds; leave it room
            os.kill(first.pid, signal.SIGKILL)
            await s.wait_closed(timeout=10)
        assert s.close_code == 1006
    finally:
        first.__exit__(None, None, None)
    assert first.proc is not None and first.proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(store_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with ConversationStore(store_path) as store:
        killed = store.get_conversation(s.conversation_id)
    assert killed is not None and killed["ended_at"] is None  # nobody could end it
    turns = [(t["role"], t["text"]) for t in killed["turns"]]
    assert turns[0][0] == "agent" and turns[0][1].startswith("Hello!")
    assert ("agent", reply.data["agent_response"]) in turns

    second = ServerProcess(store_path=str(store_path), agents=["scripted"])
    await asyncio.to_thread(second.__enter__)
    try:
        async with Session.connect(second.http_url, "scripted") as again:
            await again.wait_for("agent_response", timeout=10)
    finally:
        second.__exit__(None, None, None)
    with ConversationStore(store_path) as store:
        recovered = store.get_conversation(s.conversation_id)
        assert store.open_conversations() == []
    assert recovered is not None
    assert (recovered["end_reason"], recovered["close_code"]) == (ORPHAN_REASON, 1006)
    assert len(recovered["turns"]) == len(killed["turns"])  # the restart changed no turn
