"""A session's timeline: every frame sent and received, stamped at the socket edge.

Metrics are pure functions over timelines, so the timeline keeps what they need and nothing
that would make 50 concurrent sessions heavy: one small record per frame, and the audio itself
in two growing buffers (what the user sent, what the agent sent) with each record pointing at
its samples. ``save`` writes ``timeline.jsonl`` plus ``user.wav`` and ``agent.wav``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sagelab.audio import save_wav

SAMPLE_RATE = 16_000
Direction = Literal["send", "recv", "local"]


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One frame or local marker. ``t_ns`` is ``time.monotonic_ns()`` at the socket edge."""

    t_ns: int
    direction: Direction
    type: str
    event_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def t(self) -> float:
        return self.t_ns / 1e9


class _AudioBuffer:
    """Appends PCM chunks without quadratic copying; offsets are in samples."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.samples = 0

    def append(self, pcm: np.ndarray) -> tuple[int, int]:
        start = self.samples
        if pcm.size:
            self._chunks.append(pcm.astype(np.int16, copy=False))
            self.samples += pcm.size
        return start, pcm.size

    def array(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]


class Timeline:
    def __init__(self, *, record_audio: bool = True) -> None:
        self.events: list[TimelineEvent] = []
        self.record_audio = record_audio
        self.t0_ns = time.monotonic_ns()
        self.wall_t0 = time.time()
        self._user = _AudioBuffer()
        self._agent = _AudioBuffer()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[TimelineEvent]:
        return iter(self.events)

    def add(
        self,
        direction: Direction,
        type: str,
        *,
        event_id: int | None = None,
        t_ns: int | None = None,
        **data: Any,
    ) -> TimelineEvent:
        event = TimelineEvent(
            t_ns if t_ns is not None else time.monotonic_ns(), direction, type, event_id, data
        )
        self.events.append(event)
        return event

    def add_audio(
        self,
        direction: Literal["send", "recv"],
        pcm: np.ndarray,
        *,
        t_ns: int,
        event_id: int | None = None,
        **data: Any,
    ) -> TimelineEvent:
        """Record an audio frame: its duration, and where its samples sit in the buffer."""
        buffer = self._user if direction == "send" else self._agent
        if self.record_audio:
            offset, n = buffer.append(pcm)
        else:
            offset, n = buffer.samples, pcm.size
            buffer.samples += n
        return self.add(
            direction,
            "user_audio_chunk" if direction == "send" else "audio",
            event_id=event_id,
            t_ns=t_ns,
            samples=n,
            offset=offset,
            duration_s=n / SAMPLE_RATE,
            **data,
        )

    @property
    def user_audio(self) -> np.ndarray:
        return self._user.array()

    @property
    def agent_audio(self) -> np.ndarray:
        return self._agent.array()

    def of_type(self, *types: str) -> list[TimelineEvent]:
        return [e for e in self.events if e.type in types]

    def to_records(self) -> list[dict[str, Any]]:
        """Rows with times in seconds since the timeline began (for JSONL and DataFrames)."""
        rows = []
        for e in self.events:
            row = asdict(e)
            row["t_s"] = (e.t_ns - self.t0_ns) / 1e9
            rows.append(row)
        return rows

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for r in self.to_records():
            data = r.pop("data")
            rows.append({**r, **{k: v for k, v in data.items() if k not in r}})
        return pd.DataFrame(rows)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "timeline.jsonl").open("w", encoding="utf-8") as fh:
            header = {"t0_ns": self.t0_ns, "wall_t0": self.wall_t0, "sample_rate": SAMPLE_RATE}
            fh.write(json.dumps({"type": "timeline_header", **header}) + "\n")
            for row in self.to_records():
                fh.write(json.dumps(row, default=str) + "\n")
        if self.record_audio:
            save_wav(directory / "user.wav", self.user_audio, SAMPLE_RATE)
            save_wav(directory / "agent.wav", self.agent_audio, SAMPLE_RATE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Timeline:
        from sagelab.audio import load_audio

        directory = Path(directory)
        timeline = cls()
        with (directory / "timeline.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row.get("type") == "timeline_header":
                    timeline.t0_ns, timeline.wall_t0 = row["t0_ns"], row["wall_t0"]
                    continue
                timeline.events.append(
                    TimelineEvent(
                        row["t_ns"], row["direction"], row["type"], row["event_id"], row["data"]
                    )
                )
        for name, buffer in (("user.wav", timeline._user), ("agent.wav", timeline._agent)):
            path = directory / name
            if path.exists():
                buffer.append(load_audio(path))
        return timeline
