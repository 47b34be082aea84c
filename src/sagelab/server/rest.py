"""A small slice of the ElevenLabs REST API: client tools and an agent's prompt, in memory.

It exists so prompt and tool experiments run against the bundled server exactly as they run
against ElevenLabs, with the official SDK's REST client (``client.conversational_ai.tools``
and ``.agents``): create a tool, attach it to an agent with its prompt and first message, and
the next session sees the change.

Routes (``xi-api-key`` is checked when the server has API keys configured, else open; a
foreign browser origin is refused, and bodies must be ``application/json`` so that a web page
cannot send one without the CORS preflight the server never grants):

- ``POST /v1/convai/tools``, ``GET /v1/convai/tools``, ``GET /v1/convai/tools/{id}``
- ``GET /v1/convai/agents/{id}``, ``PATCH /v1/convai/agents/{id}`` (name, prompt, first
  message, language, ``prompt.tool_ids``)

State lives in memory on the server (tools in a dict, agents are the ``AgentSpec`` objects of
the running config) and is gone on restart; that is enough for experiments and keeps the
agents file the one durable source.

Why a custom connection class: websockets' HTTP parser refuses any request with a body before
``process_request`` sees it, so POST and PATCH never reach the hook. :class:`RestAwareConnection`
looks at the method of the first request on a connection: GET (WebSocket upgrades, health,
these GET routes) goes to websockets untouched; a method with a body is parsed with ``h11`` and
answered here, one request per connection (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import h11
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers

from sagelab.config import AgentSpec, ToolSpec
from sagelab.server import access
from sagelab.tools.schema import from_json_schema

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "RestApi",
    "RestAwareConnection",
    "handle",
    "is_rest_path",
]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
#: Tools created through the API that the server keeps (in memory), and the size of one.
MAX_TOOLS = 256
MAX_TOOL_BYTES = 16 * 1024
# Long enough for any method name plus the space after it.
_METHOD_SNIFF_BYTES = 8
# After an early answer (413, 431) the client may still be sending; closing at once would
# reset the connection and the client would see the reset instead of the answer.
_LINGER_S = 2.0

_TOOLS = "/v1/convai/tools"
_AGENTS = "/v1/convai/agents/"
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_ACCESS_INFO = {
    "is_creator": True,
    "creator_name": "sagelab",
    "creator_email": "sagelab@localhost",
    "role": "admin",
}

Result = tuple[int, Any]


class RestError(Exception):
    """An answer other than 2xx, in the error shape the ElevenLabs API uses."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def result(self) -> Result:
        return self.status, {"detail": {"status": self.code, "message": self.message}}


class RestApi:
    """The in-memory state behind the REST routes of one server."""

    def __init__(self) -> None:
        self.tools: dict[str, dict[str, Any]] = {}
        # Ids of the client tools each agent uses, as last set or looked at; checked against
        # the agent's tool names so an edit of the agent elsewhere is not hidden by stale ids.
        self.agent_tool_ids: dict[str, list[str]] = {}
        self.created_at = int(time.time())
        self.updated_at: dict[str, int] = {}

    # -- tools -----------------------------------------------------------------------------

    def create_tool(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("tool_config"), dict):
            raise _invalid("the body must be a JSON object with a 'tool_config' object")
        config = _checked_tool_config(body["tool_config"])
        size = len(json.dumps(config))
        if size > MAX_TOOL_BYTES:
            raise RestError(
                413,
                "payload_too_large",
                f"a tool config of {size} bytes exceeds the limit of {MAX_TOOL_BYTES} bytes",
            )
        if len(self.tools) >= MAX_TOOLS:
            raise RestError(
                409,
                "too_many_tools",
                f"this server keeps at most {MAX_TOOLS} tools (in memory, until it restarts); "
                "reuse the tools you created (GET /v1/convai/tools) or restart the server",
            )
        tool_id = f"tool_{secrets.token_hex(12)}"
        record = _tool_record(tool_id, config)
        self.tools[tool_id] = record
        return record

    def tool(self, tool_id: str) -> dict[str, Any]:
        record = self.tools.get(tool_id)
        if record is None:
            raise RestError(404, "tool_not_found", f"no tool with id {tool_id!r}")
        return record

    # -- agents ----------------------------------------------------------------------------

    def agent(self, spec: AgentSpec) -> dict[str, Any]:
        created = self.created_at
        return {
            "agent_id": spec.id,
            "name": spec.name or spec.id,
            "conversation_config": {
                "agent": {
                    "first_message": spec.first_message,
                    "language": spec.language,
                    "prompt": {"prompt": spec.prompt, "tool_ids": self.tool_ids_of(spec)},
                }
            },
            "metadata": {
                "created_at_unix_secs": created,
                "updated_at_unix_secs": self.updated_at.get(spec.id, created),
            },
            "platform_settings": {},
            "access_info": dict(_ACCESS_INFO),
            "tags": [],
        }

    def tool_ids_of(self, spec: AgentSpec) -> list[str]:
        """The agent's client tools as ids, registering tools from the agents file on demand
        (with ids derived from their content, so they stay the same across calls)."""
        client_tools = [t for t in spec.tools if t.type == "client"]
        known = self.agent_tool_ids.get(spec.id)
        if known is not None and all(i in self.tools for i in known):
            names = [self.tools[i]["tool_config"]["name"] for i in known]
            if names == [t.name for t in client_tools]:
                return list(known)
        ids = []
        for t in client_tools:
            digest = hashlib.sha256(
                json.dumps([spec.id, t.model_dump()], sort_keys=True).encode()
            ).hexdigest()
            tool_id = f"tool_{digest[:24]}"
            if tool_id not in self.tools:
                config = {
                    "type": "client",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "expects_response": t.expects_response,
                    "response_timeout_secs": t.response_timeout_secs,
                }
                self.tools[tool_id] = _tool_record(tool_id, config)
            ids.append(tool_id)
        self.agent_tool_ids[spec.id] = ids
        return list(ids)

    def update_agent(self, spec: AgentSpec, body: Any) -> dict[str, Any]:
        """Apply a PATCH to the live ``AgentSpec``: validated as a whole first, then assigned,
        so a bad field changes nothing and sessions that start afterwards see all of it."""
        if not isinstance(body, dict):
            raise _invalid("the body must be a JSON object")
        changes: dict[str, Any] = {}
        if body.get("name") is not None:
            changes["name"] = body["name"]
        agent = _object_at(body, "conversation_config", "agent")
        for key in ("first_message", "language"):
            if agent.get(key) is not None:
                changes[key] = agent[key]
        prompt = agent.get("prompt")
        if prompt is not None and not isinstance(prompt, dict):
            raise _invalid("conversation_config.agent.prompt must be an object")
        prompt = prompt or {}
        if prompt.get("prompt") is not None:
            changes["prompt"] = prompt["prompt"]
        tool_ids: list[str] | None = None
        if prompt.get("tool_ids") is not None:
            tool_ids = _tool_id_list(prompt["tool_ids"])
            changes["tools"] = [t for t in spec.tools if t.type != "client"] + [
                self._tool_spec(i) for i in tool_ids
            ]
            names = [t.name for t in changes["tools"]]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise _invalid(f"an agent's tools need distinct names; repeated: {repeated}")
        try:
            checked = AgentSpec.model_validate({**spec.model_dump(), **changes})
        except ValidationError as exc:
            where = ", ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise _invalid(f"invalid agent update: {where}") from exc
        for key in changes:
            setattr(spec, key, getattr(checked, key))
        if tool_ids is not None:
            self.agent_tool_ids[spec.id] = tool_ids
        self.updated_at[spec.id] = int(time.time())
        return self.agent(spec)

    def _tool_spec(self, tool_id: str) -> ToolSpec:
        record = self.tools.get(tool_id)
        if record is None:
            raise _invalid(f"unknown tool id {tool_id!r} in conversation_config.agent.prompt")
        config = record["tool_config"]
        timeout = config.get("response_timeout_secs")
        return ToolSpec(
            type="client",
            name=config["name"],
            description=config.get("description", ""),
            parameters=config.get("parameters") or {"type": "object", "properties": {}},
            expects_response=bool(config.get("expects_response", False)),
            response_timeout_secs=20.0 if timeout is None else float(timeout),
        )


def api(server: SagelabServer) -> RestApi:
    """The REST state of ``server``."""
    return server.rest


def is_rest_path(path: str) -> bool:
    return path == _TOOLS or path.startswith(_TOOLS + "/") or path.startswith(_AGENTS)


def handle(
    server: SagelabServer,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> Result:
    """Answer one REST request: ``(status, JSON body)``. ``headers`` keys are lower case."""
    try:
        return _dispatch(server, method.upper(), path.rstrip("/") or "/", query, headers, body)
    except RestError as exc:
        return exc.result()


def _dispatch(
    server: SagelabServer,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> Result:
    if not is_rest_path(path):
        if method != "GET":
            raise RestError(
                405,
                "method_not_allowed",
                f"{path} answers GET only (WebSocket routes: GET upgrade)",
            )
        raise RestError(404, "not_found", f"no route for {method} {path}")
    if method not in ("GET", "POST", "PATCH"):
        raise _not_allowed(method, path)
    if server.config.api_keys and not server.api_keys.check(headers.get("xi-api-key")):
        raise RestError(401, "invalid_api_key", "missing or invalid xi-api-key header")
    if method in ("POST", "PATCH", "PUT") and not _is_json(headers.get("content-type", "")):
        # A browser sends text/plain and form bodies cross-site without asking the server
        # first (no CORS preflight); JSON bodies always need that permission.
        raise RestError(
            415,
            "unsupported_media_type",
            "request bodies must be JSON, sent with Content-Type: application/json",
        )
    state = api(server)
    if path == _TOOLS:
        if method == "POST":
            return 200, state.create_tool(_json(body))
        if method == "GET":
            search = query.get("search") or ""
            tools = [t for t in state.tools.values() if t["tool_config"]["name"].startswith(search)]
            return 200, {"tools": tools, "has_more": False, "next_cursor": None}
        raise _not_allowed(method, path)
    if path.startswith(_TOOLS + "/"):
        tool_id = path.removeprefix(_TOOLS + "/")
        if method == "GET" and "/" not in tool_id:
            return 200, state.tool(tool_id)
        raise _not_allowed(method, path)
    agent_id = path.removeprefix(_AGENTS)
    if "/" in agent_id:
        raise RestError(404, "not_found", f"no route for {method} {path}")
    spec = server.config.agent(agent_id)
    if spec is None:
        raise RestError(404, "agent_not_found", f"unknown agent_id {agent_id!r}")
    if method == "GET":
        return 200, state.agent(spec)
    if method == "PATCH":
        return 200, state.update_agent(spec, _json(body))
    raise _not_allowed(method, path)


# -- validation ----------------------------------------------------------------------------


def _invalid(message: str) -> RestError:
    return RestError(422, "invalid_request", message)


def _not_allowed(method: str, path: str) -> RestError:
    return RestError(405, "method_not_allowed", f"{method} is not supported on {path}")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


def _object_at(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    node: Any = body
    for i, key in enumerate(keys):
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return {}
        if not isinstance(node, dict):
            raise _invalid(f"{'.'.join(keys[: i + 1])} must be an object")
    return node


def _tool_id_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid("conversation_config.agent.prompt.tool_ids must be a list of strings")
    return list(dict.fromkeys(value))


def _checked_tool_config(config: dict[str, Any]) -> dict[str, Any]:
    """The tool config as stored, or a 422 naming the field: a bad tool found here is
    cheaper than an agent that never manages to call it."""
    kind = config.get("type")
    if kind != "client":
        raise _invalid(
            f"tool_config.type must be 'client' (the only tool type this server runs), got {kind!r}"
        )
    name = config.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise _invalid(
            f"tool_config.name must be 1-64 characters of letters, digits, '_' or '-', "
            f"starting with a letter or '_'; got {name!r}"
        )
    description = config.get("description", "")
    if not isinstance(description, str):
        raise _invalid("tool_config.description must be a string")
    parameters = config.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}, "required": []}
    _check_parameters(name, description, parameters)
    expects = config.get("expects_response", False)
    if not isinstance(expects, bool):
        raise _invalid("tool_config.expects_response must be true or false")
    timeout = config.get("response_timeout_secs", 20)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (1 <= timeout <= 120 or (timeout == -1 and expects))
    ):
        raise _invalid(
            "tool_config.response_timeout_secs must be 1-120, or -1 with expects_response=true"
        )
    return {
        **config,
        "description": description,
        "parameters": parameters,
        "expects_response": expects,
        "response_timeout_secs": timeout,
    }


def _check_parameters(name: str, description: str, parameters: Any) -> None:
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise _invalid('tool_config.parameters must be an object schema: {"type": "object", ...}')
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict):
        raise _invalid("tool_config.parameters.properties must map parameter names to schemas")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _invalid("tool_config.parameters.required must be a list of parameter names")
    missing = [r for r in required if r not in properties]
    if missing:
        raise _invalid(f"tool_config.parameters.required names unknown properties: {missing}")
    try:
        from_json_schema(name, description or name, parameters)
    except (ValueError, ValidationError) as exc:
        raise _invalid(f"tool_config.parameters: {exc}") from exc


def _tool_record(tool_id: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": tool_id,
        "tool_config": config,
        "access_info": dict(_ACCESS_INFO),
        "usage_stats": {"total_calls": 0, "avg_latency_secs": 0.0},
    }


# -- the connection ------------------------------------------------------------------------


class RestAwareConnection(ServerConnection):
    """A websockets server connection that answers requests with a body itself.

    The first bytes decide: any method but GET switches the connection to an ``h11`` parser
    and :func:`handle`; GET is passed to websockets unchanged, so
    WebSocket upgrades and GET routes behave exactly as without this class. Use
    :meth:`bound_to` to get the class for one server (``serve`` builds connections from a
    class and fixed arguments, so the server travels as a class attribute).
    """

    sagelab: SagelabServer

    @classmethod
    def bound_to(cls, server: SagelabServer) -> type[RestAwareConnection]:
        return type("RestConnection", (cls,), {"sagelab": server})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sniffed = bytearray()
        self._mode = "sniff"  # then "websockets" or "rest"
        self._h11: h11.Connection | None = None
        self._request: h11.Request | None = None
        self._head = bytearray()
        self._body = bytearray()
        self._answered = False
        self._task: asyncio.Task[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._mode == "websockets":
            super().data_received(data)
            return
        if self._mode == "rest":
            self._feed(data)
            return
        self._sniffed += data
        method, space, _ = bytes(self._sniffed[:_METHOD_SNIFF_BYTES]).partition(b" ")
        if not space and len(self._sniffed) < _METHOD_SNIFF_BYTES:
            return  # not enough bytes yet to know the method
        buffered, self._sniffed = bytes(self._sniffed), bytearray()
        # websockets answers every method as if it were GET; only GET goes to it, anything
        # else is parsed here and gets its own answer (405 outside the REST routes).
        if space and method != b"GET":
            self._mode = "rest"
            self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
            self._feed(buffered)
        else:
            self._mode = "websockets"
            super().data_received(buffered)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._mode == "sniff":
            self._mode = "websockets"
            if self._sniffed:
                buffered, self._sniffed = bytes(self._sniffed), bytearray()
                super().data_received(buffered)
        if self._mode == "websockets":
            super().eof_received()
            return None
        if not self._answered and self._task is None:
            self._feed(b"")
        if self._task is not None and not self._answered:
            return True  # keep the transport open: _answer writes, then closes it
        self.transport.close()
        return None

    # -- h11 -------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._answered or self._task is not None:
            return  # answered early or already dispatched: the rest is discarded
        assert self._h11 is not None
        if self._request is None:
            # h11 only limits a head that arrives in pieces; a whole one is limited here.
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if (end < 0 and len(self._head) > MAX_HEAD_BYTES) or end + 4 > MAX_HEAD_BYTES:
                message = f"request heads are limited to {MAX_HEAD_BYTES // 1024} KiB"
                self._answer(*RestError(431, "request_header_fields_too_large", message).result())
                return
        self._h11.receive_data(data)
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    self._request = event
                    length = _content_length(event.headers)
                    if length is not None and length > MAX_BODY_BYTES:
                        self._too_large()
                        return
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > MAX_BODY_BYTES:
                        self._too_large()
                        return
                elif isinstance(event, h11.EndOfMessage):
                    self._task = self.loop.create_task(self._dispatch())
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self.transport.close()
                    return
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            code = "request_header_fields_too_large" if status == 431 else "bad_request"
            self._answer(*RestError(status, code, str(exc) or "malformed request").result())

    def _too_large(self) -> None:
        limit = f"{MAX_BODY_BYTES // 1024} KiB"
        self._answer(
            *RestError(413, "payload_too_large", f"request bodies are limited to {limit}").result()
        )

    async def _dispatch(self) -> None:
        assert self._request is not None
        request = self._request
        target = request.target.decode("latin-1")
        path, _, query_string = target.partition("?")
        query = {k: v[0] for k, v in parse_qs(query_string).items()}
        raw = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers])
        refusal = access.check_request(self.sagelab, raw, browser_sensitive=True)
        if refusal is not None:
            self.sagelab.metrics.errors.labels(refusal.code).inc()
            self._answer(*RestError(refusal.status, refusal.code, refusal.message).result())
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        try:
            status, body = handle(
                self.sagelab,
                request.method.decode("ascii"),
                unquote(path),
                query,
                headers,
                bytes(self._body),
            )
        except Exception:
            log.exception("REST %s %s failed", request.method.decode(), path)
            status, body = RestError(500, "internal_error", "see the server log").result()
        self._answer(status, body)

    def _answer(self, status: int, body: Any) -> None:
        """Write a JSON answer and close; one request per connection keeps this simple."""
        if self._answered or self.transport.is_closing():
            return
        self._answered = True
        assert self._h11 is not None
        payload = json.dumps(body).encode()
        head = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
        ]
        try:
            out = self._h11.send(
                h11.Response(status_code=status, headers=head, reason=_reason(status))
            )
            if self._request is None or self._request.method != b"HEAD":  # HEAD: no body
                out = (out or b"") + (self._h11.send(h11.Data(data=payload)) or b"")
            out += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self.transport.abort()
            return
        self.transport.write(out)
        client_done = self._h11.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
        if client_done or not self.transport.can_write_eof():
            self.transport.close()
            return
        # Answered before the whole request arrived: half-close and read what is still
        # coming (discarded in _feed), so the client gets to read the answer.
        with contextlib.suppress(OSError, RuntimeError):
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None
