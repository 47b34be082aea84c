"""Helpers for reliability tests: raw clients that misbehave on purpose, certificates, waits.

The misbehaving clients are real sockets speaking real WebSocket frames (websockets' sans-I/O
client protocol), because the faults under test live below any well-behaved client library:
a peer that never reads, never answers pings, or resets its TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

INIT = json.dumps({"type": "conversation_initiation_client_data"})


class RawClient:
    """A blocking WebSocket client that does only what the test tells it to.

    It never reads on its own, so it never answers a ping and never drains the server's
    frames: the server sees a client that is connected but silent (half-open) or not reading.
    Use it from a thread (``asyncio.to_thread``) when the server runs on the test's loop.
    """

    def __init__(
        self,
        url: str,
        *,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        uri = parse_uri(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((uri.host, uri.port))
        self.protocol = ClientProtocol(uri, max_size=None)
        request = self.protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        self.response: Response | None = None
        self.frames: list[Frame] = []
        while self.response is None:
            self._pump()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _pump(self) -> bool:
        """Read once from the socket into the protocol; False at EOF."""
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self.response = event
            else:
                self.frames.append(event)
        return bool(data)

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def read_until_closed(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read (answering pings) until the server closes; the JSON messages received."""
        self.sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            while self._pump():
                self._flush()  # pongs and the close reply
        return [json.loads(f.data) for f in self.frames if f.opcode is Opcode.TEXT]

    def reset(self) -> None:
        """Drop the TCP connection with an RST (SO_LINGER 0), as a crashing client would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> float:
    """Wait for ``predicate``; returns the seconds it took. Fails with ``what`` on timeout."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what or predicate}")
        await asyncio.sleep(0.02)
    return loop.time() - start


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or predicate}")
        time.sleep(0.02)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A fresh P-256 certificate for localhost and 127.0.0.1, valid for one day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
