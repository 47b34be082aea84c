"""``echo``: says back what it heard, to check the ears (STT) and the mouth (TTS) in isolation.

Options::

    brain: echo
    brain_options:
      prefix: "You said: "     # spoken before the transcript
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from sagelab.agents.local.brain import Brain, ChatMessage, ToolCaller
from sagelab.agents.local.brains.options import parse_options
from sagelab.config import ToolSpec


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = "You said: "


class EchoBrain(Brain):
    def __init__(self, prefix: str = "You said: ") -> None:
        self.prefix = prefix

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EchoBrain:
        return cls(parse_options(EchoOptions, options, "echo").prefix)

    async def respond(
        self,
        history: Sequence[ChatMessage],
        *,
        system_prompt: str,
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> AsyncIterator[str]:
        heard = history[-1].content.strip() if history and history[-1].role == "user" else ""
        if heard:
            yield self.prefix + heard
