"""Who gets in: API keys (hashed in the config), signed URLs per key with per-key session limits,
the browser Origin allowlist, the ``convai`` subprotocol, and TLS with a real certificate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.request
from pathlib import Path

import pytest
from reliability_helpers import INIT, self_signed_cert, until
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from sagelab.config import ConfigError, ServerConfig, load_config
from sagelab.protocol import closecodes
from sagelab.server.app import SagelabServer
from sagelab.server.auth import hash_key
from sagelab.server.tls import TlsConfigError

KEY_A, KEY_B = "sk_team_a_7f3c9e", "sk_team_b_18d2aa"


def _private(config: ServerConfig, **settings: object) -> ServerConfig:
    config.agents[0].requires_auth = True
    for name, value in settings.items():
        setattr(config, name, value)
    return config


async def _outcome(url: str, **kwargs: object) -> tuple[str, dict, int | None]:
    """Open a ConvAI session; ('open', metadata, None) or ('refused', error event, close code)."""
    async with connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        error: dict = {}
        with contextlib.suppress(ConnectionClosed):
            await ws.send(INIT)  # a refused session may already be closing
        with contextlib.suppress(ConnectionClosed):
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "conversation_initiation_metadata":
                    return "open", msg, None
                if msg["type"] == "error":
                    error = msg["error_event"]
        return "refused", error, ws.close_code


async def _signed_url(server: SagelabServer, key: str) -> str:
    def get() -> str:
        request = urllib.request.Request(
            f"{server.http_url}/v1/convai/conversation/get-signed-url?agent_id=scripted",
            headers={"xi-api-key": key},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.loads(response.read())["signed_url"])

    return await asyncio.to_thread(get)


async def test_api_key_header_opens_a_private_agent_hashed_in_the_config(server_config):
    config = _private(server_config, api_keys=[hash_key(KEY_A)])
    async with SagelabServer(config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        state, meta, _ = await _outcome(url, additional_headers={"xi-api-key": KEY_A})
        assert state == "open" and meta["conversation_initiation_metadata_event"]

        state, error, code = await _outcome(url)
        assert (state, code, error["error_type"]) == (
            "refused",
            closecodes.INVALID_INPUT,
            "authentication_error",
        )
        assert "get-signed-url" in error["message"] and "xi-api-key" in error["message"]

        state, error, code = await _outcome(url, additional_headers={"xi-api-key": "sk_wrong"})
        assert state == "refused" and code == closecodes.INVALID_INPUT
        assert "not a key of this server" in error["message"]
        assert "sk_wrong" not in error["message"]


async def test_signed_urls_count_against_their_keys_limit(server_config):
    config = _private(
        server_config,
        api_keys=[{"key": hash_key(KEY_A), "name": "team-a", "max_sessions": 1}, KEY_B],
        max_sessions_per_key=2,
    )
    async with SagelabServer(config) as server:
        first = await _signed_url(server, KEY_A)
        async with connect(first) as held:
            await held.send(INIT)
            assert json.loads(await held.recv())["type"] == "conversation_initiation_metadata"
            await until(lambda: server.registry.active == 1, what="first session registered")

            state, error, code = await _outcome(await _signed_url(server, KEY_A))
            assert (state, code) == ("refused", closecodes.TRY_AGAIN_LATER)
            assert error["error_type"] == "key_capacity_exceeded"
            assert "team-a" in error["message"] and "limit of 1" in error["message"]

            # Another key is not affected, up to its own (default) limit of 2.
            for _ in range(2):
                state, _, _ = await _outcome(await _signed_url(server, KEY_B))
                assert state == "open"

        await until(lambda: server.registry.reserved == 0, what="sessions released")
        state, _, _ = await _outcome(await _signed_url(server, KEY_A))
        assert state == "open"  # the slot came back when the held session ended

        replay = await _signed_url(server, KEY_A)
        assert (await _outcome(replay))[0] == "open"
        state, error, code = await _outcome(replay)
        assert state == "refused" and code == closecodes.INVALID_INPUT
        assert "already used" in error["message"] and "single-use" in error["message"]


async def test_origin_allowlist_refuses_other_browsers_with_403(server_config):
    server_config.allowed_origins = ["https://app.example"]
    async with SagelabServer(server_config) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        with pytest.raises(InvalidStatus) as refused:
            await _outcome(url, origin="https://evil.example")
        response = refused.value.response
        assert response.status_code == 403
        detail = json.loads(response.body)["detail"]
        assert detail["status"] == "origin_not_allowed" and "allowed_origins" in detail["message"]

        assert (await _outcome(url, origin="https://app.example"))[0] == "open"
        assert (await _outcome(url))[0] == "open"  # no Origin: not a browser


async def test_convai_subprotocol_is_echoed_only_when_asked(server):
    url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
    async with connect(url, subprotocols=["convai"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "convai"
    async with connect(url) as ws:
        assert ws.subprotocol is None


async def test_tls_with_a_self_signed_certificate(server_config, tmp_path: Path):
    cert, key = self_signed_cert(tmp_path)
    server_config.tls_certfile, server_config.tls_keyfile = str(cert), str(key)
    trust = ssl.create_default_context(cafile=str(cert))
    async with SagelabServer(server_config) as server:
        assert server.http_url.startswith("https://") and server.ws_url.startswith("wss://")

        def health() -> dict:
            with urllib.request.urlopen(f"{server.http_url}/healthz", context=trust) as r:
                return dict(json.loads(r.read()))

        assert (await asyncio.to_thread(health))["status"] == "ok"
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=scripted"
        assert (await _outcome(url, ssl=trust))[0] == "open"
        # Without trusting the certificate the handshake fails; plain ws:// is not spoken.
        with pytest.raises(ssl.SSLCertVerificationError):
            await _outcome(url)
        with pytest.raises(InvalidMessage):
            await _outcome(url.replace("wss://", "ws://"), open_timeout=3)


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [("missing.pem", None, "does not exist"), (None, "key.pem", "tls_certfile is not")],
)
async def test_bad_tls_settings_fail_at_start_and_say_how_to_fix(
    server_config, tmp_path: Path, cert: str | None, key: str | None, message: str
):
    server_config.tls_certfile = str(tmp_path / cert) if cert else None
    server_config.tls_keyfile = str(tmp_path / key) if key else None
    with pytest.raises(TlsConfigError, match=message) as failed:
        await SagelabServer(server_config).start()
    assert "openssl req" in str(failed.value)


def test_keys_hash_command_and_hashed_entries_in_the_config(tmp_path: Path):
    result = CliRunner().invoke(
        __import__("sagelab.cli", fromlist=["app"]).app, ["keys", "hash"], input=KEY_A + "\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == hash_key(KEY_A)

    path = tmp_path / "agents.yaml"
    path.write_text(f"api_keys: ['{result.output.strip()}', {{key: sk_plain, max_sessions: 3}}]")
    config = load_config(path, env={})
    assert len(config.api_keys) == 2
    path.write_text("api_keys: ['sha256:abc']")
    with pytest.raises(ConfigError, match="sagelab keys hash"):
        load_config(path, env={})
