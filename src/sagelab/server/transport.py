"""What the conversation core sends, independent of the wire protocol.

The core speaks in ConvAI terms (the richer protocol); each ``Transport`` renders those events
for its protocol, and converts the core's 16 kHz PCM to the client's audio format at the edge.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Transport(abc.ABC):
    """One connected client. Implementations must never raise on a closed socket."""

    protocol: str
    # Whether the client can answer client_tool_call (the relay browser cannot).
    answers_client_tools: bool = True

    @abc.abstractmethod
    async def send_metadata(
        self, conversation_id: str, input_format: str, output_format: str
    ) -> None: ...

    @abc.abstractmethod
    async def send_ping(self, event_id: int, ping_ms: int | None) -> None: ...

    @abc.abstractmethod
    async def send_user_transcript(self, text: str, event_id: int, *, tentative: bool) -> None: ...

    @abc.abstractmethod
    async def send_agent_response(self, text: str, event_id: int) -> None: ...

    def encode_audio(self, pcm: np.ndarray, chunk_samples: int) -> list[Any]:
        """Turn one block of 16 kHz agent audio into per-chunk payloads for ``send_audio``.

        Called once per block the agent produces (a recording, a sentence), so a transport
        that resamples does it over the whole block: no filter edges at chunk boundaries and
        no streaming-resampler delay. The default keeps the 16 kHz chunks as they are.
        """
        return [pcm[i : i + chunk_samples] for i in range(0, len(pcm), chunk_samples)]

    @abc.abstractmethod
    async def send_audio(
        self, payload: Any, event_id: int, alignment: dict[str, Any] | None
    ) -> None: ...

    @abc.abstractmethod
    async def send_interruption(self, event_id: int) -> None: ...

    @abc.abstractmethod
    async def send_correction(self, original: str, corrected: str, event_id: int) -> None: ...

    @abc.abstractmethod
    async def send_client_tool_call(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None: ...

    @abc.abstractmethod
    async def send_tool_response(
        self, name: str, tool_call_id: str, tool_type: str, is_error: bool, event_id: int
    ) -> None: ...

    @abc.abstractmethod
    async def send_vad_score(self, score: float) -> None: ...

    @abc.abstractmethod
    async def send_error(self, code: int, error_type: str, message: str) -> None: ...

    @abc.abstractmethod
    async def close(self, code: int, reason: str) -> None: ...

    async def send_tool_request(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        """A server tool starts running (ConvAI ``agent_tool_request``; relay ``tool_call``)."""
        return

    async def send_stage(self, event_id: int, stage: str, ms: float) -> None:
        """A pipeline stage's duration, for clients that asked for them (default: none)."""
        return
