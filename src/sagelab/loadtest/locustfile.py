"""Locust users that hold voice conversations and stream real speech in real time.

Shipped inside the package, so an installed wheel runs it anywhere; ``sagelab loadtest`` (the
master, which also starts a server, reads the results and checks the budget) and ``sagelab
loadtest-worker`` (a worker on any machine) hand locust this file by path. It can also be run
directly, naming the user class for the protocol::

    locust -f "$(python -c 'import sagelab.loadtest.locustfile as m; print(m.__file__)')" \\
        --headless -u 50 -r 10 -t 2m --host http://127.0.0.1:8765 ConvAIUser   # or RelayUser

Each user is a microphone that never stops: a recording, then silence, again and again, in
100 ms chunks on an absolute schedule (a late chunk is followed by shorter waits, never by a
drifting ``sleep(chunk)``). ``ConvAIUser`` speaks the ConvAI protocol (PCM16 chunks, one
session until the server ends it); ``RelayUser`` speaks the web app's relay protocol (one
continuous WebM/Opus stream per session, as ``MediaRecorder`` sends it, encoded once per
process; a session lasts ``relay_session_s`` and ends with ``end``, then the user starts
another). Locust runs users as gevent greenlets, so this uses the blocking
``websocket-client`` (made cooperative by gevent's monkey patching) rather than an asyncio
client, which would block every other user. A reader greenlet per user answers each ``ping``
at once (a late pong would be blamed on the server) and turns frames into measurements; see
:mod:`sagelab.loadtest.measure` for what each metric means.

What users say and to which agent comes from :class:`~sagelab.loadtest.settings.UserSettings`:
on a worker, from the master (:mod:`sagelab.loadtest.locustplugin`); standalone, from the
environment (``SAGELAB_AGENT``, ``SAGELAB_SIGNED_URL``, ``SAGELAB_API_KEY``,
``SAGELAB_SPEECH``, ``SAGELAB_GAP_MS``, ``SAGELAB_LEAD_MS``, ``SAGELAB_RELAY_SESSION_S``;
``SAGELAB_RAW_LOG`` for a JSONL of raw values). ``SAGELAB_SOURCE_ADDRESS`` makes this process's
WebSocket connections leave from that local address (a generator with several addresses, or
loopback aliases standing in for machines in a test).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import random
import time
from typing import Any, ClassVar

import gevent
import websocket
from gevent.event import Event
from locust import User, argument_parser, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner

from sagelab.audio import RealtimeSchedule
from sagelab.loadtest import locustplugin as plugin
from sagelab.loadtest.measure import FrameResult, TurnTracker
from sagelab.loadtest.mic import MicLoop
from sagelab.loadtest.settings import UserSettings
from sagelab.loadtest.wire import (
    base64_size,
    bytes_per_second,
    close_code,
    fetch_signed_url,
    open_socket,
    relay_url,
    wav_base64_seconds,
    ws_url,
)
from sagelab.protocol import convai, relay

SOURCE_ADDRESS = os.environ.get("SAGELAB_SOURCE_ADDRESS") or None
METADATA_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0
#: No frame at all for this long (ConvAI pings every second) means the session is dead.
RECV_TIMEOUT_S = 30.0
#: A WebSocket ping frame every this many chunks (1 s at 100 ms chunks).
WS_PING_EVERY = 10
#: Each user's first session starts after a random pause of up to this long.
START_SPREAD_S = 1.0
#: How long a worker's users wait for the master's settings before giving up.
SETUP_TIMEOUT_S = 60.0

_ids = itertools.count(1)

# A locust worker rebuilds its whole argument parser for every option of every spawn message
# (``default_args_dict()``, ~2 ms, ~80 times per message), which freezes all of its users for
# ~150 ms once a second while users ramp up: a load generator artefact that would be blamed on
# the server. The defaults never change within a process, and callers only read them.
if hasattr(argument_parser, "default_args_dict"):
    argument_parser.default_args_dict = functools.cache(argument_parser.default_args_dict)


@events.init.add_listener
def _prepare(environment: Environment, **_kw: Any) -> None:
    """Encode each chosen user class's microphone once settings are known, before any user
    runs (on a worker: when the master's settings arrive, before it sends any user).

    Encoding a minute of Opus takes a few hundred milliseconds of CPU; done by the first user
    it would freeze every greenlet of the process mid-test. The master runs no users.
    """
    if isinstance(environment.runner, MasterRunner):
        return

    def encode(settings: UserSettings) -> None:
        for cls in environment.user_classes:
            if issubclass(cls, VoiceUser):
                cls._mic = None
                if settings.user_class in ("", cls.__name__):
                    cls.microphone()

    plugin.STATE.on_settings.append(encode)
    if plugin.STATE.ready.is_set():  # standalone: settings came from the environment
        encode(plugin.settings())


@events.quitting.add_listener
def _close_raw_log(environment: Environment, **_kw: Any) -> None:
    close = getattr(plugin.sink(), "close", None)
    if close is not None:
        close()


class SessionEnded(Exception):
    """The session cannot go on; already reported."""


class VoiceUser(User):
    """One conversation per task run; a new one (after 1 s) when it ends. Protocol-neutral:
    subclasses say how to connect, initiate, read a text frame and hang up."""

    abstract = True
    wait_time = constant(1)
    _mic: ClassVar[MicLoop | None] = None

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.uid = next(_ids)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.turns = TurnTracker(timeout_s=REPLY_TIMEOUT_S)
        self.pings: dict[bytes, float] = {}
        self.session_t0 = 0.0
        self.stopping = False
        self.closed_reported = False

    # -- hooks -----------------------------------------------------------------------------

    @classmethod
    def build_microphone(cls) -> MicLoop:
        raise NotImplementedError

    def url(self) -> str:
        raise NotImplementedError

    def initiate(self, ws: websocket.WebSocket, t0: float) -> bool:
        """Start the conversation; False after a reported failure."""
        raise NotImplementedError

    def on_message(self, ws: websocket.WebSocket, msg: dict[str, Any], t: float) -> None:
        raise NotImplementedError

    def end_session(self, ws: websocket.WebSocket) -> None:
        """The microphone ran out (relay): end the conversation the protocol's way."""

    @classmethod
    def microphone(cls) -> MicLoop:
        if cls._mic is None:
            cls._mic = cls.build_microphone()
        return cls._mic

    # -- reporting -------------------------------------------------------------------------

    def report(self, name: str, ms: float, error: str | None = None, **extra: Any) -> None:
        """One locust request (rounded by locust) plus one unrounded raw-log line."""
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=ms,
            response_length=0,
            exception=RuntimeError(error) if error else None,
            context={"user": self.uid},
        )
        plugin.sink().write(self.uid, name, ms, error, **extra)

    def report_frame(self, result: FrameResult, tail_ms: float) -> None:
        for ms in result.first_audio_ms:
            self.report("first_audio", ms)
            self.report("voice_to_voice", ms + tail_ms)
        if result.gap_ms is not None:
            self.report("audio_gap", result.gap_ms)
        if result.stutter_ms is not None:
            self.report("stutter", result.stutter_ms)

    def report_close(self, code: int, reason: str, *, by: str) -> None:
        if self.closed_reported:
            return
        self.closed_reported = True
        lasted = (time.monotonic() - self.session_t0) * 1000
        normal = by == "client" or code == 1000
        error = None if normal else f"closed with {code} {reason}".strip()
        self.report("close", lasted, error, code=code, by=by)

    def first_message(self, ws: websocket.WebSocket, t0: float) -> dict[str, Any] | None:
        """The server's first message; None (reported as a failed ``metadata``) if the server
        closed instead, saying with which code and reason, or if nothing came in time."""
        try:
            opcode, data = ws.recv_data()
        except Exception as exc:
            self.report("metadata", (time.monotonic() - t0) * 1000, f"{type(exc).__name__}: {exc}")
            return None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return dict(json.loads(data))
        code, reason = close_code(data) if opcode == websocket.ABNF.OPCODE_CLOSE else (0, "")
        self.report(
            "metadata",
            (time.monotonic() - t0) * 1000,
            f"no first message: opcode {opcode}, close {code} {reason}".strip(),
        )
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.report_close(code, reason, by="server")  # e.g. 1013 at capacity, relay 4001
        return None

    # -- one conversation ------------------------------------------------------------------

    @task
    def converse(self) -> None:
        self.stopping = False
        self.closed_reported = False
        self.turns = TurnTracker(timeout_s=REPLY_TIMEOUT_S)
        self.pings.clear()
        if not plugin.wait_until_ready(SETUP_TIMEOUT_S):
            self.report("connect", 0.0, "no settings from the locust master")
            return
        try:
            url = self.url()
        except SessionEnded:
            return
        t0 = self.session_t0 = time.monotonic()
        try:
            sock = None
            if SOURCE_ADDRESS is not None:
                sock = open_socket(url, METADATA_TIMEOUT_S, SOURCE_ADDRESS)
            ws = websocket.create_connection(
                url,
                socket=sock,
                timeout=METADATA_TIMEOUT_S,
                enable_multithread=True,
                # websocket-client checks UTF-8 in pure Python, byte by byte: with 50 users
                # that alone saturates a core and delays every pong. json.loads still
                # rejects invalid UTF-8.
                skip_utf8_validation=True,
            )
        except Exception as exc:  # refused, handshake rejected (HTTP 4xx/5xx), timeout
            self.report("connect", (time.monotonic() - t0) * 1000, f"{type(exc).__name__}: {exc}")
            return
        self.ws = ws
        self.report("connect", (time.monotonic() - t0) * 1000)
        with contextlib.suppress(OSError, AttributeError):
            plugin.note_local_address(str(ws.sock.getsockname()[0]))  # type: ignore[union-attr]
        try:
            if not self.initiate(ws, t0):
                return
            dead = Event()
            ws.settimeout(RECV_TIMEOUT_S)
            self.reader = gevent.spawn(self._read, ws, dead)
            self._stream(ws, dead)
        finally:
            # Also reached on GreenletExit when locust stops the test: hang up cleanly.
            self._hang_up()

    def _stream(self, ws: websocket.WebSocket, dead: Event) -> None:
        """Send chunk k at start + k * chunk, whatever happened to earlier chunks."""
        mic = self.microphone()
        schedule = RealtimeSchedule(mic.chunk_s)
        for k in itertools.count():
            message = mic.message(k)
            if message is None:
                self.end_session(ws)
                dead.wait(REPLY_TIMEOUT_S)
                return
            schedule.wait_sync(k)  # gevent-patched sleep: other users run meanwhile
            if dead.is_set():
                return
            now = time.monotonic()
            # Measured after the wake-up, not before the sleep: a greenlet woken late because
            # the load generator is saturated is exactly the lateness worth seeing.
            late_s = max(0.0, now - schedule.due(k))
            try:
                ws.send(message)
                if k % WS_PING_EVERY == 0:
                    payload = str(k).encode()
                    self.pings[payload] = time.monotonic()
                    ws.ping(payload)
            except Exception as exc:
                if not dead.is_set():
                    self.report_close(1006, f"send failed: {type(exc).__name__}: {exc}", by="net")
                return
            self.report("send_lateness", late_s * 1000)
            if mic.speech_starts_at(k):
                self.turns.speech_started(now)
            if mic.speech_ends_at(k):
                self.turns.speech_ended(now)
            for waited in self.turns.expired(now):
                self.report("first_audio", waited, f"no reply audio within {REPLY_TIMEOUT_S:g} s")

    def _read(self, ws: websocket.WebSocket, dead: Event) -> None:
        try:
            while True:
                try:
                    opcode, data = ws.recv_data(control_frame=True)
                except Exception as exc:
                    if not self.stopping:
                        self.report_close(
                            1006, f"connection lost: {type(exc).__name__}: {exc}", by="net"
                        )
                    return
                t = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    try:
                        self.on_message(ws, json.loads(data), t)
                    except (ValueError, KeyError, TypeError) as exc:  # a frame not as specified
                        error = f"unreadable frame: {type(exc).__name__}: {exc}; {data[:120]!r}"
                        self.report("error_event", 0.0, error)
                elif opcode == websocket.ABNF.OPCODE_PONG:
                    sent = self.pings.pop(bytes(data), None)
                    if sent is not None:
                        self.report("ws_ping_rtt", (t - sent) * 1000)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code, reason = close_code(data)
                    if not self.stopping:
                        self.report_close(code, reason, by="server")
                    return
        finally:
            dead.set()

    def _hang_up(self) -> None:
        self.stopping = True
        stutter = self.turns.finish_turn()
        if stutter is not None:
            self.report("stutter", stutter)
        if self.reader is not None:
            self.reader.kill(block=True, timeout=1)
            self.reader = None
        if self.ws is not None:
            self.report_close(1000, "", by="client")
            with contextlib.suppress(Exception):  # already closed by the server
                self.ws.close(status=websocket.STATUS_NORMAL, timeout=1)
            # Once the server has closed first, close() returns at once and leaves the socket
            # open (websocket-client marks itself closed as it answers the close frame); an
            # open socket would hold the server's session slot until its close timeout.
            self.ws.shutdown()
            self.ws = None

    def on_start(self) -> None:
        # Locust starts users in bursts (in distributed mode each worker starts a whole
        # second's worth at once); no real population calls in the same millisecond, and a
        # burst of handshakes would show up as a stall in every other user's figures.
        gevent.sleep(random.uniform(0.0, START_SPREAD_S))

    def on_stop(self) -> None:
        self._hang_up()


class ConvAIUser(VoiceUser):
    """ElevenLabs ConvAI protocol: initiation, metadata, pings, PCM16 audio, client tools."""

    out_bps = 32000

    @classmethod
    def build_microphone(cls) -> MicLoop:
        s = plugin.settings()
        return MicLoop.convai(s.audio(), gap_ms=s.gap_ms, chunk_ms=100, lead_ms=s.lead_ms)

    def url(self) -> str:
        host = self.host or "http://127.0.0.1:8765"
        s = plugin.settings()
        if not s.signed_url:
            return ws_url(host, s.agent)
        t0 = time.monotonic()
        try:
            url = fetch_signed_url(host, s.agent, s.api_key)
        except Exception as exc:
            self.report("signed_url", (time.monotonic() - t0) * 1000, f"{exc}")
            raise SessionEnded from exc
        self.report("signed_url", (time.monotonic() - t0) * 1000)
        return url

    def initiate(self, ws: websocket.WebSocket, t0: float) -> bool:
        init = convai.ConversationInitiationClientData.model_validate(
            {"source_info": {"source": "sagelab_locust", "version": "1"}}
        )
        ws.send(convai.encode_client(init))
        msg = self.first_message(ws, t0)  # the protocol guarantees metadata comes first
        if msg is None:
            return False
        if msg.get("type") != "conversation_initiation_metadata":
            detail = (msg.get("error_event") or {}).get("message")
            self.report(
                "metadata",
                (time.monotonic() - t0) * 1000,
                f"first message was {msg.get('type')!r}: {detail}",
            )
            return False
        self.report("metadata", (time.monotonic() - t0) * 1000)
        meta = msg.get("conversation_initiation_metadata_event") or {}
        self.out_bps = bytes_per_second(meta.get("agent_output_audio_format"))
        return True

    def on_message(self, ws: websocket.WebSocket, msg: dict[str, Any], t: float) -> None:
        kind = msg.get("type")
        if kind == "audio":
            event = msg["audio_event"]
            seconds = base64_size(event["audio_base_64"]) / self.out_bps
            result = self.turns.audio(int(event["event_id"]), t, seconds)
            self.report_frame(result, self.microphone().speech_end_tail_s * 1000)
        elif kind == "ping":
            event = msg["ping_event"]
            ws.send(convai.encode_client(convai.Pong(event_id=int(event["event_id"]))))
            if event.get("ping_ms"):
                self.report("ping_rtt", float(event["ping_ms"]))
        elif kind == "client_tool_call":
            # Answer at once, as an app would: the agent waits for the result before it
            # speaks, so an unanswered call would stall the turn until the tool timeout.
            call = msg["client_tool_call"]
            answer = convai.ClientToolResult(
                tool_call_id=call["tool_call_id"], result="sunny, 21 degrees", is_error=False
            )
            ws.send(convai.encode_client(answer))
        elif kind == "interruption":
            latency, stutter = self.turns.interrupted(t)
            if latency is not None:
                self.report("interruption", latency + self.microphone().speech_start_lead_s * 1000)
            if stutter is not None:
                self.report("stutter", stutter)
        elif kind == "error":
            event = msg.get("error_event", {})
            self.report(
                "error_event",
                0.0,
                f"{event.get('error_type')}: {event.get('message')} ({event.get('code')})",
            )


class RelayUser(VoiceUser):
    """The web app's relay protocol: ``ready``, WebM/Opus in, WAV chunks out, ``end``.

    The protocol has no event ids: a reply is "new" once the server has sent the user's
    ``transcript`` that it answers, so turns are counted by transcripts. It has no ``ping``
    and no interruption event either, so ``ping_rtt`` and ``interruption`` stay empty.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.turn = 1
        self.ended = False
        self.completed = False

    @classmethod
    def build_microphone(cls) -> MicLoop:
        s = plugin.settings()
        audio = s.audio()
        probe = MicLoop.convai(audio, gap_ms=s.gap_ms, chunk_ms=100)
        cycles = max(1, math.ceil((s.relay_session_s - s.lead_ms / 1000) / probe.cycle_s))
        return MicLoop.relay(audio, gap_ms=s.gap_ms, chunk_ms=100, cycles=cycles, lead_ms=s.lead_ms)

    def url(self) -> str:
        s = plugin.settings()
        if s.signed_url:
            self.report("signed_url", 0.0, "the relay protocol has no signed URLs; use ConvAI")
            raise SessionEnded
        return relay_url(self.host or "http://127.0.0.1:8765", s.agent)

    def initiate(self, ws: websocket.WebSocket, t0: float) -> bool:
        self.turn = 1
        self.ended = self.completed = False
        msg = self.first_message(ws, t0)
        if msg is None:
            return False
        if msg.get("type") != "ready":
            self.report(
                "metadata",
                (time.monotonic() - t0) * 1000,
                f"expected 'ready' first, got {json.dumps(msg)[:200]}",
            )
            return False
        self.report("metadata", (time.monotonic() - t0) * 1000)
        return True

    def on_message(self, ws: websocket.WebSocket, msg: dict[str, Any], t: float) -> None:
        kind = msg.get("type")
        data = msg.get("data") or {}
        if kind == "audio_chunk":
            seconds = wav_base64_seconds(data["audioBase64"])
            result = self.turns.audio(self.turn, t, seconds)
            self.report_frame(result, self.microphone().speech_end_tail_s * 1000)
        elif kind == "transcript":
            self.turn += 1
        elif kind == "complete":
            self.completed = True
        elif kind == "error":
            self.report("error_event", 0.0, f"relay error: {data.get('message')}")

    def end_session(self, ws: websocket.WebSocket) -> None:
        self.ended = True
        ws.send(relay.encode_client(relay.RelayEnd()))

    def report_close(self, code: int, reason: str, *, by: str) -> None:
        if by == "server" and code == 1000 and self.ended and not self.completed:
            code, reason = 1000, "after 'end' the server closed without sending 'complete'"
            if not self.closed_reported:
                self.closed_reported = True
                lasted = (time.monotonic() - self.session_t0) * 1000
                self.report("close", lasted, reason, code=code, by=by)
            return
        super().report_close(code, reason, by=by)
