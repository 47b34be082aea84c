"""``ElevenLabsRelay``: the agent is an upstream ConvAI session, on ElevenLabs or any compatible
server; sagelab sits in the middle, as the web app's server did.

The client's audio and messages go upstream as they arrive; upstream transcripts, replies and
audio come back through the conversation core, so the client sees sagelab's own event ids,
pacing, barge-in and storage. Upstream ``client_tool_call``s run here: a tool the agent
declares as ``server`` runs in sagelab's tool registry, a ``client`` tool is passed on to the
client; either way the result (or error) goes back upstream. Options::

    backend: elevenlabs
    options:
      base_url: https://api.elevenlabs.io     # or another sagelab server
      agent_id: agent_…                       # default: $ELEVENLABS_AGENT_ID
      api_key_env: ELEVENLABS_API_KEY         # with requires_auth, for the signed URL
      requires_auth: false
      send_overrides: true                    # prompt and first message from the agents file

The prompt and first message overrides only take effect if the upstream agent allows them
(ElevenLabs: ``platform_settings.overrides``); otherwise the upstream refuses the session and
the client gets that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.agents.base import Agent, AgentContext, AgentTurn
from sagelab.audio import decode_to_pcm16
from sagelab.client import Session, SessionError
from sagelab.protocol import convai as wire

log = logging.getLogger(__name__)


class _ToolRouter(dict[str, Any]):
    """Every tool name the upstream asks for resolves to one router coroutine."""

    def __init__(self, route: Callable[[str, dict[str, Any]], Awaitable[Any]]) -> None:
        super().__init__()
        self._route = route

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        async def handler(params: dict[str, Any]) -> Any:
            return await self._route(name, params)

        return handler


class ToolFailed(Exception):
    """A tool's error, raised so the upstream gets ``is_error: true`` with the message."""


class ElevenLabsRelay(Agent):
    def __init__(
        self,
        ctx: AgentContext,
        session_factory: Callable[[Callable[[wire.ServerMessage], None]], Awaitable[Session]],
    ) -> None:
        super().__init__(ctx)
        self._factory = session_factory
        self._inbox: asyncio.Queue[wire.ServerMessage] = asyncio.Queue()
        self.upstream: Session | None = None
        self._pump: asyncio.Task[None] | None = None
        self._turns: dict[int, AgentTurn] = {}
        self._last_turn: AgentTurn | None = None

    async def start(self) -> None:
        try:
            self.upstream = await self._factory(self._inbox.put_nowait)
        except SessionError as exc:
            await self.ctx.fail("upstream_error", f"upstream agent unavailable: {exc}", fatal=True)
            return
        self.upstream.tools = _ToolRouter(self._run_tool)
        self._pump = asyncio.create_task(self._forward())

    def _turn(self, upstream_id: int | None) -> AgentTurn:
        """Upstream ids map to our own turns, so the client sees sagelab's id rules."""
        if upstream_id is None:
            if self._last_turn is None:
                self._last_turn = self.ctx.begin_turn()
            return self._last_turn
        turn = self._turns.get(upstream_id)
        if turn is None:
            turn = self._turns[upstream_id] = self.ctx.begin_turn()
            self._last_turn = turn
        return turn

    async def _forward(self) -> None:
        assert self.upstream is not None
        up = self.upstream
        while not (up.closed and self._inbox.empty()):
            try:
                msg = await asyncio.wait_for(self._inbox.get(), timeout=0.5)
            except TimeoutError:
                continue
            match msg:
                case wire.UserTranscript():
                    await self.ctx.user_transcript(self._turn(msg.event_id), msg.user_transcript)
                case wire.AgentResponse():
                    await self.ctx.agent_response(self._turn(msg.event_id), msg.agent_response)
                case wire.AudioEvent():
                    if msg.event_id <= up.last_interrupt_id:
                        continue  # stale audio of a turn the upstream already cut
                    pcm = decode_to_pcm16(msg.audio, up.output_format)
                    await self.ctx.agent_audio(self._turn(msg.event_id), pcm)
                case wire.Interruption():
                    await self.ctx.interrupt()
                case wire.ErrorEvent():
                    await self.ctx.fail(
                        msg.error_type or "upstream_error", f"upstream: {msg.message or ''}"
                    )
        reason = f"upstream closed ({up.close_code}: {up.close_reason or 'no reason'})"
        if up.close_code == 1000:
            await self.ctx.end(reason)
        else:
            await self.ctx.fail("upstream_error", reason, fatal=True)

    async def _run_tool(self, name: str, params: dict[str, Any]) -> Any:
        turn = self._last_turn or self._turn(None)
        result = await self.ctx.call_tool(turn, name, params)
        if result.is_error:
            raise ToolFailed(result.text)
        return result.value

    async def on_audio(self, pcm: np.ndarray) -> None:
        if self.upstream is not None and not self.upstream.closed:
            with contextlib.suppress(SessionError):
                await self.upstream.send_audio(pcm, realtime=False)

    async def on_user_message(self, text: str) -> None:
        if self.upstream is not None:
            await self.upstream.send_text(text)

    async def on_contextual_update(self, text: str, context_id: str | None) -> None:
        if self.upstream is not None:
            await self.upstream.send_contextual_update(text)

    async def on_user_activity(self) -> None:
        if self.upstream is not None:
            await self.upstream.send_user_activity()

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump


def create(ctx: AgentContext, base_dir: Path) -> ElevenLabsRelay:
    options = ctx.agent.options
    agent_id = options.get("agent_id") or os.environ.get("ELEVENLABS_AGENT_ID")
    if not agent_id:
        raise ValueError(
            f"agent {ctx.agent.id!r}: the elevenlabs backend needs options.agent_id "
            "or ELEVENLABS_AGENT_ID"
        )
    base_url = options.get("base_url", "https://api.elevenlabs.io")
    api_key = os.environ.get(options.get("api_key_env", "ELEVENLABS_API_KEY"))
    overrides: dict[str, Any] = {}
    if options.get("send_overrides", True):
        if ctx.agent.prompt:
            overrides["prompt"] = ctx.agent.prompt
        if ctx.agent.first_message:
            overrides["first_message"] = ctx.agent.first_message

    async def open_session(listener: Callable[[wire.ServerMessage], None]) -> Session:
        return await Session.connect(
            base_url,
            agent_id,
            api_key=api_key,
            requires_auth=bool(options.get("requires_auth", False)),
            dynamic_variables=ctx.agent.dynamic_variables,
            text_only=ctx.agent.text_only,
            record_audio=False,
            listener=listener,
            **overrides,
        )

    return ElevenLabsRelay(ctx, open_session)
