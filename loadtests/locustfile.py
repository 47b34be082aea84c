"""Locust users that hold ConvAI conversations and stream real speech in real time.

Run by ``sagelab loadtest`` (which starts a server, reads the results and checks thresholds),
or directly::

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 2m --host http://127.0.0.1:8765

Each user is a microphone that never stops: ``data/speech/goforward.wav`` then 2.5 s of
silence, again and again, in 100 ms chunks on an absolute schedule. Locust runs users as gevent
greenlets, so this uses the blocking ``websocket-client`` (made cooperative by gevent's monkey
patching) rather than an asyncio client, which would block every other user. A reader greenlet
answers each ``ping`` at once (a late pong would be blamed on the server) and turns frames into
measurements; see :mod:`sagelab.loadtest.measure` for what each metric means.

Environment: ``SAGELAB_AGENT`` (default ``scripted``), ``SAGELAB_RAW_LOG`` (JSONL of raw values),
``SAGELAB_SPEECH`` (another recording), ``SAGELAB_DATA`` (the repository's ``data/``).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import gevent
import websocket
from gevent.event import Event
from locust import User, constant, events, task
from locust.env import Environment

from sagelab.audio import RealtimeSchedule
from sagelab.loadtest.measure import MicLoop, RawLog, TurnTracker, bytes_per_second, ws_url

AGENT_ID = os.environ.get("SAGELAB_AGENT", "scripted")
METADATA_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0
#: No frame at all for this long (the server pings every second) means the session is dead.
RECV_TIMEOUT_S = 30.0


def _speech_path() -> Path:
    if env := os.environ.get("SAGELAB_SPEECH"):
        return Path(env)
    data = os.environ.get("SAGELAB_DATA")
    base = Path(data) if data else Path(__file__).resolve().parents[1] / "data"
    return base / "speech" / "goforward.wav"


MIC = MicLoop.from_file(_speech_path(), gap_ms=2500, chunk_ms=100)  # encoded once, shared
RAW = RawLog.from_env()
_ids = itertools.count(1)


@events.quitting.add_listener
def _close_raw_log(environment: Environment, **_kw: Any) -> None:
    RAW.close()


class ConvAIUser(User):
    """One ConvAI conversation per task run; reconnects (after 1 s) if the session ends."""

    wait_time = constant(1)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.uid = next(_ids)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.stopping = False

    # -- reporting -------------------------------------------------------------------------

    def report(self, name: str, ms: float, error: str | None = None) -> None:
        """One locust request (rounded by locust) plus one unrounded raw-log line."""
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=ms,
            response_length=0,
            exception=RuntimeError(error) if error else None,
            context={"user": self.uid},
        )
        RAW.write(self.uid, name, ms, error)

    # -- one conversation ------------------------------------------------------------------

    @task
    def converse(self) -> None:
        self.stopping = False
        url = ws_url(self.host or "http://127.0.0.1:8765", AGENT_ID)
        t0 = time.monotonic()
        try:
            ws = websocket.create_connection(
                url, timeout=METADATA_TIMEOUT_S, enable_multithread=True
            )
        except Exception as exc:  # refused, handshake rejected (HTTP 4xx/5xx), timeout
            self.report("connect", (time.monotonic() - t0) * 1000, f"{type(exc).__name__}: {exc}")
            return
        self.ws = ws
        self.report("connect", (time.monotonic() - t0) * 1000)
        try:
            metadata = self._initiate(ws, t0)
            if metadata is None:
                return
            out_fmt = metadata.get("agent_output_audio_format")
            turns = TurnTracker(timeout_s=REPLY_TIMEOUT_S)
            dead = Event()
            ws.settimeout(RECV_TIMEOUT_S)
            self.reader = gevent.spawn(self._read, ws, turns, bytes_per_second(out_fmt), dead)
            self._stream(ws, turns, dead)
        finally:
            # Also reached on GreenletExit when locust stops the test: hang up cleanly.
            self._hang_up()

    def _initiate(self, ws: websocket.WebSocket, t0: float) -> dict[str, Any] | None:
        """Send the initiation message; return the metadata event, or None after a failure."""
        ws.send(
            json.dumps(
                {
                    "type": "conversation_initiation_client_data",
                    "conversation_config_override": {},
                    "custom_llm_extra_body": {},
                    "dynamic_variables": {},
                    "source_info": {"source": "sagelab_locust", "version": "1"},
                }
            )
        )
        try:
            raw = ws.recv()  # the protocol guarantees metadata is the first server message
        except Exception as exc:
            self.report("metadata", (time.monotonic() - t0) * 1000, f"{type(exc).__name__}: {exc}")
            return None
        msg = json.loads(raw) if raw else {}
        if msg.get("type") != "conversation_initiation_metadata":
            detail = msg.get("error_event", {}).get("message") if msg else "socket closed"
            self.report(
                "metadata",
                (time.monotonic() - t0) * 1000,
                f"first message was {msg.get('type')!r}: {detail}",
            )
            return None
        self.report("metadata", (time.monotonic() - t0) * 1000)
        return dict(msg.get("conversation_initiation_metadata_event") or {})

    def _stream(self, ws: websocket.WebSocket, turns: TurnTracker, dead: Event) -> None:
        """Send chunk k at start + k * chunk, whatever happened to earlier chunks."""
        schedule = RealtimeSchedule(MIC.chunk_s)
        n = len(MIC.messages)
        for k in itertools.count():
            schedule.wait_sync(k)  # gevent-patched sleep: other users run meanwhile
            if dead.is_set():
                return
            now = time.monotonic()
            # Measured after the wake-up, not before the sleep: a greenlet woken late because
            # the load generator is saturated is exactly the lateness worth seeing.
            late_s = max(0.0, now - schedule.due(k))
            try:
                ws.send(MIC.messages[k % n])
            except Exception as exc:
                if not dead.is_set():
                    self.report("close", 0.0, f"send failed: {type(exc).__name__}: {exc}")
                return
            self.report("send_lateness", late_s * 1000)
            if k % n == MIC.speech_end_chunk:
                turns.speech_ended(now)
            for waited in turns.expired(now):
                self.report("first_audio", waited, f"no reply audio within {REPLY_TIMEOUT_S:g} s")

    def _read(self, ws: websocket.WebSocket, turns: TurnTracker, out_bps: int, dead: Event) -> None:
        try:
            while True:
                try:
                    opcode, data = ws.recv_data(control_frame=True)
                except Exception as exc:
                    if not self.stopping:
                        self.report("close", 0.0, f"connection lost: {type(exc).__name__}: {exc}")
                    return
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    if code != 1000 and not self.stopping:
                        reason = data[2:].decode("utf-8", "replace")
                        self.report("close", 0.0, f"closed with {code} {reason}".strip())
                    return
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                t = time.monotonic()
                msg = json.loads(data)
                kind = msg.get("type")
                if kind == "ping":
                    event = msg["ping_event"]
                    ws.send(json.dumps({"type": "pong", "event_id": event["event_id"]}))
                    if event.get("ping_ms"):
                        self.report("ping_rtt", float(event["ping_ms"]))
                elif kind == "audio":
                    event = msg["audio_event"]
                    seconds = len(base64.b64decode(event["audio_base_64"])) / out_bps
                    firsts, gap = turns.audio(int(event["event_id"]), t, seconds)
                    for ms in firsts:
                        self.report("first_audio", ms)
                    if gap is not None:
                        self.report("audio_gap", gap)
                elif kind == "client_tool_call":
                    # Answer at once, as an app would: the agent waits for the result before
                    # it speaks, so an unanswered call would stall the turn until the tool
                    # timeout and show up as a ~one-utterance-late first_audio.
                    call = msg["client_tool_call"]
                    result = {
                        "type": "client_tool_result",
                        "tool_call_id": call["tool_call_id"],
                        "result": "sunny, 21 degrees",
                        "is_error": False,
                    }
                    ws.send(json.dumps(result))
                elif kind == "interruption":
                    turns.interrupted()
                elif kind == "error":
                    event = msg.get("error_event", {})
                    self.report(
                        "error_event",
                        0.0,
                        f"{event.get('error_type')}: {event.get('message')} ({event.get('code')})",
                    )
        finally:
            dead.set()

    def _hang_up(self) -> None:
        self.stopping = True
        if self.reader is not None:
            self.reader.kill(block=True, timeout=1)
            self.reader = None
        if self.ws is not None:
            try:
                self.ws.close(status=websocket.STATUS_NORMAL, timeout=1)
            except Exception:  # already closed by the server
                self.ws.shutdown()
            self.ws = None

    def on_stop(self) -> None:
        self._hang_up()
