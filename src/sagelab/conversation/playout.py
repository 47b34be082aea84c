"""The client side of a conversation, sans I/O: what the user's device hears and when the
agent is done.

A ConvAI client must drop audio of a turn the server interrupted (any ``audio`` whose
``event_id`` is not above the last ``interruption``'s, as the official SDKs do), model a
player that plays each chunk as soon as it can, and tell when the agent has finished a
reply: its text came, its audio came and played out, and nothing more arrived for a moment.
``Playout`` holds exactly that state. It is fed what arrived and when (``now_ns``, the
adapter's monotonic clock at the socket) and answers questions; it never reads a clock.

``sagelab.client.Session`` (both protocols) runs one per session; the relay, which has no
event ids, numbers turns by the agent response they follow.
"""

from __future__ import annotations

from dataclasses import dataclass

NS = 1_000_000_000


@dataclass
class Playout:
    last_interrupt_id: int = 0
    playout_end_ns: int = 0
    last_audio_ns: int = 0
    audio_turn: int = 0  # newest event id that brought playable audio
    response_turn: int = 0  # newest event id that brought an agent_response

    def audio(self, event_id: int, seconds: float, now_ns: int) -> bool:
        """A chunk of agent audio arrived; False when it is stale and must not be played."""
        if event_id <= self.last_interrupt_id:
            return False
        self.playout_end_ns = max(self.playout_end_ns, now_ns) + round(seconds * NS)
        self.last_audio_ns = now_ns
        self.audio_turn = max(self.audio_turn, event_id)
        return True

    def agent_response(self, event_id: int) -> None:
        self.response_turn = max(self.response_turn, event_id)

    def interruption(self, event_id: int, now_ns: int) -> None:
        """The server cut turn ``event_id``: a player flushes its queue."""
        self.last_interrupt_id = max(self.last_interrupt_id, event_id)
        self.playout_end_ns = now_ns

    def stop_playback(self, now_ns: int) -> None:
        """The user stopped the agent locally (relay ``interrupt``): nothing more plays now."""
        self.playout_end_ns = min(self.playout_end_ns, now_ns) if self.playout_end_ns else now_ns

    def connection_lost(self, now_ns: int) -> None:
        """What was in flight is lost with the socket and the server stops that turn, as for a
        barge-in: nothing of it will be replayed."""
        self.playout_end_ns = min(self.playout_end_ns, now_ns)
        self.last_interrupt_id = max(self.last_interrupt_id, self.audio_turn, self.response_turn)

    def new_conversation(self) -> None:
        """A new conversation numbers its events from the start again."""
        self.last_interrupt_id = self.audio_turn = self.response_turn = 0

    def agent_done(self, now_ns: int, *, quiet_s: float, text_only: bool) -> bool:
        """The audio received so far has played out and none came for ``quiet_s``; a reply
        whose text came but whose audio has not (TTS still working) is not done, unless the
        session is text-only or that turn was interrupted."""
        awaiting_audio = not text_only and self.response_turn > max(
            self.audio_turn, self.last_interrupt_id
        )
        return (
            not awaiting_audio
            and now_ns >= self.playout_end_ns
            and now_ns - self.last_audio_ns >= quiet_s * NS
        )
