"""Medium findings: what one client can make the server hold, and for how long.

Each attack runs against a real server over real sockets; the memory figures are the
resident memory of this process, which is the server's (it runs in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
import urllib.request

import pytest
from security_helpers import (
    HealthySession,
    attack_from_another_process,
    http_request,
    rss_mb,
    sage_config,
    text_only_init,
    ws_outcome,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sagelab.protocol import closecodes
from sagelab.server.app import SagelabServer

KEY = "sk_security_suite_0123456789abcdef"


def _init(**fields: object) -> str:
    return json.dumps({"type": "conversation_initiation_client_data", **fields})


# -- notes and history (the local agent keeps them) ----------------------------------------


@pytest.mark.model
async def test_300_large_notes_and_150_large_messages_leave_rss_within_20_mb(tmp_path):
    # The byte budget would end this session early; raise it (where there is one) so the
    # bounds on what the session keeps are what is tested here.
    config = sage_config(tmp_path)
    if "max_bytes_per_s" in type(config).model_fields:
        config.max_bytes_per_s = 1 << 30
    plan = {
        "steps": [
            {
                "frame": {"type": "contextual_update", "text": "@PAD@", "context_id": "c@I@"},
                "pad": 250 * 1024,
                "count": 300,
                "pause_every": 20,  # stay under the message rate
            },
            {
                "frame": {"type": "user_message", "text": "@PAD@"},
                "pad": 200 * 1024,
                "count": 150,
                "pause_every": 1,
                "pause_s": 0.02,
            },
        ]
    }
    async with SagelabServer(config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=audio-sage"
        async with HealthySession(url, init=text_only_init()) as healthy:
            await healthy.say("help")
            gc.collect()
            start = rss_mb()
            healthy.mark()
            await attack_from_another_process(url, text_only_init(), plan)
            rtts = list(healthy.rtts_ms)
            await asyncio.sleep(0.5)
            gc.collect()
            grown = rss_mb() - start
            assert "I can do three things" in await healthy.say("help")
    p50 = sorted(rtts)[len(rtts) // 2]
    print(f"RSS grew {grown:.1f} MB; ping rtt ms p50 {p50:.1f} max {max(rtts):.1f}")
    assert grown < 20, f"RSS grew {grown:.1f} MB"
    assert max(rtts) < 250, rtts


# -- the initiation frame, dynamic variables, the store ------------------------------------


async def test_an_oversized_initiation_frame_is_refused(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    state, error, code = await ws_outcome(url, init=_init(user_id="u" * (100 * 1024)))
    assert (state, code, error.get("error_type")) == (
        "refused",
        closecodes.TOO_BIG,
        "message_too_large",
    )


@pytest.mark.parametrize(
    "variables",
    [
        {f"v{i}": "x" for i in range(200)},  # too many
        {"blob": "x" * 20_000},  # one too large
        {f"v{i}": "x" * 4000 for i in range(12)},  # too large together
    ],
    ids=["count", "one", "total"],
)
async def test_dynamic_variables_are_bounded(server, variables):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    state, error, code = await ws_outcome(url, init=_init(dynamic_variables=variables))
    assert (state, code, error.get("error_type")) == (
        "refused",
        closecodes.INVALID_INPUT,
        "dynamic_variables_too_large",
    )
    # Real ones still work.
    state, _, _ = await ws_outcome(url, init=_init(dynamic_variables={"name": "Ada", "n": 3}))
    assert state == "open"


async def test_anonymous_sessions_cannot_fill_the_store(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    # Compressible, so cheap on the wire: 60 KiB of variables per session.
    init = _init(dynamic_variables={f"v{i}": "A" * 3000 for i in range(20)})
    for _ in range(20):
        await ws_outcome(url, init=init)
    server.store.flush()
    path = server.store.path
    size = sum(
        os.path.getsize(p) for p in (path, f"{path}-wal", f"{path}-shm") if os.path.exists(p)
    )
    assert size < 2 * 1024 * 1024, f"store grew to {size} bytes"


# -- session slots -------------------------------------------------------------------------


async def test_silent_anonymous_connections_cannot_hold_every_slot(server_config):
    server_config.max_sessions = 6
    server_config.api_keys = [KEY]
    async with SagelabServer(server_config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        silent = []
        for _ in range(6):  # connect, upgrade, never send the initiation
            with contextlib.suppress(Exception):
                silent.append(await connect(url))
        try:
            health = await http_request(server.port, "GET", "/healthz", [("xi-api-key", KEY)])
            assert 1 <= health.json()["starting_sessions"] <= server.registry.max_starting_anonymous
            # A client with a key still gets a slot while the silent ones wait.
            state, _, _ = await ws_outcome(url, additional_headers={"xi-api-key": KEY})
            assert state == "open"
            # And the silent ones are dropped well before the old 10 s.
            t0 = time.monotonic()
            while server.registry.starting and time.monotonic() - t0 < 8:
                await asyncio.sleep(0.1)
            assert server.registry.starting == 0
            assert time.monotonic() - t0 < 5
            state, _, _ = await ws_outcome(url)
            assert state == "open"
        finally:
            for client in silent:
                await client.close()


# -- bytes per second across frame types ---------------------------------------------------


async def test_a_compressed_flood_of_large_activity_frames_is_seen_as_fast(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    pad = "a" * (200 * 1024)  # deflates to almost nothing on the wire
    async with HealthySession(url) as healthy:
        healthy.mark()
        async with connect(url, compression="deflate") as ws:
            await ws.send(_init())
            error: dict = {}
            with contextlib.suppress(ConnectionClosed):
                for _ in range(100):  # 20 frames per second: far below the message rate
                    await ws.send(json.dumps({"type": "user_activity", "pad": pad}))
                    await asyncio.sleep(0.05)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if msg["type"] == "error":
                        error = msg["error_event"]
        assert ws.close_code == closecodes.INVALID_INPUT
        assert error.get("error_type") == "byte_rate_exceeded"
        assert healthy.worst_rtt_ms < 250, healthy.rtts_ms


# -- signed URLs ---------------------------------------------------------------------------


async def test_a_capacity_refusal_does_not_spend_the_signed_url(server_config):
    server_config.max_sessions = 1
    server_config.api_keys = [KEY]
    server_config.agents[0].requires_auth = True
    async with SagelabServer(server_config) as server:

        def signed_url() -> str:
            request = urllib.request.Request(
                f"{server.http_url}/v1/convai/conversation/get-signed-url?agent_id=scripted",
                headers={"xi-api-key": KEY},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(json.loads(response.read())["signed_url"])

        url = await asyncio.to_thread(signed_url)
        direct = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        async with HealthySession(direct, headers={"xi-api-key": KEY}):  # the only slot
            state, error, code = await ws_outcome(url)
            assert (state, code) == ("refused", closecodes.TRY_AGAIN_LATER), error
        deadline = time.monotonic() + 5  # the holder's slot is given back
        while server.registry.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        state, error, _ = await ws_outcome(url)
        assert state == "open", error


async def test_reset_anonymous_resumable_sessions_cannot_hold_every_slot(server_config):
    server_config.max_sessions = 8
    server_config.resume_grace_s = 30
    async with SagelabServer(server_config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        for _ in range(8):
            ws = await connect(f"{url}&sagelab_resume=1")
            await ws.send(_init())
            await ws.recv()  # the metadata, with its resume token
            assert ws.transport is not None
            ws.transport.abort()  # vanish without a close frame, as a dropped network does
        deadline = time.monotonic() + 5
        while server.registry.active > server.sessions.held and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.sessions.held == server.registry.max_starting_anonymous == 4
        # The slots of the sessions that were not held are free for a newcomer.
        state, error, _ = await ws_outcome(url)
        assert state == "open", error
