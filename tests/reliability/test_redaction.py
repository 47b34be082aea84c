"""API keys and signed URLs never reach the server's log, even at DEBUG, where websockets logs
every request line and header. Checked on a real ``sagelab serve`` process's output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import suppress
from pathlib import Path

from reliability_helpers import INIT, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sagelab.bench.serverproc import free_port
from sagelab.server.auth import hash_key
from sagelab.server.redact import REDACTED, redact

KEY = "sk_live_5c0ff33_do_not_log"
WRONG = "sk_wrong_abad1dea_do_not_log"


def _get(url: str, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"xi-api-key": key})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_debug_log_of_a_real_server_holds_no_credentials(tmp_path: Path):
    config = tmp_path / "agents.yaml"
    config.write_text(
        f"api_keys: ['{hash_key(KEY)}']\n"
        "agents:\n"
        "  - {id: private, backend: scripted, requires_auth: true, first_message: Hi,\n"
        "     options: {replies: [{text: Hello}]}}\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sagelab",
                "serve",
                "--port",
                str(port),
                "--config",
                str(config),
                "--store",
                str(tmp_path / "s.sqlite3"),
                "--log-level",
                "DEBUG",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _health(base), timeout=30, what="server up")
        status, body = _get(f"{base}/v1/convai/conversation/get-signed-url?agent_id=private", KEY)
        assert status == 200
        signed = json.loads(body)["signed_url"]
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(signed).query)[
            "conversation_signature"
        ][0]
        with connect(signed) as ws:  # the token in the request line
            ws.send(INIT)
            assert json.loads(ws.recv(timeout=5))["type"] == "conversation_initiation_metadata"
        ws_url = f"ws://127.0.0.1:{port}/v1/convai/conversation?agent_id=private"
        for url, headers in (
            (ws_url, {"xi-api-key": KEY}),  # the key in a header, accepted
            (ws_url, {"xi-api-key": WRONG}),  # and refused
            (signed, {}),  # a replayed signed URL: refused, and the refusal is logged
        ):
            with connect(url, additional_headers=headers) as ws, suppress(ConnectionClosed):
                ws.send(INIT)
                ws.recv(timeout=5)
        assert _get(f"{base}/v1/convai/agents/private", WRONG)[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    text = log_path.read_text(errors="replace")
    assert "conversation_signature=" + REDACTED in text  # the lines were logged, redacted
    assert "GET /v1/convai/conversation" in text
    assert "xi-api-key: " + REDACTED in text  # websockets' header dump, redacted
    for secret in (KEY, WRONG, token):
        assert secret not in text, f"{secret[:12]}… leaked into the log"


def _health(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        time.sleep(0.1)
        return False


def test_redact_covers_urls_headers_and_json():
    line = (
        "GET /v1/convai/conversation?agent_id=a&conversation_signature=AbC_-9 HTTP/1.1 "
        "xi-api-key: sk_1 {'xi-api-key': 'sk_2'} Authorization: Bearer tok3 "
        '{"signed_url": "wss://h/x?conversation_signature=zz"}'
    )
    cleaned = redact(line)
    for secret in ("AbC_-9", "sk_1", "sk_2", "tok3", "zz"):
        assert secret not in cleaned
    assert cleaned.count(REDACTED) == 5 and "agent_id=a" in cleaned
