"""``SagelabServer``: the bundled WebSocket server (websockets' asyncio API).

One process serves the ConvAI route, the relay route and the HTTP routes on one port, so the
official SDK can use a single ``base_url`` for both its REST and WebSocket calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from sagelab.agents import Agent, create_agent
from sagelab.agents.base import ResolvedAgent
from sagelab.config import ConfigError, ServerConfig, check_auth_has_keys
from sagelab.protocol import closecodes
from sagelab.server import convai, exposure, http, redact, rest, tls
from sagelab.server.auth import ApiKeyStore, SignedUrlSigner
from sagelab.server.capacity import SessionRegistry
from sagelab.server.conversation import Conversation
from sagelab.server.metrics import ServerMetrics
from sagelab.server.resume import SessionKeeper
from sagelab.server.store import ConversationStore, end_orphans
from sagelab.server.transport import Transport

log = logging.getLogger(__name__)


class SagelabServer:
    """Start with ``async with SagelabServer(config) as server:`` or ``await server.start()``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.registry = SessionRegistry(
            config.max_sessions, config.max_sessions_per_key, config.max_starting_anonymous
        )
        self.sessions = SessionKeeper(self)  # live conversations across connections (resume)
        secret = config.signing_secret or secrets.token_hex(32)
        self.signer = SignedUrlSigner(secret.encode(), ttl_s=config.signed_url_ttl_s)
        self.api_keys = ApiKeyStore(config.api_keys)
        self.store: ConversationStore | None = None
        self.tool_registries: dict[str, Any] = {}
        self.rest = rest.RestApi()  # tools and agent edits made through the REST API
        self._server: Server | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SagelabServer:
        ssl_context = tls.server_context(self.config)  # before anything else: fail fast
        try:  # again here: the config may have been changed in code since it was loaded
            check_auth_has_keys(self.config)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        await asyncio.to_thread(_check_brains, self.config)
        if self.config.store_path:
            path = Path(self.config.store_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.store = ConversationStore(path)
            ended = await asyncio.to_thread(end_orphans, self.store)
            if ended:
                log.warning(
                    "%d conversation(s) were left open by a server that stopped without ending "
                    "them (crash or SIGKILL); marked ended",
                    ended,
                )
        self._stopping = asyncio.Event()
        await self._prepare_backends()
        self._load_server_tools()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            create_connection=rest.RestAwareConnection.bound_to(self),  # POST/PATCH routes
            # The app-level limit (max_frame_bytes) answers with an error event; this hard
            # limit only stops a peer from making websockets buffer something absurd.
            max_size=self.config.max_frame_bytes * 4,
            max_queue=64,
            subprotocols=None,
            select_subprotocol=_select_convai_subprotocol,
            # Half-open connections (a peer gone without FIN) are found by keepalive pings.
            ping_interval=self.config.ws_ping_interval_s,
            ping_timeout=self.config.ws_ping_timeout_s,
            close_timeout=self.config.close_timeout_s,
            ssl=ssl_context,
            logger=redact.RedactingLogger(logging.getLogger("websockets.server")),
        )
        log.info("sagelab server listening on %s", self.http_url)
        for line in exposure.summary(self):
            log.info("%s", line)
        warning = exposure.warning(self)
        if warning:
            log.warning("%s", warning)
        return self

    async def _prepare_backends(self) -> None:
        """Load local models before accepting sessions, so no caller waits for the load."""
        local = [a for a in self.config.agents if a.backend == "local"]
        if not local:
            return
        from sagelab.agents import local as local_backend

        for spec in local:
            try:
                await asyncio.to_thread(local_backend.prepare, spec.options, self.config.base_dir)
            except Exception:
                # Sessions for this agent will fail with the loading error; others still work.
                log.exception("could not prepare agent %s", spec.id)

    def _load_server_tools(self) -> None:
        from sagelab.server.tools import load_server_tools

        for spec in self.config.agents:
            try:
                registry = load_server_tools(spec)
            except Exception:
                # Calls to this agent's server tools will answer with an error; sessions work.
                log.exception("could not load server tools for agent %s", spec.id)
                continue
            if registry is not None:
                self.tool_registries[spec.id] = registry

    def open_conversation(
        self, conversation_id: str, agent: ResolvedAgent, transport: Transport
    ) -> tuple[Conversation, Agent]:
        """The conversation core and its backend, for either protocol's route; raises what
        the backend raised when it cannot start (the route tells the client)."""
        conv = Conversation(
            conversation_id=conversation_id,
            agent=agent,
            transport=transport,
            config=self.config,
            metrics=self.metrics,
            store=self.store,
            server_tools=self.tool_registries.get(agent.id),
        )
        return conv, create_agent(conv, self.config.base_dir)

    async def stop(self) -> None:
        """Graceful: stop accepting, end sessions (held ones too) with 1001, flush the store."""
        if self._server is None:
            return
        self.registry.accepting = False
        self._server.close(close_connections=False)
        await self.registry.close_all(closecodes.GOING_AWAY, "server shutting down")
        self._server.close()  # whatever is left: handshakes, idle keep-alive HTTP connections
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None
        self._server = None
        if self._stopping is not None:
            self._stopping.set()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down gracefully."""
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        assert self._stopping is not None
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), stopping], return_when="FIRST_COMPLETED"
        )
        await self.stop()

    async def __aenter__(self) -> SagelabServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    @property
    def tls(self) -> bool:
        return bool(self.config.tls_certfile)

    @property
    def http_url(self) -> str:
        """The ``base_url`` for ``ElevenLabs(base_url=...)``."""
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.http_url.removeprefix("http")

    def public_ws_base(self, host_header: str | None) -> str:
        if self.config.public_url:
            base = self.config.public_url.rstrip("/")
            return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{host_header}" if host_header else self.ws_url

    # -- routing ---------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        return http.route(self, connection, request)

    async def _handle(self, ws: ServerConnection) -> None:
        _cap_send_buffer(ws, self.config.socket_send_buffer_bytes)
        # The same path http.route let through, split the same way ("//x/..." is not a host).
        path = http.route_path(ws.request.path if ws.request else "")
        if path == http.RELAY_ROUTE:
            from sagelab.server import relay

            await relay.handle(ws, self)
        else:
            await convai.handle(ws, self)


def _check_brains(config: ServerConfig) -> None:
    """Build each local agent's brain once, so bad ``brain_options`` (an intent pattern that
    backtracks, a template typo) stop the start instead of failing every session."""
    from sagelab.agents.local.brain import BrainError, create_brain

    for spec in config.agents:
        if spec.backend != "local" or spec.options.get("brain", "rules") != "rules":
            continue
        try:
            create_brain("rules", dict(spec.options.get("brain_options") or {}))
        except BrainError as exc:
            raise ConfigError(f"agent {spec.id}: {exc}") from None


def _cap_send_buffer(ws: ServerConnection, size: int | None) -> None:
    """Bound what the kernel buffers for a client that does not read.

    Linux autotunes a socket's send buffer up to megabytes; for a paced audio stream that only
    delays noticing a slow reader (``send_timeout_s`` starts counting once this buffer and
    websockets' own are full) while holding kernel memory per connection.
    """
    sock = ws.transport.get_extra_info("socket") if ws.transport is not None else None
    if size is None or sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _select_convai_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    # Browsers fail the handshake when they asked for subprotocols and the server picks none;
    # the ElevenLabs JS client asks for "convai".
    return "convai" if "convai" in offered else None


class BackgroundServer:
    """A server on its own event loop thread, for synchronous code: notebooks, the sync SDK.

    >>> with BackgroundServer(config) as server:
    ...     ElevenLabs(base_url=server.http_url)
    """

    def __init__(self, config: ServerConfig) -> None:
        self.server = SagelabServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="sagelab-server"
        )

    def __enter__(self) -> SagelabServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=30)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        await self.server.stop()
        # Connections still in their handshake belong to no session: end them on this loop
        # rather than leaving coroutines behind for a closed loop to complain about.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
