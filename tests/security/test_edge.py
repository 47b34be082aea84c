"""High and low findings at the edge: which pages, hosts and requests reach the server at all.

Each test speaks raw HTTP or WebSocket to a real server on a real port, as a web page in a
browser (with its ``Origin`` and ``Host``) or a hand-written client would.
"""

from __future__ import annotations

import json
import logging

import pytest
from security_helpers import HealthySession, http_request, ws_outcome
from websockets.exceptions import InvalidStatus

from sagelab.server.app import SagelabServer

EVIL = "https://evil.example"
TOOL = {
    "tool_config": {
        "type": "client",
        "name": "exfiltrate",
        "description": "A tool a foreign page would like to plant.",
        "parameters": {"type": "object", "properties": {}},
    }
}


async def test_a_foreign_origin_cannot_open_a_session_on_the_default_server(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    with pytest.raises(InvalidStatus) as refused:
        await ws_outcome(url, origin=EVIL)
    assert refused.value.response.status_code == 403
    assert b"allowed_origins" in refused.value.response.body
    relay = f"{server.ws_url}/voice-conversation?conversationDetailId=d1"
    with pytest.raises(InvalidStatus):
        await ws_outcome(relay, origin=EVIL)
    # Pages on loopback (a notebook, the bundled web app) and clients without an Origin work.
    for origin in ("http://127.0.0.1:8888", "http://localhost:5173", "http://[::1]:3000"):
        state, _, _ = await ws_outcome(url, origin=origin)
        assert state == "open", origin
    assert (await ws_outcome(url))[0] == "open"


async def test_a_foreign_page_cannot_post_a_tool_and_bodies_must_be_json(server):
    body = json.dumps(TOOL).encode()
    # A cross-site form or fetch() with text/plain needs no CORS preflight: refused by Origin.
    answer = await http_request(
        server.port,
        "POST",
        "/v1/convai/tools",
        [("Origin", EVIL), ("Content-Type", "text/plain")],
        body,
    )
    assert answer.status == 403, answer.body
    # The same body without an Origin but not declared as JSON: refused too.
    answer = await http_request(
        server.port, "POST", "/v1/convai/tools", [("Content-Type", "text/plain")], body
    )
    assert answer.status == 415 and answer.json()["detail"]["status"] == "unsupported_media_type"
    listing = await http_request(server.port, "GET", "/v1/convai/tools")
    assert listing.json()["tools"] == []
    # What the official SDK sends still works.
    answer = await http_request(
        server.port, "POST", "/v1/convai/tools", [("Content-Type", "application/json")], body
    )
    assert answer.status == 200 and answer.json()["tool_config"]["name"] == "exfiltrate"


async def test_a_dns_rebinding_host_cannot_patch_agents_or_get_signed_urls(server):
    patch = json.dumps({"conversation_config": {"agent": {"first_message": "pwned"}}}).encode()
    for method, path, body in (
        ("PATCH", "/v1/convai/agents/scripted", patch),
        ("GET", "/v1/convai/agents/scripted", b""),
        ("GET", "/v1/convai/conversation/get-signed-url?agent_id=scripted", b""),
        ("GET", "/metrics", b""),
    ):
        answer = await http_request(
            server.port,
            method,
            path,
            [("Content-Type", "application/json")],
            body,
            host="rebind.evil.example",
        )
        assert answer.status == 421, (method, path, answer.status)
        assert b"rebind.evil.example" not in answer.body or b"allowed_hosts" in answer.body
    assert server.config.agent("scripted").first_message != "pwned"
    # Names this server is reached by still work.
    for host in ("localhost", "127.0.0.1", "[::1]"):
        answer = await http_request(server.port, "GET", "/healthz", host=host)
        assert answer.status == 200, host
    signed = await http_request(
        server.port, "GET", "/v1/convai/conversation/get-signed-url?agent_id=scripted"
    )
    assert signed.json()["signed_url"].startswith(f"ws://127.0.0.1:{server.port}/")


UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


async def test_a_websocket_handshake_with_a_rebinding_host_is_refused(server):
    answer = await http_request(
        server.port,
        "GET",
        "/v1/convai/conversation?agent_id=scripted",
        UPGRADE,
        host="rebind.evil.example",
    )
    assert answer.status == 421, answer.status
    answer = await http_request(
        server.port, "GET", "/v1/convai/conversation?agent_id=scripted", UPGRADE, head_only=True
    )
    assert answer.status == 101


@pytest.mark.parametrize("name", ["Origin", "xi-api-key", "Host"])
async def test_duplicate_headers_get_a_clear_400(server, name):
    values = {
        "Origin": ("http://127.0.0.1:1", EVIL),
        "xi-api-key": ("a", "b"),
        "Host": ("127.0.0.1", "localhost"),
    }[name]
    for path in ("/v1/convai/conversation/get-signed-url?agent_id=scripted", "/healthz"):
        answer = await http_request(
            server.port, "GET", path, [(name, v) for v in values], host=None
        )
        assert answer.status == 400, (path, answer.status, answer.body)
        assert answer.json()["detail"]["status"] == "duplicate_header"
    # A WebSocket handshake with two of them: 400 before the upgrade, not 1011 after it.
    answer = await http_request(
        server.port,
        "GET",
        "/v1/convai/conversation?agent_id=scripted",
        [*UPGRADE, *[(name, v) for v in values]],
        host=None,
    )
    assert answer.status == 400, answer.status


async def test_a_path_with_a_double_slash_does_not_reach_a_websocket_route(server):
    for path in ("//x/voice-conversation?conversationDetailId=d1", "//v1/convai/conversation"):
        answer = await http_request(
            server.port,
            "GET",
            path,
            UPGRADE,
        )
        assert answer.status == 404, (path, answer.status)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "DELETE", "FOO"])
async def test_methods_other_than_get_are_not_served_as_get(server, method):
    answer = await http_request(server.port, method, "/healthz")
    assert answer.status == 405, (method, answer.status)
    answer = await http_request(server.port, method, "/v1/convai/tools")
    assert answer.status == 405, (method, answer.status)


async def test_operator_routes_need_a_key_when_keys_exist(server_config):
    server_config.api_keys = ["sk_operator_0123456789"]
    async with SagelabServer(server_config) as server:
        anonymous = await http_request(server.port, "GET", "/healthz")
        assert anonymous.status == 200 and set(anonymous.json()) == {"status", "version"}
        keyed = await http_request(
            server.port, "GET", "/healthz", [("xi-api-key", "sk_operator_0123456789")]
        )
        assert keyed.json()["agents"] == ["scripted"] and "starting_sessions" in keyed.json()
        assert (await http_request(server.port, "GET", "/metrics")).status == 401
        metrics = await http_request(
            server.port, "GET", "/metrics", [("xi-api-key", "sk_operator_0123456789")]
        )
        assert metrics.status == 200 and b"sagelab" in metrics.body


async def test_the_start_says_what_is_exposed_and_warns_beyond_loopback(server_config, caplog):
    caplog.set_level(logging.INFO, logger="sagelab.server.app")
    async with SagelabServer(server_config):
        pass
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "reachable from this machine only (loopback)" in text
    assert "browser origins allowed: pages served from loopback only" in text
    assert "agent scripted: sessions by anyone" in text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    server_config.host = "0.0.0.0"
    async with SagelabServer(server_config):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("SAGELAB IS EXPOSED" in w for w in warnings), warnings


async def test_a_healthy_session_keeps_its_ping_beside_a_flood_of_refused_requests(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    async with HealthySession(url) as healthy:
        healthy.mark()
        for _ in range(60):
            await http_request(
                server.port, "GET", "/healthz", [("Host", "a"), ("Host", "b")], host=None
            )
            await http_request(server.port, "GET", "/metrics", host="rebind.evil.example")
        assert healthy.worst_rtt_ms < 250, healthy.rtts_ms


async def test_a_multimodal_message_with_only_rich_content_keeps_the_session(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    async with HealthySession(url) as session:
        assert session.ws is not None
        part = {"type": "user_message", "rich_content_id": "rc_1"}
        await session.ws.send(json.dumps({"type": "multimodal_message", "text": part}))
        assert await session.say("hello")  # still open, still answering
        assert session.ws.close_code is None
