"""Helpers for the security suite: raw HTTP requests and a healthy session that keeps score.

Attacks are made the way an attacker makes them: over real sockets, with hand-built requests
where a well-behaved client library would refuse (duplicate headers, a foreign Host, odd
methods). Beside each attack runs a :class:`HealthySession`, a well-behaved ConvAI client
that measures the WebSocket ping round trip every 50 ms: a server whose event loop stalls
shows it there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sagelab.config import ServerConfig, load_config

INIT = json.dumps({"type": "conversation_initiation_client_data"})


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http_request(
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    host: str | None = "127.0.0.1",
    head_only: bool = False,
) -> HttpAnswer:
    """One HTTP/1.1 request written byte by byte; ``headers`` may repeat a name.

    ``head_only``: read the status line and headers only (a ``101`` upgrade keeps the
    connection open, so reading to the end would wait for the server to give up on it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}:{port}" if ":" not in host else f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PATCH", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    try:
        read = reader.readuntil(b"\r\n\r\n") if head_only else reader.read()
        raw = await asyncio.wait_for(read, timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return HttpAnswer(int(status_line.split()[1]), parsed, payload)


async def ws_outcome(url: str, init: str = INIT, **kwargs: Any) -> tuple[str, dict, int | None]:
    """('open', metadata, None) or ('refused', error event, close code) for one session."""
    async with connect(url, **kwargs) as ws:
        error: dict = {}
        with contextlib.suppress(ConnectionClosed):
            await ws.send(init)
        with contextlib.suppress(ConnectionClosed):
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if msg["type"] == "conversation_initiation_metadata":
                    return "open", msg["conversation_initiation_metadata_event"], None
                if msg["type"] == "error":
                    error = msg["error_event"]
        return "refused", error, ws.close_code


@dataclass
class HealthySession:
    """A well-behaved ConvAI client that measures WebSocket ping round trips all along."""

    url: str
    init: str = INIT
    headers: dict[str, str] = field(default_factory=dict)
    rtts_ms: list[float] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    ws: ClientConnection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> HealthySession:
        self.ws = await connect(self.url, max_size=None, additional_headers=self.headers)
        await self.ws.send(self.init)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]
        await self.wait_for("conversation_initiation_metadata")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                msg = json.loads(frame)
                self.messages.append(msg)
                if msg["type"] == "ping":
                    event_id = msg["ping_event"]["event_id"]
                    await self.ws.send(json.dumps({"type": "pong", "event_id": event_id}))

    async def _ping(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                t0 = time.perf_counter()
                waiter = await self.ws.ping()
                await waiter
                self.rtts_ms.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.05)

    def mark(self) -> int:
        self.rtts_ms.clear()
        return len(self.messages)

    async def wait_for(self, kind: str, since: int = 0, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages[since:]:
                if msg["type"] == kind:
                    return msg
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} event within {timeout:g} s")

    async def say(self, text: str, timeout: float = 15.0) -> str:
        """Send a typed message; the agent's answer."""
        assert self.ws is not None
        since = len(self.messages)
        await self.ws.send(json.dumps({"type": "user_message", "text": text}))
        reply = await self.wait_for("agent_response", since, timeout)
        return str(reply["agent_response_event"]["agent_response"])

    @property
    def worst_rtt_ms(self) -> float:
        assert self.rtts_ms, "no ping round trip was measured"
        return max(self.rtts_ms)


def rss_mb() -> float:
    """Resident memory of this process (the server runs in it), from /proc."""
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def sage_config(tmp_path: Path, **settings: Any) -> ServerConfig:
    """The bundled ``audio-sage`` agent (rules brain, real models), storing into tmp."""
    config = load_config(
        None, env={}, port=0, store_path=str(tmp_path / "store.sqlite3"), ping_interval_s=0.2
    )
    config.agents = [a for a in config.agents if a.id == "audio-sage"]
    spec = config.agents[0]
    options = dict(spec.options)
    options["server_tools"] = {**options["server_tools"], "database": str(tmp_path / "db.sqlite3")}
    spec.options = options
    for name, value in settings.items():
        setattr(config, name, value)
    return config


def text_only_init() -> str:
    """An initiation that asks for text replies only (no speech synthesis to wait for)."""
    return json.dumps(
        {
            "type": "conversation_initiation_client_data",
            "conversation_config_override": {"conversation": {"text_only": True}},
        }
    )


ATTACKER = """
import json, sys, time
from websockets.sync.client import connect

url, init, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with connect(url, max_size=None, compression=plan.get("compression", "deflate")) as ws:
    ws.send(init)
    while json.loads(ws.recv())["type"] != "conversation_initiation_metadata":
        pass
    for step in plan["steps"]:
        frame = json.dumps(step["frame"]).replace("@PAD@", "x" * step.get("pad", 0))
        for i in range(step["count"]):
            ws.send(frame.replace("@I@", str(i)))
            if step.get("pause_every") and i % step["pause_every"] == 0:
                time.sleep(step.get("pause_s", 0.05))
    ws.send(json.dumps({"type": "user_message", "text": "help"}))
    while True:  # until the answer to the last message: everything before it was handled
        msg = json.loads(ws.recv(timeout=60))
        if msg["type"] == "agent_response" and "three things" in json.dumps(msg):
            break
print("done")
"""


async def attack_from_another_process(url: str, init: str, plan: dict[str, Any]) -> str:
    """Run an attacking client in its own Python process, so that its own work (building
    and sending frames) does not run on the event loop the server and the healthy session
    share; returns what it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ATTACKER,
        url,
        init,
        json.dumps(plan),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()
