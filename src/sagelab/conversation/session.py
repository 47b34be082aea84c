"""The server side of one conversation, sans I/O: event ids, pacing, barge-in, pings, tools.

``ServerSession`` holds what the protocol makes the server responsible for and decides every
frame's content and moment; it never sends, sleeps or reads a clock. Inputs carry their time
(``tick(now)``, ``pong(event_id, now)``, ``queue_audio(...)``), outputs are actions: events to
send, tool calls resolved, turns drained, the session to close. ``next_deadline()`` tells the
adapter when to call ``tick`` next.

What it guarantees, and what ``tests/conversation`` checks with a simulated clock:

- event ids never go backwards; a turn's transcript, reply, audio, tool traffic and
  interruption share its id; pings draw from the same counter;
- agent audio goes out in real time with ``audio_lead_ms`` of lead, each turn on its own
  playout clock, which restarts when the agent fell behind and the client ran dry;
- every ``agent_response`` is followed by its audio, or by ``interruption`` and an
  ``agent_response_correction`` whose text is exactly what the client had played (by the
  TTS alignment when there is one, else by share of the audio, in whole words); this holds
  also when a reply is cut before any of its audio existed, and when a new turn starts
  speaking over an unfinished one;
- after an interruption, no audio of that turn is sent;
- a pong or a client tool result counts only for the request it answers; tool calls time out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sagelab.conversation.events import (
    AgentAudio,
    AgentResponse,
    ClientToolCall,
    Correction,
    Interruption,
    OutEvent,
    Ping,
)
from sagelab.protocol import closecodes

SAMPLE_RATE = 16_000
_EPSILON = 1e-6  # a deadline this close is due: float sums must not make a timer spin

__all__ = [
    "AgentTurn",
    "Close",
    "Interrupted",
    "Send",
    "ServerSession",
    "SessionAction",
    "SessionSettings",
    "ToolDone",
    "TurnDrained",
]


@dataclass(frozen=True)
class SessionSettings:
    ping_interval_s: float = 2.0
    audio_lead_ms: float = 200.0
    idle_timeout_s: float = 180.0
    max_duration_s: float = 3600.0
    client_tool_timeout_s: float = 30.0


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``event`` to the client."""

    event: OutEvent


@dataclass(frozen=True)
class ToolDone:
    """A client tool call has its outcome (the client's result, or a timeout)."""

    call_id: str
    value: Any
    is_error: bool


@dataclass(frozen=True)
class TurnDrained:
    """Everything queued for this turn was sent or dropped: ``finish_audio`` may return."""

    event_id: int


@dataclass(frozen=True)
class Close:
    code: int
    reason: str
    error_type: str | None = None


SessionAction = Send | ToolDone | TurnDrained | Close


@dataclass(frozen=True)
class Interrupted:
    """What a barge-in cut: the turn and the words the user had heard of it."""

    event_id: int
    delivered: str


@dataclass(eq=False)
class AgentTurn:
    """An agent turn's bookkeeping; ``played_s`` models the client's playout clock."""

    event_id: int
    created_at: float
    text: str = ""
    response_sent: bool = False
    complete: bool = False  # the agent has produced all of it (finish_audio was called)
    interrupted: bool = False
    delivered: str | None = None
    queued_s: float = 0.0
    sent_s: float = 0.0
    pending: int = 0
    stream_t0: float | None = None
    first_audio_at: float | None = None
    alignment: list[tuple[str, float]] = field(default_factory=list)

    def played_s(self, now: float) -> float:
        if self.stream_t0 is None:
            return 0.0
        return max(0.0, min(self.sent_s, now - self.stream_t0))

    def speaking(self, now: float) -> bool:
        return not self.interrupted and (
            self.pending > 0 or (self.stream_t0 is not None and now - self.stream_t0 < self.sent_s)
        )

    def open(self, now: float) -> bool:
        """Started (text or audio went out) and not yet over for the user."""
        if self.interrupted or not (self.response_sent or self.queued_s > 0):
            return False
        return not self.complete or self.speaking(now)


@dataclass
class _Chunk:
    turn: AgentTurn
    seconds: float
    payload: Any
    alignment: dict[str, list[Any]] | None = None


def _chunk_alignment(
    alignment: list[tuple[str, float]], start_s: float, seconds: float
) -> dict[str, list[Any]] | None:
    """The characters that start inside one chunk, in the protocol's shape: times in ms from
    the chunk's start, each lasting until the next character (the last one, to the end)."""
    end_s = start_s + seconds
    inside = [i for i, (_, t) in enumerate(alignment) if start_s <= t < end_s]
    if not inside:
        return None
    chars, starts, durations = [], [], []
    for i in inside:
        c, t = alignment[i]
        following = alignment[i + 1][1] if i + 1 < len(alignment) else end_s
        chars.append(c)
        starts.append(round((t - start_s) * 1000))
        durations.append(max(0, round((min(following, end_s) - t) * 1000)))
    return {"chars": chars, "char_start_times_ms": starts, "char_durations_ms": durations}


@dataclass
class _ToolWait:
    name: str
    limit_s: float
    deadline: float | None


class ServerSession:
    """One conversation's protocol state (see the module docstring)."""

    def __init__(self, settings: SessionSettings, now: float, *, call_prefix: str = "call") -> None:
        self.settings = settings
        self.started_at = now
        self._last_event_id = 0
        self._current: AgentTurn | None = None
        self._last_cut = 0  # the highest event id an interruption was sent for
        self._audio: deque[_Chunk] = deque()
        self._lead = settings.audio_lead_ms / 1000
        self._pings: dict[int, float] = {}
        self._next_ping = now + settings.ping_interval_s
        self.last_rtt_ms: int | None = None
        self._tools: dict[str, _ToolWait] = {}
        self._call_prefix = call_prefix
        self._calls = 0
        self._last_input = now
        self.detached = False
        self.closed = False

    @property
    def current(self) -> AgentTurn | None:
        """The turn a barge-in would cut: the last one that started speaking."""
        return self._current

    # -- event ids -------------------------------------------------------------------------

    def next_event_id(self) -> int:
        self._last_event_id += 1
        return self._last_event_id

    def begin_turn(self, now: float) -> AgentTurn:
        return AgentTurn(event_id=self.next_event_id(), created_at=now)

    # -- agent output ----------------------------------------------------------------------

    def agent_response(self, turn: AgentTurn, text: str, now: float) -> list[SessionAction]:
        actions = self._claim(turn, now)
        if turn.interrupted:
            return actions  # the user already cut this turn; its text would never be heard
        turn.text = f"{turn.text} {text}".strip() if turn.text else text
        turn.response_sent = True
        actions.append(Send(AgentResponse(text, turn.event_id)))
        return actions

    def queue_audio(
        self,
        turn: AgentTurn,
        payloads: list[tuple[float, Any]],
        alignment: list[tuple[str, float]] | None,
        now: float,
    ) -> list[SessionAction]:
        """Queue one block of the turn's audio, already cut into ``(seconds, payload)``."""
        if turn.interrupted or self.closed:
            return []
        actions = self._claim(turn, now)
        if turn.interrupted:
            return actions
        if alignment:
            offset = turn.queued_s
            if turn.alignment and not turn.alignment[-1][0].isspace():
                turn.alignment.append((" ", offset))  # between two synthesised pieces
            turn.alignment.extend((c, offset + t) for c, t in alignment)
        block_t = 0.0
        for seconds, payload in payloads:
            turn.pending += 1
            turn.queued_s += seconds
            chunk_alignment = _chunk_alignment(alignment, block_t, seconds) if alignment else None
            self._audio.append(_Chunk(turn, seconds, payload, chunk_alignment))
            block_t += seconds
        return actions + self.tick(now)

    def finish_turn(self, turn: AgentTurn, now: float) -> list[SessionAction]:
        """The agent produced all of the turn; drained at once if nothing is pending."""
        turn.complete = True
        return [TurnDrained(turn.event_id)] if turn.pending == 0 else []

    def interrupt(self, now: float) -> tuple[Interrupted | None, list[SessionAction]]:
        """Barge-in: stop the current turn if the user is still hearing (or waiting for) it."""
        turn = self._current
        if turn is None or not turn.open(now):
            return None, []
        return self._cut(turn, now)

    def heard(
        self, event_id: int, played_s: float, now: float
    ) -> tuple[Interrupted | None, list[SessionAction]]:
        """The client reports how much of turn ``event_id`` its player really played (sagelab's
        ``internal_sagelab_heard``), which beats the server's model of it. A turn still
        speaking is cut there; a turn already cut gets its correction again if the heard text
        changes. None for a turn that is not the current one (too late to matter)."""
        turn = self._current
        if turn is None or turn.event_id != event_id:
            return None, []
        played_s = max(0.0, min(played_s, turn.queued_s))
        if not turn.interrupted:
            if not turn.open(now):
                return None, []
            return self._cut(turn, now, played_s)
        delivered = delivered_text(turn, played_s)
        if delivered == turn.delivered:
            return Interrupted(turn.event_id, delivered), []
        turn.delivered = delivered
        actions: list[SessionAction] = []
        if turn.response_sent:
            actions.append(Send(Correction(turn.text, delivered, turn.event_id)))
        return Interrupted(turn.event_id, delivered), actions

    def _cut(
        self, turn: AgentTurn, now: float, played_s: float | None = None
    ) -> tuple[Interrupted, list[SessionAction]]:
        turn.interrupted = True
        self._last_cut = max(self._last_cut, turn.event_id)
        played = turn.played_s(now) if played_s is None else played_s
        delivered = delivered_text(turn, played)
        turn.delivered = delivered
        self._audio = deque(c for c in self._audio if c.turn is not turn)
        turn.pending = 0
        actions: list[SessionAction] = [Send(Interruption(turn.event_id))]
        if turn.response_sent and delivered != turn.text:
            actions.append(Send(Correction(turn.text, delivered, turn.event_id)))
        actions.append(TurnDrained(turn.event_id))
        return Interrupted(turn.event_id, delivered), actions

    def _claim(self, turn: AgentTurn, now: float) -> list[SessionAction]:
        """A turn that starts speaking becomes the one a barge-in would cut; one still open
        before it is cut first, so two replies never talk at once and none is left unsaid."""
        if self._current is turn or turn.interrupted:
            return []
        newest = self._current.event_id if self._current is not None else 0
        if turn.event_id <= self._last_cut or turn.event_id < newest:
            # Clients drop audio whose id is not above the last interruption's, and ids must
            # never go back: a turn begun before one that already spoke is stale, and is not
            # started at all.
            turn.interrupted = True
            turn.delivered = ""
            return []
        actions: list[SessionAction] = []
        previous = self._current
        if previous is not None and previous.open(now) and not previous.complete:
            actions.extend(self._cut(previous, now)[1])
        self._current = turn
        return actions

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next (None: only new input can change that)."""
        if self.closed:
            return None
        times = [self._next_ping, self.started_at + self.settings.max_duration_s]
        if not self.detached:
            times.append(self._last_input + self.settings.idle_timeout_s)
        times.extend(w.deadline for w in self._tools.values() if w.deadline is not None)
        if self._audio:
            head = self._audio[0]
            turn = head.turn
            times.append(
                (turn.stream_t0 + turn.sent_s - self._lead) if turn.stream_t0 is not None else 0.0
            )
        return min(times)

    def tick(self, now: float) -> list[SessionAction]:
        if self.closed:
            return []
        actions = self._send_due_audio(now)
        if now + _EPSILON >= self._next_ping:
            event_id = self.next_event_id()
            self._pings[event_id] = now
            if len(self._pings) > 64:  # a client that never answers must not grow this forever
                self._pings.pop(next(iter(self._pings)))
            actions.append(Send(Ping(event_id, self.last_rtt_ms)))
            self._next_ping = max(self._next_ping + self.settings.ping_interval_s, now)
        for call_id, wait in list(self._tools.items()):
            if wait.deadline is not None and now + _EPSILON >= wait.deadline:
                del self._tools[call_id]
                actions.append(
                    ToolDone(
                        call_id,
                        f"client tool {wait.name!r} did not answer within {wait.limit_s:g} s; "
                        "check that the client registered it",
                        True,
                    )
                )
        if now + _EPSILON - self.started_at >= self.settings.max_duration_s:
            actions.append(self._close(closecodes.NORMAL, "max_duration_exceeded"))
        elif self.detached:
            self._last_input = now  # a held session's clock is the resume grace window
        elif now + _EPSILON - self._last_input >= self.settings.idle_timeout_s:
            actions.append(
                self._close(
                    closecodes.OPERATIONAL,
                    f"no user input for {self.settings.idle_timeout_s:g} s",
                    "transport_receive_timeout",
                )
            )
        return actions

    def _send_due_audio(self, now: float) -> list[SessionAction]:
        actions: list[SessionAction] = []
        while self._audio:
            chunk = self._audio[0]
            turn = chunk.turn
            if turn.stream_t0 is None or now > turn.stream_t0 + turn.sent_s:
                # First chunk, or the producer fell behind and the client ran dry: the
                # client's playout clock restarts now.
                turn.stream_t0 = now - turn.sent_s
            if turn.stream_t0 + turn.sent_s - self._lead > now + _EPSILON:
                break
            self._audio.popleft()
            first = turn.sent_s == 0
            if first:
                turn.first_audio_at = now
            actions.append(
                Send(
                    AgentAudio(
                        chunk.payload,
                        turn.event_id,
                        first=first,
                        turn_age_s=now - turn.created_at if first else None,
                        alignment=chunk.alignment,
                    )
                )
            )
            turn.sent_s += chunk.seconds
            turn.pending -= 1
            if turn.pending == 0 and turn.complete:
                actions.append(TurnDrained(turn.event_id))
        return actions

    def touch(self, now: float) -> None:
        """The user did something (audio, text, activity): the idle timer starts again."""
        self._last_input = now

    def _close(self, code: int, reason: str, error_type: str | None = None) -> Close:
        self.closed = True
        return Close(code, reason, error_type)

    # -- pings and tools -------------------------------------------------------------------

    def pong(self, event_id: int, now: float) -> float | None:
        """A pong; the round trip in seconds if it answers a ping still waiting, else None."""
        sent = self._pings.pop(event_id, None)
        if sent is None:
            return None
        rtt = now - sent
        self.last_rtt_ms = max(1, round(rtt * 1000))
        return rtt

    def client_tool_call(
        self,
        turn: AgentTurn,
        name: str,
        parameters: dict[str, Any],
        timeout_s: float | None,
        now: float,
        *,
        expects_response: bool = True,
    ) -> tuple[str, list[SessionAction]]:
        """Ask the client to run a tool; its result comes back through ``tool_result``.

        ``timeout_s``: None for the session default, negative for no limit.
        """
        call_id = self.new_call_id()
        if expects_response:
            limit = self.settings.client_tool_timeout_s if timeout_s is None else timeout_s
            self._tools[call_id] = _ToolWait(name, limit, None if limit < 0 else now + limit)
        return call_id, [Send(ClientToolCall(name, call_id, parameters, turn.event_id))]

    def new_call_id(self) -> str:
        self._calls += 1
        return f"{self._call_prefix}_{self._calls}"

    def tool_result(self, call_id: str, value: Any, is_error: bool) -> ToolDone | None:
        """A ``client_tool_result``; None when no call is waiting for that id."""
        if self._tools.pop(call_id, None) is None:
            return None
        return ToolDone(call_id, value, is_error)

    def cancel_tools(self) -> list[str]:
        ids = list(self._tools)
        self._tools.clear()
        return ids


def delivered_text(turn: AgentTurn, played_s: float) -> str:
    """The words the user heard: by alignment when the TTS gave it, else by share of the
    turn's audio played, rounded down to whole words."""
    if turn.alignment:
        chars = turn.alignment
        n = sum(1 for _, t in chars if t < played_s)
        heard = "".join(c for c, _ in chars[:n])
        if n < len(chars) and not chars[n][0].isspace():
            heard = heard.rsplit(" ", 1)[0] if " " in heard else ""  # no half words
        return heard.strip()
    if turn.queued_s <= 0:
        return ""
    words = turn.text.split()
    n_heard = int(len(words) * min(1.0, played_s / turn.queued_s))
    return " ".join(words[:n_heard])
