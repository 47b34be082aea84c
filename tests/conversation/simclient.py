"""A client for the server's ``Conversation`` adapter in simulated time.

The server's conversation behaviour (event ids, pacing, barge-in and correction, pings, client
tool calls and their timeouts, idle and maximum duration) lives in ``Conversation`` and the
sans-I/O core under it. ``SimClient`` is the client end of one conversation without a socket:
it records every frame the server would send, with the loop's (simulated) time, answers pings
after a round trip and client tool calls from its ``tools``. ``open_conversation`` builds the
bundled agent's backend exactly as the server does for a session, so these tests run the real
adapter and the real backend on ``VirtualTimeLoop``, where nothing waits on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sagelab.agents.backends import create_agent
from sagelab.agents.base import Agent, ResolvedAgent
from sagelab.config import ServerConfig, load_config
from sagelab.server.conversation import Conversation
from sagelab.server.metrics import ServerMetrics
from sagelab.server.transport import Transport

TURN_KINDS = (
    "user_transcript",
    "agent_response",
    "audio",
    "interruption",
    "correction",
    "client_tool_call",
    "tool_response",
)


@dataclass
class Frame:
    t: float
    kind: str
    event_id: int | None
    data: Any = None


class SimClient(Transport):
    """Records every frame; answers pings after ``rtt_s`` and client tool calls from ``tools``
    (a name → handler map; a call to any other tool is never answered) after ``tool_delay_s``."""

    protocol = "convai"

    def __init__(
        self,
        *,
        rtt_s: float = 0.02,
        answer_pings: bool = True,
        tools: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
        tool_delay_s: float = 0.01,
    ) -> None:
        self.frames: list[Frame] = []
        self.conv: Conversation | None = None
        self.rtt_s = rtt_s
        self.answer_pings = answer_pings
        self.tools = dict(tools or {})
        self.tool_delay_s = tool_delay_s
        self.closed = asyncio.Event()

    def _rec(self, kind: str, event_id: int | None, data: Any = None) -> None:
        self.frames.append(Frame(asyncio.get_running_loop().time(), kind, event_id, data))

    def of(self, kind: str) -> list[Frame]:
        return [f for f in self.frames if f.kind == kind]

    def since(self, mark: int, kind: str) -> list[Frame]:
        return [f for f in self.frames[mark:] if f.kind == kind]

    async def wait_for(
        self,
        kind: str,
        *,
        since: int = 0,
        predicate: Callable[[Frame], bool] = lambda f: True,
        timeout: float = 30.0,
    ) -> Frame:
        """The first ``kind`` frame from index ``since`` on that matches; waits in simulated
        time (a timeout here means the server never sent it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for f in self.frames[since:]:
                if f.kind == kind and predicate(f):
                    return f
            if loop.time() >= deadline:
                raise TimeoutError(f"no {kind} within {timeout} s; got {self.frames[since:]}")
            await asyncio.sleep(0.005)

    # -- what the server sends -------------------------------------------------------------

    async def send_metadata(
        self, conversation_id: str, input_format: str, output_format: str
    ) -> None:
        self._rec("metadata", None, conversation_id)

    async def send_ping(self, event_id: int, ping_ms: int | None) -> None:
        self._rec("ping", event_id, ping_ms)
        if self.answer_pings and self.conv is not None:
            conv, loop = self.conv, asyncio.get_running_loop()
            loop.call_later(self.rtt_s, lambda: conv.on_pong(event_id, loop.time()))

    async def send_user_transcript(self, text: str, event_id: int, *, tentative: bool) -> None:
        self._rec("user_transcript", event_id, text)

    async def send_agent_response(self, text: str, event_id: int) -> None:
        self._rec("agent_response", event_id, text)

    async def send_audio(self, payload: Any, event_id: int, alignment: Any) -> None:
        self._rec("audio", event_id, len(payload))

    async def send_interruption(self, event_id: int) -> None:
        self._rec("interruption", event_id)

    async def send_correction(self, original: str, corrected: str, event_id: int) -> None:
        self._rec("correction", event_id, (original, corrected))

    async def send_client_tool_call(
        self, name: str, tool_call_id: str, parameters: Any, event_id: int
    ) -> None:
        self._rec("client_tool_call", event_id, (name, tool_call_id, parameters))
        handler = self.tools.get(name)
        if handler is not None and self.conv is not None:
            conv, loop = self.conv, asyncio.get_running_loop()
            value = handler(dict(parameters))
            loop.call_later(
                self.tool_delay_s, lambda: conv.on_tool_result(tool_call_id, value, False)
            )

    async def send_tool_response(
        self, name: str, tool_call_id: str, tool_type: str, is_error: bool, event_id: int
    ) -> None:
        self._rec("tool_response", event_id, (name, tool_call_id, is_error))

    async def send_tool_request(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        self._rec("tool_request", event_id, (name, tool_call_id, parameters))

    async def send_stage(self, event_id: int, stage: str, ms: float) -> None:
        self._rec("stage", event_id, (stage, ms))

    async def send_vad_score(self, score: float) -> None:
        return

    async def send_error(self, code: int, error_type: str, message: str) -> None:
        self._rec("error", None, (code, error_type, message))

    async def close(self, code: int, reason: str) -> None:
        self._rec("close", None, (code, reason))
        self.closed.set()


def sim_config(**overrides: Any) -> ServerConfig:
    """The bundled configuration with only the ``scripted`` agent, no store, as the suite's
    ``server_config`` fixture has it (pings every 0.2 s)."""
    config = load_config(None, env={}, port=0, ping_interval_s=0.2)
    config.agents = [a for a in config.agents if a.id == "scripted"]
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def resolved(config: ServerConfig, agent_id: str = "scripted", **fields: Any) -> ResolvedAgent:
    spec = next(a for a in config.agents if a.id == agent_id)
    values: dict[str, Any] = dict(
        id=spec.id,
        name=spec.name,
        prompt=spec.prompt,
        first_message=spec.first_message,
        language=spec.language,
        voice=spec.voice,
        tools=tuple(spec.tools),
        backend=spec.backend,
        options=spec.options,
        input_format=spec.input_format,
        output_format=spec.output_format,
    )
    values.update(fields)
    return ResolvedAgent(**values)


async def open_conversation(
    client: SimClient, config: ServerConfig, agent: ResolvedAgent | None = None
) -> tuple[Conversation, Agent]:
    """Start a conversation as the server does for a new session (metadata, then greeting)."""
    conv = Conversation(
        conversation_id="conv_simulated0001",
        agent=agent or resolved(config),
        transport=client,
        config=config,
        metrics=ServerMetrics(),
        store=None,
    )
    client.conv = conv
    backend = create_agent(conv, config.base_dir)
    await conv.start(backend)
    return conv, backend


async def say_text(conv: Conversation, backend: Agent, text: str) -> None:
    """A ``user_message``, handled as the ConvAI route handles it."""
    conv.touch()
    conv.typed(text)
    await conv.run_backend(backend.on_user_message(text))


async def stream_audio(
    conv: Conversation, backend: Agent, pcm: np.ndarray, chunk_ms: int = 250
) -> None:
    """Microphone audio in real-time ``chunk_ms`` chunks (simulated), as the route feeds it: a
    chunk arrives when its last sample was captured (chunk k at ``(k + 1) * chunk_ms``)."""
    step = 16 * chunk_ms
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k, i in enumerate(range(0, pcm.size, step)):
        await asyncio.sleep(max(0.0, t0 + (k + 1) * chunk_ms / 1000 - loop.time()))
        conv.touch()
        await conv.run_backend(backend.on_audio(pcm[i : i + step]))
