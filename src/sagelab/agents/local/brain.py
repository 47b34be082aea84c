"""The brain of the local voice agent: conversation in, spoken reply out, tools on the way.

Every brain streams its reply as text pieces because the pipeline starts synthesising the first
sentence while the rest is still being produced; a brain that returned one string would add its
whole thinking time to the user's wait. Tools go through a callback rather than a registry so
the brain never learns whether a tool runs on the client or the server, how it is validated or
how long it may take: the caller owns all of that and hands back failures as results, which is
also what an LLM needs to see to recover.

Brains are chosen by name in the agents file (``brain: rules`` plus ``brain_options``); see each
module in ``sagelab.agents.local.brains`` for its options. Implementations are imported only
when asked for, so the optional ``openai`` package is needed only by agents that use it.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sagelab.agents.base import ToolResult
from sagelab.config import ToolSpec

__all__ = [
    "BRAIN_NAMES",
    "Brain",
    "BrainError",
    "ChatMessage",
    "ToolCaller",
    "create_brain",
]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the conversation as the brain sees it (tool traffic is the brain's own)."""

    role: Literal["system", "user", "assistant"]
    content: str


ToolCaller = Callable[[str, dict[str, Any]], Awaitable[ToolResult]]
"""``(tool name, parameters) -> result``; never raises for a tool failure."""


class BrainError(Exception):
    """The brain itself failed (bad options, LLM unreachable or too slow); the message says
    what to fix, because it reaches the operator through the client's error event."""


class Brain(abc.ABC):
    """Produces the agent's reply to the conversation so far."""

    @abc.abstractmethod
    def respond(
        self,
        history: Sequence[ChatMessage],
        *,
        system_prompt: str,
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> AsyncIterator[str]:
        """Yield the reply as text pieces; ``history`` ends with the latest user message.

        Implementations are async generators. The caller may stop iterating at any moment
        (barge-in), by cancelling its task or closing the generator, so anything held open
        (an HTTP stream) must be released in ``finally``. Tool failures arrive as
        ``ToolResult(is_error=True)``; only the brain's own failures raise ``BrainError``.
        """

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release what the brain keeps between turns (an HTTP connection pool)."""


# Implementations by name, as "module:factory"; imported lazily (see the module docstring).
_BRAINS: dict[str, str] = {
    "echo": "sagelab.agents.local.brains.echo:EchoBrain",
    "rules": "sagelab.agents.local.brains.rules:RulesBrain",
    "openai": "sagelab.agents.local.brains.openai_compat:OpenAIBrain",
    "llm": "sagelab.agents.local.brains.llm:LLMBrain",
}
BRAIN_NAMES: tuple[str, ...] = tuple(_BRAINS)


def create_brain(name: str, options: dict[str, Any]) -> Brain:
    """Build the brain called ``name`` from its ``brain_options``; ``BrainError`` if invalid."""
    target = _BRAINS.get(name)
    if target is None:
        raise BrainError(f"unknown brain {name!r}; use one of: {', '.join(BRAIN_NAMES)}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise BrainError(
            f"brain {name!r} needs the Python package {missing!r}: pip install {missing}"
        ) from exc
    brain_class = getattr(module, class_name)
    brain: Brain = brain_class.from_options(options)
    return brain
