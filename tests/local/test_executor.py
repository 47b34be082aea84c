"""The shared model executor: one bounded pool, usable from asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sagelab.agents.local.executor import (
    DEFAULT_WORKERS,
    configured_workers,
    model_executor,
    model_workers,
    run_model,
)


def test_one_pool_per_process() -> None:
    assert model_executor() is model_executor()
    assert model_executor(model_workers()) is model_executor()


def test_resizing_the_running_pool_is_an_error() -> None:
    model_executor()
    with pytest.raises(ValueError, match="cannot resize"):
        model_executor(model_workers() + 1)
    with pytest.raises(ValueError, match="positive"):
        model_executor(0)


def test_width_from_the_environment() -> None:
    assert configured_workers({}) == DEFAULT_WORKERS == 2
    assert configured_workers({"SAGELAB_MODEL_WORKERS": " 3 "}) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="SAGELAB_MODEL_WORKERS"):
            configured_workers({"SAGELAB_MODEL_WORKERS": bad})


async def test_run_model_runs_on_the_pool_with_args_and_kwargs() -> None:
    def work(a: int, *, b: int) -> tuple[int, str]:
        return a + b, threading.current_thread().name

    total, thread = await run_model(work, 2, b=3)
    assert total == 5
    assert thread.startswith("sagelab-model")


async def test_many_sessions_queue_instead_of_oversubscribing() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def inference() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    await asyncio.gather(*(run_model(inference) for _ in range(20)))
    assert peak == model_workers()


async def test_errors_reach_the_caller() -> None:
    def broken() -> None:
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        await run_model(broken)
