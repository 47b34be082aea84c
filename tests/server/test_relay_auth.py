"""Who may open a relay session (``/voice-conversation``): the ConvAI route's credentials, as
a browser can carry them (a signed URL's ``conversation_signature``) or as other clients do (an
``xi-api-key`` header); refusals are session-creation failures, 4001 after an ``error`` event."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sagelab.client import ReconnectPolicy, Session, SessionError
from sagelab.config import ServerConfig
from sagelab.protocol import closecodes
from sagelab.server.app import SagelabServer
from sagelab.server.auth import hash_key

KEY, SMALL_KEY = "sk_relay_team_5d1e0b", "sk_relay_small_9a7c44"


@pytest.fixture
def private(server_config: ServerConfig) -> ServerConfig:
    server_config.agents[0].requires_auth = True  # scripted, the default relay agent
    server_config.api_keys = [hash_key(KEY), {"key": SMALL_KEY, "name": "small", "max_sessions": 1}]
    server_config.resume_grace_s = 10.0
    return server_config


async def _outcome(
    url: str, headers: dict[str, str] | None = None
) -> tuple[str, list[str], int | None, str | None]:
    """('ready' | 'refused', error messages, close code, close reason)."""
    ws = await connect(url, additional_headers=headers)
    errors: list[str] = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            msg: dict[str, Any] = json.loads(await ws.recv())
            if msg["type"] == "ready":
                await ws.close()
                return "ready", errors, None, None
            assert msg["type"] == "error", msg
            errors.append(msg["data"]["message"])
    return "refused", errors, ws.close_code, ws.close_reason


def _relay(server: SagelabServer, detail: str = "d") -> str:
    return f"{server.ws_url}/voice-conversation?conversationDetailId={detail}"


async def test_a_private_agent_refuses_sessions_without_credentials(private):
    async with SagelabServer(private) as server:
        state, errors, code, reason = await _outcome(_relay(server))
        assert (state, code) == ("refused", closecodes.RELAY_SESSION_FAILED)
        assert reason and reason.startswith("Session creation failed: agent 'scripted' requires")
        # The close reason is cut at 123 bytes; the error event says all of how to get in.
        assert "get-signed-url" in errors[0] and "xi-api-key" in errors[0]

        state, errors, code, _ = await _outcome(_relay(server), {"xi-api-key": "sk_wrong_one"})
        assert (state, code) == ("refused", closecodes.RELAY_SESSION_FAILED)
        assert "not a key of this server" in errors[0] and "sk_wrong_one" not in errors[0]
        assert server.registry.reserved == 0


async def test_an_api_key_header_opens_a_relay_session(private):
    async with SagelabServer(private) as server:
        async with Session.connect_relay(server.http_url, "d-key", api_key=KEY) as s:
            greeting = await s.wait_for("agent_response", timeout=5)
            assert greeting.data["agent_response"].startswith("Hello!")
            await s.end()
        assert s.close_code == closecodes.NORMAL


async def test_a_signed_url_opens_a_relay_session_once(private):
    async with SagelabServer(private) as server:
        async with Session.connect_relay(
            server.http_url, "d-signed", agent_id="scripted", api_key=KEY, requires_auth=True
        ) as s:
            await s.wait_for("agent_response", timeout=5)
            assert "conversation_signature=" in s.url
            state, errors, code, _ = await _outcome(s.url)  # the same signature again
            await s.end()
        assert (state, code) == ("refused", closecodes.RELAY_SESSION_FAILED)
        assert "already used" in errors[0] and "single-use" in errors[0]


async def test_a_keys_session_limit_holds_on_the_relay_route(private):
    async with (
        SagelabServer(private) as server,
        Session.connect_relay(server.http_url, "d-small", api_key=SMALL_KEY),
    ):
        state, _, code, reason = await _outcome(
            _relay(server, "d-other"), {"xi-api-key": SMALL_KEY}
        )
        assert (state, code) == ("refused", closecodes.RELAY_SESSION_FAILED)
        assert reason and "small" in reason and "limit of 1" in reason
        assert (await _outcome(_relay(server, "d-big"), {"xi-api-key": KEY}))[0] == "ready"


async def test_a_public_agent_takes_anyone_but_not_a_wrong_key(server_config):
    server_config.api_keys = [hash_key(KEY)]
    async with SagelabServer(server_config) as server:
        assert (await _outcome(_relay(server)))[0] == "ready"
        state, errors, code, _ = await _outcome(_relay(server), {"xi-api-key": "sk_nope"})
        assert (state, code) == ("refused", closecodes.RELAY_SESSION_FAILED)
        assert "not a key of this server" in errors[0]


async def test_a_signed_relay_session_resumes_on_its_token_alone(private):
    policy = ReconnectPolicy(initial_backoff_s=0.05, max_backoff_s=0.3, max_attempts=20)
    async with (
        SagelabServer(private) as server,
        Session.connect_relay(
            server.http_url,
            "d-resume",
            agent_id="scripted",
            api_key=KEY,
            requires_auth=True,
            reconnect=policy,
        ) as s,
    ):
        session_id = s.conversation_id
        await s.wait_for("agent_response", timeout=5)
        await s.drop_connection()
        # The signature was single-use; the resume token is the credential now.
        await s.wait_for("resumed", timeout=10)
        assert s.conversation_id == session_id
        await s.end()


async def test_a_resume_under_another_key_is_refused(private):
    async with SagelabServer(private) as server:
        ws = await connect(_relay(server) + "&resume=1", additional_headers={"xi-api-key": KEY})
        ready = json.loads(await ws.recv())["data"]
        assert ws.transport is not None
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()
        url = f"{_relay(server)}&resumeToken={ready['resumeToken']}"
        state, errors, code, _ = await _outcome(url, {"xi-api-key": SMALL_KEY})
        assert (state, code) == ("refused", closecodes.RESUME_REFUSED)
        assert "another API key" in errors[0]
        assert (await _outcome(url, {"xi-api-key": KEY}))[0] == "ready"


def test_signed_relay_sessions_need_the_agent_they_are_signed_for():
    with pytest.raises(ValueError, match="needs agent_id"):
        Session.connect_relay("http://127.0.0.1:1", "d", requires_auth=True, api_key=KEY)


async def test_a_refused_relay_session_raises_a_clear_session_error(private):
    async with SagelabServer(private) as server:
        with pytest.raises(SessionError, match="requires authentication"):
            await Session.connect_relay(server.http_url, "d-none")
