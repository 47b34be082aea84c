"""What the conversation sends, independent of the wire protocol.

The conversation calls one method per thing it says; a connected client's transport
(``connection.WebSocketTransport``) turns each call into a protocol-neutral event and lets the
protocol's serializer (``convai.py``, ``relay.py``) encode it, including the core's 16 kHz PCM
in the client's audio format. ``DetachedTransport`` stands in while no client is connected.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed


class Transport(abc.ABC):
    """One connected client. Implementations must never raise on a closed socket."""

    protocol: str
    # Whether the client can answer client_tool_call (the relay browser cannot).
    answers_client_tools: bool = True
    # Slow readers: a send that waits longer than this for the client to read (websockets'
    # write buffer stays above its high-water mark) marks the transport stalled, drops every
    # later frame and calls on_stall once, so the session is closed instead of buffering.
    send_timeout_s: float | None = None
    stalled: bool = False
    on_stall: Callable[[str], None] | None = None
    # A resumable session's token for this connection (``resume.py``): sent with the metadata,
    # in whatever shape the protocol allows. None: the client did not ask for one.
    resume_token: str | None = None
    resume_grace_s: float = 0.0

    async def send_frame(self, ws: ServerConnection, frame: str | bytes) -> bool:
        """Send one frame with backpressure and a deadline; False when it was not sent."""
        if self.stalled:
            return False
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await ws.send(frame)
        except ConnectionClosed:
            return False
        except TimeoutError:
            self.stalled = True
            if self.on_stall is not None:
                self.on_stall(
                    f"the client did not read what the server sent for {self.send_timeout_s:g} s "
                    "(slow reader); read the socket continuously, on its own task or thread"
                )
            return False
        return True

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

    async def send_tool_detail(
        self,
        name: str,
        tool_call_id: str,
        parameters: dict[str, Any],
        result: Any,
        is_error: bool,
        event_id: int,
    ) -> None:
        """A server tool's call with its parameters and result, for clients that asked for
        sagelab's extension events (default: none)."""
        return

    async def send_stage(self, event_id: int, stage: str, ms: float) -> None:
        """A pipeline stage's duration, for clients that asked for them (default: none)."""
        return


class DetachedTransport(Transport):
    """Stands in while a conversation waits for its client to resume: everything is dropped.

    The relay protocol says a restored session replays no events, and ConvAI has nothing to
    say either; what the agent emits meanwhile (its interrupted turn's last frames, pings) is
    lost exactly as it would have been on the dead socket.
    """

    answers_client_tools = False

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol

    async def send_metadata(
        self, conversation_id: str, input_format: str, output_format: str
    ) -> None:
        return

    async def send_ping(self, event_id: int, ping_ms: int | None) -> None:
        return

    async def send_user_transcript(self, text: str, event_id: int, *, tentative: bool) -> None:
        return

    async def send_agent_response(self, text: str, event_id: int) -> None:
        return

    async def send_audio(
        self, payload: Any, event_id: int, alignment: dict[str, Any] | None
    ) -> None:
        return

    async def send_interruption(self, event_id: int) -> None:
        return

    async def send_correction(self, original: str, corrected: str, event_id: int) -> None:
        return

    async def send_client_tool_call(
        self, name: str, tool_call_id: str, parameters: dict[str, Any], event_id: int
    ) -> None:
        return

    async def send_tool_response(
        self, name: str, tool_call_id: str, tool_type: str, is_error: bool, event_id: int
    ) -> None:
        return

    async def send_vad_score(self, score: float) -> None:
        return

    async def send_error(self, code: int, error_type: str, message: str) -> None:
        return

    async def close(self, code: int, reason: str) -> None:
        return


async def close_connection(
    transport: Transport, ws: ServerConnection, code: int, reason: str
) -> None:
    """Close the WebSocket without ever waiting forever, and never raise.

    A close frame queues behind whatever the client has not read, so closing a slow reader
    the polite way would wait for it to read; a stalled transport is aborted (the TCP
    connection drops) instead. While a close handshake runs, frames the client still sends
    are read and dropped: a flooding client whose frames fill websockets' receive queue would
    otherwise never get its close reply through.
    """
    if not transport.stalled:
        drain = asyncio.create_task(_discard_incoming(ws))
        limit = (transport.send_timeout_s or 10.0) + (ws.close_timeout or 10.0)
        try:
            async with asyncio.timeout(limit):
                await ws.close(code, reason)
            return
        except TimeoutError:
            pass
        except Exception:
            return
        finally:
            drain.cancel()
    if ws.transport is not None:
        ws.transport.abort()


async def _discard_incoming(ws: ServerConnection) -> None:
    # Fails at once (ConcurrencyError) when the route's receive loop is reading: then it is
    # the one draining.
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


KEEPALIVE_TIMEOUT_REASON = "keepalive ping timeout"  # what websockets sends when it gives up


def describe_disconnect(
    ws: ServerConnection, default: str = "client disconnected"
) -> tuple[int, str]:
    """The close code and end reason to record for a connection the client ended.

    A half-open connection (the peer vanished without a FIN, or stopped answering) is found by
    websockets' keepalive: no pong within the ping timeout. The client never sees a close code
    then (1006), so the reason is what tells an operator what happened.
    """
    code = ws.close_code if ws.close_code is not None else 1000
    sent = ws.protocol.close_sent
    if sent is not None and sent.reason == KEEPALIVE_TIMEOUT_REASON:
        return code, (
            f"no pong to a keepalive ping within {ws.ping_timeout:g} s "
            "(half-open connection or a client that stopped answering)"
        )
    return code, default if code != 1000 else "client ended the conversation"
