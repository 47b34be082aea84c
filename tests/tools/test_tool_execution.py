"""``ToolRegistry.execute``: results, every failure as an outcome, timeouts, concurrency, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
from typing import Any

import pytest

from sagelab.agents.base import ToolResult
from sagelab.tools import Action, Parameter, ToolRegistry, tool


@pytest.fixture
def registry() -> Any:
    with ToolRegistry() as reg:
        yield reg


async def test_sync_and_async_handlers_get_coerced_keyword_arguments(
    registry: ToolRegistry,
) -> None:
    seen: dict[str, Any] = {}

    @registry.tool
    def remind(text: str, on: dt.date, times: int = 1) -> dict[str, Any]:
        """Set a reminder."""
        seen["thread"] = threading.current_thread().name
        return {"text": text, "on": on, "times": times}

    @registry.tool
    async def echo(value: float) -> float:
        """Echo a number."""
        return value

    outcome = await registry.execute("remind", {"text": "call Anna", "on": "2024-05-31"})
    assert not outcome.is_error and outcome.error_kind is None
    # The handler got a date; the outcome holds JSON, ready for the wire.
    assert outcome.value == {"text": "call Anna", "on": "2024-05-31", "times": 1}
    assert seen["thread"] != threading.current_thread().name  # ran in the pool
    assert (await registry.execute("echo", {"value": "2.5"})).value == 2.5
    assert outcome.handler_ms is not None and outcome.duration_ms >= outcome.handler_ms
    assert outcome.overhead_ms is not None and outcome.overhead_ms >= 0
    assert outcome.to_tool_result("c1") == ToolResult("c1", outcome.value, False)


async def test_unknown_tool_names_the_available_ones(registry: ToolRegistry) -> None:
    registry.register(tool(_ping))
    outcome = await registry.execute("pong", {})
    assert outcome.is_error and outcome.error_kind == "unknown_tool"
    assert outcome.value == "There is no tool named 'pong'. Available tools: _ping."
    assert outcome.handler_ms is None


def _ping(n: int) -> int:
    """Return n."""
    return n


async def test_invalid_parameters_do_not_reach_the_handler(registry: ToolRegistry) -> None:
    calls: list[int] = []

    @registry.tool
    def count(n: int) -> int:
        """Count."""
        calls.append(n)
        return n

    outcome = await registry.execute("count", {"n": "lots"})
    assert outcome.is_error and outcome.error_kind == "invalid_parameters"
    assert 'n must be a whole number, e.g. 42 (got "lots")' in outcome.value
    assert calls == []


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_raising_tool_gives_an_error(registry: ToolRegistry, is_async: bool) -> None:
    def broken(x: int) -> int:
        raise RuntimeError(f"database is down ({x})")

    async def broken_async(x: int) -> int:
        raise RuntimeError(f"database is down ({x})")

    action = Action(
        name="lookup", description="Look up.", parameters=(Parameter(name="x", type="Int"),)
    )
    registry.register(action, broken_async if is_async else broken)
    outcome = await registry.execute("lookup", {"x": 1})
    assert outcome.is_error and outcome.error_kind == "handler_error"
    assert outcome.value == "lookup failed: database is down (1)"
    assert outcome.handler_ms is not None


async def test_an_exception_without_text_is_named(registry: ToolRegistry) -> None:
    @registry.tool
    def empty() -> None:
        """Fail quietly."""
        raise KeyError()

    assert (await registry.execute("empty", {})).value == "empty failed: KeyError"


async def test_a_result_that_is_not_json_is_an_error(registry: ToolRegistry) -> None:
    @registry.tool
    def handle() -> object:
        """Return something odd."""
        return object()

    outcome = await registry.execute("handle", {})
    assert outcome.is_error and outcome.error_kind == "bad_result"
    assert "cannot be sent as JSON" in outcome.value


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_hung_tool_times_out_as_an_error(registry: ToolRegistry, is_async: bool) -> None:
    release = threading.Event()

    def hang() -> str:
        release.wait(10)
        return "late"

    async def hang_async() -> str:
        await asyncio.sleep(10)
        return "late"

    action = Action(name="hang", description="Never answer.")
    registry.register(action, hang_async if is_async else hang, timeout=0.2)
    t0 = time.perf_counter()
    outcome = await registry.execute("hang", {})
    elapsed = time.perf_counter() - t0
    release.set()
    assert outcome.is_error and outcome.error_kind == "timeout"
    assert outcome.value.startswith("hang did not finish within 0.2 s")
    assert 0.15 < elapsed < 2.0
    # A per-call timeout overrides the tool's.
    release.clear()
    outcome = await registry.execute("hang", {}, timeout=0.05)
    release.set()
    assert "within 0.05 s" in outcome.value
    assert registry.stats()["hang"].timeouts == 2


async def test_a_negative_timeout_means_no_limit(registry: ToolRegistry) -> None:
    @registry.tool
    async def slowish() -> str:
        """Take a moment."""
        await asyncio.sleep(0.05)
        return "done"

    # ElevenLabs' response_timeout_secs: -1 ("wait indefinitely"), passed through by a server.
    assert (await registry.execute("slowish", {}, timeout=-1)).value == "done"


async def test_the_registry_default_timeout_applies() -> None:
    with ToolRegistry(default_timeout=0.05) as registry:

        @registry.tool
        async def slow() -> None:
            """Sleep."""
            await asyncio.sleep(5)

        assert (await registry.execute("slow", {})).error_kind == "timeout"


async def test_cancellation_propagates(registry: ToolRegistry) -> None:
    @registry.tool
    async def slow() -> None:
        """Sleep."""
        await asyncio.sleep(5)

    task = asyncio.create_task(registry.execute("slow", {}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_concurrent_sync_calls_run_in_parallel(registry: ToolRegistry) -> None:
    # All ten handlers must be inside the call at once to pass the barrier; run one after
    # another, the first would wait alone until the barrier breaks.
    barrier = threading.Barrier(10, timeout=10)

    @registry.tool
    def meet(i: int) -> int:
        """Wait for the other nine calls."""
        barrier.wait()
        return i

    outcomes = await asyncio.gather(*(registry.execute("meet", {"i": i}) for i in range(10)))
    assert [o.value for o in outcomes] == list(range(10))
    assert all(not o.is_error for o in outcomes)


async def test_sync_handlers_do_not_block_the_event_loop(registry: ToolRegistry) -> None:
    @registry.tool
    def nap() -> str:
        """Sleep 0.3 s."""
        time.sleep(0.3)
        return "ok"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    await registry.execute("nap", {})
    tick_task.cancel()
    assert ticks >= 10  # the loop kept running while the handler slept


async def test_stats_count_calls_errors_and_percentiles(registry: ToolRegistry) -> None:
    @registry.tool
    def half(n: int) -> float:
        """Halve n."""
        time.sleep(0.002)
        return n / 2

    for i in range(20):
        await registry.execute("half", {"n": i})
    await registry.execute("half", {"n": "x"})
    await registry.execute("nope", {})
    stats = registry.stats()
    assert set(stats) == {"half"}  # unknown names are not tracked (unbounded input)
    s = stats["half"]
    assert (s.calls, s.errors, s.timeouts) == (21, 1, 0)
    assert 2.0 <= s.p50_ms <= s.p95_ms <= s.p99_ms
    # Overhead is a part of each call's time; how large a part is a benchmark's business
    # (benchmarks/tools_dispatch.py), not a unit test's.
    assert 0.0 <= s.overhead_p50_ms <= s.overhead_p95_ms <= s.overhead_p99_ms
    assert len(registry.overhead_ms("half")) == 20  # the invalid call never reached a handler
    frame = registry.stats_frame()
    assert list(frame.index) == ["half"]
    assert frame.loc["half", "calls"] == 21
    registry.reset_stats()
    assert registry.stats() == {}
    assert registry.stats_frame().empty


async def test_stats_of_a_tool_that_only_failed_validation(registry: ToolRegistry) -> None:
    registry.register(tool(_ping))
    await registry.execute("_ping", {})
    s = registry.stats()["_ping"]
    assert s.errors == 1 and math.isnan(s.overhead_p50_ms)


def test_execute_sync_in_a_plain_thread() -> None:
    with ToolRegistry() as registry:
        registry.register(tool(_ping))

        @registry.tool
        async def aping(n: int) -> int:
            """Return n."""
            return n

        assert registry.execute_sync("_ping", {"n": "3"}).value == 3
        assert registry.execute_sync("aping", {"n": 4}).value == 4
        assert registry.execute_sync("_ping", {}).error_kind == "invalid_parameters"


def test_registration_checks_the_handler_against_the_action() -> None:
    registry = ToolRegistry()
    action = Action(name="a", description="d", parameters=(Parameter(name="x", type="Int"),))
    with pytest.raises(TypeError, match=r"does not accept parameters \['x'\]"):
        registry.register(action, lambda y: y)
    with pytest.raises(TypeError, match=r"requires \['z'\]"):
        registry.register(action, lambda x, z: x)
    with pytest.raises(TypeError, match="needs a handler"):
        registry.register(action)
    registry.register(action, lambda **kw: kw)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(action, lambda x: x)
    registry.register(action, lambda x: x, replace=True)
    assert registry.get("a") == action and registry.get("b") is None
    assert "a" in registry and len(registry) == 1 and registry.actions() == [action]
