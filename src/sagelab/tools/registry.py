"""``ToolRegistry``: the application's actions with their handlers, callable by any agent.

One registry serves every way a tool gets called: the bundled server runs ``type: server`` tools
through :meth:`ToolRegistry.execute`, a client built on the official SDK gets them through
:meth:`ToolRegistry.register_with_client_tools`, and both see the same validation, error messages
and statistics. Handlers are plain functions taking the validated parameters as keyword arguments,
so they are testable without any of this machinery.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from sagelab.tools.decorator import Tool, action_from_function
from sagelab.tools.execution import (
    RegisteredTool,
    StatsRecorder,
    ToolOutcome,
    ToolStats,
    run_async,
    run_sync,
)
from sagelab.tools.model import Action

if TYPE_CHECKING:
    import pandas as pd
    from elevenlabs.conversational_ai.conversation import ClientTools

__all__ = ["ToolCallError", "ToolRegistry"]

P = ParamSpec("P")
R = TypeVar("R")


class ToolCallError(Exception):
    """Raised inside the official SDK's ``ClientTools`` so it answers ``is_error: true``;
    the message is the one :meth:`ToolRegistry.execute` would have returned."""

    def __init__(self, outcome: ToolOutcome) -> None:
        super().__init__(str(outcome.value))
        self.outcome = outcome


class ToolRegistry:
    """Actions by name, each with a sync or async handler.

    ``max_workers`` bounds the thread pool for sync handlers; it is the number of sync calls
    that can run at once. A sync handler that hangs past its timeout keeps its worker until it
    returns (threads cannot be killed), so size the pool for the worst case you accept.
    """

    def __init__(
        self,
        *,
        max_workers: int = 32,
        default_timeout: float | None = None,
        stats_window: int = 10_000,
    ) -> None:
        self._tools: dict[str, RegisteredTool] = {}
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._default_timeout = default_timeout
        self._recorder = StatsRecorder(stats_window)

    # -- registration -------------------------------------------------------------------------

    def register(
        self,
        action: Action | Tool[..., Any],
        handler: Callable[..., Any] | None = None,
        *,
        timeout: float | None = None,
        replace: bool = False,
    ) -> None:
        """Add an action (e.g. loaded from a file) with its handler, or a ``@tool`` function.

        The handler's signature is checked against the action now, so a mismatch fails at
        start-up instead of on the first call in a live conversation.
        """
        if isinstance(action, Tool):
            handler = handler or action.handler
            action = action.action
        if handler is None:
            raise TypeError(f"action {action.name!r} needs a handler")
        if action.name in self._tools and not replace:
            raise ValueError(f"a tool named {action.name!r} is already registered")
        _check_signature(action, handler)
        self._tools[action.name] = RegisteredTool(
            action,
            handler,
            _is_async(handler),
            timeout if timeout is not None else self._default_timeout,
        )

    @overload
    def tool(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    @overload
    def tool(
        self, *, name: str | None = None, description: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
    def tool(  # no "/" here: mypy then rejects the overloads (mypy 2.4)
        self,
        fn: Callable[P, R] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """``@registry.tool``: derive the action from the function (see ``@tool``) and register
        it; the function itself is returned unchanged."""

        def wrap(f: Callable[P, R]) -> Callable[P, R]:
            self.register(action_from_function(f, name=name, description=description), f)
            return f

        return wrap(fn) if fn is not None else wrap

    def actions(self) -> list[Action]:
        return [t.action for t in self._tools.values()]

    def get(self, name: str) -> Action | None:
        tool = self._tools.get(name)
        return tool.action if tool else None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    # -- execution ----------------------------------------------------------------------------

    async def execute(self, name: str, params: Any, *, timeout: float | None = None) -> ToolOutcome:
        """Run a tool; never raises (except cancellation).

        ``timeout`` (seconds) overrides the tool's own; a negative one means no limit, as
        ElevenLabs' ``response_timeout_secs: -1`` does.
        """
        tool = self._tools.get(name)
        if timeout is None and tool is not None:
            timeout = tool.timeout
        outcome = await run_async(
            tool,
            name,
            params,
            timeout=None if timeout is not None and timeout < 0 else timeout,
            executor=self._pool(),
            available=self._tools,
        )
        if tool is not None:
            self._recorder.record(name, outcome)
        return outcome

    def execute_sync(self, name: str, params: Any) -> ToolOutcome:
        """Run a tool in the calling thread, which must not be running an event loop
        (the SDK's worker threads, scripts). There is no timeout on this path."""
        tool = self._tools.get(name)
        outcome = run_sync(tool, name, params, available=self._tools)
        if tool is not None:
            self._recorder.record(name, outcome)
        return outcome

    def register_with_client_tools(self, client_tools: ClientTools) -> None:
        """Register every tool into the official SDK's ``ClientTools``.

        The SDK calls a handler with ``{"tool_call_id": ..., **params}``; the id is removed,
        parameters are validated, and any failure raises :class:`ToolCallError`, which the SDK
        sends as ``is_error: true`` with our message. A falsy result (``0``, ``false``, ``[]``)
        is sent as JSON text, because the SDK would replace it with "called successfully".
        """
        for name, tool in self._tools.items():
            if tool.is_async:
                client_tools.register(name, self._sdk_async_handler(name), is_async=True)
            else:
                client_tools.register(name, self._sdk_sync_handler(name))

    def session_tools(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """Every tool as a handler for sagelab's own client (``Session.connect(tools=...)``,
        ``run_scenario(tools=...)``): the same validation and statistics as the SDK path, and a
        failure raises, which the session answers with ``is_error: true`` and the message."""
        return {name: self._sdk_async_handler(name) for name in self._tools}

    def _sdk_sync_handler(self, name: str) -> Callable[[dict[str, Any]], Any]:
        def handle(parameters: dict[str, Any]) -> Any:
            return _sdk_value(self.execute_sync(name, _without_call_id(parameters)))

        return handle

    def _sdk_async_handler(self, name: str) -> Callable[[dict[str, Any]], Any]:
        async def handle(parameters: dict[str, Any]) -> Any:
            return _sdk_value(await self.execute(name, _without_call_id(parameters)))

        return handle

    # -- statistics ---------------------------------------------------------------------------

    def stats(self) -> dict[str, ToolStats]:
        return self._recorder.stats()

    def stats_frame(self) -> pd.DataFrame:
        """One row per tool: calls, errors, timeouts, duration and overhead percentiles (ms)."""
        return self._recorder.frame()

    def overhead_ms(self, name: str | None = None) -> list[float]:
        """Dispatch overhead samples (call time minus the handler's own time), in ms."""
        return self._recorder.overhead_ms(name)

    def reset_stats(self) -> None:
        self._recorder.reset()

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker threads (running sync handlers are not interrupted)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> ToolRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="tool")
        return self._executor


def _without_call_id(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {k: v for k, v in parameters.items() if k != "tool_call_id"}
    return parameters


def _sdk_value(outcome: ToolOutcome) -> Any:
    if outcome.is_error:
        raise ToolCallError(outcome)
    value = outcome.value
    if value is not None and not value:
        return json.dumps(value)
    return value


def _is_async(handler: Callable[..., Any]) -> bool:
    while isinstance(handler, functools.partial):
        handler = handler.func
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 (callable objects with async __call__)
    )


def _check_signature(action: Action, handler: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # builtins without signatures: trust the caller
    params = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = {p.name for p in action.parameters}
    missing = sorted(names - set(params))
    if missing:
        raise TypeError(
            f"handler for {action.name!r} does not accept parameters {missing} of the action"
        )
    unfilled = sorted(
        n
        for n, p in params.items()
        if n not in names
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )
    if unfilled:
        raise TypeError(
            f"handler for {action.name!r} requires {unfilled}, which the action does not define"
        )
