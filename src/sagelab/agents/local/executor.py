"""One bounded, process-wide thread pool for model inference.

Whisper and Piper each want a core per call. If every session ran its own inference thread,
50 sessions on 2 cores would all slow down together and every one of them would miss its
latency budget; with a pool as wide as the machine, calls queue and each runs at full speed
when its turn comes, so latency grows with load in a predictable, measurable way.

The width comes from ``max_workers``, else ``SAGELAB_MODEL_WORKERS``, else 2 (one per core of
the target machine; the models themselves are built with one intra-op thread each, so workers
× threads stays at the core count). The same number sizes CTranslate2's replica count, so that
two concurrent transcriptions really run in parallel instead of serialising inside the model.

Cancelling the awaiting task removes a call that is still queued (``concurrent.futures``
cancels pending work items); a call already running finishes, and its result is dropped.

The pool also puts numpy's BLAS on one thread for the process (``threadpoolctl``). The models
compute their input features with numpy (faster-whisper's log-mel, Smart Turn's), and one
matrix product wakes OpenBLAS's worker threads, which then spin on the other core through the
whole model call: measured, a 133 ms transcription cost 230 ms of CPU, 112 ms with one BLAS
thread. On two cores that spinning is the CPU another session's model call was waiting for.

:func:`running_calls` says how many calls are running right now, so that a model can take
a second thread when it has the machine to itself (``WhisperSTT(max_threads=2)``) and stay on
one when the other worker is busy.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = [
    "DEFAULT_WORKERS",
    "ENV_WORKERS",
    "configured_workers",
    "model_executor",
    "model_workers",
    "one_blas_thread",
    "run_model",
    "running_calls",
    "shutdown_model_executor",
]

ENV_WORKERS = "SAGELAB_MODEL_WORKERS"
DEFAULT_WORKERS = 2

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_workers = 0
_running = 0


def configured_workers(env: Mapping[str, str] | None = None) -> int:
    """The pool width the environment asks for (``SAGELAB_MODEL_WORKERS``, default 2)."""
    raw = (os.environ if env is None else env).get(ENV_WORKERS, "").strip()
    if not raw:
        return DEFAULT_WORKERS
    try:
        workers = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_WORKERS} must be a positive integer, got {raw!r}") from None
    if workers < 1:
        raise ValueError(f"{ENV_WORKERS} must be a positive integer, got {raw!r}")
    return workers


def model_workers() -> int:
    """Width of the pool: the running one's, else the one it will be created with.

    Models size their own parallelism from this (CTranslate2 replicas), so that the pool never
    hands two calls to a model that can only run one at a time.
    """
    with _lock:
        return _workers if _executor is not None else configured_workers()


def model_executor(max_workers: int | None = None) -> ThreadPoolExecutor:
    """The process-wide inference pool, created on first use.

    Asking again with a different explicit size raises instead of quietly handing back a pool
    of another width: two parts of the program disagreeing about the core budget is a
    configuration bug worth seeing.
    """
    global _executor, _workers
    if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
        raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
    with _lock:
        if _executor is None:
            _workers = max_workers if max_workers is not None else configured_workers()
            _executor = ThreadPoolExecutor(_workers, thread_name_prefix="sagelab-model")
            one_blas_thread()
        elif max_workers is not None and max_workers != _workers:
            raise ValueError(
                f"the model executor already runs with {_workers} workers; "
                f"cannot resize it to {max_workers} (set {ENV_WORKERS} before the first use)"
            )
        return _executor


def one_blas_thread() -> None:
    """Limit numpy's BLAS to one thread, process-wide (see the module docstring)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def shutdown_model_executor(wait: bool = True) -> None:
    """Stop the pool (tests, forked workers); the next call to :func:`model_executor` makes
    a fresh one."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=wait, cancel_futures=True)


def running_calls() -> int:
    """Model calls running on the pool at this moment (queued ones not counted)."""
    with _lock:
        return _running


def _counted(call: Callable[[], R]) -> R:
    global _running
    with _lock:
        _running += 1
    try:
        return call()
    finally:
        with _lock:
            _running -= 1


async def run_model(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking model call on the shared pool without blocking the event loop."""
    loop = asyncio.get_running_loop()
    call = functools.partial(fn, *args, **kwargs)
    return await loop.run_in_executor(model_executor(), _counted, call)
