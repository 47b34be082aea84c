"""Helpers for the metrics tests: signals whose speech boundaries are known to the sample."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

RATE = 16_000


def tone(ms: int, *, amplitude: float = 0.3, hz: float = 440.0) -> np.ndarray:
    """A sine burst: "speech" for an energy detector, starting and ending exactly."""
    t = np.arange(RATE * ms // 1000) / RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def quiet(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def utterance(lead_ms: int, speech_ms: int, trail_ms: int) -> np.ndarray:
    return np.concatenate([quiet(lead_ms), tone(speech_ms), quiet(trail_ms)])


class LoopWatch:
    """The longest the event loop was kept from running while active (a stall of the process
    or of the loop), so a fidelity test can tell a measurement error from a starved machine."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.max_lag_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.period_s)
            lag = (time.monotonic() - t0 - self.period_s) * 1000
            self.max_lag_ms = max(self.max_lag_ms, lag)

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
