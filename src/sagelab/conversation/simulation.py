"""Run the real asyncio adapters in simulated time: a ten-minute conversation in milliseconds.

``VirtualTimeLoop`` is an ordinary selector event loop whose clock is a number: whenever every
task is waiting on a timer, the clock jumps to the next timer instead of sleeping. Adapters
read time from the loop (``loop.time()``), never from ``time.*``, so the server's
``Conversation``, ``LocalAgent`` and the sans-I/O core under them run unchanged, with fake
models whose delays are simulated sleeps (``simulated_runner``). A task that waits on real
I/O (a socket, a thread) would stall the simulation; the loop says so instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector whose waits advance the loop's virtual clock instead of blocking."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError(
                "simulation stalled: every task waits for I/O or for an event nobody will set"
            )
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += max(0.0, seconds)


def run_simulated(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh ``VirtualTimeLoop``."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def simulated_runner(
    delay_s: Callable[[Callable[..., Any]], float],
) -> Callable[..., Awaitable[Any]]:
    """A model runner (``LocalAgent(runner=...)``) that calls the model inline after a
    simulated delay; ``delay_s(fn)`` chooses the delay per call (e.g. by the model's method)."""

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(delay_s(fn))
        return fn(*args, **kwargs)

    return run
