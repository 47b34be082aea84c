"""The few plain HTTP routes, served from websockets' ``process_request`` hook.

``/healthz`` and ``/metrics`` for operators, and the signed-URL endpoint the official SDK calls
for ``requires_auth=True``. Anything that is neither one of these nor a WebSocket route gets a
JSON 404 instead of a confusing failed handshake.

Every request first passes the edge checks of ``access.check_request`` (one Host, Origin and
key header each; a Host this server answers to; an allowed browser Origin on routes that act
for the caller). With API keys configured, ``/metrics`` and the details of ``/healthz`` need
one too: they say which agents exist and how busy the server is.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from sagelab import __version__
from sagelab.server import access, rest

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

CONVAI_ROUTE = "/v1/convai/conversation"
RELAY_ROUTE = "/voice-conversation"
WEBSOCKET_ROUTES = (CONVAI_ROUTE, RELAY_ROUTE)


def route_path(target: str) -> str:
    """The path of a request target, without its query and trailing slash.

    Not ``urlsplit``: it reads ``//x/voice-conversation`` as host ``x`` and path
    ``/voice-conversation``, so the route check and the handler would disagree.
    """
    path = target.partition("?")[0].partition("#")[0]
    return path.rstrip("/") or "/"


def query_of(target: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(target.partition("?")[2]).items()}


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
    path = route_path(request.path)
    query = query_of(request.path)
    operator = path in ("/healthz", "/metrics")
    refusal = access.check_request(server, request.headers, browser_sensitive=not operator)
    if refusal is not None:
        server.metrics.errors.labels(refusal.code).inc()
        return error_response(refusal.status, refusal.code, refusal.message)
    if path in WEBSOCKET_ROUTES:
        return None
    if path == "/healthz":
        return _healthz(server, request)
    if operator and not _operator(server, request):
        server.metrics.errors.labels("invalid_api_key").inc()
        return error_response(401, "invalid_api_key", f"{path} needs an xi-api-key header")
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


def _operator(server: SagelabServer, request: Request) -> bool:
    """Whether the request may see operator details: any caller without keys, else a key."""
    return not len(server.api_keys) or server.api_keys.check(request.headers.get("xi-api-key"))


def _healthz(server: SagelabServer, request: Request) -> Response:
    body: dict[str, object] = {
        "status": "ok" if server.registry.accepting else "shutting_down",
        "version": __version__,
    }
    if _operator(server, request):
        registry = server.registry
        body |= {
            "active_sessions": registry.active,  # held ones included
            "held_sessions": server.sessions.held,  # waiting for a resume (resume.py)
            # Slots taken by connections that have not sent their first message yet.
            "starting_sessions": registry.starting,
            "reserved_sessions": registry.reserved,
            "max_sessions": server.config.max_sessions,
            "max_starting_anonymous": registry.max_starting_anonymous,
            "agents": [a.id for a in server.config.agents],
        }
    return json_response(200, body)


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
        return error_response(404, "agent_not_found", f"unknown agent_id {agent_id[:128]!r}")
    token = server.signer.sign(agent_id, key_id=key.key_id if key is not None else None)
    base = server.public_ws_base(request.headers.get("Host"))
    url = (
        f"{base}/v1/convai/conversation?agent_id={quote(agent_id, safe='')}"
        f"&conversation_signature={quote(token, safe='')}"
    )
    return json_response(200, {"signed_url": url})
