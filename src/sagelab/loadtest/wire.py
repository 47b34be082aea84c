"""Endpoints and cheap frame inspection for load-test users (no locust, no gevent here).

The reader of a load-test user runs for every frame of every session, so it measures what it
needs without decoding audio: the length of a base64 payload follows from its text, and a
relay WAV chunk's rate from its first bytes.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlencode, urlsplit, urlunsplit

from sagelab.audio import SAMPLE_RATE

CONVAI_PATH = "/v1/convai/conversation"
RELAY_PATH = "/voice-conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"


def _join(host: str, path: str, query: dict[str, str], *, websocket: bool) -> str:
    parts = urlsplit(host)
    scheme = parts.scheme
    if websocket:
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    base = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, base + path, urlencode(query), ""))


def ws_url(host: str, agent_id: str, path: str = CONVAI_PATH) -> str:
    """``http://h:p[/prefix]`` → ``ws://h:p[/prefix]/v1/convai/conversation?agent_id=…``.

    Mirrors the SDK's ``build_ws_url`` (scheme swapped, path prefix kept) so a load test
    reaches the same endpoint the official client would for the same ``--host``.
    """
    return _join(host, path, {"agent_id": agent_id}, websocket=True)


def relay_url(host: str, agent_id: str | None, detail_id: str | None = None) -> str:
    """The relay route with a fresh ``conversationDetailId`` (the web app makes one per call).

    ``agent_id`` is a sagelab extension: without it the server uses its ``relay_agent``.
    """
    query = {"conversationDetailId": detail_id or uuid.uuid4().hex}
    if agent_id:
        query["agent_id"] = agent_id
    return _join(host, RELAY_PATH, query, websocket=True)


class SignedUrlError(RuntimeError):
    """The server would not sign a URL; the message says what it answered."""


def fetch_signed_url(host: str, agent_id: str, api_key: str | None, timeout: float = 10.0) -> str:
    """Ask ``get-signed-url`` for a single-use conversation URL, exactly as the SDK does.

    Blocking ``urllib``: under locust, gevent's monkey patching makes it cooperative.
    """
    url = _join(host, SIGNED_URL_PATH, {"agent_id": agent_id}, websocket=False)
    request = urllib.request.Request(url, headers={"xi-api-key": api_key or ""})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise SignedUrlError(f"get-signed-url answered HTTP {exc.code}: {detail}") from exc
    signed = body.get("signed_url") if isinstance(body, dict) else None
    if not isinstance(signed, str):
        raise SignedUrlError(f"get-signed-url answered without a signed_url: {body!r:.300}")
    return signed


def open_socket(url: str, timeout: float, source_address: str) -> socket.socket:
    """A connected (and for ``wss``, TLS-wrapped) socket to ``url``'s host that leaves from
    ``source_address``: websocket-client takes a ready socket but cannot bind one itself.

    A generator with several addresses spreads its sessions over them this way, and a test
    gives each worker its own loopback address as if it were its own machine.
    """
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection(
        (host, port), timeout=timeout, source_address=(source_address, 0)
    )
    if not secure:
        return sock
    try:
        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except Exception:
        sock.close()
        raise


def base64_size(text: str | bytes) -> int:
    """Bytes a base64 string decodes to, without decoding it."""
    n = len(text)
    if n == 0:
        return 0
    tail = text[-2:]
    pad = tail.count("=") if isinstance(tail, str) else tail.count(b"=")
    return n * 3 // 4 - pad


def bytes_per_second(audio_format: str | None) -> int:
    """Bytes per second of agent audio for an announced format (``pcm_16000``, ``ulaw_8000``)."""
    kind, _, rate = (audio_format or "pcm_16000").partition("_")
    return int(rate or SAMPLE_RATE) * (1 if kind == "ulaw" else 2)


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF, fmt chunk, data chunk header


def wav_base64_seconds(text: str) -> float:
    """Duration of a base64 WAV file (a relay ``audio_chunk``), decoding only its header.

    Standard 44-byte headers (what sagelab and most encoders write) are read from the first
    60 base64 characters; any other layout is decoded in full.
    """
    try:
        head = _WAV_HEADER.unpack(base64.b64decode(text[:60])[: _WAV_HEADER.size])
    except (ValueError, struct.error) as exc:
        raise ValueError(f"audio_chunk is not a WAV file: {exc}") from exc
    riff, _, wave, fmt, _, _, _, rate, _, align, _, data_id, _ = head
    if riff != b"RIFF" or wave != b"WAVE" or fmt != b"fmt ":
        raise ValueError("audio_chunk is not a WAV file (no RIFF/WAVE/fmt header)")
    if data_id == b"data" and align:
        return (base64_size(text) - _WAV_HEADER.size) / (rate * align)
    return _wav_seconds_slow(base64.b64decode(text))


def _wav_seconds_slow(data: bytes) -> float:
    pos, rate, align = 12, 0, 0
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        if chunk_id == b"fmt ":
            _, _, rate, _, align = struct.unpack_from("<HHIIH", data, pos + 8)
        elif chunk_id == b"data":
            if not rate or not align:
                break
            return min(size, len(data) - pos - 8) / (rate * align)
        pos += 8 + size + (size & 1)
    raise ValueError("audio_chunk WAV has no fmt or data chunk")


def close_code(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a WebSocket close frame's payload; 1005 when it carries no code."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
