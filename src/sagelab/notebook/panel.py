"""``ConversationPanel``: talk to an agent from a notebook, and see what happened.

Threads, and why: the ``Session`` runs on its own event loop thread (``SyncSession``'s), not on
the kernel's loop, because a notebook cell that blocks (``panel.wait_for_reply()``) would stall
a session living on the kernel's loop: no pongs, no audio. Messages from the view (microphone
chunks, player reports, buttons) arrive on the kernel's main thread, and only while the kernel
is idle; they are handed to the loop thread. Messages to the view (agent audio, state) are sent
from the loop thread straight away: ipykernel's IOPub socket takes messages from any thread, so
the agent keeps talking while a cell runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anywidget
import numpy as np
import traitlets

from sagelab.audio import PCM16, decode_to_pcm16, load_audio, speech_bounds, wav_bytes
from sagelab.audio.chunking import RealtimeSchedule
from sagelab.client.blocking import _LoopThread
from sagelab.client.session import (
    ELEVENLABS_BASE_URL,
    AudioInput,
    SentAudio,
    Session,
    SessionError,
    ToolHandler,
)
from sagelab.client.timeline import Timeline
from sagelab.metrics.turns import (
    COLUMN_HELP,
    STAGE_PARTS,
    heard_words,
    turn_audio,
    turn_breakdown,
)
from sagelab.notebook.assets import bundle, css
from sagelab.notebook.conversation_log import ConversationLog
from sagelab.notebook.messages import (
    SAMPLE_RATE,
    PlayerEvent,
    WidgetMessageError,
    check_chunk_ms,
    parse_player_events,
)
from sagelab.notebook.mic import MicInput, SpeechSegmenter
from sagelab.notebook.outputs import run_dir
from sagelab.notebook.player import PlayerOutput
from sagelab.protocol import convai as wire

T = TypeVar("T")
DEFAULT_BASE_URL = "http://127.0.0.1:8765"
_TICK_S = 0.1
# Silence sent after the microphone stops, in real time: a server decides that a turn is over
# from the silence it hears (audio-sage waits up to 800 ms), so a recording stopped right
# after the last word would otherwise leave that turn open, unanswered, for good. A live
# client's microphone keeps streaming; this is the same as leaving it on, muted, that long.
_STOP_TAIL_S = 1.5
_CLOCK_PING_S = 2.0
_USER_VOICE_HOLD_NS = 300_000_000  # "user speaking" lasts this long after a loud chunk
# A flushed turn whose unplayed rest is shorter than this was heard whole (the flush only
# caught its last few milliseconds).
_CUT_MARGIN_MS = 80.0
# A cut turn's words are counted once its audio has stopped arriving for this long (or after
# _SETTLE_MAX_S): the share of the words heard needs the reply's whole length.
_SETTLED_NS = 600_000_000
_SETTLE_MAX_S = 20.0


def _ignore_closed(task: asyncio.Task[None]) -> None:
    """Retrieve a report's failure: a session that ended first leaves nothing to tell."""
    if not task.cancelled():
        task.exception()


def _heard_by_alignment(text: str, chars: list[tuple[str, float]], played_ms: float) -> str | None:
    """The words of ``text`` heard when ``played_ms`` of its audio played, read from the TTS
    alignment received with the audio (``(character, start_ms)`` from the turn's first
    sample); a word cut in the middle was not heard. None without alignment.

    Needed when the server cut the reply itself (a barge-in it heard): it stops sending, so the
    audio received is not the reply's whole length and the share of it played says nothing."""
    if not chars:
        return None
    n = sum(1 for _, start in chars if start < played_ms)
    spoken = "".join(c for c, _ in chars[:n])
    if n < len(chars) and not chars[n][0].isspace():
        spoken = spoken[: max(spoken.rfind(" "), 0)]  # the word under way was not heard
    return " ".join(text.split()[: len(spoken.split())])


def _finite(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return round(x, 1) if math.isfinite(x) else None


class ConversationPanel(anywidget.AnyWidget):
    """Connect, record, interrupt and end; status, live transcript, tool calls and per-turn
    latency; the microphone's level and the agent's waveform.

    >>> panel = ConversationPanel("audio-sage", "http://127.0.0.1:8765")
    >>> panel                                     # shows it; Connect, then Record
    >>> panel.connect()                           # or from Python
    >>> panel.send_recording("data/demo/user/01_search.wav")   # no microphone needed
    >>> panel.wait_for_reply()
    'I found 2 accounts in Oslo: ...'
    >>> panel.turn_table()                        # sagelab.metrics.turn_table of the session
    >>> panel.save("my-run")                      # timeline, both audio tracks, turn tables

    ``ConversationPanel.elevenlabs()`` talks to an ElevenLabs agent (``ELEVENLABS_API_KEY``,
    ``ELEVENLABS_AGENT_ID``). ``tools`` are client tools (name → handler), run in the kernel.
    Other keyword arguments go to ``Session.connect`` (``language``, ``voice_id``, ...).
    """

    _esm = bundle("ui.js", "hub.js", "mic.js", "player.js", "panel_view.js")
    _css = css()

    title = traitlets.Unicode("").tag(sync=True)
    phase = traitlets.Unicode("idle").tag(sync=True)  # idle connecting connected ended error
    status = traitlets.Unicode("idle").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    transcript: traitlets.List[Any] = traitlets.List().tag(sync=True)
    tool_calls: traitlets.List[Any] = traitlets.List().tag(sync=True)
    turns: traitlets.List[Any] = traitlets.List().tag(sync=True)
    column_help: traitlets.Dict[str, Any] = traitlets.Dict(COLUMN_HELP).tag(sync=True)
    stage_parts: traitlets.List[Any] = traitlets.List(list(STAGE_PARTS)).tag(sync=True)
    saved_to = traitlets.Unicode("").tag(sync=True)
    chunk_ms = traitlets.Int(100).tag(sync=True)
    jitter_ms = traitlets.Int(100).tag(sync=True)
    device_id = traitlets.Unicode("").tag(sync=True)
    force_native_rate = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        agent_id: str = "audio-sage",
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        requires_auth: bool = False,
        prompt: str | None = None,
        first_message: str | None = None,
        dynamic_variables: dict[str, Any] | None = None,
        tools: dict[str, ToolHandler] | None = None,
        chunk_ms: int = 100,
        jitter_ms: int = 100,
        stages: bool = True,
        force_native_rate: bool = False,
        save_dir: str | Path | None = None,
        **session_options: Any,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id is empty: pass the agent to talk to, e.g. 'audio-sage'")
        if not 0 <= jitter_ms <= 2000:
            raise ValueError(f"jitter_ms must be 0 to 2000 (ms of buffering), got {jitter_ms}")
        super().__init__(
            title=f"{agent_id} · {base_url}",
            chunk_ms=check_chunk_ms(chunk_ms),
            jitter_ms=jitter_ms,
            force_native_rate=force_native_rate,
        )
        self.agent_id = agent_id
        self.base_url = base_url
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self._connect_options: dict[str, Any] = {
            "api_key": api_key,
            "requires_auth": requires_auth,
            "prompt": prompt,
            "first_message": first_message,
            "dynamic_variables": dynamic_variables,
            "stages": stages,
            **session_options,
        }
        self._log = ConversationLog()
        self._tools = {name: self._wrap_tool(name, h) for name, h in (tools or {}).items()}
        self._pending_tool_ids: dict[str, list[str]] = {}
        self.mic = MicInput(
            on_chunk=self._mic_chunk, on_start=self._mic_started, on_stop=self._mic_stopped
        )
        self.player = PlayerOutput(lambda c, b: self.send(c, b), on_event=self._player_event)
        self._runner: _LoopThread | None = None
        self._session: Session | None = None
        self._mic_queue: asyncio.Queue[PCM16 | None] | None = None
        self._segmenter = SpeechSegmenter()
        self._state_lock = threading.RLock()
        self._muted_upto = 0  # a local interrupt (ConvAI has no message for it)
        self._playout_end_ns = 0
        self._user_voice_ns = 0
        self._recording_speech: tuple[int, int] | None = None
        self._open_turns: set[int] = set()
        self._cut_turns: set[int] = set()
        # Per agent turn: its alignment (character, start ms) and the audio received so far (ms).
        self._alignment: dict[int, list[tuple[str, float]]] = {}
        self._aligned_ms: dict[int, float] = {}
        self._input_mark = 0
        self._turns_dirty = False
        self._tasks: list[asyncio.Task[None]] = []
        self.on_msg(self._on_view_message)

    @classmethod
    def elevenlabs(
        cls,
        agent_id: str | None = None,
        *,
        api_key: str | None = None,
        **options: Any,
    ) -> ConversationPanel:
        """A panel on an ElevenLabs agent (``ELEVENLABS_AGENT_ID``, ``ELEVENLABS_API_KEY``);
        with a key the session asks for a signed URL, as private agents require."""
        agent_id = agent_id or os.environ.get("ELEVENLABS_AGENT_ID")
        api_key = api_key or os.environ.get("ELEVENLABS_API_KEY")
        if not agent_id:
            raise ValueError(
                "no ElevenLabs agent: pass agent_id='agent_…' or set ELEVENLABS_AGENT_ID"
            )
        options.setdefault("stages", False)
        return cls(
            agent_id, ELEVENLABS_BASE_URL, api_key=api_key, requires_auth=bool(api_key), **options
        )

    # -- the session's life ------------------------------------------------------------------------

    def connect(self, *, wait: bool = True, timeout: float = 60.0) -> ConversationPanel:
        """Open the session (the Connect button). ``wait=False`` returns at once; the status
        and ``error`` show how it went."""
        with self._state_lock:
            if self.phase in ("connecting", "connected"):
                return self
            self._set(phase="connecting", status="connecting", error="")
            self._runner = _LoopThread()
            future = asyncio.run_coroutine_threadsafe(self._open(), self._runner.loop)
        if wait:
            try:
                future.result(timeout)
            except concurrent.futures.TimeoutError as exc:
                raise SessionError(f"no session after {timeout:g} s") from exc
        return self

    async def _open(self) -> None:
        try:
            session: Session = await Session.connect(
                self.base_url,
                self.agent_id,
                tools=self._tools,
                listener=self._on_server_message,
                **self._connect_options,
            )
        except Exception as exc:
            self._set(phase="error", status="error", error=f"cannot connect: {exc}")
            runner = self._runner
            if runner is not None:
                threading.Thread(target=runner.stop, daemon=True).start()
            raise
        self._session = session
        self._mic_queue = asyncio.Queue()
        self._set(phase="connected", status="listening")
        self.player.ping_clock()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._mic_sender(), name="sagelab-panel-mic"),
            loop.create_task(self._ticker(), name="sagelab-panel-tick"),
        ]

    def end(self) -> None:
        """End the conversation (the End button); the timeline stays readable. Safe twice."""
        with self._state_lock:
            runner, session = self._runner, self._session
            if runner is None:
                return
            self._runner = None
        self.player.flush()
        if session is not None and runner.running:
            try:
                runner.run(session.close)
                self.player.release_pending()
                runner.run(self._refresh_turns_async)
            except (SessionError, RuntimeError):
                pass
        runner.stop()
        self._set(phase="ended", status="ended")

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        runner = self._runner
        if runner is None or self._session is None:
            raise SessionError("the panel is not connected: call connect() (or press Connect)")
        return runner.run(make)

    def _submit(self, make: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        runner = self._runner
        if runner is None or self._session is None:
            raise SessionError("the panel is not connected: call connect() (or press Connect)")
        return asyncio.run_coroutine_threadsafe(make(), runner.loop)

    @property
    def session(self) -> Session:
        if self._session is None:
            raise SessionError("the panel has not connected yet: call connect()")
        return self._session

    @property
    def timeline(self) -> Timeline:
        """Everything the session sent and received, plus the player's reports."""
        return self.session.timeline

    # -- user input --------------------------------------------------------------------------------

    def send_recording(
        self, audio: AudioInput, *, trailing_silence_ms: int = 1500, wait: bool = True
    ) -> SentAudio | concurrent.futures.Future[SentAudio]:
        """Speak a recording (a path or 16 kHz PCM16) as the user, in real time: the way to
        talk without a microphone. Blocks while it plays unless ``wait=False``."""
        pcm = audio if isinstance(audio, np.ndarray) else load_audio(audio)  # type: ignore[arg-type]
        self._input_mark = self.session.mark()
        bounds = speech_bounds(pcm)

        async def speak() -> SentAudio:
            now = time.monotonic_ns()
            if bounds is not None:
                start, stop = (now + b * 1_000_000_000 // SAMPLE_RATE for b in bounds)
                self._recording_speech = (start, stop)
            return await self.session.send_audio(pcm, trailing_silence_ms=trailing_silence_ms)

        future = self._submit(speak)
        return future.result() if wait else future

    def say(self, text: str) -> None:
        """A typed user turn."""
        self._input_mark = self.session.mark()
        self._run(lambda: self.session.send_text(text))
        self._log.user_typed(text)
        self._sync({"transcript"})

    def interrupt(self) -> None:
        """Stop the agent now (the Interrupt button): playback stops at once and the rest of the
        turn's audio is dropped. ConvAI has no interrupt message (the user barges in by
        speaking); the relay protocol's ``interrupt`` is sent when the session speaks it. Once
        the player reports how much it played, the transcript marks the turn with what was
        heard, and a sagelab server is told (``internal_sagelab_heard``)."""
        self.player.flush()
        with self._state_lock:
            self._playout_end_ns = time.monotonic_ns()
            self._open_turns.clear()
        session = self._session
        if session is None:
            return
        newest = max([e.event_id or 0 for e in session.timeline.of_type("audio")] or [0])
        self._muted_upto = max(self._muted_upto, newest)
        self._submit(lambda: self._local_interrupt(newest))

    async def _local_interrupt(self, event_id: int) -> None:
        session = self.session
        session.timeline.add("local", "user_interrupt", event_id=event_id)
        if session.protocol == "relay":
            await session.interrupt()

    def wait_for_reply(self, *, timeout: float = 60.0) -> str:
        """Wait for the agent's reply to the last input and for its audio to finish; returns
        the reply's text."""
        mark = self._input_mark
        reply = self._run(
            lambda: self.session.wait_for("agent_response", since=mark, timeout=timeout)
        )
        self._run(lambda: self.session.wait_agent_done(timeout=timeout))
        self._refresh_turns_soon()
        return str(reply.data.get("agent_response", ""))

    def start_recording(self) -> None:
        """Start the view's microphone from Python (the view must be rendered)."""
        self.send({"type": "mic_cmd", "cmd": "start"})

    def stop_recording(self) -> None:
        self.send({"type": "mic_cmd", "cmd": "stop"})

    # -- results -----------------------------------------------------------------------------------

    def turn_table(self) -> Any:
        """``sagelab.metrics.turn_table`` of this session: a DataFrame, one row per agent turn."""
        from sagelab.metrics import turn_table

        return turn_table(self.timeline)

    def turn_breakdown(self) -> Any:
        """``sagelab.metrics.turns.turn_breakdown``: turns numbered 1, 2, 3 (the greeting 0),
        voice-to-voice split into stages, interrupted turns with what was heard."""
        return turn_breakdown(self.timeline)

    def turn_audio(self, event_id: int) -> tuple[PCM16, PCM16]:
        """``(user, agent)`` audio of agent turn ``event_id``, 16 kHz PCM16."""
        return turn_audio(self.timeline, event_id)

    def save(self, directory: str | Path | None = None) -> Path:
        """Save the session where you choose (default: ``save_dir``, else a new folder under
        the runs folder, ``sagelab.notebook.outputs``): ``timeline.jsonl``, ``user.wav`` and
        ``agent.wav`` (``Timeline.load`` reads them back), the full ``turns.csv``
        (``turn_table``), ``turn_breakdown.csv`` and ``tool_calls.csv``."""
        from sagelab.metrics import tool_call_table, turn_table

        target = Path(directory) if directory is not None else self.save_dir
        if target is None:
            target = self.save_dir = run_dir("notebook")
        timeline = self.timeline
        timeline.save(target)
        turn_table(timeline).to_csv(target / "turns.csv", index=False)
        turn_breakdown(timeline).to_csv(target / "turn_breakdown.csv", index=False)
        tool_call_table(timeline).to_csv(target / "tool_calls.csv", index=False)
        self._set(saved_to=str(target))
        return target

    def stutter(self) -> dict[str, Any]:
        """Stutter three ways, each a ``Playout.summary()``: ``player``, as heard (the player's
        reports); ``model``, the playout model with the same jitter buffer on the network
        arrival times of the same chunks; ``delivered``, that model on the times the chunks
        reached the player, after Jupyter's widget messages (``delivered_chunk_table``).
        ``delivered`` minus ``model`` is what the notebook's message path added; ``player``
        against ``delivered`` is how faithfully the player follows the rule. ``delivered`` only
        has turns whose end the player has reported, and ``chunks_left_off`` counts chunks the
        player did not list (it lists a few thousand per turn)."""
        from sagelab.metrics import delivered_chunk_table, player_playout, playout

        timeline = self.timeline
        delivered = delivered_chunk_table(timeline)
        return {
            "player": player_playout(timeline).summary(),
            "model": playout(timeline, jitter_buffer_ms=self.jitter_ms).summary(),
            "delivered": {
                **playout(delivered, jitter_buffer_ms=self.jitter_ms).summary(),
                "chunks_left_off": delivered.attrs["chunks_left_off"],
            },
        }

    def player_report(self) -> dict[str, Any]:
        return self.player.report()

    @property
    def player_events(self) -> list[dict[str, Any]]:
        """The player's reports as records (``playback_start`` / ``_underrun`` / ``_end``)."""
        return self.player.records()

    # -- from the view (kernel main thread, kernel idle) -------------------------------------------

    def _on_view_message(self, _: Any, content: Any, buffers: Sequence[Any]) -> None:
        if not isinstance(content, dict):
            return
        try:
            if content.get("type") == "player":
                self._cuts_reported(content)
            if self.mic.handle(content, buffers) or self.player.handle(content, buffers):
                return
            if content.get("type") == "action":
                self._action(str(content.get("action")), content)
        except (WidgetMessageError, SessionError, OSError, KeyError) as exc:
            self._set(error=str(exc))

    def _action(self, action: str, content: dict[str, Any]) -> None:
        if action == "replay":
            self._send_clip(content.get("event_id"), content.get("side"))
        elif action == "save":
            self.save()
        elif action == "connect":
            self.connect(wait=False)
        elif action == "interrupt":
            self.interrupt()
        elif action == "end":
            threading.Thread(target=self.end, name="sagelab-panel-end", daemon=True).start()

    def _send_clip(self, event_id: Any, side: Any) -> None:
        """One side of one turn as a WAV for the view's replay and download controls."""
        if not isinstance(event_id, int) or side not in ("user", "agent"):
            raise WidgetMessageError(f"replay needs an event_id and a side, got {event_id!r}")
        user, agent = self.turn_audio(event_id)
        pcm = user if side == "user" else agent
        if pcm.size == 0:
            raise WidgetMessageError(f"turn {event_id} has no {side} audio in this session")
        seconds = pcm.size / SAMPLE_RATE
        self.send(
            {"type": "clip", "event_id": event_id, "side": side, "seconds": seconds},
            [wav_bytes(pcm)],
        )

    def _mic_chunk(self, pcm: PCM16) -> None:
        runner, queue = self._runner, self._mic_queue
        if runner is None or queue is None or self._session is None:
            return  # not connected: the recording is only kept (mic.audio())
        runner.loop.call_soon_threadsafe(queue.put_nowait, pcm)

    def _mic_started(self) -> None:
        if self._session is not None:
            self._input_mark = self._session.mark()  # wait_for_reply waits for what follows

    def _mic_stopped(self) -> None:
        runner, queue = self._runner, self._mic_queue
        if runner is not None and queue is not None:
            runner.loop.call_soon_threadsafe(queue.put_nowait, None)

    def _player_event(self, event: PlayerEvent) -> None:
        runner = self._runner
        if runner is not None:
            runner.loop.call_soon_threadsafe(self._record_player_event, event)

    # -- on the session's loop thread --------------------------------------------------------------

    async def _mic_sender(self) -> None:
        """Sends microphone chunks in arrival order and marks where utterances end."""
        assert self._mic_queue is not None
        while True:
            pcm = await self._mic_queue.get()
            if pcm is None:
                self._mark_speech(self._segmenter.finish())
                await self._send_stop_tail()
                continue
            try:
                sent_ns = await self.session.send_audio_chunk(pcm)
            except SessionError as exc:
                self._set(error=str(exc))
                continue
            utterance = self._segmenter.feed(pcm, sent_ns)
            if self._segmenter.speaking:
                self._user_voice_ns = sent_ns
            self._mark_speech(utterance)

    async def _send_stop_tail(self) -> None:
        """Silence after a stopped recording, paced in real time, until a new one starts."""
        assert self._mic_queue is not None
        chunk = np.zeros(int(16_000 * _TICK_S), dtype=np.int16)
        schedule = RealtimeSchedule(_TICK_S, clock=asyncio.get_running_loop().time)
        for k in range(math.ceil(_STOP_TAIL_S / _TICK_S)):
            await schedule.wait_async(k)
            if not self._mic_queue.empty():
                return  # recording again: its own audio follows
            try:
                await self.session.send_audio_chunk(chunk)
            except SessionError:
                return  # the session ended; nothing to finish

    def _mark_speech(self, utterance: tuple[int, int] | None) -> None:
        if utterance is None:
            return
        start, end = utterance
        self.session.timeline.add(
            "local",
            "user_speech",
            speech_start_ns=start,
            speech_end_ns=end,
            start_ns=start,
            end_ns=end,
            source="microphone",
        )

    def _record_player_event(self, event: PlayerEvent) -> None:
        session = self._session
        if session is None:
            return
        t_ns = event.t_ns if event.t_ns is not None else event.received_ns
        session.timeline.add(
            "local",
            event.type,
            event_id=event.event_id,
            t_ns=t_ns,
            clock_synced=event.t_ns is not None,
            browser_ms=event.browser_ms,  # with t_ns, maps the report's other browser times
            **event.data,
        )
        with self._state_lock:
            if event.type == "playback_start" and event.event_id is not None:
                self._open_turns.add(event.event_id)
            elif event.type == "playback_end":
                self._open_turns.discard(event.event_id or 0)
        self._turns_dirty = True

    def _cuts_reported(self, content: dict[str, Any]) -> None:
        """Turns whose playback was stopped, handled as soon as the report arrives: how much
        was played needs no clock, unlike the report's timestamps, which wait in the player
        until the browser's clock is known well enough."""
        runner = self._runner
        if runner is None:
            return
        for event in parse_player_events(content, self.player.clock):
            if event.type == "playback_end" and event.data.get("flushed"):
                runner.loop.call_soon_threadsafe(self._turn_cut, event)

    def _turn_cut(self, event: PlayerEvent) -> None:
        """Playback of a turn was stopped: mark it at once, then, once the turn's audio has
        stopped arriving (a server streams replies in real time and keeps sending after a
        local Interrupt), mark the words heard and tell the server."""
        session, event_id = self._session, event.event_id
        played = _finite(event.data.get("played_ms"))
        if session is None or event_id is None or played is None:
            return
        if event_id in self._cut_turns:
            return  # a second view of the panel reported the same cut
        self._cut_turns.add(event_id)
        task = asyncio.get_running_loop().create_task(
            self._settle_cut(session, event_id, played, _finite(event.data.get("received_ms")))
        )
        task.add_done_callback(_ignore_closed)
        self._tasks.append(task)

    def _turn_audio_ms(self, session: Session, event_id: int) -> tuple[float, int]:
        """Audio of turn ``event_id`` received so far (ms), and when its last chunk came."""
        chunks = [e for e in session.timeline.of_type("audio") if e.event_id == event_id]
        total = sum(float(e.data.get("duration_s", 0.0)) for e in chunks) * 1000
        return total, max((e.t_ns for e in chunks), default=0)

    async def _settle_cut(
        self, session: Session, event_id: int, played: float, reported: float | None
    ) -> None:
        received, _ = self._turn_audio_ms(session, event_id)
        if max(received, reported or 0.0) - played < _CUT_MARGIN_MS and not self._log.interrupted(
            event_id
        ):
            # Everything had been played. (Not so when the server cut the turn: it stopped
            # sending there, so the audio received says nothing about the reply's length.)
            return
        self._log.mark_cut(event_id, played)
        self._sync({"transcript"})
        deadline = time.monotonic() + _SETTLE_MAX_S
        while time.monotonic() < deadline:
            received, last_ns = self._turn_audio_ms(session, event_id)
            if time.monotonic_ns() - last_ns > _SETTLED_NS:
                break
            await asyncio.sleep(0.1)
        received = max(received, reported or 0.0)
        text = self._log.agent_text(event_id)
        heard = _heard_by_alignment(text, self._alignment.get(event_id, []), played)
        if heard is None:
            heard = heard_words(text, played, received)
        if self._log.heard(event_id, heard, played):
            self._sync({"transcript"})
        if self._tells_server(session):
            await session.send_heard(event_id, played, heard)

    def _align(self, msg: wire.AudioEvent, chunk_ms: float) -> None:
        """Keep the chunk's alignment (times from the chunk's start) on the turn's time line."""
        offset = self._aligned_ms.get(msg.event_id, 0.0)
        self._aligned_ms[msg.event_id] = offset + chunk_ms
        if msg.alignment is not None:
            self._alignment.setdefault(msg.event_id, []).extend(
                (c, offset + float(t))
                for c, t in zip(
                    msg.alignment.chars, msg.alignment.char_start_times_ms, strict=False
                )
            )

    def _tells_server(self, session: Session) -> bool:
        """Only sagelab servers know ``internal_sagelab_heard``; they are the ones asked for
        stage timings (``stages=True``, off for ElevenLabs)."""
        return bool(self._connect_options.get("stages")) and session.protocol == "convai"

    def _on_server_message(self, msg: Any) -> None:
        changed = self._log.apply(msg)
        session = self._session
        match msg:
            case wire.AudioEvent() if session is not None:
                stale = msg.event_id <= max(session.last_interrupt_id, self._muted_upto)
                if not stale:
                    pcm = decode_to_pcm16(msg.audio, session.output_format)
                    self._align(msg, pcm.size * 1000 / SAMPLE_RATE)
                    self.player.audio(pcm, msg.event_id)
                    now = time.monotonic_ns()
                    with self._state_lock:
                        start = max(self._playout_end_ns, now + self.jitter_ms * 1_000_000)
                        self._playout_end_ns = start + pcm.size * 1_000_000_000 // SAMPLE_RATE
            case wire.Interruption():
                self.player.flush(msg.event_id)
                with self._state_lock:
                    self._playout_end_ns = time.monotonic_ns()
                    self._open_turns = {t for t in self._open_turns if t > msg.event_id}
            case wire.ClientToolCall():
                self._pending_tool_ids.setdefault(msg.tool_name, []).append(msg.tool_call_id)
            case wire.AgentResponse() | wire.UserTranscript():
                self._turns_dirty = True
        if changed:
            self._sync(changed)

    async def _ticker(self) -> None:
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(_TICK_S)
            self._update_status()
            if self._turns_dirty:
                self._turns_dirty = False
                self._refresh_turns()
            if time.monotonic() - last_ping > _CLOCK_PING_S:
                last_ping = time.monotonic()
                self.player.ping_clock()
            session = self._session
            if session is not None and session.closed and self.phase == "connected":
                code = session.close_code
                self._set(phase="ended", status="ended")
                if code not in (1000, None):
                    self._set(error=f"the server closed the session (code {code})")

    def _update_status(self) -> None:
        now = time.monotonic_ns()
        if self.phase != "connected":
            return
        speech = self._recording_speech
        user = (speech is not None and speech[0] <= now <= speech[1]) or (
            self._segmenter.speaking and now - self._user_voice_ns < _USER_VOICE_HOLD_NS
        )
        with self._state_lock:
            agent = now < self._playout_end_ns or bool(self._open_turns)
        status = "user speaking" if user else "agent speaking" if agent else "listening"
        if status != self.status:
            self._set(status=status)

    async def _refresh_turns_async(self) -> None:
        self._refresh_turns()

    def _refresh_turns_soon(self) -> None:
        runner = self._runner
        if runner is not None:
            runner.loop.call_soon_threadsafe(self._refresh_turns)

    def _refresh_turns(self) -> None:
        """The Turns table: ``turn_breakdown`` (the metrics' own definitions) with what the
        browser's player heard."""
        from sagelab.metrics import player_playout, turn_table

        session = self._session
        if session is None:
            return
        breakdown = turn_breakdown(session.timeline)
        table = turn_table(session.timeline).set_index("event_id")
        heard = player_playout(session.timeline).turns
        started = {
            int(r["event_id"]): r for r in heard.to_dict("records") if r["event_id"] is not None
        }
        rows = []
        for r in breakdown.to_dict("records"):
            event_id = int(r["event_id"])
            player = started.get(event_id, {})
            start = player.get("playback_start_ns", math.nan)
            speech_end = math.nan
            if event_id in table.index:
                speech_end = table.loc[event_id, "user_speech_end_ns"]
            rows.append(
                {
                    "turn": int(r["turn"]),
                    "kind": r["kind"],
                    "event_id": event_id,
                    "user_text": r["user_text"] or "",
                    "voice_to_voice_ms": _finite(r["voice_to_voice_ms"]),
                    "parts": {p: _finite(r[f"{p}_ms"]) for p in STAGE_PARTS},
                    "drafted_ms": _finite(r["drafted_ms"]),
                    "heard_ms": _finite((start - speech_end) / 1e6),
                    "underruns": int(player["underruns"]) if player else None,
                    "interrupted": bool(r["interrupted"]),
                    "played_ms": _finite(r["played_ms"]),
                    "heard_text": r["heard_text"],
                    "tools": list(r["tools"]),
                    "has_user_audio": r["kind"] == "speech",
                }
            )
        self._set(turns=rows)

    # -- tools and state ---------------------------------------------------------------------------

    def _wrap_tool(self, name: str, handler: ToolHandler) -> ToolHandler:
        if not callable(handler):
            raise TypeError(f"tool {name!r}: the handler must be callable, got {handler!r}")

        async def run(parameters: dict[str, Any]) -> Any:
            ids = self._pending_tool_ids.get(name) or [""]
            call_id = ids.pop(0)
            try:
                if inspect.iscoroutinefunction(handler):
                    result = await handler(parameters)
                else:
                    result = await asyncio.to_thread(handler, parameters)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                self._log.tool_result(call_id, str(exc), True)
                self._sync({"tool_calls"})
                raise
            self._log.tool_result(call_id, result, False)
            self._sync({"tool_calls"})
            return result

        return run

    def _sync(self, changed: set[str]) -> None:
        transcript, tool_calls = self._log.snapshot()
        values: dict[str, Any] = {}
        if "transcript" in changed:
            values["transcript"] = transcript
        if "tool_calls" in changed:
            values["tool_calls"] = tool_calls
        if "error" in changed:
            values["error"] = self._log.error
        self._set(**values)

    def _set(self, **values: Any) -> None:
        """Set synced traits from any thread, one update message at a time."""
        with self._state_lock, self.hold_sync():
            for name, value in values.items():
                setattr(self, name, value)
