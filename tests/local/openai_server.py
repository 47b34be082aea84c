"""A scripted OpenAI-compatible chat-completions server for tests, speaking real HTTP and SSE.

No LLM runs on the test machine, so this stands in for llama.cpp or OpenAI: each
``POST /v1/chat/completions`` takes the next scripted reply and streams it the way those servers
do (chunked ``text/event-stream``, ``data: {chunk}`` events, ``data: [DONE]``). Every request
body is recorded, so tests can check exactly what the brain sent. It runs on a loopback port in
its own thread, so the client under test uses its real network stack.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Text:
    """Stream ``pieces`` as content deltas; after ``stall_after`` pieces, send only SSE
    comments (keep-alives, no data) until the client goes away."""

    pieces: list[str]
    stall_after: int | None = None


@dataclass(frozen=True)
class Call:
    """One tool call; its arguments JSON is sent in ``fragments``."""

    id: str
    name: str
    fragments: list[str]


@dataclass(frozen=True)
class ToolCalls:
    """Stream tool calls, their argument fragments interleaved round-robin across calls."""

    calls: list[Call]


@dataclass(frozen=True)
class Error:
    """Answer with an HTTP error and an OpenAI-style error body."""

    status: int
    message: str


@dataclass(frozen=True)
class Hang:
    """Accept the request, then send nothing until the client goes away."""


@dataclass(frozen=True)
class Raw:
    """Stream these SSE events verbatim (for malformed streams)."""

    events: list[str]


Reply = Text | ToolCalls | Error | Hang | Raw


@dataclass
class Request:
    """One request as received; header names are lowercase."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedChatServer:
    """Context manager: ``with ScriptedChatServer(reply, ...) as server: server.base_url``.

    ``requests`` records every request; ``disconnected`` is set when the client dropped a
    stream that was still being written.
    """

    def __init__(self, *replies: Reply) -> None:
        self.script: deque[Reply] = deque(replies)
        self.requests: list[Request] = []
        self.disconnected = threading.Event()
        self.closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.scripted = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ScriptedChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streams and keep-alive, as real servers use

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    @property
    def scripted(self) -> ScriptedChatServer:
        return self.server.scripted  # type: ignore[attr-defined,no-any-return]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.scripted.requests.append(
            Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        if not self.scripted.script:
            self._error(500, "the test script has no reply left for this request")
            return
        reply = self.scripted.script.popleft()
        model = str(body.get("model", ""))
        try:
            if isinstance(reply, Error):
                self._error(reply.status, reply.message)
            elif isinstance(reply, Hang):
                self.scripted.closing.wait()
                self.close_connection = True
            elif isinstance(reply, Text):
                self._text(reply, model)
            elif isinstance(reply, ToolCalls):
                self._tool_calls(reply, model)
            else:
                self._start_stream()
                for event in reply.events:
                    self._send_chunk(event.encode())
                self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            self.scripted.disconnected.set()
            self.close_connection = True

    def _text(self, reply: Text, model: str) -> None:
        self._start_stream()
        self._event(_chunk(model, {"role": "assistant", "content": ""}))
        for n, piece in enumerate(reply.pieces):
            if reply.stall_after is not None and n == reply.stall_after:
                self._stall()
                return
            self._event(_chunk(model, {"content": piece}))
        self._event(_chunk(model, {}, "stop"))
        self._done()

    def _tool_calls(self, reply: ToolCalls, model: str) -> None:
        self._start_stream()
        self._event(_chunk(model, {"role": "assistant", "content": None}))
        for index, call in enumerate(reply.calls):
            head = {"index": index, "id": call.id, "type": "function"}
            head["function"] = {"name": call.name, "arguments": ""}
            self._event(_chunk(model, {"tool_calls": [head]}))
        rounds = itertools.zip_longest(*(c.fragments for c in reply.calls))
        for fragments in rounds:
            for index, fragment in enumerate(fragments):
                if fragment is not None:
                    delta = {"index": index, "function": {"arguments": fragment}}
                    self._event(_chunk(model, {"tool_calls": [delta]}))
        self._event(_chunk(model, {}, "tool_calls"))
        self._done()

    def _stall(self) -> None:
        # Comments keep bytes flowing (so only a per-token timeout can fire) and reveal, by a
        # failed write, when the client has dropped the stream.
        while not self.scripted.closing.wait(0.05):
            self._send_chunk(b": keep-alive\n\n")
        self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "test_error", "code": status}})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _event(self, payload: dict[str, Any]) -> None:
        self._send_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _done(self) -> None:
        self._send_chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
