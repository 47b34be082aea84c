"""``openai``: any OpenAI-compatible chat-completions endpoint (llama.cpp, Ollama, vLLM, OpenAI).

The reply is streamed (``stream: true``) so the first sentence can be spoken while the model is
still writing the rest, and the agent's tools are offered as functions. When the model asks
for tools, each call goes through ``call_tool``, the results go back as ``tool`` messages and
the model is asked again, until it answers in text. Options::

    brain: openai
    brain_options:
      model: llama-3.2-3b-instruct          # required
      base_url: http://127.0.0.1:8080/v1    # default https://api.openai.com/v1
      api_key: null                         # default: the variable named by api_key_env
      api_key_env: OPENAI_API_KEY           # unset is fine for local servers
      temperature: null                     # null: the server's default
      max_tokens: null
      timeout_s: 20                         # longest wait for the first token or the next one
      max_tool_rounds: 5                    # model requests per reply; the last forbids tools
      tool_choice: auto                     # the first request's: auto, required, or a tool name
      extra_body: {}                        # merged into the request (e.g. {top_k: 40})

It uses the official ``openai`` package: it already speaks every server's dialect of SSE and
error bodies, and its typed deltas keep the tool-call bookkeeping honest. Its retries are off
(``max_retries=0``): a voice turn cannot wait for a back-off, and a retry would hide a
timeout behind another one. Any failure of the endpoint becomes a ``BrainError`` naming the
URL and what to change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
from pydantic import BaseModel, ConfigDict, Field

from sagelab.agents.local.brain import Brain, BrainError, ChatMessage, ToolCaller
from sagelab.agents.local.brains.options import parse_options
from sagelab.config import ToolSpec

log = logging.getLogger(__name__)

# The SDK insists on a key; local servers ignore whatever is sent.
_NO_KEY = "sk-no-key-required"


class OpenAIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=20.0, gt=0)
    max_tool_rounds: int = Field(default=5, ge=1, le=20)
    # "auto" lets the model decide. Small models rarely call a tool on their own, so the first
    # request of a reply may insist: "required" (OpenAI, vLLM) or one tool's name (also
    # llama.cpp's chatml-function-calling, which has no "required"). Later requests are "auto".
    tool_choice: str = Field(default="auto", min_length=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)


@dataclass
class _PendingCall:
    """A tool call being assembled from stream deltas."""

    id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAIBrain(Brain):
    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        self._api_key = options.api_key or os.environ.get(options.api_key_env) or _NO_KEY
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> OpenAIBrain:
        return cls(parse_options(OpenAIOptions, options, "openai"))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def respond(
        self,
        history: Sequence[ChatMessage],
        *,
        system_prompt: str,
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> AsyncIterator[str]:
        messages: list[ChatCompletionMessageParam] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.extend(_message(m) for m in history)
        functions = [_function(t) for t in tools]
        rounds = self.options.max_tool_rounds
        for round_no in range(rounds):
            calls: dict[int, _PendingCall] = {}
            text: list[str] = []
            # The last round forbids tools, so a model stuck in a tool loop still says something.
            final = round_no == rounds - 1
            # aclosing: a barge-in that closes this generator closes the HTTP stream now,
            # not whenever the garbage collector finalises the inner generator.
            choice = self._tool_choice(functions, round_no, final)
            async with aclosing(self._stream(messages, functions, calls, choice)) as pieces:
                async for piece in pieces:
                    text.append(piece)
                    yield piece
            if not calls:
                return
            pending = [calls[i] for i in sorted(calls)]
            for i, call in enumerate(pending):
                call.id = call.id or f"call_{round_no}_{i}"
            assistant: ChatCompletionAssistantMessageParam = {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in pending
                ],
            }
            if text:
                # Absent, not null, when the model said nothing: llama.cpp's server rejects a
                # null content (HTTP 500), and OpenAI accepts either.
                assistant["content"] = "".join(text)
            messages.append(assistant)
            for call in pending:
                content = await _run(call, call_tool)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        raise BrainError(
            f"the model at {self.url} still asked for tools after {rounds} rounds although the "
            "last request forbade them (tool_choice: none); raise max_tool_rounds or use a "
            "server that honours tool_choice"
        )

    async def _stream(
        self,
        messages: list[ChatCompletionMessageParam],
        functions: list[ChatCompletionToolParam],
        calls: dict[int, _PendingCall],
        choice: Any,
    ) -> AsyncGenerator[str, None]:
        """One request: yield its text, collect its tool calls into ``calls``."""
        timeout = self.options.timeout_s
        try:
            async with asyncio.timeout(timeout):
                stream = await self._create(messages, functions, choice)
        except (openai.OpenAIError, TimeoutError, ValueError) as exc:
            raise self._error(exc) from exc
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except (openai.OpenAIError, TimeoutError, ValueError) as exc:
                    raise self._error(exc) from exc
                content = _collect(chunk, calls)
                if content:
                    yield content
        finally:
            # Barge-in lands here too (CancelledError or GeneratorExit): drop the HTTP stream,
            # so the server stops generating for a reply nobody will hear.
            await stream.close()

    def _tool_choice(
        self, functions: list[ChatCompletionToolParam], round_no: int, final: bool
    ) -> Any:
        """``tool_choice`` of one request: none on the last, the option's on the first."""
        if not functions:
            return openai.omit
        if final:
            return "none"
        wanted = self.options.tool_choice
        if round_no > 0 or wanted == "auto":
            return openai.omit
        if wanted in ("required", "none"):
            return wanted
        if wanted not in {f["function"]["name"] for f in functions}:
            raise BrainError(
                f"brain_options.tool_choice names {wanted!r}, which is not one of the agent's "
                "tools; use auto, required or a tool name"
            )
        return {"type": "function", "function": {"name": wanted}}

    async def _create(
        self,
        messages: list[ChatCompletionMessageParam],
        functions: list[ChatCompletionToolParam],
        choice: Any,
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        opts = self.options
        return await self._get_client().chat.completions.create(
            model=opts.model,
            messages=messages,
            stream=True,
            tools=functions or openai.omit,
            tool_choice=choice,
            temperature=opts.temperature if opts.temperature is not None else openai.omit,
            max_tokens=opts.max_tokens if opts.max_tokens is not None else openai.omit,
            extra_body=opts.extra_body or None,
        )

    def _get_client(self) -> openai.AsyncOpenAI:
        # Created on first use, inside the event loop that will drive its connections.
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.options.base_url,
                api_key=self._api_key,
                timeout=self.options.timeout_s,
                max_retries=0,
            )
        return self._client

    def _error(self, exc: BaseException) -> BrainError:
        opts, url = self.options, self.url
        if isinstance(exc, TimeoutError | openai.APITimeoutError):
            return BrainError(
                f"the LLM at {url} did not answer within {opts.timeout_s:g} s; check that the "
                f"server is running and model {opts.model!r} is loaded, or raise timeout_s"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return BrainError(
                f"cannot reach the LLM at {url} ({cause}); start the server or fix base_url"
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return BrainError(
                f"the LLM at {url} rejected the API key (HTTP {exc.status_code}); set api_key "
                f"or the {opts.api_key_env} environment variable"
            )
        if isinstance(exc, openai.NotFoundError):
            return BrainError(
                f"the LLM at {url} answered HTTP 404 ({exc.message}); check that base_url "
                f"ends with /v1 and that the server knows model {opts.model!r}"
            )
        if isinstance(exc, openai.APIStatusError):
            return BrainError(
                f"the LLM at {url} answered HTTP {exc.status_code}: {exc.message}; see the "
                "server's log"
            )
        if isinstance(exc, openai.APIError):
            return BrainError(f"the LLM at {url} reported an error mid-stream: {exc.message}")
        return BrainError(
            f"the LLM at {url} sent a malformed stream ({exc}); is base_url an "
            "OpenAI-compatible chat-completions endpoint?"
        )


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _function(tool: ToolSpec) -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _collect(chunk: ChatCompletionChunk, calls: dict[int, _PendingCall]) -> str:
    """The text of one chunk; its tool-call fragments are merged into ``calls``."""
    text = ""
    for choice in chunk.choices or ():
        delta = choice.delta
        if choice.index != 0 or delta is None:
            continue  # n=1 is requested; anything else is not part of this reply
        for fragment in delta.tool_calls or ():
            _merge(calls, fragment)
        text += delta.content or ""
    return text


def _merge(calls: dict[int, _PendingCall], fragment: ChoiceDeltaToolCall) -> None:
    index = fragment.index if fragment.index is not None else len(calls)
    call = calls.setdefault(index, _PendingCall())
    if fragment.id:
        call.id = fragment.id  # some servers repeat the id in every fragment
    function = fragment.function
    if function is None:
        return
    if function.name and function.name != call.name:
        # OpenAI sends the name once; a few servers split it, others repeat it whole.
        call.name += function.name
    call.arguments += function.arguments or ""


async def _run(call: _PendingCall, call_tool: ToolCaller) -> str:
    """Run one requested call; the returned text is what the model reads back."""
    try:
        parameters = json.loads(call.arguments or "{}")
    except ValueError as exc:
        log.warning("model sent invalid JSON arguments for %s: %r", call.name, call.arguments)
        return f"Error: the arguments were not valid JSON ({exc}); call {call.name} again."
    if not isinstance(parameters, dict):
        return f"Error: the arguments must be a JSON object, not {call.arguments}."
    result = await call_tool(call.name, parameters)
    return f"Error: {result.text}" if result.is_error else result.text
