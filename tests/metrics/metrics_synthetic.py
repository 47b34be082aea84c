"""Timelines written by hand: every stamp a round number of milliseconds, so each expected
metric is simple arithmetic in the test that states it."""

from __future__ import annotations

from typing import Any

import numpy as np

from sagelab.client.timeline import Direction, Timeline

MS = 1_000_000


class Script:
    """Builds a ``Timeline`` event by event, times in ms from 0."""

    def __init__(self) -> None:
        self.timeline = Timeline(record_audio=False)
        self.timeline.t0_ns = 0

    def at(
        self, t_ms: float, direction: Direction, type: str, event_id: int | None = None, **data: Any
    ) -> Script:
        self.timeline.add(direction, type, event_id=event_id, t_ns=int(t_ms * MS), **data)
        return self

    def speech(
        self, start_ms: float, end_ms: float, *, sent_until_ms: float | None = None
    ) -> Script:
        """A ``user_speech`` marker as ``Session.send_audio`` records it (after sending)."""
        done = sent_until_ms if sent_until_ms is not None else end_ms + 1000
        return self.at(
            done, "local", "user_speech",
            speech_start_ns=int(start_ms * MS), speech_end_ns=int(end_ms * MS),
            start_ns=int(start_ms * MS), end_ns=int(done * MS),
        )  # fmt: skip

    def audio(
        self, ms: float, event_id: int, duration_ms: float = 100, stale: bool = False
    ) -> Script:
        pcm = np.zeros(int(16 * duration_ms), dtype=np.int16)
        self.timeline.add_audio("recv", pcm, t_ns=int(ms * MS), event_id=event_id, stale=stale)
        return self

    def stream(
        self,
        start_ms: float,
        event_id: int,
        chunks: int,
        every_ms: float = 100,
        size_ms: float = 100,
    ) -> Script:
        for k in range(chunks):
            self.audio(start_ms + k * every_ms, event_id, size_ms)
        return self

    def transcript(self, ms: float, event_id: int | None, text: str = "hello") -> Script:
        return self.at(ms, "recv", "user_transcript", event_id, user_transcript=text)

    def response(self, ms: float, event_id: int, text: str = "hi there") -> Script:
        return self.at(ms, "recv", "agent_response", event_id, agent_response=text)
