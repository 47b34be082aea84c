"""Cutting PCM into chunks and sending them at the pace of a real microphone.

A client that streams recorded speech must not send faster than real time (servers would see
an impossible microphone) nor slower (latency measurements would include the client's own
lag). Sleeping one chunk length per chunk drifts, because each send and wake-up adds a little
delay that is never paid back; :class:`RealtimeSchedule` instead fixes every chunk's due time
in advance, so a late chunk is followed by shorter waits until the sender is back on time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from .pcm import PCM16, SAMPLE_RATE, ensure_pcm16, ms_to_samples


def iter_chunks(pcm: PCM16, chunk_ms: int, rate: int = SAMPLE_RATE) -> Iterator[PCM16]:
    """Yield consecutive views of ``chunk_ms`` each; the last one may be shorter."""
    samples = ensure_pcm16(pcm, "pcm")
    size = ms_to_samples(chunk_ms, rate)
    if size <= 0:
        raise ValueError(f"chunk_ms={chunk_ms} at {rate} Hz is less than one sample")
    for start in range(0, samples.size, size):
        yield samples[start : start + size]


class RealtimeSchedule:
    """Due times on an absolute grid: chunk ``k`` is due at ``start + k * chunk_s``.

    ``clock`` defaults to :func:`time.monotonic`; tests pass a fake clock to check the
    arithmetic without sleeping.
    """

    def __init__(
        self,
        chunk_s: float,
        start: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not chunk_s > 0:
            raise ValueError(f"chunk_s must be positive, got {chunk_s}")
        self.chunk_s = chunk_s
        self.clock = clock
        self.start = clock() if start is None else start

    def due(self, k: int) -> float:
        """The clock time at which chunk ``k`` (0-based) should be sent."""
        if k < 0:
            raise ValueError(f"chunk index must not be negative, got {k}")
        return self.start + k * self.chunk_s

    def lateness(self, k: int, now: float) -> float:
        """Seconds ``now`` is past chunk ``k``'s due time; negative while still early."""
        return now - self.due(k)

    def delay(self, k: int) -> float:
        """Seconds to wait from now until chunk ``k`` is due; 0 if it is already due."""
        return max(0.0, -self.lateness(k, self.clock()))

    def wait_sync(self, k: int) -> float:
        """Block until chunk ``k`` is due; return how late the caller already was (s, >= 0).

        A positive return value means the sender itself fell behind (a slow loop, a blocked
        thread), which callers should report rather than blame on the network.
        """
        late = self.lateness(k, self.clock())
        if late < 0:
            time.sleep(-late)
        return max(0.0, late)

    async def wait_async(self, k: int) -> float:
        """Like :meth:`wait_sync` without blocking the event loop."""
        late = self.lateness(k, self.clock())
        if late < 0:
            await asyncio.sleep(-late)
        return max(0.0, late)
