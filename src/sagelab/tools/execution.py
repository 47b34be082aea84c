"""Run one tool call: validate, dispatch, time, and turn every failure into an answer.

A tool call happens in the middle of a spoken turn. Whatever goes wrong (an unknown tool, bad
arguments, a handler that raises or hangs), the agent must still get a result it can talk about,
so nothing here raises to the caller: every path ends in a :class:`ToolOutcome` whose ``value``
is either the tool's JSON result or a message for the agent. Only cancellation propagates, because
a cancelled turn (barge-in) must stop waiting.

Sync handlers run in a thread pool so a slow database query never stalls the event loop that
carries the audio. The handler's own time is measured inside the worker, so the registry's
dispatch overhead (validation, thread hand-off, result conversion) can be reported on its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic_core import PydanticSerializationError, to_jsonable_python

from sagelab.agents.base import ToolResult
from sagelab.tools.model import Action
from sagelab.tools.validation import InvalidParameters, validate_parameters

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ErrorKind",
    "RegisteredTool",
    "StatsRecorder",
    "ToolOutcome",
    "ToolStats",
    "run_async",
    "run_sync",
]

log = logging.getLogger(__name__)

ErrorKind = Literal["unknown_tool", "invalid_parameters", "handler_error", "timeout", "bad_result"]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one call. ``value`` is JSON-compatible: the tool's result, or (when
    ``is_error``) a message telling the agent what went wrong and what to do instead."""

    value: Any
    is_error: bool
    duration_ms: float
    error_kind: ErrorKind | None = None
    handler_ms: float | None = None

    @property
    def overhead_ms(self) -> float | None:
        """Time spent outside the handler; ``None`` when the handler never ran."""
        return None if self.handler_ms is None else max(0.0, self.duration_ms - self.handler_ms)

    def to_tool_result(self, tool_call_id: str) -> ToolResult:
        return ToolResult(tool_call_id, self.value, self.is_error)


@dataclass(frozen=True, slots=True)
class RegisteredTool:
    action: Action
    handler: Callable[..., Any]
    is_async: bool
    timeout: float | None = None


@dataclass(frozen=True)
class ToolStats:
    """Per-tool counts and latency percentiles (ms) over the recorder's window."""

    name: str
    calls: int
    errors: int
    timeouts: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    overhead_p50_ms: float
    overhead_p95_ms: float
    overhead_p99_ms: float


class StatsRecorder:
    """Thread-safe per-tool counters; durations are kept for the last ``window`` calls so a
    long-running server's memory stays flat."""

    def __init__(self, window: int = 10_000) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._calls: dict[str, list[int]] = {}  # name -> [calls, errors, timeouts]
        self._durations: dict[str, deque[float]] = {}
        self._overheads: dict[str, deque[float]] = {}

    def record(self, name: str, outcome: ToolOutcome) -> None:
        with self._lock:
            counts = self._calls.get(name)
            if counts is None:
                counts = self._calls[name] = [0, 0, 0]
                self._durations[name] = deque(maxlen=self._window)
                self._overheads[name] = deque(maxlen=self._window)
            counts[0] += 1
            counts[1] += outcome.is_error
            counts[2] += outcome.error_kind == "timeout"
            self._durations[name].append(outcome.duration_ms)
            if outcome.overhead_ms is not None:
                self._overheads[name].append(outcome.overhead_ms)

    def overhead_ms(self, name: str | None = None) -> list[float]:
        """Raw dispatch-overhead samples of one tool, or of all tools."""
        with self._lock:
            if name is not None:
                return list(self._overheads.get(name, ()))
            return [x for samples in self._overheads.values() for x in samples]

    def stats(self) -> dict[str, ToolStats]:
        with self._lock:
            snapshot = {
                name: (list(c), list(self._durations[name]), list(self._overheads[name]))
                for name, c in self._calls.items()
            }
        out = {}
        for name, ((calls, errors, timeouts), durations, overheads) in snapshot.items():
            d50, d95, d99 = _percentiles(durations)
            o50, o95, o99 = _percentiles(overheads)
            out[name] = ToolStats(name, calls, errors, timeouts, d50, d95, d99, o50, o95, o99)
        return out

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [asdict(s) for s in self.stats().values()]
        columns = list(ToolStats.__dataclass_fields__)
        return pd.DataFrame(rows, columns=columns).set_index("name")

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._durations.clear()
            self._overheads.clear()


async def run_async(
    tool: RegisteredTool | None,
    name: str,
    params: Any,
    *,
    timeout: float | None,
    executor: Executor,
    available: Iterable[str],
) -> ToolOutcome:
    """One call on the running loop; sync handlers go to ``executor``."""
    start = time.perf_counter()
    prepared = _prepare(tool, name, params, start, available)
    if isinstance(prepared, ToolOutcome):
        return prepared
    assert tool is not None
    if tool.is_async:
        work: Any = _timed_async(tool.handler, prepared)
    else:
        work = asyncio.get_running_loop().run_in_executor(
            executor, _timed_sync, tool.handler, prepared
        )
    try:
        ok, value, handler_s = await asyncio.wait_for(work, timeout)
    except TimeoutError:  # the handler's own exceptions never get here (see _timed_*)
        return _failure(
            "timeout",
            f"{name} did not finish within {timeout:g} s. Tell the user it is taking too long; "
            "try again later or with a narrower request.",
            start,
            None,
        )
    return _finish(name, ok, value, handler_s, start)


def run_sync(
    tool: RegisteredTool | None, name: str, params: Any, *, available: Iterable[str]
) -> ToolOutcome:
    """One call in the calling thread (no timeout: a running thread cannot be stopped)."""
    start = time.perf_counter()
    prepared = _prepare(tool, name, params, start, available)
    if isinstance(prepared, ToolOutcome):
        return prepared
    assert tool is not None
    if tool.is_async:
        ok, value, handler_s = asyncio.run(_timed_async(tool.handler, prepared))
    else:
        ok, value, handler_s = _timed_sync(tool.handler, prepared)
    return _finish(name, ok, value, handler_s, start)


def _prepare(
    tool: RegisteredTool | None, name: str, params: Any, start: float, available: Iterable[str]
) -> dict[str, Any] | ToolOutcome:
    if tool is None:
        names = ", ".join(sorted(available)) or "none"
        return _failure(
            "unknown_tool", f"There is no tool named {name!r}. Available tools: {names}.", start
        )
    try:
        return validate_parameters(tool.action, params)
    except InvalidParameters as exc:
        return _failure("invalid_parameters", str(exc), start)


def _timed_sync(handler: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[bool, Any, float]:
    t0 = time.perf_counter()
    try:
        value = handler(**kwargs)
    except Exception as exc:
        return False, exc, time.perf_counter() - t0
    return True, value, time.perf_counter() - t0


async def _timed_async(
    handler: Callable[..., Any], kwargs: dict[str, Any]
) -> tuple[bool, Any, float]:
    t0 = time.perf_counter()
    try:
        value = await handler(**kwargs)
    except Exception as exc:
        return False, exc, time.perf_counter() - t0
    return True, value, time.perf_counter() - t0


def _finish(name: str, ok: bool, value: Any, handler_s: float, start: float) -> ToolOutcome:
    handler_ms = handler_s * 1000.0
    if not ok:
        # ValueError is how a tool says "bad input"; anything else is likely a bug worth a trace.
        if isinstance(value, ValueError):
            log.info("tool %s refused: %s", name, value)
        else:
            log.warning("tool %s raised", name, exc_info=value)
        detail = str(value) or type(value).__name__
        return _failure("handler_error", f"{name} failed: {detail}", start, handler_ms)
    try:
        value = to_jsonable_python(value)
    except PydanticSerializationError:
        return _failure(
            "bad_result",
            f"{name} returned a {type(value).__name__}, which cannot be sent as JSON; "
            "this is a bug in the tool, tell the user it is unavailable.",
            start,
            handler_ms,
        )
    return ToolOutcome(value, False, (time.perf_counter() - start) * 1000.0, None, handler_ms)


def _failure(
    kind: ErrorKind, message: str, start: float, handler_ms: float | None = None
) -> ToolOutcome:
    return ToolOutcome(message, True, (time.perf_counter() - start) * 1000.0, kind, handler_ms)


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    if not samples:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(np.asarray(samples), [50, 95, 99])
    return float(p50), float(p95), float(p99)
