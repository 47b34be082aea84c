"""The plain HTTP routes: health, Prometheus metrics, signed URLs, and 404s that explain."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sagelab.client import Session
from sagelab.config import load_config
from sagelab.server.app import SagelabServer


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


async def _aget(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    import asyncio

    return await asyncio.to_thread(_get, url, headers)


async def test_healthz_reports_version_and_active_sessions(server):
    status, body, ctype = await _aget(f"{server.http_url}/healthz")
    health = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert health["status"] == "ok" and health["active_sessions"] == 0
    assert "scripted" in health["agents"]
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("agent_response", timeout=5)
        _, body, _ = await _aget(f"{server.http_url}/healthz")
        assert json.loads(body)["active_sessions"] == 1


async def test_metrics_are_prometheus_text_with_session_and_message_counts(server):
    async with Session.connect(server.http_url, "scripted") as s:
        await s.wait_for("agent_response", timeout=5)
        await s.send_text("hello")
        await s.wait_for(
            "agent_response", since=2, predicate=lambda e: "heard" in e.data["agent_response"]
        )
    status, body, ctype = await _aget(f"{server.http_url}/metrics")
    text = body.decode()
    assert status == 200 and ctype.startswith("text/plain")
    assert 'sagelab_sessions_total{agent="scripted",protocol="convai"} 1.0' in text
    assert 'sagelab_messages_total{direction="in",type="user_message"} 1.0' in text
    assert "sagelab_time_to_first_audio_seconds_count" in text


async def test_unknown_route_is_a_json_404(server):
    status, body, _ = await _aget(f"{server.http_url}/v1/nothing")
    assert status == 404 and json.loads(body)["detail"]["status"] == "not_found"


@pytest.fixture
async def keyed_server(tmp_path):  # type: ignore[no-untyped-def]
    config = load_config(None, env={}, port=0, store_path=str(tmp_path / "s.db"), api_keys=["sk-1"])
    config.agents = [a for a in config.agents if a.id == "scripted"]
    async with SagelabServer(config) as srv:
        yield srv


async def test_signed_url_needs_a_key_and_a_known_agent(keyed_server):
    base = f"{keyed_server.http_url}/v1/convai/conversation/get-signed-url"
    assert (await _aget(f"{base}?agent_id=scripted"))[0] == 401
    assert (await _aget(f"{base}?agent_id=scripted", {"xi-api-key": "nope"}))[0] == 401
    assert (await _aget(base, {"xi-api-key": "sk-1"}))[0] == 422
    assert (await _aget(f"{base}?agent_id=ghost", {"xi-api-key": "sk-1"}))[0] == 404
    status, body, _ = await _aget(f"{base}?agent_id=scripted", {"xi-api-key": "sk-1"})
    url = json.loads(body)["signed_url"]
    assert status == 200
    assert url.startswith(
        f"{keyed_server.ws_url}/v1/convai/conversation?agent_id=scripted&conversation_signature="
    )


async def test_signed_url_is_single_use(keyed_server):
    keyed_server.config.agents[0].requires_auth = True
    async with Session.connect(
        keyed_server.http_url, "scripted", api_key="sk-1", requires_auth=True
    ) as s:
        await s.wait_for("agent_response", timeout=5)
        url = s.url
    from sagelab.client import SessionError

    with pytest.raises(SessionError, match="already used"):
        await Session(url).start()
