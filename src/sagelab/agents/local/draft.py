"""A reply drafted while the end of turn is still being decided.

The speculative transcript of a pause (the turn-taker's ``Draft``) is usually the turn's
final text, and it arrives while the agent still waits out the silence that decides the turn.
``LocalAgent`` starts the reply then, against a :class:`DraftContext` instead of the session:
the brain thinks, read-only server tools run, the first clause is synthesised, and **nothing
reaches the user** until the turn is confirmed. Then :meth:`DraftContext.commit` reports what
was done (tool calls, stage timings) under the real turn and lets the held audio out, so the
reply starts as soon as the turn ends instead of a brain-and-TTS later. If the user goes on,
the draft is cancelled and leaves no trace: no event, no tool call that changed anything.

What may run early is the agent's choice per tool (``read_only`` in the agents file): a tool
that changes something waits for the commit, so a turn that never happens changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from sagelab.agents.base import AgentContext, EarlyToolRun, ResolvedAgent, ToolResult
from sagelab.conversation.session import AgentTurn, Interrupted

# Stages on the path from the decision to the first audio: a draft reports only the part of
# each that came after its commit (the rest was hidden in the user's silence).
_ON_THE_PATH = frozenset({"brain", "brain_first_text", "tool", "tts_first_audio"})

Report = Callable[[AgentTurn], Awaitable[Any]]


class DraftContext:
    """The ``AgentContext`` of a drafted reply: reports wait in order, output waits for the
    commit; tool calls run early only when the session says they may (``run_early``)."""

    def __init__(self, ctx: AgentContext, started_at: float) -> None:
        self._ctx = ctx
        self.started_at = started_at
        # The stand-in the reply is written against; everything it reports goes out under the
        # real turn, whose event id it takes at the commit (for the agent's own bookkeeping).
        self.turn = AgentTurn(event_id=0, created_at=started_at)
        self.committed_at: float | None = None
        self._turn: AgentTurn | None = None
        self._open = asyncio.Event()
        self._reports: list[Report] = []

    @property
    def committed(self) -> bool:
        return self._open.is_set()

    async def commit(self, turn: AgentTurn, now: float) -> None:
        """The turn is confirmed: report, under ``turn``, what the draft did, then let it
        speak. Reports the draft queues meanwhile go out in order before any output."""
        self._turn, self.committed_at = turn, now
        self.turn.event_id = turn.event_id
        await self._ctx.stage(turn, "draft", max(0.0, now - self.started_at) * 1000)
        while self._reports:
            await self._reports.pop(0)(turn)
        self._open.set()

    async def _turn_when_open(self) -> AgentTurn:
        await self._open.wait()
        assert self._turn is not None
        return self._turn

    def _clip(self, name: str, duration_ms: float, called_at: float) -> float:
        """The part of a path stage that ended at ``called_at`` and lies after the commit."""
        if name not in _ON_THE_PATH or self.committed_at is None:
            return duration_ms
        began = called_at - duration_ms / 1000
        return max(0.0, called_at - max(began, self.committed_at)) * 1000

    # -- the AgentContext interface --------------------------------------------------------

    @property
    def agent(self) -> ResolvedAgent:
        return self._ctx.agent

    @property
    def conversation_id(self) -> str:
        return self._ctx.conversation_id

    def begin_turn(self) -> AgentTurn:
        raise RuntimeError("a drafted reply speaks in the turn it is committed to")

    async def user_transcript(self, turn: AgentTurn, text: str, *, tentative: bool = False) -> None:
        raise RuntimeError("a drafted reply does not report transcripts")

    async def agent_response(self, turn: AgentTurn, text: str) -> None:
        await self._ctx.agent_response(await self._turn_when_open(), text)

    async def agent_audio(
        self,
        turn: AgentTurn,
        pcm: np.ndarray,
        alignment: list[tuple[str, float]] | None = None,
    ) -> None:
        await self._ctx.agent_audio(await self._turn_when_open(), pcm, alignment)

    async def finish_audio(self, turn: AgentTurn) -> None:
        await self._ctx.finish_audio(await self._turn_when_open())

    async def interrupt(self) -> Interrupted | None:
        return await self._ctx.interrupt()

    async def call_tool(
        self,
        turn: AgentTurn,
        name: str,
        parameters: dict[str, Any],
        *,
        early: EarlyToolRun | None = None,
    ) -> ToolResult:
        if not self.committed:
            run = await self._ctx.run_early(name, parameters)
            if run is not None:
                if self.committed:  # the turn was confirmed while the tool ran: report now
                    return await self._ctx.call_tool(
                        await self._turn_when_open(), name, parameters, early=run
                    )
                self._reports.append(
                    lambda real: self._ctx.call_tool(real, name, parameters, early=run)
                )
                return run.result
        return await self._ctx.call_tool(await self._turn_when_open(), name, parameters)

    async def run_early(self, name: str, parameters: dict[str, Any]) -> EarlyToolRun | None:
        return await self._ctx.run_early(name, parameters)

    async def vad_score(self, score: float) -> None:
        await self._ctx.vad_score(score)

    async def stage(self, turn: AgentTurn, name: str, duration_ms: float) -> None:
        called_at = asyncio.get_running_loop().time()
        if self.committed:
            real = await self._turn_when_open()
            await self._ctx.stage(real, name, self._clip(name, duration_ms, called_at))
            return
        self._reports.append(
            lambda real: self._ctx.stage(real, name, self._clip(name, duration_ms, called_at))
        )

    async def fail(self, error_type: str, message: str, *, fatal: bool = False) -> None:
        await self._open.wait()  # a draft that fails says so only if its turn happens
        await self._ctx.fail(error_type, message, fatal=fatal)

    async def end(self, reason: str = "agent ended the conversation") -> None:
        await self._open.wait()
        await self._ctx.end(reason)
