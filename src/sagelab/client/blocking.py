"""``SyncSession``: the ``Session`` client with blocking methods, for notebooks and scripts.

A voice session must keep answering pings, receiving audio and running client tools while the
caller is busy (or blocked waiting for a reply), so the async ``Session`` cannot simply be run
step by step with ``asyncio.run``: between steps nothing would service the socket. The facade
therefore owns an event loop on a daemon thread where the session lives for its whole life,
and each blocking method submits one coroutine to that loop and waits for its result.

Its own loop is also what makes it work in Jupyter, whose kernel already runs a loop in the
main thread: ``asyncio.run`` refuses to start there, but submitting to another thread's loop
is always allowed.

>>> with SyncSession.connect("http://127.0.0.1:8765", "scripted") as s:
...     mark = s.mark()
...     s.send_text("hello")
...     reply = s.wait_for("agent_response", since=mark)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from sagelab.client.netem import NetworkConditions
from sagelab.client.reconnect import ReconnectPolicy
from sagelab.client.session import (
    ELEVENLABS_BASE_URL,
    AudioInput,
    SentAudio,
    Session,
    SessionError,
    ToolHandler,
)
from sagelab.client.timeline import Timeline

__all__ = ["SyncSession"]

T = TypeVar("T")

_JOIN_TIMEOUT_S = 10.0


class _LoopThread:
    """An event loop running forever on a daemon thread, until ``stop``.

    Daemon, so a notebook or script that forgets to close its session can still exit.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sagelab-sync-session", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on the loop and block until it is done.

        It takes a factory rather than a coroutine so that a call on a stopped loop does not
        leave a never-awaited coroutine behind.
        """
        if not self.running:
            raise SessionError("the session is closed")
        if threading.current_thread() is self._thread:
            # Blocking the loop on a coroutine that needs the same loop would hang forever.
            raise RuntimeError(
                "SyncSession methods cannot be called from its own loop (an async tool "
                "handler); use the async Session there (SyncSession.session)"
            )
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:
            raise SessionError("the session was closed while this call was waiting") from exc
        except BaseException:
            # KeyboardInterrupt in a notebook cell lands here while the coroutine is still
            # running on the other thread: cancel it, or it would go on sending audio.
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what is left on the loop, stop it and join its thread.

        Sync tool handlers ran on the loop's default executor; shutting it down joins those
        worker threads too, so closing a session leaves no thread behind.
        """
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._drain(), self.loop).result(
                    timeout=_JOIN_TIMEOUT_S
                )
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=_JOIN_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()

    async def _drain(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()


class SyncSession:
    """One conversation with blocking methods. Create with ``SyncSession.connect(...)``.

    Exceptions are the async client's: ``TimeoutError`` when a wait runs out, ``SessionError``
    when the session fails or the server closes it. Events recorded in ``timeline`` are
    appended by the loop thread while you read them; a ``mark()`` taken before an action and
    passed as ``since=`` is the reliable way to wait for what that action caused.
    """

    def __init__(self, session: Session, runner: _LoopThread) -> None:
        self._session = session
        self._runner = runner

    @classmethod
    def connect(
        cls,
        base_url: str = ELEVENLABS_BASE_URL,
        agent_id: str = "",
        *,
        api_key: str | None = None,
        requires_auth: bool = False,
        prompt: str | None = None,
        first_message: str | None = None,
        language: str | None = None,
        voice_id: str | None = None,
        dynamic_variables: dict[str, Any] | None = None,
        user_id: str | None = None,
        text_only: bool = False,
        tools: dict[str, ToolHandler] | None = None,
        chunk_ms: int = 100,
        record_audio: bool = True,
        stages: bool = False,
        listener: Callable[[Any], None] | None = None,
        network: NetworkConditions | str | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> SyncSession:
        """Connect and wait for the session metadata; the arguments are ``Session.connect``'s.

        They are spelled out rather than forwarded as ``**kwargs`` so that notebooks complete
        and document them; a test keeps the two signatures the same.

        Tool handlers run on the session's loop thread (sync ones in its worker threads), not
        in the caller's thread, because the caller may be blocked in ``wait_for`` when the
        agent calls a tool.

        With ``reconnect``, a dropped connection is resumed on the loop thread while the
        caller waits; a blocking call that needs the socket waits for it (audio sent meanwhile
        is dropped, as a live microphone's would be), and gets ``SessionError`` if it cannot.
        """
        runner = _LoopThread()

        async def open_session() -> Session:
            session: Session = await Session.connect(
                base_url,
                agent_id,
                api_key=api_key,
                requires_auth=requires_auth,
                prompt=prompt,
                first_message=first_message,
                language=language,
                voice_id=voice_id,
                dynamic_variables=dynamic_variables,
                user_id=user_id,
                text_only=text_only,
                tools=tools,
                chunk_ms=chunk_ms,
                record_audio=record_audio,
                stages=stages,
                listener=listener,
                network=network,
                reconnect=reconnect,
            )
            return session

        try:
            session = runner.run(open_session)
        except BaseException:
            runner.stop()  # a failed connect must not leave its loop thread behind
            raise
        return cls(session, runner)

    # -- the async API, blocking -----------------------------------------------------------

    def mark(self) -> int:
        """A position in the timeline; pass it as ``since=`` to wait for what comes after."""
        return self._session.mark()

    def send_audio(
        self,
        audio: AudioInput,
        *,
        realtime: bool = True,
        chunk_ms: int | None = None,
        trailing_silence_ms: int = 0,
    ) -> SentAudio:
        """Stream audio in real time; blocks for as long as the audio lasts."""
        return self._runner.run(
            lambda: self._session.send_audio(
                audio,
                realtime=realtime,
                chunk_ms=chunk_ms,
                trailing_silence_ms=trailing_silence_ms,
            )
        )

    def send_text(self, text: str) -> None:
        self._runner.run(lambda: self._session.send_text(text))

    def send_contextual_update(self, text: str) -> None:
        self._runner.run(lambda: self._session.send_contextual_update(text))

    def send_user_activity(self) -> None:
        self._runner.run(self._session.send_user_activity)

    def send_feedback(self, score: str, event_id: int) -> None:
        self._runner.run(lambda: self._session.send_feedback(score, event_id))

    def wait_for(
        self,
        type: str,
        *,
        since: int = 0,
        timeout: float = 30.0,
        predicate: Callable[[Any], bool] | None = None,
    ) -> Any:
        """The first timeline event of ``type`` after ``since`` that matches ``predicate``.

        ``predicate`` runs on the loop thread, so it should only look at the event.
        """
        return self._runner.run(
            lambda: self._session.wait_for(type, since=since, timeout=timeout, predicate=predicate)
        )

    def wait_agent_done(self, *, quiet_s: float = 0.4, timeout: float = 60.0) -> None:
        self._runner.run(lambda: self._session.wait_agent_done(quiet_s=quiet_s, timeout=timeout))

    def measure_rtt(self, timeout: float = 5.0) -> float:
        """Seconds for a WebSocket ping to come back, as measured on the loop thread.

        The hop from the caller's thread to the loop is not included, so the figure is the
        network's and the server's, the same as the async client reports.
        """
        return self._runner.run(lambda: self._session.measure_rtt(timeout))

    def drop_connection(self) -> None:
        """Reset the TCP connection (no close frame), to test reconnection; see ``Session``."""
        self._runner.run(self._session.drop_connection)

    def close(self) -> None:
        """End the conversation (close 1000) and stop the loop thread; safe to call twice."""
        if self._runner.running:
            with contextlib.suppress(SessionError):
                self._runner.run(self._session.close)
        self._runner.stop()

    # -- state -----------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The async ``Session`` underneath; its coroutines must run on the facade's loop."""
        return self._session

    @property
    def timeline(self) -> Timeline:
        return self._session.timeline

    @property
    def conversation_id(self) -> str | None:
        return self._session.conversation_id

    @property
    def close_code(self) -> int | None:
        return self._session.close_code

    @property
    def closed(self) -> bool:
        """True once the server or ``close`` ended the session."""
        return self._session.closed or not self._runner.running

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
