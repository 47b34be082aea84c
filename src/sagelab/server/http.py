"""The few plain HTTP routes, served from websockets' ``process_request`` hook.

``/healthz`` and ``/metrics`` for operators, and the signed-URL endpoint the official SDK calls
for ``requires_auth=True``. Anything that is neither one of these nor a WebSocket route gets a
JSON 404 instead of a confusing failed handshake.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from sagelab import __version__
from sagelab.server import access, rest

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

WEBSOCKET_ROUTES = ("/v1/convai/conversation", "/voice-conversation")


def json_response(status: int, body: object) -> Response:
    payload = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    # websockets closes the connection after any answer that is not an upgrade; saying so
    # keeps keep-alive clients (httpx in the SDK) from reusing a closing connection.
    headers["Connection"] = "close"
    return Response(status, HTTPStatus(status).phrase, headers, payload)


def error_response(status: int, code: str, message: str) -> Response:
    # The shape the ElevenLabs API uses for errors, so the SDK's ApiError shows the message.
    return json_response(status, {"detail": {"status": code, "message": message}})


def route(server: SagelabServer, connection: ServerConnection, request: Request) -> Response | None:
    split = urlsplit(request.path)
    path = split.path.rstrip("/") or "/"
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    if path in WEBSOCKET_ROUTES:
        origin = request.headers.get("Origin")
        if not access.origin_allowed(server, origin):
            server.metrics.errors.labels("origin_not_allowed").inc()
            return error_response(
                403,
                "origin_not_allowed",
                f"Origin {origin!r} may not open WebSocket sessions on this server; "
                "add it to allowed_origins in the server configuration",
            )
        return None
    if path == "/healthz":
        return json_response(
            200,
            {
                "status": "ok" if server.registry.accepting else "shutting_down",
                "version": __version__,
                "active_sessions": server.registry.active,  # held ones included
                "held_sessions": server.sessions.held,  # waiting for a resume (resume.py)
                "max_sessions": server.config.max_sessions,
                "agents": [a.id for a in server.config.agents],
            },
        )
    if path == "/metrics":
        body = server.metrics.render()
        headers = Headers(
            [("Content-Type", server.metrics.content_type), ("Content-Length", str(len(body)))]
        )
        headers["Connection"] = "close"
        return Response(200, "OK", headers, body)
    if path == "/v1/convai/conversation/get-signed-url":
        return _signed_url(server, request, query)
    if rest.is_rest_path(path):
        lowered = {k.lower(): v for k, v in request.headers.raw_items()}
        return json_response(*rest.handle(server, "GET", path, query, lowered, b""))
    return error_response(404, "not_found", f"no route for {path}")


def _signed_url(server: SagelabServer, request: Request, query: dict[str, str]) -> Response:
    key = server.api_keys.identify(request.headers.get("xi-api-key"))
    if server.config.api_keys and key is None:
        server.metrics.errors.labels("invalid_api_key").inc()
        return error_response(
            401, "invalid_api_key", "missing or invalid xi-api-key header for this server"
        )
    agent_id = query.get("agent_id")
    if not agent_id:
        return json_response(
            422,
            {
                "detail": [
                    {"loc": ["query", "agent_id"], "msg": "Field required", "type": "missing"}
                ]
            },
        )
    if server.config.agent(agent_id) is None:
        return error_response(404, "agent_not_found", f"unknown agent_id {agent_id!r}")
    token = server.signer.sign(agent_id, key_id=key.key_id if key is not None else None)
    base = server.public_ws_base(request.headers.get("Host"))
    url = (
        f"{base}/v1/convai/conversation?agent_id={quote(agent_id, safe='')}"
        f"&conversation_signature={quote(token, safe='')}"
    )
    return json_response(200, {"signed_url": url})
