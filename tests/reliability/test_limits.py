"""Limits, each with its error and documented close code: audio bytes per second, messages per
second, conversation duration, and slow readers (backpressure, then a close, never a queue)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reliability_helpers import INIT, RawClient, until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sagelab.audio import pcm_bytes, silence
from sagelab.client import Session
from sagelab.protocol import closecodes
from sagelab.server.app import SagelabServer
from sagelab.server.capacity import CapacityError, SessionRegistry
from sagelab.server.limits import TokenBucket

CHUNK = base64.b64encode(pcm_bytes(silence(100))).decode()  # 100 ms of 16 kHz PCM: 3200 bytes


async def _open(server: SagelabServer):  # type: ignore[no-untyped-def]
    ws = await connect(f"{server.ws_url}/v1/convai/conversation?agent_id=scripted")
    await ws.send(INIT)
    assert json.loads(await ws.recv())["type"] == "conversation_initiation_metadata"
    return ws


async def _flood(ws, frame: str, limit: int = 10_000) -> tuple[int, dict, int | None]:  # type: ignore[no-untyped-def]
    """Send ``frame`` as fast as possible until the server refuses; (frames sent, error, code)."""
    sent = 0
    with contextlib.suppress(ConnectionClosed):
        while sent < limit:
            await ws.send(frame)
            sent += 1
            if sent % 20 == 0:
                await asyncio.sleep(0)  # let the reader see the close
    error: dict = {}
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "error":
                error = msg["error_event"]
    return sent, error, ws.close_code


async def test_audio_in_real_time_passes_and_a_flood_is_refused(server_config, speech_dir):
    server_config.audio_burst_s = 0.5  # 32 kB at the default 64 kB/s: twice real time
    async with (
        SagelabServer(server_config) as server,
        Session.connect(server.http_url, "scripted") as witness,
    ):
        await witness.wait_for("agent_response", timeout=5)
        async with Session.connect(server.http_url, "scripted") as honest:
            await honest.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=600)
            await honest.wait_for("user_transcript", timeout=5)
            assert not honest.closed and not honest.timeline.of_type("error")

        ws = await _open(server)
        sent, error, code = await _flood(ws, json.dumps({"user_audio_chunk": CHUNK}))
        assert code == closecodes.INVALID_INPUT
        assert error["error_type"] == "audio_rate_exceeded"
        assert "64000 bytes/s" in error["message"] and "real time" in error["message"]
        # Refused after about the burst (10 chunks), not after the whole flood was buffered.
        assert sent < 1_000

        mark = witness.mark()
        await witness.send_text("still fine?")
        await witness.wait_for("agent_response", since=mark, timeout=5)
        assert not witness.closed


async def test_a_message_flood_is_refused(server_config):
    server_config.max_messages_per_s = 20
    async with SagelabServer(server_config) as server:
        ws = await _open(server)
        sent, error, code = await _flood(ws, json.dumps({"type": "user_activity"}))
        assert code == closecodes.INVALID_INPUT
        assert error["error_type"] == "message_rate_exceeded" and "20 messages" in error["message"]
        assert sent < 1_000


async def test_conversation_longer_than_max_duration_ends_normally_with_the_reason(
    server_config,
):
    server_config.max_duration_s = 0.5
    async with SagelabServer(server_config) as server:
        async with Session.connect(server.http_url, "scripted") as s:
            await s.wait_closed(timeout=5)
            assert (s.close_code, s.close_reason) == (closecodes.NORMAL, "max_duration_exceeded")
        server.store.flush()
        stored = server.store.get_conversation(s.conversation_id)
        assert stored["end_reason"] == "max_duration_exceeded" and stored["close_code"] == 1000


async def test_a_client_that_stops_reading_is_closed_not_buffered(server_config):
    """The client reads nothing: sends block on websockets' write buffer (backpressure), and
    after ``send_timeout_s`` the session is closed; the server's buffer stays bounded."""
    server_config.agents[0].output_format = "pcm_48000"  # 3x the bytes: fills buffers sooner
    server_config.send_timeout_s = 0.5
    server_config.close_timeout_s = 0.5
    server_config.socket_send_buffer_bytes = 16 * 1024  # the kernel's share of the backlog
    server_config.ws_ping_interval_s = None  # isolate the slow-reader path from keepalive
    async with SagelabServer(server_config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        client = await asyncio.to_thread(RawClient, url, rcvbuf=4096)
        try:
            await asyncio.to_thread(client.send_text, INIT)
            await until(lambda: server.registry.active == 1, what="session registered")
            conv = server.registry.get(server.registry.ids()[0])
            buffered: list[int] = []

            def closed() -> bool:
                transport = conv.transport.ws.transport  # type: ignore[union-attr]
                buffered.append(transport.get_write_buffer_size())
                return server.registry.active == 0

            await until(closed, timeout=20, what="slow reader closed")
        finally:
            client.close()
    assert conv.close_code == closecodes.INVALID_INPUT  # type: ignore[union-attr]
    assert "slow reader" in conv.end_reason  # type: ignore[union-attr]
    # Backpressure held: websockets' 32 KiB high-water mark plus the few frames in flight.
    assert max(buffered) < 128 * 1024
    assert conv.transport.stalled  # type: ignore[union-attr]


# ------------------------------------------------------------------ the limiter on its own


@given(
    rate=st.floats(1, 1e6),
    burst=st.floats(1, 1e6),
    takes=st.lists(st.tuples(st.floats(0, 10), st.floats(0, 2e5)), max_size=40),
)
def test_token_bucket_never_admits_more_than_burst_plus_rate_times_time(rate, burst, takes):
    bucket = TokenBucket(rate, burst, now=0.0)
    now = admitted = 0.0
    for dt, amount in takes:
        now += dt
        if bucket.take(amount, now):
            admitted += amount
        assert admitted <= burst + rate * now + 1e-6 * (burst + rate * now)
    # After a full refill, a take of the whole burst succeeds again.
    assert bucket.take(burst, now + burst / rate + 1)


def test_reservations_are_released_once_and_per_key():
    registry = SessionRegistry(max_sessions=3, max_sessions_per_key=1)
    a = registry.reserve("k1", "team-a")
    with pytest.raises(CapacityError, match="team-a is at its limit of 1"):
        registry.reserve("k1", "team-a")
    b = registry.reserve("k2", key_limit=2)
    registry.reserve("k2", key_limit=2)
    with pytest.raises(CapacityError, match="limit of 3 concurrent sessions"):
        registry.reserve()
    a.release()
    a.release()  # a second release gives nothing back twice
    assert registry.reserved == 2 and registry.reserved_for("k1") == 0
    b.release()
    assert registry.reserved_for("k2") == 1
    registry.accepting = False
    with pytest.raises(CapacityError, match="shutting down"):
        registry.reserve()


async def test_relay_audio_is_limited_by_what_it_decodes_to_not_only_its_bytes(server, speech_dir):
    """Opus is small: speech sent at once can stay within the relay's byte budget while it
    decodes to far more than real time allows; the server refuses it for that."""
    from sagelab.audio import encode_webm_opus, load_audio
    from sagelab.client import SessionError

    speech = load_audio(speech_dir / "goforward.wav")
    long_speech = np.concatenate([speech] * 10)  # ~24 s
    async with Session.connect_relay(server.http_url, "flood") as s:
        await s.wait_for("agent_response", timeout=5)
        with contextlib.suppress(SessionError):
            await s.send_audio(long_speech, realtime=False)
        error = await s.wait_for("error", timeout=10)
        await until(lambda: s.closed, timeout=10)
    assert "decodes to more than 2 times real time" in error.data["message"], error.data
    assert s.close_code == closecodes.INVALID_INPUT
    # The premise: the first 12 s, more than the 10 s the decoded budget allows at once, fit
    # in the byte budget (2 x 16 kB/s for 5 s), so only the decoded budget can refuse them.
    assert sum(len(c) for c in encode_webm_opus(long_speech[: 12 * 16_000])) < 2 * 16_000 * 5
