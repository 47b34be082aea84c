"""The asyncio adapter that runs one conversation's sans-I/O core on a socket.

Every decision (event ids, pacing, barge-in and its correction, pings, tool-call matching and
timeouts, idle and maximum duration) is made by :class:`~sagelab.conversation.session.
ServerSession`; this class owns what the core may not: the clock (the event loop's), one task
that wakes the core when its next deadline comes, the transport, the conversation store and
the server metrics. It implements ``AgentContext`` for the agent backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from sagelab.agents.base import Agent, EarlyToolRun, ResolvedAgent, ToolResult
from sagelab.conversation import events as ev
from sagelab.conversation.session import (
    AgentTurn,
    Close,
    Interrupted,
    Send,
    ServerSession,
    SessionAction,
    SessionSettings,
    ToolDone,
    TurnDrained,
)
from sagelab.protocol import closecodes
from sagelab.server.transport import DetachedTransport, Transport

if TYPE_CHECKING:
    from sagelab.config import ServerConfig
    from sagelab.server.metrics import ServerMetrics
    from sagelab.server.store import ConversationStore
    from sagelab.tools import ToolRegistry

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000
Turn = AgentTurn  # the name backends and tests know


class Conversation:
    """A live session between one client and one agent backend."""

    def __init__(
        self,
        *,
        conversation_id: str,
        agent: ResolvedAgent,
        transport: Transport,
        config: ServerConfig,
        metrics: ServerMetrics,
        store: ConversationStore | None,
        server_tools: ToolRegistry | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.agent = agent
        self.transport = transport
        self.config = config
        self.metrics = metrics
        self.store = store
        self.server_tools = server_tools
        self.backend: Agent | None = None
        self.started_at = time.time()
        self._t_start = self._now()
        self.core = ServerSession(
            SessionSettings(
                ping_interval_s=config.ping_interval_s,
                audio_lead_ms=config.audio_lead_ms,
                idle_timeout_s=config.idle_timeout_s,
                max_duration_s=config.max_duration_s,
                client_tool_timeout_s=config.client_tool_timeout_s,
            ),
            self._t_start,
            call_prefix=f"call_{conversation_id[-12:]}",
        )
        self._chunk_samples = SAMPLE_RATE * config.audio_chunk_ms // 1000
        self._store_keys: dict[int, Any] = {}  # agent turn event id -> its row
        self._drained: dict[int, asyncio.Event] = {}
        self._tool_futures: dict[str, asyncio.Future[ToolResult]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._ending: asyncio.Future[None] | None = None
        transport.on_stall = self._transport_stalled
        self.close_code: int | None = None
        self.end_reason: str | None = None
        self.ping_rtts_ms: list[float] = []

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, backend: Agent) -> None:
        """Send the metadata first (exactly once), then let the backend speak."""
        self.backend = backend
        await self.transport.send_metadata(
            self.conversation_id, self.agent.input_format, self.agent.output_format
        )
        self._tasks = [asyncio.create_task(self._clock(), name=f"clock-{self.conversation_id}")]
        await backend.start()

    async def _clock(self) -> None:
        """Wake the core when its next deadline comes (or when new input may change it)."""
        while not self.closed:
            deadline = self.core.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._now())
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            else:
                await asyncio.sleep(0)  # due now: still let others run between ticks
            self._wake.clear()
            await self._apply(self.core.tick(self._now()))

    async def _apply(self, actions: Iterable[SessionAction]) -> None:
        for action in actions:
            match action:
                case Send(event=event):
                    await self._send(event)
                case ToolDone():
                    fut = self._tool_futures.get(action.call_id)
                    if fut is not None and not fut.done():
                        fut.set_result(ToolResult(action.call_id, action.value, action.is_error))
                case TurnDrained():
                    self._drained_event(action.event_id).set()
                case Close():
                    if self._closing is None and not self.closed:
                        self._closing = asyncio.create_task(
                            self.close(action.code, action.reason, error_type=action.error_type)
                        )

    async def _send(self, event: ev.OutEvent) -> None:
        t = self.transport
        match event:
            case ev.AgentAudio():
                if event.turn_age_s is not None:
                    self.metrics.first_audio.observe(event.turn_age_s)
                await t.send_audio(event.payload, event.event_id, event.alignment)
            case ev.Ping():
                await t.send_ping(event.event_id, event.ping_ms)
            case ev.AgentResponse():
                await t.send_agent_response(event.text, event.event_id)
            case ev.UserTranscript():
                await t.send_user_transcript(event.text, event.event_id, tentative=event.tentative)
            case ev.Interruption():
                self.metrics.interruptions.inc()
                await t.send_interruption(event.event_id)
            case ev.Correction():
                await t.send_correction(event.original, event.corrected, event.event_id)
            case ev.ClientToolCall():
                await t.send_client_tool_call(
                    event.name, event.call_id, event.parameters, event.event_id
                )

    def _drained_event(self, event_id: int) -> asyncio.Event:
        return self._drained.setdefault(event_id, asyncio.Event())

    # -- connections come and go (resume.py) ---------------------------------------------

    @property
    def detached(self) -> bool:
        """No client connected: the conversation is held for a resume."""
        return isinstance(self.transport, DetachedTransport)

    def attach(self, transport: Transport) -> None:
        """Carry on over ``transport``; the one before it gets nothing more."""
        self.transport = transport
        transport.on_stall = self._transport_stalled
        self.core.detached = isinstance(transport, DetachedTransport)

    async def detach(self) -> None:
        """The client vanished: stop the agent's turn as a barge-in would, drop what is queued.

        Audio that was on its way is lost with the socket and will not be replayed, so the turn
        is over as far as the user is concerned; the store marks it interrupted.
        """
        self.attach(DetachedTransport(self.transport.protocol))
        if self.backend is not None:
            await self.run_backend(self.backend.on_interrupt())

    async def reattach(self, transport: Transport) -> None:
        """A resumed client: the same conversation id in fresh metadata, then new events only."""
        self.attach(transport)
        self.touch()
        await transport.send_metadata(
            self.conversation_id, self.agent.input_format, self.agent.output_format
        )

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self, code: int, reason: str, *, error_type: str | None = None) -> None:
        """End the session once: tell the client why, stop the backend, record the end.

        The ending runs in its own task, shielded: it completes even when the task that asked
        for it is cancelled halfway (a backend that fails fatally from a task its own
        ``close()`` cancels), so no session is left open with nobody to finish closing it.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        self.core.closed = True
        self.close_code, self.end_reason = code, reason
        caller = asyncio.current_task()
        self._ending = asyncio.ensure_future(self._end(code, reason, error_type, caller))
        await asyncio.shield(self._ending)

    async def _end(
        self, code: int, reason: str, error_type: str | None, caller: asyncio.Task[Any] | None
    ) -> None:
        if error_type is not None:
            self.metrics.errors.labels(error_type).inc()
            await self.transport.send_error(code, error_type, reason)
        for task in self._tasks:
            if task is not caller:
                task.cancel()
        for fut in self._tool_futures.values():
            if not fut.done():
                fut.cancel()
        self.core.cancel_tools()
        for drained in self._drained.values():
            drained.set()
        if self.backend is not None:
            try:
                await asyncio.wait_for(self.backend.close(), timeout=5)
            except Exception:
                log.exception("agent backend failed to close cleanly")
        await self.transport.close(code, reason[:120])
        if self.store is not None:
            self.store.end_conversation(self.conversation_id, reason, close_code=code)
        self.metrics.session_seconds.observe(self._now() - self._t_start)

    def _transport_stalled(self, reason: str) -> None:
        """The client stopped reading: close now (from a task, since a send is waiting)."""
        if self._closing is None and not self.closed:
            self._closing = asyncio.create_task(
                self.close(closecodes.INVALID_INPUT, reason, error_type="slow_reader"),
                name=f"stalled-{self.conversation_id}",
            )

    def touch(self) -> None:
        """The user did something (audio, text, activity): the idle timer starts again."""
        self.core.touch(self._now())

    # -- event ids and pings ---------------------------------------------------------------

    def next_event_id(self) -> int:
        return self.core.next_event_id()

    def typed(self, text: str) -> None:
        """A typed user turn (``user_message``, relay ``text``) is a user turn of the record,
        as a transcript is."""
        if self.store is not None:
            now = time.time()
            self.store.add_turn(
                self.conversation_id, role="user", text=text, started_at=now, ended_at=now
            )

    def on_pong(self, event_id: int, received_at: float) -> None:
        rtt = self.core.pong(event_id, received_at)
        if rtt is not None:
            self.ping_rtts_ms.append(rtt * 1000)
            self.metrics.ping_rtt.observe(rtt)

    # -- AgentContext ----------------------------------------------------------------------

    def begin_turn(self) -> AgentTurn:
        return self.core.begin_turn(self._now())

    async def user_transcript(self, turn: AgentTurn, text: str, *, tentative: bool = False) -> None:
        await self._send(ev.UserTranscript(text, turn.event_id, tentative))
        if not tentative and self.store is not None:
            self.store.add_turn(
                self.conversation_id,
                role="user",
                text=text,
                event_id=turn.event_id,
                ended_at=time.time(),  # a final transcript arrives when the turn is over
            )

    async def agent_response(self, turn: AgentTurn, text: str) -> None:
        actions = self.core.agent_response(turn, text, self._now())
        await self._apply(actions)
        if self.store is not None and turn.response_sent:
            key = self._store_keys.get(turn.event_id)
            if key is None:
                self._store_keys[turn.event_id] = self.store.add_turn(
                    self.conversation_id, role="agent", text=turn.text, event_id=turn.event_id
                )
            else:
                self.store.update_turn(key, text=turn.text)

    async def agent_audio(
        self, turn: AgentTurn, pcm: np.ndarray, alignment: list[tuple[str, float]] | None = None
    ) -> None:
        if turn.interrupted or self.closed:
            return
        n = self._chunk_samples
        payloads = self.transport.encode_audio(pcm, n)
        cut = [(min(n, len(pcm) - i * n) / SAMPLE_RATE, p) for i, p in enumerate(payloads)]
        self._drained_event(turn.event_id).clear()
        await self._apply(self.core.queue_audio(turn, cut, alignment, self._now()))
        self._wake.set()

    async def finish_audio(self, turn: AgentTurn) -> None:
        await self._apply(self.core.finish_turn(turn, self._now()))
        if turn.pending:
            await self._drained_event(turn.event_id).wait()
        self._drained.pop(turn.event_id, None)
        key = self._store_keys.get(turn.event_id)
        if key is not None and self.store is not None and not turn.interrupted:
            self.store.update_turn(key, ended_at=time.time())

    async def interrupt(self) -> Interrupted | None:
        interrupted, actions = self.core.interrupt(self._now())
        await self._apply(actions)
        if interrupted is not None and self.store is not None:
            key = self._store_keys.get(interrupted.event_id)
            if key is not None:
                self.store.update_turn(
                    key,
                    interrupted=True,
                    corrected_text=interrupted.delivered,
                    ended_at=time.time(),
                )
        return interrupted

    async def heard(self, event_id: int, played_ms: float) -> None:
        """The client's player says how much of turn ``event_id`` it played (a sagelab
        extension): cut the turn there if it is still going, correct the record, and let the
        backend keep only what was heard."""
        interrupted, actions = self.core.heard(event_id, played_ms / 1000, self._now())
        await self._apply(actions)
        if interrupted is None:
            return
        key = self._store_keys.get(interrupted.event_id)
        if key is not None and self.store is not None:
            self.store.update_turn(
                key, interrupted=True, corrected_text=interrupted.delivered, ended_at=time.time()
            )
        if self.backend is not None:
            await self.run_backend(self.backend.on_heard(interrupted))

    async def run_early(self, name: str, parameters: dict[str, Any]) -> EarlyToolRun | None:
        spec = self.agent.tool(name)
        if (
            spec is None
            or spec.type != "server"
            or not spec.read_only
            or self.server_tools is None
            or name not in self.server_tools
        ):
            return None
        call_id, started = self.core.new_call_id(), self._now()
        outcome = await self.server_tools.execute(
            name, parameters, timeout=spec.response_timeout_secs
        )
        elapsed = self._now() - started
        value, is_error = outcome.value, outcome.is_error
        return EarlyToolRun(call_id, name, dict(parameters), value, is_error, elapsed)

    async def call_tool(
        self,
        turn: AgentTurn,
        name: str,
        parameters: dict[str, Any],
        *,
        early: EarlyToolRun | None = None,
    ) -> ToolResult:
        spec = self.agent.tool(name)
        if early is not None and (early.name != name or early.parameters != parameters):
            raise ValueError(f"the early run of {early.name!r} is not this call of {name!r}")
        call_id = early.call_id if early is not None else self.core.new_call_id()
        if spec is None:
            return ToolResult(call_id, f"agent {self.agent.id!r} has no tool named {name!r}", True)
        started = self._now()
        if spec.type == "server":
            if self.store is not None:
                self.store.start_tool_call(
                    self.conversation_id, call_id, name, parameters, event_id=turn.event_id
                )
            await self.transport.send_tool_request(name, call_id, parameters, turn.event_id)
            if early is not None:
                result = early.result
                started -= early.duration_s  # the call took its run's time, only earlier
            elif self.server_tools is None or name not in self.server_tools:
                result = ToolResult(
                    call_id, f"server tool {name!r} has no implementation on this server", True
                )
            else:
                outcome = await self.server_tools.execute(
                    name, parameters, timeout=spec.response_timeout_secs
                )
                result = outcome.to_tool_result(call_id)
            await self.transport.send_tool_detail(
                name, call_id, parameters, result.value, result.is_error, turn.event_id
            )
        else:
            timeout = spec.response_timeout_secs or self.config.client_tool_timeout_s
            call_id, actions = self.core.client_tool_call(
                turn,
                name,
                parameters,
                timeout,
                self._now(),
                expects_response=spec.expects_response and self.transport.answers_client_tools,
            )
            if self.store is not None:
                self.store.start_tool_call(
                    self.conversation_id, call_id, name, parameters, event_id=turn.event_id
                )
            fut: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
            self._tool_futures[call_id] = fut
            try:
                await self._apply(actions)
                self._wake.set()  # the core has a new deadline
                if not self.transport.answers_client_tools:
                    result = ToolResult(
                        call_id,
                        f"client tool {name!r} cannot run over the {self.transport.protocol} "
                        "protocol, whose clients do not answer tool calls; make it a server tool",
                        is_error=True,
                    )
                elif not spec.expects_response:
                    result = ToolResult(call_id, "sent (the tool does not expect a response)")
                else:
                    result = await fut
            finally:
                self._tool_futures.pop(call_id, None)
        elapsed = self._now() - started
        outcome_label = "error" if result.is_error else "ok"
        self.metrics.tool_seconds.labels(name, outcome_label).observe(elapsed)
        if self.store is not None:
            self.store.finish_tool_call(
                self.conversation_id,
                call_id,
                result.value,
                is_error=result.is_error,
                duration_ms=elapsed * 1e3,
            )
        tool_type = "webhook" if spec.type == "server" else "client"
        await self.transport.send_tool_response(
            name, call_id, tool_type, result.is_error, turn.event_id
        )
        return result

    def on_tool_result(self, tool_call_id: str, value: Any, is_error: bool) -> bool:
        """A ``client_tool_result`` arrived; False when no call is waiting for that id."""
        done = self.core.tool_result(tool_call_id, value, is_error)
        if done is None:
            return False
        fut = self._tool_futures.get(tool_call_id)
        if fut is not None and not fut.done():
            fut.set_result(ToolResult(tool_call_id, value, is_error))
        return True

    async def vad_score(self, score: float) -> None:
        await self.transport.send_vad_score(score)

    async def stage(self, turn: AgentTurn, name: str, duration_ms: float) -> None:
        self.metrics.stage_seconds.labels(name).observe(duration_ms / 1000)
        await self.transport.send_stage(turn.event_id, name, duration_ms)

    async def fail(self, error_type: str, message: str, *, fatal: bool = False) -> None:
        if fatal:
            await self.close(closecodes.OPERATIONAL, message, error_type=error_type)
        else:
            self.metrics.errors.labels(error_type).inc()
            await self.transport.send_error(closecodes.OPERATIONAL, error_type, message)

    async def end(self, reason: str = "agent ended the conversation") -> None:
        current = self.core.current
        if current is not None:
            await self.finish_audio(current)
        await self.close(closecodes.NORMAL, reason)

    # -- backend callbacks ---------------------------------------------------------------

    async def run_backend(self, coro: Any) -> None:
        """Run a backend callback; a crash there ends this session, never the server."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("agent backend %s failed", self.agent.backend)
            with contextlib.suppress(Exception):
                await self.close(
                    closecodes.INTERNAL,
                    f"agent backend error: {type(exc).__name__}: {exc}",
                    error_type="unknown_websocket_crash",
                )
