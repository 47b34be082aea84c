"""Energy-based end-of-turn detection for the scripted agent.

Deterministic and model-free on purpose: transport benchmarks and load tests must measure the
server, not a neural VAD. A turn starts after ``min_speech_ms`` of frames louder than
``threshold_dbfs`` and ends after ``silence_ms`` of quieter frames. Offsets are in samples of the
audio fed so far, so callers can map them back to the time the audio was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class TurnEvent:
    kind: Literal["speech_start", "speech_end"]
    sample: int  # offset, in samples since the first audio fed, where the change happened
    # Where the detector took the decision (the end of the frame that completed the wait):
    # audio up to here belongs to the turn that ended; later audio may be a new one.
    decided: int | None = None

    @property
    def seconds(self) -> float:
        return self.sample / SAMPLE_RATE


class EnergyTurnDetector:
    """Feeds 16 kHz PCM16 in any chunk size; emits speech start/end events."""

    def __init__(
        self,
        threshold_dbfs: float = -40.0,
        silence_ms: int = 500,
        min_speech_ms: int = 60,
        frame_ms: int = 20,
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.frame = SAMPLE_RATE * frame_ms // 1000
        self.silence_frames = max(1, silence_ms // frame_ms)
        self.speech_frames = max(1, min_speech_ms // frame_ms)
        # Compare mean squares instead of dBFS per frame: no log on the hot path.
        self._threshold_ms = (32768.0**2) * 10 ** (threshold_dbfs / 10)
        self._pending = np.zeros(0, dtype=np.int16)
        self._consumed = 0
        self._speaking = False
        self._loud_run = 0
        self._quiet_run = 0
        self._run_start = 0

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def silence_start(self) -> int | None:
        """While speaking: the sample where the current run of silence began, else None."""
        return self._run_start if self._speaking and self._quiet_run else None

    @property
    def voice_at(self) -> int | None:
        """Energy gives no earlier hint of speech than its own onset: always None."""
        return None

    @property
    def judged(self) -> int:
        """Samples judged so far (whole frames)."""
        return self._consumed

    def reset(self) -> None:
        self._speaking = False
        self._loud_run = self._quiet_run = 0

    def feed(self, pcm: np.ndarray) -> list[TurnEvent]:
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n_frames = buf.size // self.frame
        events: list[TurnEvent] = []
        if n_frames:
            frames = buf[: n_frames * self.frame].astype(np.float32).reshape(n_frames, self.frame)
            loud = (frames * frames).mean(axis=1) > self._threshold_ms
            for i, is_loud in enumerate(loud):
                start = self._consumed + i * self.frame
                event = self._step(bool(is_loud), start)
                if event is not None:
                    events.append(event)
        self._pending = buf[n_frames * self.frame :].copy()
        self._consumed += n_frames * self.frame
        return events

    def _step(self, is_loud: bool, frame_start: int) -> TurnEvent | None:
        if not self._speaking:
            if is_loud:
                if self._loud_run == 0:
                    self._run_start = frame_start
                self._loud_run += 1
                if self._loud_run >= self.speech_frames:
                    self._speaking, self._quiet_run = True, 0
                    return TurnEvent("speech_start", self._run_start)
            else:
                self._loud_run = 0
            return None
        if is_loud:
            self._quiet_run = 0
            return None
        if self._quiet_run == 0:
            self._run_start = frame_start
        self._quiet_run += 1
        if self._quiet_run >= self.silence_frames:
            self._speaking, self._loud_run = False, 0
            return TurnEvent("speech_end", self._run_start, frame_start + self.frame)
        return None
