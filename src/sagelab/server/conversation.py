"""The conversation core: one per session, protocol-neutral, implements ``AgentContext``.

It owns what the protocol reference makes the server responsible for: one event id per turn,
always increasing (pings draw from the same counter); real-time pacing of agent audio; barge-in
(drop queued audio, ``interruption``, ``agent_response_correction`` with the text actually
heard); ping/pong with ``ping_ms`` measured from the previous pong; client tool calls with a
response timeout; the idle and maximum-duration timers; and recording into the store as events
happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sagelab.agents.base import Agent, ResolvedAgent, ToolResult
from sagelab.server import closecodes
from sagelab.server.transport import DetachedTransport, Transport

if TYPE_CHECKING:
    from sagelab.config import ServerConfig
    from sagelab.server.metrics import ServerMetrics
    from sagelab.server.store import ConversationStore
    from sagelab.tools import ToolRegistry

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000


@dataclass(eq=False)
class Turn:
    """An agent turn's bookkeeping. ``played_s`` models the client's playout clock."""

    event_id: int
    text: str = ""
    store_key: Any = None
    user_store_key: Any = None
    interrupted: bool = False
    queued_s: float = 0.0
    sent_s: float = 0.0
    pending: int = 0
    stream_t0: float | None = None
    alignment_chars: list[tuple[str, float]] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    created_at: float = field(default_factory=time.monotonic)

    def played_s(self, now: float) -> float:
        if self.stream_t0 is None:
            return 0.0
        return max(0.0, min(self.sent_s, now - self.stream_t0))

    def speaking(self, now: float) -> bool:
        return not self.interrupted and (
            self.pending > 0 or (self.stream_t0 is not None and now - self.stream_t0 < self.sent_s)
        )


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
        self._t_start = time.monotonic()
        self._last_event_id = 0
        self._current: Turn | None = None
        self._audio_q: asyncio.Queue[tuple[Turn, float, Any]] = asyncio.Queue()
        self._chunk_samples = SAMPLE_RATE * config.audio_chunk_ms // 1000
        self._lead_s = config.audio_lead_ms / 1000
        self._pings: dict[int, float] = {}
        self._last_rtt_ms: int | None = None
        self._tool_futures: dict[str, asyncio.Future[ToolResult]] = {}
        self._last_input = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._ending: asyncio.Future[None] | None = None
        transport.on_stall = self._transport_stalled
        self.close_code: int | None = None
        self.end_reason: str | None = None
        self.ping_rtts_ms: list[float] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, backend: Agent) -> None:
        """Send the metadata first (exactly once), then let the backend speak."""
        self.backend = backend
        await self.transport.send_metadata(
            self.conversation_id, self.agent.input_format, self.agent.output_format
        )
        self._tasks = [
            asyncio.create_task(self._audio_sender(), name=f"audio-{self.conversation_id}"),
            asyncio.create_task(self._ping_loop(), name=f"ping-{self.conversation_id}"),
            asyncio.create_task(self._watchdog(), name=f"watchdog-{self.conversation_id}"),
        ]
        await backend.start()

    # -- connections come and go (resume.py) ---------------------------------------------

    @property
    def detached(self) -> bool:
        """No client connected: the conversation is held for a resume."""
        return isinstance(self.transport, DetachedTransport)

    def attach(self, transport: Transport) -> None:
        """Carry on over ``transport``; the one before it gets nothing more."""
        self.transport = transport
        transport.on_stall = self._transport_stalled

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
        if self.backend is not None:
            try:
                await asyncio.wait_for(self.backend.close(), timeout=5)
            except Exception:
                log.exception("agent backend failed to close cleanly")
        await self.transport.close(code, reason[:120])
        if self.store is not None:
            self.store.end_conversation(self.conversation_id, reason, close_code=code)
        self.metrics.session_seconds.observe(time.monotonic() - self._t_start)

    def _transport_stalled(self, reason: str) -> None:
        """The client stopped reading: close now (from a task, since a send is waiting)."""
        if self._closing is None and not self.closed:
            self._closing = asyncio.create_task(
                self.close(closecodes.INVALID_INPUT, reason, error_type="slow_reader"),
                name=f"stalled-{self.conversation_id}",
            )

    def touch(self) -> None:
        """The user did something (audio, text, activity): the idle timer starts again."""
        self._last_input = time.monotonic()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.idle_timeout_s / 4))
            now = time.monotonic()
            if now - self._t_start > self.config.max_duration_s:
                await self.close(closecodes.NORMAL, "max_duration_exceeded")
                return
            if self.detached:
                self._last_input = now  # a held session's clock is the resume grace window
            elif now - self._last_input > self.config.idle_timeout_s:
                await self.close(
                    closecodes.OPERATIONAL,
                    f"no user input for {self.config.idle_timeout_s:g} s",
                    error_type="transport_receive_timeout",
                )
                return

    # -- event ids and pings ---------------------------------------------------------------

    def next_event_id(self) -> int:
        self._last_event_id += 1
        return self._last_event_id

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            event_id = self.next_event_id()
            self._pings[event_id] = time.monotonic()
            if len(self._pings) > 64:  # a client that never answers must not grow this forever
                self._pings.pop(next(iter(self._pings)))
            await self.transport.send_ping(event_id, self._last_rtt_ms)

    def on_pong(self, event_id: int, received_at: float) -> None:
        sent = self._pings.pop(event_id, None)
        if sent is None:
            return
        rtt = received_at - sent
        self._last_rtt_ms = max(1, round(rtt * 1000))
        self.ping_rtts_ms.append(rtt * 1000)
        self.metrics.ping_rtt.observe(rtt)

    # -- AgentContext ----------------------------------------------------------------------

    def begin_turn(self) -> Turn:
        turn = Turn(event_id=self.next_event_id())
        return turn

    async def user_transcript(self, turn: Turn, text: str, *, tentative: bool = False) -> None:
        await self.transport.send_user_transcript(text, turn.event_id, tentative=tentative)
        if not tentative and self.store is not None:
            turn.user_store_key = self.store.add_turn(
                self.conversation_id, role="user", text=text, event_id=turn.event_id
            )

    async def agent_response(self, turn: Turn, text: str) -> None:
        self._claim(turn)
        turn.text = f"{turn.text} {text}".strip() if turn.text else text
        await self.transport.send_agent_response(text, turn.event_id)
        if self.store is not None:
            if turn.store_key is None:
                turn.store_key = self.store.add_turn(
                    self.conversation_id, role="agent", text=turn.text, event_id=turn.event_id
                )
            else:
                self.store.update_turn(turn.store_key, text=turn.text)

    async def agent_audio(
        self, turn: Turn, pcm: np.ndarray, alignment: list[tuple[str, float]] | None = None
    ) -> None:
        if turn.interrupted or self.closed:
            return
        self._claim(turn)
        if alignment:
            offset = turn.queued_s
            if turn.alignment_chars and not turn.alignment_chars[-1][0].isspace():
                turn.alignment_chars.append((" ", offset))  # between two synthesised pieces
            turn.alignment_chars.extend((c, offset + t) for c, t in alignment)
        n = self._chunk_samples
        payloads = self.transport.encode_audio(pcm, n)
        for i, payload in enumerate(payloads):
            seconds = min(n, len(pcm) - i * n) / SAMPLE_RATE
            turn.pending += 1
            turn.queued_s += seconds
            turn.drained.clear()
            self._audio_q.put_nowait((turn, seconds, payload))

    async def finish_audio(self, turn: Turn) -> None:
        if turn.pending:
            await turn.drained.wait()

    def _claim(self, turn: Turn) -> None:
        """A turn that starts speaking becomes the one a barge-in would cut."""
        if self._current is not turn and not turn.interrupted:
            self._current = turn

    async def _audio_sender(self) -> None:
        while True:
            turn, seconds, payload = await self._audio_q.get()
            try:
                if turn.interrupted:
                    continue
                now = time.monotonic()
                if turn.stream_t0 is None or now > turn.stream_t0 + turn.sent_s:
                    # First chunk, or the producer fell behind and the client ran dry: the
                    # client's playout clock restarts now.
                    turn.stream_t0 = now - turn.sent_s
                    if turn.sent_s == 0:
                        self.metrics.first_audio.observe(now - turn.created_at)
                delay = turn.stream_t0 + turn.sent_s - self._lead_s - now
                if delay > 0:
                    await asyncio.sleep(delay)
                if turn.interrupted:
                    continue
                await self.transport.send_audio(payload, turn.event_id, None)
                turn.sent_s += seconds
            finally:
                turn.pending -= 1
                if turn.pending <= 0:
                    turn.pending = 0
                    turn.drained.set()

    async def interrupt(self) -> bool:
        turn = self._current
        now = time.monotonic()
        if turn is None or not turn.speaking(now):
            return False
        turn.interrupted = True
        turn.drained.set()
        self.metrics.interruptions.inc()
        await self.transport.send_interruption(turn.event_id)
        corrected = self._delivered_text(turn, turn.played_s(now))
        if corrected != turn.text:
            await self.transport.send_correction(turn.text, corrected, turn.event_id)
        if self.store is not None and turn.store_key is not None:
            self.store.update_turn(turn.store_key, interrupted=True, corrected_text=corrected)
        return True

    @staticmethod
    def _delivered_text(turn: Turn, played_s: float) -> str:
        """The words the user heard: by alignment when the backend gave it, else by share of
        the turn's audio played, rounded down to whole words."""
        if turn.alignment_chars:
            chars = turn.alignment_chars
            n = sum(1 for _, t in chars if t < played_s)
            heard = "".join(c for c, _ in chars[:n])
            if n < len(chars) and not chars[n][0].isspace():
                heard = heard.rsplit(" ", 1)[0] if " " in heard else ""  # no half words
            return heard.strip()
        if turn.queued_s <= 0:
            return ""
        words = turn.text.split()
        heard = int(len(words) * min(1.0, played_s / turn.queued_s))
        return " ".join(words[:heard])

    async def call_tool(self, turn: Turn, name: str, parameters: dict[str, Any]) -> ToolResult:
        spec = self.agent.tool(name)
        call_id = f"call_{uuid.uuid4().hex[:16]}"
        if spec is None:
            return ToolResult(call_id, f"agent {self.agent.id!r} has no tool named {name!r}", True)
        started = time.monotonic()
        if self.store is not None:
            self.store.start_tool_call(
                self.conversation_id, call_id, name, parameters, event_id=turn.event_id
            )
        if spec.type == "server":
            await self.transport.send_tool_request(name, call_id, parameters, turn.event_id)
            if self.server_tools is None or name not in self.server_tools:
                result = ToolResult(
                    call_id, f"server tool {name!r} has no implementation on this server", True
                )
            else:
                outcome = await self.server_tools.execute(
                    name, parameters, timeout=spec.response_timeout_secs
                )
                result = outcome.to_tool_result(call_id)
        elif not await self._send_client_call(name, call_id, parameters, turn.event_id):
            result = ToolResult(
                call_id,
                f"client tool {name!r} cannot run over the {self.transport.protocol} protocol, "
                "whose clients do not answer tool calls; make it a server tool",
                is_error=True,
            )
        elif not spec.expects_response:
            result = ToolResult(call_id, "sent (the tool does not expect a response)")
        else:
            fut: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
            self._tool_futures[call_id] = fut
            timeout = spec.response_timeout_secs or self.config.client_tool_timeout_s
            try:
                result = await asyncio.wait_for(fut, timeout=None if timeout < 0 else timeout)
            except TimeoutError:
                result = ToolResult(
                    call_id,
                    f"client tool {name!r} did not answer within {timeout:g} s; "
                    "check that the client registered it",
                    is_error=True,
                )
            finally:
                self._tool_futures.pop(call_id, None)
        elapsed = time.monotonic() - started
        outcome = "error" if result.is_error else "ok"
        self.metrics.tool_seconds.labels(name, outcome).observe(elapsed)
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

    async def _send_client_call(
        self, name: str, call_id: str, parameters: dict[str, Any], event_id: int
    ) -> bool:
        """Send ``client_tool_call``; False when the client cannot answer (relay)."""
        await self.transport.send_client_tool_call(name, call_id, parameters, event_id)
        return self.transport.answers_client_tools

    def on_tool_result(self, tool_call_id: str, value: Any, is_error: bool) -> bool:
        """A ``client_tool_result`` arrived; False when no call is waiting for that id."""
        fut = self._tool_futures.get(tool_call_id)
        if fut is None or fut.done():
            return False
        fut.set_result(ToolResult(tool_call_id, value, is_error))
        return True

    async def vad_score(self, score: float) -> None:
        await self.transport.send_vad_score(score)

    async def stage(self, turn: Turn, name: str, duration_ms: float) -> None:
        self.metrics.stage_seconds.labels(name).observe(duration_ms / 1000)
        await self.transport.send_stage(turn.event_id, name, duration_ms)

    async def fail(self, error_type: str, message: str, *, fatal: bool = False) -> None:
        if fatal:
            await self.close(closecodes.OPERATIONAL, message, error_type=error_type)
        else:
            self.metrics.errors.labels(error_type).inc()
            await self.transport.send_error(closecodes.OPERATIONAL, error_type, message)

    async def end(self, reason: str = "agent ended the conversation") -> None:
        if self._current is not None:
            await self.finish_audio(self._current)
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
