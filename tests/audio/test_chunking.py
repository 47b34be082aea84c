"""Chunking PCM and pacing chunks on an absolute real-time schedule."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sagelab.audio import RealtimeSchedule, iter_chunks


@given(pcm=arrays(np.int16, st.integers(0, 10000)), chunk_ms=st.integers(1, 500))
def test_chunks_cover_the_input_in_order(pcm: np.ndarray, chunk_ms: int) -> None:
    chunks = list(iter_chunks(pcm, chunk_ms))
    size = 16 * chunk_ms
    assert all(c.size == size for c in chunks[:-1])
    if chunks:
        assert 0 < chunks[-1].size <= size
    assert len(chunks) == -(-pcm.size // size)
    joined = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    assert np.array_equal(joined, pcm)


def test_chunk_sizes_follow_the_rate() -> None:
    pcm = np.zeros(8000, dtype=np.int16)
    assert [c.size for c in iter_chunks(pcm, 250, rate=8000)] == [2000] * 4
    with pytest.raises(ValueError, match="less than one sample"):
        list(iter_chunks(pcm, 0))


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_due_times_are_an_absolute_grid() -> None:
    clock = FakeClock(100.0)
    schedule = RealtimeSchedule(0.1, clock=clock)
    assert schedule.start == 100.0
    assert [schedule.due(k) for k in range(3)] == pytest.approx([100.0, 100.1, 100.2])
    assert RealtimeSchedule(0.25, start=7.0).due(4) == 8.0
    with pytest.raises(ValueError):
        schedule.due(-1)
    with pytest.raises(ValueError):
        RealtimeSchedule(0.0)


def test_a_stalled_sender_catches_up_instead_of_drifting() -> None:
    """Simulate a sender whose every send costs 30 ms and that stalls once for 350 ms."""
    clock = FakeClock(0.0)
    schedule = RealtimeSchedule(0.1, clock=clock)
    sent, reported = [], []
    for k in range(20):
        reported.append(max(0.0, schedule.lateness(k, clock.now)))
        clock.now += schedule.delay(k)  # what wait_sync/wait_async would sleep
        sent.append(clock.now)
        clock.now += 0.35 if k == 5 else 0.03
    # Never early; late only for the chunks the stall pushed back; then exactly on the grid.
    lateness = np.array(sent) - [schedule.due(k) for k in range(20)]
    assert np.all(lateness >= -1e-9)
    assert np.all(np.abs(lateness[:6]) < 1e-9)
    assert lateness[6:10] == pytest.approx([0.25, 0.18, 0.11, 0.04])
    assert np.all(np.abs(lateness[10:]) < 1e-9)
    assert reported[6:10] == pytest.approx([0.25, 0.18, 0.11, 0.04])
    # A sleep(chunk) loop would have ended 20 * 30 ms + 350 ms behind.
    assert sent[-1] == pytest.approx(1.9)


def test_wait_sync_holds_the_schedule_on_a_real_clock() -> None:
    schedule = RealtimeSchedule(0.05)
    reported = []
    for k in range(8):
        reported.append(schedule.wait_sync(k))
        assert time.monotonic() >= schedule.due(k)
        if k == 2:
            time.sleep(0.12)  # the sender itself stalls
    assert reported[3] >= 0.05  # the stall is reported as the sender's own lateness
    # After the stall the waits shrink: the last chunk goes out near its due time, not
    # 0.12 s + 8 wake-up delays later. The bound is loose for shared CI machines.
    assert schedule.lateness(7, time.monotonic()) < 0.1


async def test_wait_async_holds_the_schedule() -> None:
    schedule = RealtimeSchedule(0.05)
    assert await schedule.wait_async(0) < 0.05
    for k in range(1, 5):
        await schedule.wait_async(k)
        assert time.monotonic() >= schedule.due(k)
    assert schedule.lateness(4, time.monotonic()) < 0.1
