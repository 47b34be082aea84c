"""One reply in flight per session: barge-in and new turns cancel it, crashes are reported.

Both backends need exactly this, and getting it subtly wrong (an exception swallowed by a
forgotten task, two replies talking at once) is what makes voice agents feel broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from sagelab.agents.base import AgentContext

log = logging.getLogger(__name__)


class ReplyTask:
    def __init__(self, ctx: AgentContext, *, crash_is_fatal: bool = False) -> None:
        self.ctx = ctx
        self.crash_is_fatal = crash_is_fatal
        self._task: asyncio.Task[None] | None = None
        self.event_id: int | None = None  # the turn the current reply speaks in, if known

    def start(self, coro: Coroutine[Any, Any, None], event_id: int | None = None) -> None:
        """Run ``coro`` as the current reply (of turn ``event_id``), cancelling the one before."""
        self.adopt(asyncio.create_task(coro), event_id)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def adopt(self, task: asyncio.Task[None], event_id: int | None = None) -> None:
        """Make an already running ``task`` the current reply (a draft that was confirmed)."""
        if self._task is not None and not self._task.done() and self._task is not task:
            self._task.cancel()
        self._task, self.event_id = task, event_id
        task.add_done_callback(self._report_crash)

    async def cancel(self) -> None:
        """Stop the current reply and wait until it has stopped."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def barge_in(self) -> None:
        """The user talks: cut what the agent is saying, then stop producing more."""
        await self.ctx.interrupt()
        await self.cancel()

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("agent %s: reply failed", self.ctx.agent.id, exc_info=exc)
        asyncio.get_running_loop().create_task(
            self.ctx.fail(
                "cascade_brain_error", f"agent reply failed: {exc!r}", fatal=self.crash_is_fatal
            )
        )
