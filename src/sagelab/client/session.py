"""``Session``: the async client for any ConvAI-compatible server (sagelab's or ElevenLabs').

It does what a voice client must (answer pings at once, run client tools off the receive
path, decode agent audio) and records a ``Timeline`` of every frame with monotonic timestamps
taken at the socket edge, which is what sagelab's metrics are computed from.

>>> async with Session.connect("http://127.0.0.1:8765", agent_id="scripted") as s:
...     mark = s.mark()
...     await s.send_audio("data/speech/goforward.wav", trailing_silence_ms=800)
...     reply = await s.wait_for("agent_response", since=mark)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sagelab.audio import (
    AudioFormat,
    RealtimeSchedule,
    WebmOpusStreamEncoder,
    decode_to_pcm16,
    encode_pcm16,
    iter_chunks,
    load_audio,
    pcm_bytes,
    silence,
)
from sagelab.audio.activity import speech_bounds
from sagelab.client.netem import LinkDown, NetworkConditions, NetworkLink
from sagelab.client.reconnect import (
    RECONNECT_CLOSE_CODES,
    RESUME_REFUSED,
    ReconnectPolicy,
    resume_query,
    with_query,
)
from sagelab.client.timeline import Timeline
from sagelab.conversation.playout import Playout
from sagelab.protocol import ProtocolError
from sagelab.protocol import convai as wire
from sagelab.protocol import relay as relay_wire

ToolHandler = Callable[[dict[str, Any]], Any] | Callable[[dict[str, Any]], Awaitable[Any]]
AudioInput = np.ndarray | bytes | str | Path
ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"


class SessionError(RuntimeError):
    """The session could not start or ended with an error; the message says why."""


class _Refused(Exception):
    """The server refused a resume token (close 4002): resuming is over, retrying is not."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class SentAudio:
    """What ``send_audio`` sent, and when each chunk left (monotonic ns at the socket edge).

    ``speech_end_ns`` is when the chunk carrying the last sample of speech was sent: the start
    point of voice-to-voice latency (the recording's own trailing silence is not speech).
    """

    chunk_times_ns: tuple[int, ...]
    chunk_samples: int
    duration_s: float
    max_lateness_s: float
    speech: tuple[int, int] | None

    @property
    def start_ns(self) -> int:
        return self.chunk_times_ns[0]

    @property
    def end_ns(self) -> int:
        return self.chunk_times_ns[-1]

    def time_at(self, sample: int) -> int:
        """When the chunk holding ``sample`` (an offset into the audio sent) was sent."""
        k = min(max(0, sample - 1) // self.chunk_samples, len(self.chunk_times_ns) - 1)
        return self.chunk_times_ns[k]

    @property
    def speech_start_ns(self) -> int:
        return self.time_at(self.speech[0] + 1) if self.speech else self.start_ns

    @property
    def speech_end_ns(self) -> int:
        return self.time_at(self.speech[1]) if self.speech else self.end_ns


class Session:
    """One conversation. Create with ``Session.connect(...)`` (an async context manager)."""

    def __init__(
        self,
        url: str,
        *,
        init: dict[str, Any] | None = None,
        tools: dict[str, ToolHandler] | None = None,
        chunk_ms: int = 100,
        record_audio: bool = True,
        open_timeout: float = 10.0,
        listener: Callable[[wire.ServerMessage], None] | None = None,
        network: NetworkConditions | str | None = None,
        reconnect: ReconnectPolicy | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.listener = listener
        self.network = NetworkConditions.resolve(network)
        self._link: NetworkLink | None = None
        self.init = init or {}
        self.tools: dict[str, ToolHandler] = dict(tools or {})
        self.chunk_ms = chunk_ms
        self.open_timeout = open_timeout
        self.timeline = Timeline(record_audio=record_audio)
        self.conversation_id: str | None = None
        self.input_format = AudioFormat.parse("pcm_16000")
        self.output_format = AudioFormat.parse("pcm_16000")
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.playout = Playout()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribers: list[asyncio.Queue[wire.ServerMessage | None]] = []
        self._metadata = asyncio.Event()
        self._closed = asyncio.Event()
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        override = self.init.get("conversation_config_override") or {}
        self.text_only = bool(
            override.get("text_only") or (override.get("conversation") or {}).get("text_only")
        )
        path = urllib.parse.urlsplit(url).path
        self.protocol = "relay" if path.rstrip("/").endswith("/voice-conversation") else "convai"
        self._webm: WebmOpusStreamEncoder | None = None
        self._relay_turns = 0
        # Reconnection (see ReconnectPolicy). Off unless asked for: then the URL asks a sagelab
        # server for a resume token, which never enters the timeline (it is a credential).
        self.reconnect = reconnect
        self.headers = dict(headers or {})
        if reconnect is not None:
            self.url = self._ask_for_resume(url)
        self.failure: str | None = None  # why reconnecting gave up, when it did
        self._resume_token: str | None = None
        self._fresh_url: Callable[[], Awaitable[str]] | None = None  # a new conversation's URL
        self._started = False
        self._closing = False
        self._reconnecting = False
        self._stop_reconnecting = asyncio.Event()
        self._socket_changed = asyncio.Event()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        base_url: str = ELEVENLABS_BASE_URL,
        agent_id: str = "",
        *,
        api_key: str | None = None,
        requires_auth: bool = False,
        prompt: str | None = None,
        first_message: str | None = None,
        language: str | None = None,
        voice_id: str | None = None,
        dynamic_variables: dict[str, Any] | None = None,
        user_id: str | None = None,
        text_only: bool = False,
        tools: dict[str, ToolHandler] | None = None,
        chunk_ms: int = 100,
        record_audio: bool = True,
        stages: bool = False,
        listener: Callable[[wire.ServerMessage], None] | None = None,
        network: NetworkConditions | str | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> _SessionContext:
        """Connect to ``base_url`` (http(s) like the SDK's ``base_url``, or a ws(s) URL).

        With ``requires_auth`` the session first asks ``get-signed-url`` with ``api_key``, like
        the official SDK does; that is how private ElevenLabs agents are reached.
        ``listener`` is called with every typed server message as it arrives, from the
        first one on (``events()`` only sees what comes after it is iterated).
        ``stages=True`` asks a sagelab server for per-turn pipeline timings
        (``internal_sagelab_stage`` events in the timeline); other servers ignore it.
        ``network`` (``NetworkConditions`` or a preset name such as ``"3g"``) simulates
        latency, jitter, loss and a bandwidth cap on this session's traffic, both ways
        (``sagelab.client.netem``).
        ``reconnect`` (a ``ReconnectPolicy``) makes the session survive a dropped connection:
        it resumes the same conversation on a sagelab server, with backoff (off by default).
        """
        network = NetworkConditions.resolve(network)  # bad conditions fail here, not later
        agent = wire.AgentOverride(
            prompt=wire.PromptOverride(prompt=prompt) if prompt is not None else None,
            first_message=first_message,
            language=language,
        )
        override = wire.ConversationConfigOverride(
            agent=agent if agent.model_dump(exclude_none=True) else None,
            tts=wire.TtsOverride(voice_id=voice_id) if voice_id is not None else None,
            conversation=wire.ConversationOverride(text_only=True) if text_only else None,
        )
        # Built with the codec's model, so a bad argument fails here, naming the field; kept
        # as the frame's JSON object, which ``Session`` sends as it is.
        init: dict[str, Any] = json.loads(
            wire.encode_client(
                wire.ConversationInitiationClientData(
                    conversation_config_override=override,
                    dynamic_variables=dynamic_variables or {},
                    source_info=wire.SourceInfo(source="sagelab", version=_version()),
                    user_id=user_id,
                )
            )
        )

        async def resolve_url() -> str:
            if requires_auth:
                return await asyncio.to_thread(fetch_signed_url, base_url, agent_id, api_key)
            url = conversation_url(base_url, agent_id)
            return url + "&sagelab_stages=1" if stages else url

        return _SessionContext(
            resolve_url,
            lambda url: cls(
                url,
                init=init,
                tools=tools,
                chunk_ms=chunk_ms,
                record_audio=record_audio,
                listener=listener,
                network=network,
                reconnect=reconnect,
            ),
        )

    @classmethod
    def connect_relay(
        cls,
        base_url: str,
        conversation_detail_id: str,
        *,
        agent_id: str | None = None,
        api_key: str | None = None,
        requires_auth: bool = False,
        chunk_ms: int = 100,
        record_audio: bool = True,
        network: NetworkConditions | str | None = None,
        reconnect: ReconnectPolicy | None = None,
        listener: Callable[[wire.ServerMessage], None] | None = None,
    ) -> _SessionContext:
        """Connect with the web app's relay protocol (``/voice-conversation``).

        Audio goes out as one WebM/Opus stream like a browser's ``MediaRecorder``.
        ``network`` and ``reconnect`` are ``connect``'s. With ``requires_auth`` the session
        asks ``get-signed-url`` for ``agent_id`` with ``api_key`` and presents its
        ``conversation_signature``, as a browser would be handed it; otherwise an ``api_key``
        goes in an ``xi-api-key`` header (clients that are not browsers).
        """
        if requires_auth and not agent_id:
            raise ValueError(
                "connect_relay(requires_auth=True) needs agent_id: signed URLs are issued per "
                "agent (the server's relay_agent, unless you name another)"
            )
        network = NetworkConditions.resolve(network)
        split = urllib.parse.urlsplit(base_url)
        scheme = {"https": "wss", "http": "ws"}.get(split.scheme, split.scheme)
        query = {"conversationDetailId": conversation_detail_id}
        if agent_id is not None:
            query["agent_id"] = agent_id
        url = urllib.parse.urlunsplit(
            (
                scheme,
                split.netloc,
                split.path.rstrip("/") + "/voice-conversation",
                urllib.parse.urlencode(query),
                "",
            )
        )

        async def resolve_url() -> str:
            if not requires_auth:
                return url
            assert agent_id is not None
            signed = await asyncio.to_thread(fetch_signed_url, base_url, agent_id, api_key)
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(signed).query))
            signature = params.get("conversation_signature")
            if not signature:
                raise SessionError("get-signed-url answered without a conversation_signature")
            return with_query(url, {"conversation_signature": signature})

        headers = {"xi-api-key": api_key} if api_key and not requires_auth else None
        return _SessionContext(
            resolve_url,
            lambda u: cls(
                u,
                chunk_ms=chunk_ms,
                record_audio=record_audio,
                network=network,
                reconnect=reconnect,
                headers=headers,
                listener=listener,
            ),
        )

    async def start(self) -> None:
        """Open the socket, send the initiation message and wait for the session metadata."""
        self.timeline.add("local", "connecting")  # the start point of session set-up time
        try:
            ws = await self._dial(self.url)
        except (OSError, TimeoutError) as exc:
            raise SessionError(f"cannot connect to {_redact(self.url)}: {exc}") from exc
        self.timeline.add("local", "connected")
        reading = self._attach(ws)
        if self.network is not None:
            self.timeline.add("local", "network", **self.network.model_dump())
        self._reader = asyncio.create_task(self._supervise(reading), name="sagelab-session-reader")
        if self.protocol == "convai":
            await self._send_json(self.init, "conversation_initiation_client_data")
        waiter = asyncio.create_task(self._metadata.wait())
        closed = asyncio.create_task(self._closed.wait())
        await asyncio.wait(
            {waiter, closed}, timeout=self.open_timeout, return_when="FIRST_COMPLETED"
        )
        waiter.cancel()
        closed.cancel()
        if not self._metadata.is_set():
            error = self._last_error_text()
            await self.close()
            raise SessionError(
                f"session did not start: {error or 'no conversation_initiation_metadata'}"
                + (f" (close code {self.close_code})" if self.close_code else "")
            )
        self._started = True

    async def _dial(self, url: str) -> ClientConnection:
        return await connect(
            url,
            open_timeout=self.open_timeout,
            max_size=16 * 2**20,
            compression=None,
            additional_headers=self.headers or None,
        )

    def _attach(self, ws: ClientConnection) -> asyncio.Task[None]:
        """Make ``ws`` the session's socket and start reading it."""
        self._ws = ws
        # From here on every frame, both ways, crosses the simulated network.
        link = NetworkLink(ws, self.network, self._on_frame) if self.network is not None else None
        self._link = link
        self._notify()
        return asyncio.create_task(self._read_socket(ws, self._link), name="sagelab-socket")

    def _notify(self) -> None:
        """Wake senders waiting for the socket to change (reconnected, or closed for good)."""
        self._socket_changed.set()
        self._socket_changed = asyncio.Event()

    def _ask_for_resume(self, url: str) -> str:
        ask, _ = resume_query(self.protocol)
        return with_query(url, {ask: "1"})

    # -- sending ---------------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the timeline; pass it as ``since=`` to wait for what comes after."""
        return len(self.timeline)

    async def send_audio(
        self,
        audio: AudioInput,
        *,
        realtime: bool = True,
        chunk_ms: int | None = None,
        trailing_silence_ms: int = 0,
    ) -> SentAudio:
        """Stream speech as ``user_audio_chunk`` frames, paced on an absolute real-time schedule.

        ``audio`` is 16 kHz PCM16 (array or raw bytes) or a path to any audio file.
        ``trailing_silence_ms`` appends silence, as a microphone would keep sending after the
        user stops talking (servers detect the end of a turn from it).
        """
        pcm = _as_pcm(audio)
        if trailing_silence_ms:
            pcm = np.concatenate([pcm, silence(trailing_silence_ms)])
        chunk_ms = chunk_ms or self.chunk_ms
        schedule = RealtimeSchedule(chunk_ms / 1000)
        times: list[int] = []
        max_late = 0.0
        for k, chunk in enumerate(iter_chunks(pcm, chunk_ms)):
            if realtime:
                await schedule.wait_async(k)
                max_late = max(max_late, schedule.lateness(k, time.monotonic()))
            times.append(await self._send_audio_chunk(chunk))
        if not times:
            raise ValueError("send_audio got no audio")
        sent = SentAudio(
            tuple(times), 16 * chunk_ms, pcm.size / 16000, max_late, speech_bounds(pcm)
        )
        # Where speech really starts and ends in what was sent, so voice-to-voice is a pure
        # function of the timeline even when the audio itself is not recorded.
        self.timeline.add(
            "local",
            "user_speech",
            t_ns=sent.end_ns,
            speech_start_ns=sent.speech_start_ns if sent.speech else None,
            speech_end_ns=sent.speech_end_ns if sent.speech else None,
            start_ns=sent.start_ns,
            end_ns=sent.end_ns,
            duration_s=sent.duration_s,
            max_lateness_ms=max_late * 1000,
        )
        return sent

    async def send_audio_chunk(self, pcm: np.ndarray | bytes) -> int:
        """Send one chunk of 16 kHz PCM16 now, unpaced; returns its send time (monotonic ns).

        For live sources whose audio already arrives in real time (a browser microphone in
        ``sagelab.notebook``); recordings go through ``send_audio``, which paces them. No
        ``user_speech`` marker is added: a live source knows where its utterances end.
        """
        return await self._send_audio_chunk(_as_pcm(pcm))

    async def _send_audio_chunk(self, pcm: np.ndarray) -> int:
        if self.protocol == "relay":
            # A browser's MediaRecorder: one WebM/Opus stream for the whole session.
            if self._webm is None:
                self._webm = WebmOpusStreamEncoder(timeslice_ms=self.chunk_ms)
            data = self._webm.encode(pcm)
            frame = relay_wire.encode_client(relay_wire.RelayAudio(data=data)) if data else None
        else:
            payload = encode_pcm16(pcm, self.input_format)
            frame = wire.encode_client(wire.UserAudioChunk(audio=payload))
        sent_ns: int | None = None
        if not self._reconnecting:
            async with self._send_lock:
                if frame is None:  # the encoder is still filling its first timeslice
                    sent_ns = time.monotonic_ns()
                else:
                    sent_ns = await self._raw_send(frame, droppable=True)
        if sent_ns is None:
            # A microphone keeps talking while the connection is down; that audio is lost.
            t_ns = time.monotonic_ns()
            self.timeline.add("local", "audio_dropped", t_ns=t_ns, samples=int(pcm.size))
            return t_ns
        self.timeline.add_audio("send", pcm, t_ns=sent_ns)
        return sent_ns

    async def send_text(self, text: str) -> None:
        """A typed user turn (``user_message``; relay: ``text``)."""
        if self.protocol == "relay":
            await self._send_message(relay_wire.RelayText(text=text), "user_message", text=text)
        else:
            await self._send_message(wire.UserMessage(text=text), "user_message", text=text)

    async def send_contextual_update(self, text: str) -> None:
        self._convai_only("contextual_update")
        await self._send_message(wire.ContextualUpdate(text=text), "contextual_update", text=text)

    async def send_user_activity(self) -> None:
        self._convai_only("user_activity")
        await self._send_message(wire.UserActivity(), "user_activity")

    async def send_feedback(self, score: str, event_id: int) -> None:
        self._convai_only("feedback")
        feedback = wire.Feedback.model_validate({"score": score, "event_id": event_id})
        await self._send_message(feedback, "feedback", score=score)

    async def send_heard(self, event_id: int, played_ms: float, text: str | None = None) -> None:
        """Tell a sagelab server how much of interrupted turn ``event_id`` was heard
        (``internal_sagelab_heard``, a sagelab extension: other ConvAI servers do not know it,
        so send it only to sagelab's)."""
        self._convai_only("internal_sagelab_heard")
        message = wire.SagelabHeard(event_id=event_id, played_ms=played_ms, text=text)
        await self._send_json(
            json.loads(wire.encode_client(message)),
            message.type,
            event_id=event_id,
            played_ms=played_ms,
            text=text,
        )

    async def interrupt(self) -> None:
        """Ask the agent to stop talking now (relay ``interrupt``).

        ConvAI has no such message: there the user interrupts by speaking (``send_audio``).
        """
        if self.protocol != "relay":
            raise SessionError(
                "the ConvAI protocol has no interrupt message; barge in by sending speech"
            )
        self.playout.stop_playback(time.monotonic_ns())
        await self._send_message(relay_wire.RelayInterrupt(), "interrupt")

    async def end(self) -> None:
        """End the conversation gracefully (relay ``end``; ConvAI: close with 1000)."""
        if self.protocol == "relay":
            await self._send_message(relay_wire.RelayEnd(), "end")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 5)
        await self.close()

    def _convai_only(self, what: str) -> None:
        if self.protocol == "relay":
            raise SessionError(f"{what} is a ConvAI message; the relay protocol has no such thing")

    async def drop_connection(self) -> None:
        """Reset the TCP connection now, with no close frame, as a failing network would.

        For testing what a server and this session's ``reconnect`` policy make of it; the
        connection is gone (both ends know) when this returns.
        """
        ws = self._ws
        if ws is None or ws.transport is None:
            raise SessionError("session is not connected")
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # linger 0: close() sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.timeline.add("local", "connection_dropped")
        ws.transport.abort()
        await ws.wait_closed()

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame as is: for testing how a server handles bad input."""
        await self._raw_send(frame)
        self.timeline.add("send", "raw", size=len(frame))

    async def _send_message(
        self, message: wire.ClientMessage | relay_wire.ClientMessage, kind: str, **data: Any
    ) -> None:
        """Send a typed message through its protocol's codec."""
        if isinstance(
            message,
            relay_wire.RelayAudio
            | relay_wire.RelayText
            | relay_wire.RelayInterrupt
            | relay_wire.RelayEnd,
        ):
            await self._send_frame(relay_wire.encode_client(message), kind, **data)
        else:
            await self._send_frame(wire.encode_client(message), kind, **data)

    async def _send_json(self, message: dict[str, Any], kind: str, **data: Any) -> None:
        """Send the caller's own initiation payload as given (it may hold fields the codec
        does not model; the server validates it)."""
        await self._send_frame(json.dumps(message), kind, **data)

    async def _send_frame(self, frame: str, kind: str, **data: Any) -> None:
        async with self._send_lock:
            t_ns = await self._raw_send(frame)
        self.timeline.add("send", kind, t_ns=t_ns, **data)

    async def _raw_send(self, frame: str | bytes, *, droppable: bool = False) -> int | None:
        """Send on the current socket; returns when it was handed to the socket (monotonic ns).

        While a reconnect is under way a ``droppable`` frame (audio, pongs) is dropped (None);
        any other waits for the new socket, or raises ``SessionError`` if the session ends.
        """
        while True:
            ws, link = self._ws, self._link
            if ws is None:
                raise SessionError("session is not connected")
            if self._reconnecting:
                if droppable:
                    return None
                await self._await_socket(ws)
                continue
            try:
                t_ns = time.monotonic_ns()
                if link is not None:
                    await link.send(frame)  # reaches ws.send when the network delivers it
                else:
                    await ws.send(frame)
                return t_ns
            except (ConnectionClosed, LinkDown) as exc:
                if not self._may_reconnect():
                    raise SessionError(f"session closed: {exc}") from exc
                if droppable:
                    return None
                await self._await_socket(ws)

    def _may_reconnect(self) -> bool:
        return (
            self.reconnect is not None
            and self._started
            and not self._closing
            and not self._closed.is_set()
        )

    async def _await_socket(self, old: ClientConnection) -> None:
        """Until a socket other than ``old`` is up; ``SessionError`` if the session ends."""
        while True:
            if self._closed.is_set():
                raise SessionError(
                    f"session closed (code {self.close_code}: {self.close_reason or ''})"
                )
            if self._ws is not old and not self._reconnecting:
                return
            await self._socket_changed.wait()

    # -- receiving -------------------------------------------------------------------------

    async def _read_socket(self, ws: ClientConnection, link: NetworkLink | None) -> None:
        """Every frame of one socket, until it closes (what the network still holds too)."""
        try:
            async for frame in ws:
                if link is not None:
                    # Handled (and timestamped) when the simulated network delivers it.
                    await link.receive(frame)
                else:
                    await self._on_frame(frame, time.monotonic_ns())
        except ConnectionClosed:
            pass
        finally:
            if link is not None:
                try:
                    await link.close_received(timeout=10)  # frames on the wire first
                finally:
                    link.stop()

    async def _supervise(self, reading: asyncio.Task[None]) -> None:
        """The session's life: read its socket, reconnect when the policy says so, then end."""
        current: asyncio.Task[None] | None = reading
        try:
            while current is not None:
                await current
                ws = self._ws
                if ws is None or not self._wants_reconnect(ws):
                    break
                current = await self._reconnect(ws)
        finally:
            if current is not None and not current.done():
                current.cancel()
            self._finish()

    def _finish(self) -> None:
        ws = self._ws
        if self.failure is None:
            self.close_code = ws.close_code if ws is not None else None
            self.close_reason = ws.close_reason if ws is not None else None
        self._reconnecting = False
        self.timeline.add("local", "closed", code=self.close_code, reason=self.close_reason or "")
        self._closed.set()
        self._notify()
        for q in self._subscribers:
            q.put_nowait(None)

    def _wants_reconnect(self, ws: ClientConnection) -> bool:
        return self._may_reconnect() and ws.close_code in RECONNECT_CLOSE_CODES

    async def _reconnect(self, old: ClientConnection) -> asyncio.Task[None] | None:
        """Get back to the conversation (or a new one, if the policy allows) with backoff.

        Returns the new socket's reading task, or None when the session is over: given up
        (``failure`` says why; ``wait_for`` callers get it in their ``SessionError``), or
        closed by the caller meanwhile.
        """
        policy = self.reconnect
        assert policy is not None
        self._reconnecting = True
        code = int(old.close_code) if old.close_code is not None else None
        reason = old.close_reason or ""
        # What was in flight is lost with the socket and the server stops that turn, as for a
        # barge-in: a player would have dropped it, and nothing of it will be replayed.
        self.playout.connection_lost(time.monotonic_ns())
        previous = self.conversation_id
        self.timeline.add(
            "local",
            "disconnected",
            code=code,
            reason=reason,
            conversation_id=previous,
            resumable=self._resume_token is not None,
        )
        last_error = reason or f"close code {code}"
        for attempt, delay in enumerate(policy.delays(), start=1):
            token = self._resume_token
            if token is None and not policy.new_conversation:
                self._give_up(
                    code,
                    f"the connection to conversation {previous} dropped ({last_error}) and the "
                    "server gave no resume token (not a sagelab server, or resume_grace_s is 0); "
                    "ReconnectPolicy(new_conversation=True) would start a new conversation",
                )
                return None
            self.timeline.add(
                "local", "reconnecting", attempt=attempt, delay_s=delay, resume=token is not None
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_reconnecting.wait(), delay)
            if self._stop_reconnecting.is_set():
                return None
            try:
                reading = await self._try_connect(await self._reconnect_url(token))
            except _Refused as exc:
                self._resume_token = None
                last_error = exc.reason
                self.timeline.add(
                    "local", "resume_refused", attempt=attempt, code=exc.code, reason=exc.reason
                )
                if not policy.new_conversation:
                    self._give_up(
                        exc.code,
                        f"the server refused to resume conversation {previous}: {exc.reason}",
                    )
                    return None
                continue
            except (SessionError, OSError, TimeoutError, InvalidHandshake) as exc:
                last_error = str(exc) or type(exc).__name__
                self.timeline.add("local", "reconnect_failed", attempt=attempt, error=last_error)
                continue
            resumed = self.conversation_id == previous
            if not resumed:
                # A new conversation numbers its events from the start again.
                self.playout.new_conversation()
            self._reconnecting = False
            self._notify()
            self.timeline.add(
                "local",
                "resumed" if resumed else "reconnected_new",
                attempt=attempt,
                conversation_id=self.conversation_id,
                previous_conversation_id=previous,
            )
            return reading
        self._give_up(
            code, f"could not reconnect in {policy.max_attempts} attempts; last: {last_error}"
        )
        return None

    def _give_up(self, code: int | None, message: str) -> None:
        self.failure = message
        self.close_code, self.close_reason = code, message
        self.timeline.add("local", "reconnect_gave_up", code=code, reason=message)

    async def _reconnect_url(self, token: str | None) -> str:
        """The resume URL (the token is the credential, so a spent signature is left out),
        else a new conversation's: a fresh signed URL when the session was made with one."""
        if token is not None:
            _, present = resume_query(self.protocol)
            return with_query(self.url, {present: token}, drop=("conversation_signature", "token"))
        if self._fresh_url is not None:
            return self._ask_for_resume(await self._fresh_url())
        return self.url

    async def _try_connect(self, url: str) -> asyncio.Task[None]:
        """One attempt: a socket that got as far as the session metadata, or an exception."""
        self._metadata = asyncio.Event()
        mark = self.mark()
        ws = await self._dial(url)
        self._webm = None  # each socket carries its own WebM stream, header first
        reading = self._attach(ws)
        if self.protocol == "convai":
            # Straight onto the new socket: every other sender waits until it is up.
            t_ns = time.monotonic_ns()
            with contextlib.suppress(ConnectionClosed, LinkDown):
                frame = json.dumps(self.init)
                await (self._link.send(frame) if self._link is not None else ws.send(frame))
                self.timeline.add("send", "conversation_initiation_client_data", t_ns=t_ns)
        metadata = asyncio.create_task(self._metadata.wait())
        await asyncio.wait(
            {metadata, reading}, timeout=self.open_timeout, return_when="FIRST_COMPLETED"
        )
        metadata.cancel()
        if self._metadata.is_set():
            return reading
        with contextlib.suppress(Exception):
            await ws.close()
        await asyncio.wait({reading}, timeout=5)
        errors = [e for e in self.timeline.events[mark:] if e.type == "error"]
        said = errors[-1].data.get("message") if errors else None
        if ws.close_code == RESUME_REFUSED:
            raise _Refused(ws.close_code, said or ws.close_reason or "resume refused")
        raise SessionError(
            f"no session metadata ({said or ws.close_reason or 'timed out'}; "
            f"close code {ws.close_code})"
        )

    async def _on_frame(self, frame: str | bytes, t_ns: int) -> None:
        try:
            if self.protocol == "relay":
                converted = self._on_relay_message(relay_wire.parse_server(frame), t_ns)
                if converted is not None:
                    self._deliver(converted)
                return
            msg = wire.parse_server(frame)
        except ProtocolError as exc:
            self.timeline.add("recv", "invalid_frame", t_ns=t_ns, error=str(exc))
            return
        await self._on_message(msg, t_ns)

    async def _on_message(self, msg: wire.ServerMessage, t_ns: int) -> None:
        match msg:
            case wire.Ping():
                # Answer first, record after: the pong's timing is what the server measures.
                with contextlib.suppress(SessionError):
                    pong = wire.encode_client(wire.Pong(event_id=msg.event_id))
                    await self._raw_send(pong, droppable=True)
                self.timeline.add(
                    "recv", "ping", event_id=msg.event_id, t_ns=t_ns, ping_ms=msg.ping_ms
                )
            case wire.AudioEvent():
                pcm = decode_to_pcm16(msg.audio, self.output_format)
                stale = not self.playout.audio(msg.event_id, pcm.size / 16_000, t_ns)
                self.timeline.add_audio("recv", pcm, t_ns=t_ns, event_id=msg.event_id, stale=stale)
            case wire.ConversationInitiationMetadata():
                self.conversation_id = msg.conversation_id
                resumable: dict[str, Any] = {}
                if msg.sagelab_resume_token is not None:
                    # A credential: kept for a reconnect; the timeline only says how long the
                    # server holds the conversation.
                    self._resume_token = msg.sagelab_resume_token
                    resumable["resume_grace_s"] = msg.sagelab_resume_grace_s
                self.input_format = AudioFormat.parse(msg.user_input_audio_format or "pcm_16000")
                self.output_format = AudioFormat.parse(msg.agent_output_audio_format)
                self.timeline.add(
                    "recv",
                    msg.type,
                    t_ns=t_ns,
                    conversation_id=msg.conversation_id,
                    agent_output_audio_format=msg.agent_output_audio_format,
                    user_input_audio_format=msg.user_input_audio_format,
                    **resumable,
                )
                self._metadata.set()
            case wire.Interruption():
                self.playout.interruption(msg.event_id, t_ns)
                self.timeline.add("recv", msg.type, event_id=msg.event_id, t_ns=t_ns)
            case wire.ClientToolCall():
                self.timeline.add(
                    "recv",
                    msg.type,
                    event_id=msg.event_id,
                    t_ns=t_ns,
                    tool_name=msg.tool_name,
                    tool_call_id=msg.tool_call_id,
                    parameters=msg.parameters,
                )
                task = asyncio.create_task(self._run_tool(msg))
                self._tool_tasks.add(task)
                task.add_done_callback(self._tool_tasks.discard)
            case wire.AgentResponse():
                self.playout.agent_response(msg.event_id)
                self.timeline.add(
                    "recv",
                    msg.type,
                    event_id=msg.event_id,
                    t_ns=t_ns,
                    agent_response=msg.agent_response,
                )
            case wire.UnknownServerMessage():
                payload = msg.raw.get(f"{msg.type}_event")
                data = payload if isinstance(payload, dict) else {"raw": msg.raw}
                event_id = data.get("event_id")
                extra = {k: v for k, v in data.items() if k != "event_id"}
                self.timeline.add(
                    "recv",
                    msg.type,
                    event_id=event_id if isinstance(event_id, int) else None,
                    t_ns=t_ns,
                    **extra,
                )
            case _:
                self.timeline.add(
                    "recv",
                    msg.type,
                    event_id=getattr(msg, "event_id", None),
                    t_ns=t_ns,
                    **_summary(msg),
                )
        self._deliver(msg)

    def _deliver(self, msg: wire.ServerMessage) -> None:
        """Hand a typed message to the listener and to every ``events()`` iterator."""
        if self.listener is not None:
            self.listener(msg)
        for q in self._subscribers:
            q.put_nowait(msg)

    def _on_relay_message(
        self, msg: relay_wire.ServerMessage, t_ns: int
    ) -> wire.ServerMessage | None:
        """Relay events go into the timeline under their ConvAI names, so every metric works
        on both protocols, and reach ``events()`` and the listener as the ConvAI message they
        correspond to (None for the few with no counterpart). The relay has no event ids:
        audio is numbered by the agent response it follows, which is how the server sends
        them."""
        match msg:
            case relay_wire.Ready():
                self.conversation_id = msg.session_id
                if msg.resume_token is not None:
                    self._resume_token = msg.resume_token  # a credential: not in the timeline
                self.timeline.add(
                    "recv",
                    "conversation_initiation_metadata",
                    t_ns=t_ns,
                    conversation_id=msg.session_id,
                )
                self._metadata.set()
                return wire.ConversationInitiationMetadata(conversation_id=msg.session_id)
            case relay_wire.AudioChunk():
                pcm = load_audio(msg.audio)
                self.playout.audio(self._relay_turns, pcm.size / 16_000, t_ns)
                self.timeline.add_audio("recv", pcm, t_ns=t_ns, event_id=self._relay_turns)
                return wire.AudioEvent(audio=pcm_bytes(pcm), event_id=self._relay_turns)
            case relay_wire.Transcript():
                self.timeline.add("recv", "user_transcript", t_ns=t_ns, user_transcript=msg.text)
                return wire.UserTranscript(user_transcript=msg.text, event_id=self._relay_turns + 1)
            case relay_wire.AgentResponseText():
                self._relay_turns += 1
                self.playout.agent_response(self._relay_turns)
                self.timeline.add(
                    "recv",
                    "agent_response",
                    event_id=self._relay_turns,
                    t_ns=t_ns,
                    agent_response=msg.text,
                )
                return wire.AgentResponse(agent_response=msg.text, event_id=self._relay_turns)
            case relay_wire.ToolCall():
                self.timeline.add(
                    "recv",
                    "client_tool_call",
                    event_id=self._relay_turns,
                    t_ns=t_ns,
                    tool_name=msg.tool_name,
                    parameters=msg.params,
                )
                return wire.AgentToolRequest(
                    tool_name=msg.tool_name,
                    tool_call_id="",
                    tool_type="webhook",
                    event_id=self._relay_turns,
                )
            case relay_wire.RelayError():
                self.timeline.add("recv", "error", t_ns=t_ns, message=msg.message)
                # The relay's error event has no code: 1002 is what its errors close with.
                return wire.ErrorEvent(code=1002, message=msg.message)
            case relay_wire.Complete():
                self.timeline.add("recv", "complete", t_ns=t_ns)
            case _:
                self.timeline.add("recv", getattr(msg, "type", "unknown"), t_ns=t_ns)
        return None

    async def _run_tool(self, call: wire.ClientToolCall) -> None:
        handler = self.tools.get(call.tool_name)
        is_error = False
        try:
            if handler is None:
                raise LookupError(f"Tool '{call.tool_name}' is not registered")
            if inspect.iscoroutinefunction(handler):
                result = await handler(dict(call.parameters))
            else:
                # Sync tools run in a thread so a slow one never stalls pings or audio.
                result = await asyncio.to_thread(handler, dict(call.parameters))
                if inspect.isawaitable(result):
                    result = await result
            if result is None:
                result = f"Client tool: {call.tool_name} called successfully."
        except Exception as exc:
            result, is_error = str(exc), True
        message = wire.ClientToolResult(
            tool_call_id=call.tool_call_id, result=result, is_error=is_error
        )
        with contextlib.suppress(SessionError):
            await self._send_message(
                message, "client_tool_result", tool_call_id=call.tool_call_id, is_error=is_error
            )

    async def events(self) -> AsyncIterator[wire.ServerMessage]:
        """Every server message from now until the session closes."""
        q: asyncio.Queue[wire.ServerMessage | None] = asyncio.Queue()
        self._subscribers.append(q)
        try:
            while not self._closed.is_set() or not q.empty():
                msg = await q.get()
                if msg is None:
                    return
                yield msg
        finally:
            self._subscribers.remove(q)

    async def wait_for(
        self,
        type: str,
        *,
        since: int = 0,
        timeout: float = 30.0,
        predicate: Callable[[Any], bool] | None = None,
    ) -> Any:
        """The first timeline event of ``type`` after ``since`` (see ``mark``) that matches."""

        def find(start: int) -> Any:
            for e in self.timeline.events[start:]:
                if e.type == type and (predicate is None or predicate(e)):
                    return e
            return None

        deadline = time.monotonic() + timeout
        position = since
        while True:
            found = find(position)
            if found is not None:
                return found
            position = len(self.timeline.events)
            if self._closed.is_set():
                raise SessionError(
                    f"session closed (code {self.close_code}: {self.close_reason}) "
                    f"before a {type!r} event arrived"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {type!r} event within {timeout:g} s")
            await asyncio.sleep(min(0.01, remaining))

    async def measure_rtt(self, timeout: float = 5.0) -> float:
        """Seconds for a WebSocket ping frame to come back as a pong.

        Client-side and sub-millisecond, unlike the protocol's integer ``ping_ms`` (which the
        server measures); it shows the network plus the server's event-loop responsiveness.
        """
        if self._ws is None:
            raise SessionError("session is not connected")
        t0 = time.perf_counter()
        try:
            if self._link is not None:
                await asyncio.wait_for(self._link.ping(), timeout)  # both ways simulated
            else:
                waiter = await self._ws.ping()
                await asyncio.wait_for(waiter, timeout)
        except (ConnectionClosed, LinkDown) as exc:
            raise SessionError(f"session closed: {exc}") from exc
        rtt = time.perf_counter() - t0
        self.timeline.add("local", "ws_rtt", rtt_ms=rtt * 1000)
        return rtt

    @property
    def last_interrupt_id(self) -> int:
        """The newest event id the server interrupted; audio at or below it is dropped."""
        return self.playout.last_interrupt_id

    async def wait_agent_done(self, *, quiet_s: float = 0.4, timeout: float = 60.0) -> None:
        """Wait until the agent's audio received so far has played out and no more arrives.

        A reply whose text came but whose audio has not yet (TTS is still working) counts as
        not done, unless the session is text-only or that turn was interrupted.
        """
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            now = time.monotonic_ns()
            if self.playout.agent_done(now, quiet_s=quiet_s, text_only=self.text_only):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent still speaking after {timeout:g} s")
            await asyncio.sleep(0.02)

    async def wait_closed(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _last_error_text(self) -> str | None:
        errors = self.timeline.of_type("error")
        return errors[-1].data.get("message") if errors else None

    async def close(self) -> None:
        """End the conversation (close 1000, as the official SDK does); stops reconnecting."""
        self._closing = True
        self._stop_reconnecting.set()
        if self._reconnecting and self._reader is not None:
            self._reader.cancel()  # between sockets: nothing to close politely
        if self._link is not None:
            await self._link.flush(timeout=5)  # the close frame follows what is on its way
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(1000, "User ended conversation")
        if self._reader is not None:
            done, _ = await asyncio.wait({self._reader}, timeout=5)
            if not done:
                self._reader.cancel()
                await asyncio.wait({self._reader}, timeout=1)
            elif not self._reader.cancelled():
                self._reader.exception()  # retrieved: a reader that failed has been reported
        for task in list(self._tool_tasks):
            task.cancel()


class _SessionContext:
    """``async with Session.connect(...) as s`` and ``s = await Session.connect(...)``."""

    def __init__(
        self, resolve_url: Callable[[], Awaitable[str]], make: Callable[[str], Session]
    ) -> None:
        self._resolve_url = resolve_url
        self._make = make
        self._session: Session | None = None

    async def _open(self) -> Session:
        session = self._make(await self._resolve_url())
        session._fresh_url = self._resolve_url  # a new conversation, should one be needed
        await session.start()
        self._session = session
        return session

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> Session:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()


def conversation_url(base_url: str, agent_id: str) -> str:
    """The SDK's URL rule: http→ws, https→wss, keep any path prefix, add the ConvAI path."""
    split = urllib.parse.urlsplit(base_url)
    if split.path.endswith("/v1/convai/conversation") or split.query:
        return base_url  # already a conversation URL
    scheme = {"https": "wss", "http": "ws"}.get(split.scheme, split.scheme)
    path = split.path.rstrip("/") + "/v1/convai/conversation"
    query = urllib.parse.urlencode({"agent_id": agent_id}, quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit((scheme, split.netloc, path, query, ""))


def fetch_signed_url(base_url: str, agent_id: str, api_key: str | None) -> str:
    """``GET /v1/convai/conversation/get-signed-url`` with ``xi-api-key``, as the SDK does."""
    query = urllib.parse.urlencode({"agent_id": agent_id})
    url = f"{base_url.rstrip('/')}/v1/convai/conversation/get-signed-url?{query}"
    request = urllib.request.Request(url, headers={"xi-api-key": api_key or ""})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise SessionError(f"get-signed-url failed with HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SessionError(f"cannot reach {base_url}: {exc}") from exc
    if "signed_url" not in body:
        raise SessionError(f"get-signed-url answered without signed_url: {body!r}"[:300])
    return str(body["signed_url"])


def _as_pcm(audio: AudioInput) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        if audio.dtype != np.int16:
            raise TypeError(f"audio arrays must be int16 PCM at 16 kHz, got {audio.dtype}")
        return audio.reshape(-1)
    if isinstance(audio, bytes | bytearray):
        if len(audio) % 2:
            raise ValueError("raw PCM16 audio must have an even number of bytes")
        return np.frombuffer(bytes(audio), dtype="<i2")
    return load_audio(audio)


def _summary(msg: Any) -> dict[str, Any]:
    """The fields of a message worth keeping in the timeline (text, not audio)."""
    try:
        data = msg.model_dump(exclude_none=True)
    except AttributeError:
        return {}
    data.pop("type", None)
    data.pop("event_id", None)
    return {k: v for k, v in data.items() if not isinstance(v, bytes | bytearray)}


def _redact(url: str) -> str:
    split = urllib.parse.urlsplit(url)
    query = [
        (k, "***" if k in ("conversation_signature", "token", "resume_token", "resumeToken") else v)
        for k, v in urllib.parse.parse_qsl(split.query)
    ]
    return urllib.parse.urlunsplit(split._replace(query=urllib.parse.urlencode(query)))


def _version() -> str:
    from sagelab import __version__

    return __version__
