"""``LocalAgent``: the offline voice agent, VAD → STT → brain → TTS, with barge-in.

Turn-taking runs inline on every audio chunk (Silero VAD is cheap per 32 ms window); everything
heavy (Whisper, Piper) runs on the process-wide model executor, so sessions queue for the two
cores instead of fighting over them. A reply streams: the brain's text is cut into sentences,
and the first sentence is synthesised and playing while the brain and TTS produce the rest.
User speech while the agent talks cancels the reply task; the conversation core drops queued
audio and tells the client what was actually heard.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from sagelab.agents.base import Agent, AgentContext, AgentTurn, ToolResult
from sagelab.agents.local.brain import Brain, BrainError, ChatMessage
from sagelab.agents.local.executor import run_model
from sagelab.agents.replies import ReplyTask
from sagelab.server import limits

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class LocalAgent(Agent):
    def __init__(
        self,
        ctx: AgentContext,
        *,
        detector: Any,
        stt: Any,
        tts: Any,
        brain: Brain,
        preroll_ms: int = 300,
        max_utterance_s: float = 30.0,
        vad_events: bool = False,
        speculate_after_ms: float | None = 160,
    ) -> None:
        super().__init__(ctx)
        self.detector = detector
        self.stt = stt
        self.tts = tts
        self.brain = brain
        self.vad_events = vad_events
        self.history: list[ChatMessage] = []
        self._preroll: deque[np.ndarray] = deque()
        self._preroll_samples = SAMPLE_RATE * preroll_ms // 1000
        self._max_samples = int(SAMPLE_RATE * max_utterance_s)
        self._utterance: list[np.ndarray] | None = None
        self._utterance_samples = 0
        self._replies = ReplyTask(ctx)
        self._context_notes: dict[str | None, str] = {}
        self._samples_seen = 0
        # Speculative STT: transcription starts once the user has been silent for a moment,
        # while the detector still waits to be sure the turn is over; if the user goes on
        # talking the guess is dropped. It hides most of STT inside the end-of-turn wait.
        self._speculate_after = (
            None if speculate_after_ms is None else int(speculate_after_ms * SAMPLE_RATE / 1000)
        )
        self._guess: tuple[int, asyncio.Future[Any]] | None = None
        # The audio of the turn being transcribed, until its transcript exists.
        self._untranscribed: np.ndarray | None = None

    # -- Agent interface -------------------------------------------------------------------

    async def start(self) -> None:
        greeting = self.ctx.agent.first_message
        if greeting:
            self.history.append(ChatMessage("assistant", greeting))
            self._replies.start(self._speak(self.ctx.begin_turn(), _single(greeting)))

    async def on_audio(self, pcm: np.ndarray) -> None:
        events = self.detector.feed(pcm)
        self._samples_seen += pcm.size
        if self.vad_events and getattr(self.detector, "last_probability", None) is not None:
            await self.ctx.vad_score(float(self.detector.last_probability))
        if self._utterance is not None:
            self._append_utterance(pcm)
        else:
            self._preroll.append(pcm)
            while (
                sum(c.size for c in self._preroll) - self._preroll[0].size > self._preroll_samples
            ):
                self._preroll.popleft()
        for event in events:
            if event.kind == "speech_start":
                await self._replies.barge_in()
                # Speech that ended a turn but was cut off before it was even transcribed
                # (the user only paused) is the start of this utterance, not lost.
                carried, self._untranscribed = self._untranscribed, None
                self._utterance = ([carried] if carried is not None else []) + list(self._preroll)
                self._utterance_samples = sum(c.size for c in self._utterance)
                self._preroll.clear()
                self._guess = None
            elif self._utterance is not None:
                audio = np.concatenate(self._utterance) if self._utterance else pcm[:0]
                self._utterance = None
                guess = self._guess[1] if self._guess and self._guess[0] == event.sample else None
                self._guess = None
                if self._untranscribed is not None:  # a long monologue's earlier piece
                    audio, guess = np.concatenate([self._untranscribed, audio]), None
                # How much audio after the real end of speech the detector needed to decide.
                endpointing_ms = (self._samples_seen - event.sample) * 1000 / SAMPLE_RATE
                self._replies.start(self._respond_to_speech(audio, endpointing_ms, guess))
        self._maybe_speculate()

    async def on_user_message(self, text: str) -> None:
        await self._replies.barge_in()
        self._untranscribed = None  # typed text starts a new request
        self._replies.start(self._reply(self.ctx.begin_turn(), text))

    async def on_contextual_update(self, text: str, context_id: str | None) -> None:
        # The same context_id replaces the older note, as the protocol reference says; bounded.
        limits.keep_note(self._context_notes, context_id, text)

    async def on_interrupt(self) -> None:
        await self._replies.barge_in()
        self._untranscribed = None

    async def close(self) -> None:
        await self._replies.cancel()
        await self.brain.aclose()

    # -- turns -----------------------------------------------------------------------------

    def _append_utterance(self, pcm: np.ndarray) -> None:
        assert self._utterance is not None
        self._utterance.append(pcm)
        self._utterance_samples += pcm.size
        if self._utterance_samples > self._max_samples:
            # A monologue longer than the limit is transcribed in pieces rather than held.
            audio = np.concatenate(self._utterance)
            self._utterance, self._utterance_samples = [], 0
            if self._untranscribed is not None:
                audio = np.concatenate([self._untranscribed, audio])
            self._replies.start(self._respond_to_speech(audio, None))

    def _maybe_speculate(self) -> None:
        silence_start = getattr(self.detector, "silence_start", None)
        if self._utterance is None or self._speculate_after is None or silence_start is None:
            self._guess = None  # speech resumed (or no turn): an earlier guess is stale
            return
        if self._guess is not None and self._guess[0] == silence_start:
            return
        if self._samples_seen - silence_start < self._speculate_after:
            return
        audio = np.concatenate(self._utterance) if self._utterance else np.zeros(0, np.int16)
        future = asyncio.ensure_future(run_model(self.stt.transcribe, audio))
        future.add_done_callback(_consume_exception)  # a dropped guess may fail unobserved
        self._guess = (silence_start, future)

    async def _respond_to_speech(
        self,
        audio: np.ndarray,
        endpointing_ms: float | None,
        guess: asyncio.Future[Any] | None = None,
    ) -> None:
        turn = self.ctx.begin_turn()
        if endpointing_ms is not None:
            await self.ctx.stage(turn, "endpointing", endpointing_ms)
        await self.ctx.stage(turn, "utterance", audio.size * 1000 / SAMPLE_RATE)
        t0 = time.perf_counter()
        self._untranscribed = audio
        try:
            # With a speculative guess, "stt" is only what is left to wait for.
            transcript = await (
                guess if guess is not None else run_model(self.stt.transcribe, audio)
            )
        except Exception as exc:
            self._untranscribed = None
            log.exception("speech-to-text failed")
            await self.ctx.fail("asr_transcription_error", f"speech-to-text failed: {exc}")
            return
        self._untranscribed = None
        await self.ctx.stage(turn, "stt", (time.perf_counter() - t0) * 1000)
        await self.ctx.stage(turn, "stt_compute", transcript.elapsed_s * 1000)
        text = transcript.text.strip()
        if not text:
            return  # noise the VAD took for speech: no turn
        await self.ctx.user_transcript(turn, text)
        await self._reply(turn, text)

    async def _reply(self, turn: AgentTurn, text: str) -> None:
        if self.history and self.history[-1].role == "user":
            # The previous reply was cut off before the agent said anything: the user was not
            # done. What they said then and now is one request.
            text = f"{self.history.pop().content} {text}"
        self.history.append(ChatMessage("user", text))
        limits.trim_history(self.history)
        t0 = time.perf_counter()
        pieces = self.brain.respond(
            list(self.history),
            system_prompt=self._system_prompt(),
            tools=self.ctx.agent.tools,
            call_tool=lambda name, params: self._call_tool(turn, name, params),
        )
        spoken: list[str] = []
        try:
            await self._speak(turn, _sentences(_timed(pieces, turn, self.ctx, t0)), spoken)
        except BrainError as exc:
            await self.ctx.fail("llm_error", str(exc))
        finally:
            reply = " ".join(spoken).strip()
            if reply:
                self.history.append(ChatMessage("assistant", reply))

    async def _speak(
        self, turn: AgentTurn, sentences: AsyncIterator[str], spoken: list[str] | None = None
    ) -> None:
        """Synthesise sentence by sentence while the brain is still producing the next ones.

        The reply text goes out as one ``agent_response`` once the brain has finished (as
        ElevenLabs does), usually while the first sentence is already playing.
        """
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        heard = spoken if spoken is not None else []

        async def produce() -> None:
            try:
                async for sentence in sentences:
                    heard.append(sentence)
                    queue.put_nowait(sentence)
            finally:
                queue.put_nowait(None)
            if heard:
                await self.ctx.agent_response(turn, " ".join(heard))

        producer = asyncio.create_task(produce())
        t0 = time.perf_counter()
        first_audio = True
        synth_s = audio_s = 0.0
        try:
            while (sentence := await queue.get()) is not None:
                if self.ctx.agent.text_only:
                    continue
                pieces = _first_clause(sentence) if first_audio else [sentence]
                chunks = (c for piece in pieces for c in self.tts.synthesize(piece))
                while True:
                    t_chunk = time.perf_counter()
                    chunk = await self._next_chunk(chunks)
                    if chunk is None:
                        break
                    synth_s += time.perf_counter() - t_chunk
                    audio_s += chunk.pcm.size / SAMPLE_RATE
                    if first_audio:
                        ms = (time.perf_counter() - t0) * 1000
                        await self.ctx.stage(turn, "tts_first_audio", ms)
                        first_audio = False
                    await self.ctx.agent_audio(turn, chunk.pcm, chunk.alignment)
            await producer
            if audio_s:  # real-time factor = tts_synth / tts_audio
                await self.ctx.stage(turn, "tts_synth", synth_s * 1000)
                await self.ctx.stage(turn, "tts_audio", audio_s * 1000)
            await self.ctx.finish_audio(turn)
        finally:
            producer.cancel()

    async def _next_chunk(self, chunks: Any) -> Any:
        try:
            return await run_model(next, chunks, None)
        except Exception as exc:
            log.exception("text-to-speech failed")
            await self.ctx.fail("tts_cascade_error", f"text-to-speech failed: {exc}")
            return None

    async def _call_tool(self, turn: AgentTurn, name: str, params: dict[str, Any]) -> ToolResult:
        t0 = time.perf_counter()
        result = await self.ctx.call_tool(turn, name, params)
        await self.ctx.stage(turn, "tool", (time.perf_counter() - t0) * 1000)
        return result

    def _system_prompt(self) -> str:
        notes = [n for n in self._context_notes.values() if n]
        prompt = self.ctx.agent.prompt
        if notes:
            prompt += "\n\nContext from the application:\n" + "\n".join(f"- {n}" for n in notes)
        return prompt


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


_CLAUSE_BREAK = re.compile(r"[,:;] ")


def _first_clause(sentence: str, min_chars: int = 12, long: int = 50) -> list[str]:
    """Split a long first sentence after its first clause (comma, colon or semicolon), so
    the turn's first audio waits for a clause, not a sentence: Piper synthesises whole pieces
    (about 80 ms per second of speech here)."""
    if len(sentence) < long:
        return [sentence]
    match = _CLAUSE_BREAK.search(sentence, min_chars)
    if match is None or len(sentence) - match.end() < min_chars:
        return [sentence]
    return [sentence[: match.start() + 1], sentence[match.end() :]]


async def _single(text: str) -> AsyncIterator[str]:
    for sentence in _SENTENCE_END.split(text.strip()):
        if sentence:
            yield sentence


async def _sentences(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """Re-cut streamed text at sentence ends, so TTS starts as soon as one is complete."""
    buffer = ""
    async for piece in pieces:
        if buffer and buffer[-1] in ".!?" and piece and not piece[0].isspace():
            buffer += " "  # brains that yield whole sentences need not add the space
        buffer += piece
        parts = _SENTENCE_END.split(buffer)
        for sentence in parts[:-1]:
            if sentence.strip():
                yield sentence.strip()
        buffer = parts[-1]
    if buffer.strip():
        yield buffer.strip()


async def _timed(
    pieces: AsyncIterator[str], turn: AgentTurn, ctx: AgentContext, t0: float
) -> AsyncIterator[str]:
    """Report the brain's time to its first text and to its last."""
    first = True
    async for piece in pieces:
        if first and piece:
            await ctx.stage(turn, "brain_first_text", (time.perf_counter() - t0) * 1000)
            first = False
        yield piece
    await ctx.stage(turn, "brain", (time.perf_counter() - t0) * 1000)
