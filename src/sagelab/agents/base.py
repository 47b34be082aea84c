"""The ``Agent`` interface: what a voice agent backend receives and what it may do.

A backend (scripted, local pipeline, ElevenLabs relay) sees only 16 kHz PCM16 audio, text and tool
results; it never sees a socket or a protocol. Everything it emits goes through its
``AgentContext``, which owns event ids, audio pacing, interruption bookkeeping, the conversation
store and the wire encoding, so every backend gets the same (tested) semantics for free.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sagelab.config import ToolSpec
from sagelab.conversation.session import AgentTurn, Interrupted


@dataclass(frozen=True)
class ResolvedAgent:
    """An agent's settings for one session: the agents file plus the session's overrides,
    with ``{{dynamic_variables}}`` already filled in."""

    id: str
    name: str
    prompt: str
    first_message: str
    language: str
    voice: str | None
    tools: tuple[ToolSpec, ...]
    backend: str
    options: dict[str, Any]
    input_format: str
    output_format: str
    dynamic_variables: dict[str, Any] = field(default_factory=dict)
    text_only: bool = False

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)


@dataclass(frozen=True)
class ToolResult:
    """What came back from a tool: the value (any JSON) or an error message."""

    tool_call_id: str
    value: Any
    is_error: bool = False

    @property
    def text(self) -> str:
        import json

        return self.value if isinstance(self.value, str) else json.dumps(self.value)


@dataclass(frozen=True)
class EarlyToolRun:
    """A read-only server tool that ran before its turn was decided (a drafted reply's
    lookup). Nothing about it has been reported yet: ``AgentContext.call_tool(..., early=run)``
    reports it as the turn's call, with this result, without running it again."""

    call_id: str
    name: str
    parameters: dict[str, Any]
    value: Any
    is_error: bool
    duration_s: float

    @property
    def result(self) -> ToolResult:
        return ToolResult(self.call_id, self.value, self.is_error)


class AgentContext(Protocol):
    """The session side of the interface, implemented by the server's conversation core."""

    @property
    def agent(self) -> ResolvedAgent: ...

    @property
    def conversation_id(self) -> str: ...

    def begin_turn(self) -> AgentTurn:
        """Allocate the next event id; user transcript, reply text and audio of a turn share it."""
        ...

    async def user_transcript(
        self, turn: AgentTurn, text: str, *, tentative: bool = False
    ) -> None: ...

    async def agent_response(self, turn: AgentTurn, text: str) -> None: ...

    async def agent_audio(
        self,
        turn: AgentTurn,
        pcm: np.ndarray,
        alignment: list[tuple[str, float]] | None = None,
    ) -> None:
        """Queue 16 kHz PCM16 for the client; the context paces it in real time."""
        ...

    async def finish_audio(self, turn: AgentTurn) -> None:
        """Wait until every queued chunk of the turn was sent (or the turn was interrupted)."""
        ...

    async def interrupt(self) -> Interrupted | None:
        """Barge-in: drop queued audio of the current turn and tell the client; what was cut
        (with the words the user heard), or None when the agent was not saying anything."""
        ...

    async def call_tool(
        self,
        turn: AgentTurn,
        name: str,
        parameters: dict[str, Any],
        *,
        early: EarlyToolRun | None = None,
    ) -> ToolResult:
        """Call a tool for ``turn`` and report the call; with ``early``, report that run."""
        ...

    async def run_early(self, name: str, parameters: dict[str, Any]) -> EarlyToolRun | None:
        """Run ``name`` now and report nothing, if it is a server tool marked ``read_only``
        with an implementation here; None otherwise (the caller must wait for its turn)."""
        ...

    async def vad_score(self, score: float) -> None: ...

    async def stage(self, turn: AgentTurn, name: str, duration_ms: float) -> None:
        """Report how long a pipeline stage took, for the latency breakdown."""
        ...

    async def fail(self, error_type: str, message: str, *, fatal: bool = False) -> None:
        """Report a pipeline error to the client; ``fatal`` ends the session."""
        ...

    async def end(self, reason: str = "agent ended the conversation") -> None: ...


class Agent(abc.ABC):
    """A voice agent backend. One instance per conversation; models are shared elsewhere.

    ``on_audio`` is called from the socket's receive loop for every chunk, so it must only do
    cheap work and hand heavy work (STT, TTS, LLM) to tasks or executors.
    """

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Called once after the client got the session metadata; speak the greeting here."""

    @abc.abstractmethod
    async def on_audio(self, pcm: np.ndarray) -> None:
        """A chunk of user audio, mono PCM16 at 16 kHz."""

    @abc.abstractmethod
    async def on_user_message(self, text: str) -> None:
        """A typed user turn (``user_message``)."""

    async def on_contextual_update(self, text: str, context_id: str | None) -> None:  # noqa: B027 (optional hook)
        """Background information; no reply is expected."""

    async def on_user_activity(self) -> None:  # noqa: B027 (optional hook)
        """The user is still there (resets turn timers)."""

    async def on_heard(self, interrupted: Interrupted) -> None:  # noqa: B027 (optional hook)
        """The client reported what it really played of a turn that was cut (a sagelab
        extension): a backend that keeps a history keeps that text."""

    async def on_interrupt(self) -> None:
        """An explicit interrupt request (relay ``interrupt``)."""
        await self.ctx.interrupt()

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """The session ended; cancel work and release per-session resources."""
