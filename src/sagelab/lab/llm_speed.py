"""How fast the local ``llm`` brain writes: time to first token and tokens per second.

Measured on the brain itself (no audio, no server), so the numbers are the model's, and the
voice-to-voice figures of a lab run can be read as "these plus STT, TTS and endpointing".
Prompts are the demo agent's kind of turn; sampling is seeded, so runs differ only by the
machine's load. Run it with::

    python -c "from sagelab.lab.llm_speed import main; main()"
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pandas as pd

from sagelab.agents.base import ToolResult
from sagelab.agents.local.brain import ChatMessage, create_brain
from sagelab.agents.local.brains.llm import LLMBrain
from sagelab.metrics import summarize_values

__all__ = ["PROMPTS", "main", "measure_llm"]

PROMPTS = (
    "What can you do?",
    "Tell me about the customers in Oslo.",
    "How do I change the owner of an account?",
    "Thanks, that is all for today.",
)
SYSTEM = (
    "You are Audio Sage, a voice assistant for a small team's customer accounts. "
    "Keep every answer to one or two short spoken sentences."
)


async def _no_tool(name: str, params: dict[str, Any]) -> ToolResult:
    return ToolResult("none", "no tools in this benchmark", is_error=True)


async def measure_llm(runs: int = 20, **options: Any) -> pd.DataFrame:
    """One row per reply: first token, tokens, decode speed. ``options`` are brain options."""
    brain = create_brain("llm", {"seed": 1, **options})
    assert isinstance(brain, LLMBrain)
    rows = []
    # One untimed reply first: llama.cpp allocates its compute buffers on the first one.
    async for _ in brain.respond(
        [ChatMessage("user", "Hello.")], system_prompt=SYSTEM, tools=[], call_tool=_no_tool
    ):
        pass
    for k in range(runs):
        prompt = PROMPTS[k % len(PROMPTS)]
        text = ""
        async for piece in brain.respond(
            [ChatMessage("user", prompt)], system_prompt=SYSTEM, tools=[], call_tool=_no_tool
        ):
            text += piece
        stats = brain.last_stats[0]
        rows.append(
            {
                "run": k + 1,
                "prompt": prompt,
                "first_token_ms": (stats.first_token_s or math.nan) * 1000,
                "tokens": stats.completion_tokens,
                "tokens_per_s": stats.tokens_per_s or math.nan,
                "total_ms": stats.total_s * 1000,
                "reply": text,
            }
        )
    return pd.DataFrame(rows)


def main(runs: int = 20, **options: Any) -> pd.DataFrame:
    frame = asyncio.run(measure_llm(runs, **options))
    for column in ("first_token_ms", "tokens_per_s", "total_ms"):
        s = summarize_values(frame[column])
        print(f"{column}: p50 {s['p50']:.1f} p95 {s['p95']:.1f} p99 {s['p99']:.1f} n {s['count']}")
    return frame
