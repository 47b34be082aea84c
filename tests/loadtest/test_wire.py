"""Endpoints, cheap frame inspection, and the signed-URL path against a real server."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import websocket

from sagelab.audio import wav_bytes
from sagelab.config import load_config
from sagelab.loadtest.serverconf import with_auth
from sagelab.loadtest.wire import (
    SignedUrlError,
    base64_size,
    bytes_per_second,
    close_code,
    fetch_signed_url,
    relay_url,
    wav_base64_seconds,
    ws_url,
)
from sagelab.server.app import BackgroundServer
from sagelab.server.auth import ApiKeyStore


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/convai/conversation?agent_id=scripted"),
        ("https://h.example/pre/", "wss://h.example/pre/v1/convai/conversation?agent_id=scripted"),
    ],
)
def test_ws_url_keeps_prefix_and_swaps_scheme(host: str, expected: str) -> None:
    assert ws_url(host, "scripted") == expected


def test_relay_url_makes_a_fresh_detail_id_per_session() -> None:
    a, b = relay_url("https://h.example/app", "scripted"), relay_url("https://h.example/app", None)
    assert a.startswith("wss://h.example/app/voice-conversation?")
    qa, qb = parse_qs(urlsplit(a).query), parse_qs(urlsplit(b).query)
    assert qa["agent_id"] == ["scripted"] and "agent_id" not in qb
    assert qa["conversationDetailId"] != qb["conversationDetailId"]


def test_bytes_per_second() -> None:
    assert bytes_per_second("pcm_16000") == 32000
    assert bytes_per_second("ulaw_8000") == 8000
    assert bytes_per_second(None) == 32000


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 3200, 3201, 3202])
def test_base64_size_without_decoding(n: int) -> None:
    text = base64.b64encode(bytes(range(256)) * (n // 256) + bytes(n % 256)).decode()
    assert base64_size(text) == n
    assert base64_size(text.encode()) == n


@pytest.mark.parametrize(("samples", "rate"), [(1600, 16000), (2205, 22050), (1, 8000)])
def test_wav_duration_from_the_header(samples: int, rate: int) -> None:
    data = wav_bytes(np.zeros(samples, dtype=np.int16), rate)
    assert wav_base64_seconds(base64.b64encode(data).decode()) == pytest.approx(samples / rate)


def test_wav_with_extra_chunks_is_decoded_in_full() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(3200))
    plain = buffer.getvalue()
    # Put a LIST chunk between fmt and data, as some encoders do.
    extra = b"LIST" + struct.pack("<I", 6) + b"INFOab"
    data = plain[:36] + extra + plain[36:]
    assert wav_base64_seconds(base64.b64encode(data).decode()) == pytest.approx(0.1)


def test_a_chunk_that_is_not_wav_is_refused() -> None:
    with pytest.raises(ValueError, match="not a WAV"):
        wav_base64_seconds(base64.b64encode(b"OggS" + bytes(60)).decode())


def test_close_code() -> None:
    assert close_code(struct.pack("!H", 4001) + b"Session creation failed") == (
        4001,
        "Session creation failed",
    )
    assert close_code(b"") == (1005, "")


@pytest.fixture
def auth_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The bundled agents with ``scripted`` requiring auth, as ``--signed-url`` starts it."""
    key = with_auth(None, "scripted", tmp_path / "agents.json")
    config = load_config(tmp_path / "agents.json", env={}, port=0, store_path=str(tmp_path / "s"))
    config.agents = [a for a in config.agents if a.id == "scripted"]
    with BackgroundServer(config) as srv:
        yield srv, key


def test_with_auth_writes_a_config_that_requires_a_key(tmp_path: Path) -> None:
    key = with_auth(None, "scripted", tmp_path / "agents.json")
    raw = json.loads((tmp_path / "agents.json").read_text())
    assert key not in json.dumps(raw)  # only the key's hash is written
    config = load_config(tmp_path / "agents.json", env={})
    scripted = config.agent("scripted")
    assert scripted is not None and scripted.requires_auth
    assert ApiKeyStore([k for k in config.api_keys if isinstance(k, str)]).check(key)
    greeting = Path(scripted.options["greeting_audio"])
    assert greeting.is_absolute() and greeting.is_file()  # the file moved; its paths still work
    with pytest.raises(ValueError, match="not in"):
        with_auth(None, "nobody", tmp_path / "x.json")


def test_signed_url_opens_a_session_and_nothing_else_does(auth_server) -> None:  # type: ignore[no-untyped-def]
    srv, key = auth_server
    host = srv.http_url
    signed = fetch_signed_url(host, "scripted", key)
    assert "conversation_signature=" in signed
    ws = websocket.create_connection(signed, timeout=10)
    try:
        ws.send(json.dumps({"type": "conversation_initiation_client_data"}))
        first = json.loads(ws.recv())
        assert first["type"] == "conversation_initiation_metadata"
    finally:
        ws.close()

    with pytest.raises(SignedUrlError, match="HTTP 401"):
        fetch_signed_url(host, "scripted", "wrong-key")

    bare = websocket.create_connection(ws_url(host, "scripted"), timeout=10)
    try:
        bare.send(json.dumps({"type": "conversation_initiation_client_data"}))
        opcode, data = bare.recv_data(control_frame=True)
        while opcode == websocket.ABNF.OPCODE_TEXT:
            assert json.loads(data)["type"] == "error"
            opcode, data = bare.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert close_code(data)[0] == 1008
    finally:
        bare.close()
