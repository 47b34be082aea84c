"""``LocalAgent``: the offline voice agent, VAD → STT → brain → TTS, with barge-in.

Turn-taking runs inline on every audio chunk (Silero VAD is cheap per 32 ms window); everything
heavy (Whisper, Piper) runs on the process-wide model executor, so sessions queue for the two
cores instead of fighting over them. A reply streams: the brain's text is cut into sentences,
and the first sentence is synthesised and playing while the brain and TTS produce the rest.
User speech while the agent talks cancels the reply task; the conversation core drops queued
audio and tells the client what was actually heard.

Barge-in in two steps, so that the agent stops within a chunk of the user's first syllable
without a click or a breath costing it its reply: the detector's first hint of a voice
(``BargeIn(provisional=True)``) cuts what is playing at once, and nothing else; if the hint
becomes speech, the confirmed ``BargeIn`` drops the reply as before; if it fades
(``FalseBargeIn``), the agent says the rest of the cut reply, from the first word the user
had not heard, as a new turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sagelab.agents.base import Agent, AgentContext, AgentTurn, ToolResult
from sagelab.agents.local.brain import Brain, BrainError, ChatMessage
from sagelab.agents.local.draft import DraftContext
from sagelab.agents.local.endofturn import EndOfTurnModel, EndOfTurnPolicy
from sagelab.agents.local.executor import run_model
from sagelab.agents.local.tts import split_first_clause
from sagelab.agents.replies import ReplyTask
from sagelab.conversation import history
from sagelab.conversation.session import Interrupted
from sagelab.conversation.turns import (
    BargeIn,
    CancelEndOfTurn,
    CancelTranscription,
    Draft,
    FalseBargeIn,
    PredictEndOfTurn,
    Transcribe,
    TranscriptionFailed,
    TurnAction,
    TurnTaker,
    UserTurn,
)

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000
ModelRunner = Callable[..., Awaitable[Any]]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class _Held:
    """A reply cut on a provisional barge-in: what was heard of it, and all its sentences so
    far (the list the reply task still appends to), to say the rest if it was no one."""

    interrupted: Interrupted
    sentences: list[str]


@dataclass
class _Drafted:
    """A reply started on a ``Draft``: the request it answers and the history before it."""

    job: int
    text: str
    ctx: DraftContext
    task: asyncio.Task[None]
    history: list[ChatMessage]


class LocalAgent(Agent):
    """The asyncio adapter around :class:`~sagelab.conversation.turns.TurnTaker`.

    The turn-taker decides which audio is a turn, when to transcribe it and when the user is
    done; this class carries those decisions out (transcriptions on the model executor, the
    reply task, barge-in) and feeds the results back with the time they arrived. ``runner``
    runs a blocking model call (default: the shared model executor); tests pass one that
    takes simulated time.

    ``end_of_turn`` is the policy that ends a pause (see ``TurnTaker``); a policy that asks a
    model needs ``end_of_turn_model``, and a ``detector`` whose own silence wait is the
    policy's ``max_silence_ms`` (``factory.create`` builds it so).

    ``draft_replies`` starts the reply on the speculative transcript of a pause, before the
    turn is decided, holding everything it would say until the turn is confirmed
    (``sagelab.agents.local.draft``): the reply's first audio is then ready when the turn
    ends. Read-only server tools run early; others wait for the confirmation.

    ``split_after_s`` transcribes a long turn in pieces cut at its pauses while the user is
    still talking (``TurnTaker``), so the end of a monologue costs what its last sentences
    cost; each piece is a ``user_transcript`` as it comes, and the reply answers them all.
    """

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
        split_after_s: float | None = 8.0,
        vad_events: bool = False,
        speculate_after_ms: float | None = 160,
        end_of_turn: EndOfTurnPolicy | None = None,
        end_of_turn_model: EndOfTurnModel | None = None,
        ask_ahead_ms: float = 0.0,
        model_patience_ms: float | None = None,
        draft_replies: bool = True,
        runner: ModelRunner = run_model,
    ) -> None:
        if end_of_turn is not None and end_of_turn.uses_model and end_of_turn_model is None:
            raise ValueError(
                "this end-of-turn policy asks a model (it has a threshold) but no "
                "end_of_turn_model was given; pass one, or use EndOfTurnPolicy.silence_only"
            )
        super().__init__(ctx)
        self.detector = detector
        self.stt = stt
        self.tts = tts
        self.brain = brain
        self.end_of_turn_model = end_of_turn_model
        self.vad_events = vad_events
        self.history: list[ChatMessage] = []
        self.turns = TurnTaker(
            detector,
            preroll_ms=preroll_ms,
            max_utterance_s=max_utterance_s,
            split_after_s=split_after_s,
            speculate_after_ms=speculate_after_ms,
            end_of_turn=end_of_turn,
            ask_ahead_ms=ask_ahead_ms,
            model_patience_ms=model_patience_ms,
        )
        self._run = runner
        self._replies = ReplyTask(ctx)
        self._context_notes: dict[str | None, str] = {}
        self._jobs: dict[int, asyncio.Task[None]] = {}
        # Transcripts heard since the last reply started: one request until the user is done.
        self._request: list[tuple[AgentTurn, str]] = []
        # The event id of the reply whose text is the last assistant entry of ``history``.
        self._history_reply: int | None = None
        self._actions = asyncio.Lock()
        self.draft_replies = draft_replies
        self._draft: _Drafted | None = None
        # The sentences of the latest replies, by turn (the reply task appends as it goes).
        self._said: dict[AgentTurn, list[str]] = {}
        self._held: _Held | None = None
        # Of a reply resumed after a false barge-in: the words heard before the cut.
        self._heard_before = ""

    # -- Agent interface -------------------------------------------------------------------

    async def start(self) -> None:
        greeting = self.ctx.agent.first_message
        if greeting:
            turn = self.ctx.begin_turn()
            self.history.append(ChatMessage("assistant", greeting))
            self._history_reply = turn.event_id
            spoken = self._saying(turn)
            self._replies.start(self._speak(turn, _single(greeting), spoken), turn.event_id)

    async def on_audio(self, pcm: np.ndarray) -> None:
        actions = self.turns.audio(pcm, _now())
        if self.vad_events and getattr(self.detector, "last_probability", None) is not None:
            await self.ctx.vad_score(float(self.detector.last_probability))
        if actions:
            await self._execute(actions)

    async def on_user_message(self, text: str) -> None:
        await self._barge_in()
        turn = self.ctx.begin_turn()
        heard = [t for _, t in self._request]
        self._request = []
        self._replies.start(self._reply(turn, " ".join([*heard, text])), turn.event_id)

    async def on_contextual_update(self, text: str, context_id: str | None) -> None:
        # The same context_id replaces the older note, as the protocol reference says; bounded.
        history.keep_note(self._context_notes, context_id, text)

    async def on_interrupt(self) -> None:
        await self._barge_in()

    async def close(self) -> None:
        for task in self._jobs.values():
            task.cancel()
        self._jobs.clear()
        await self._drop_draft()
        await self._replies.cancel()
        await self.brain.aclose()

    # -- carrying out the turn-taker's actions ----------------------------------------------

    async def _execute(self, actions: list[TurnAction]) -> None:
        # One at a time and in order: a barge-in must finish before a later turn's reply starts.
        async with self._actions:
            for action in actions:
                match action:
                    case Transcribe():
                        self._jobs[action.job] = asyncio.create_task(
                            self._transcribe(action.job, action.audio)
                        )
                    case PredictEndOfTurn():
                        self._jobs[action.job] = asyncio.create_task(
                            self._predict(action.job, action.audio)
                        )
                    case CancelTranscription() | CancelEndOfTurn():
                        # A call still queued on the executor is dropped; one already running
                        # finishes and its answer is ignored.
                        task = self._jobs.pop(action.job, None)
                        if task is not None:
                            task.cancel()
                        if isinstance(action, CancelTranscription):
                            await self._drop_draft(action.job)
                    case Draft():
                        await self._start_draft(action)
                    case BargeIn(provisional=True):
                        await self._pause()
                    case BargeIn():
                        await self._barge_in()
                    case FalseBargeIn():
                        await self._resume()
                    case TranscriptionFailed():
                        await self.ctx.fail(
                            "asr_transcription_error", f"speech-to-text failed: {action.message}"
                        )
                    case UserTurn():
                        await self._heard(action)

    async def _transcribe(self, job: int, audio: np.ndarray) -> None:
        try:
            result = await self._run(self.stt.transcribe, audio)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("speech-to-text failed")
            actions = self.turns.transcription_failed(job, str(exc), _now())
        else:
            actions = self.turns.transcribed(job, result.text, result.elapsed_s * 1000, _now())
        finally:
            self._jobs.pop(job, None)
        if actions:
            await self._execute(actions)

    async def _predict(self, job: int, audio: np.ndarray) -> None:
        assert self.end_of_turn_model is not None
        try:
            probability = await self._run(self.end_of_turn_model.probability, audio)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not the user's problem: the pause is left to the silence fallback.
            log.exception("end-of-turn model failed")
            actions = self.turns.end_of_turn_failed(job, str(exc), _now())
        else:
            actions = self.turns.end_of_turn(job, min(1.0, max(0.0, probability)), _now())
        finally:
            self._jobs.pop(job, None)
        if actions:
            await self._execute(actions)

    async def _heard(self, heard: UserTurn) -> None:
        if heard.text:
            turn = self.ctx.begin_turn()
            if heard.endpointing_ms is not None:
                await self.ctx.stage(turn, "endpointing", heard.endpointing_ms)
            if heard.eot_model_ms is not None:  # part of endpointing: asking to answer
                await self.ctx.stage(turn, "eot_model", heard.eot_model_ms)
            await self.ctx.stage(turn, "utterance", heard.utterance_ms)
            # With a speculative guess, "stt" is only what was left to wait for.
            await self.ctx.stage(turn, "stt", heard.stt_wait_ms)
            await self.ctx.stage(turn, "stt_compute", heard.stt_compute_ms)
            await self.ctx.user_transcript(turn, heard.text)
            self._request.append((turn, heard.text))
        if heard.final and self._request:
            turn = self._request[-1][0]
            text = " ".join(t for _, t in self._request)
            self._request = []
            draft, self._draft = self._draft, None
            if draft is not None and draft.job == heard.job and draft.text == text:
                await draft.ctx.commit(turn, _now())
                self._replies.adopt(draft.task, turn.event_id)
                return
            if draft is not None:
                await self._cancel_draft(draft)
            self._replies.start(self._reply(turn, text), turn.event_id)
        elif self._draft is not None and self._draft.job == heard.job:
            await self._drop_draft()  # its transcript came, but the user is not done

    async def _start_draft(self, draft: Draft) -> None:
        """Prepare the reply to the request so far plus ``draft.text``, saying nothing yet."""
        await self._drop_draft()
        if not self.draft_replies or self._replies.running:
            return  # (a typed message's reply is still being produced: it goes first)
        text = " ".join([*(t for _, t in self._request), draft.text])
        ctx = DraftContext(self.ctx, _now())
        saved = list(self.history)
        task = asyncio.create_task(self._reply(ctx.turn, text, ctx))
        self._draft = _Drafted(draft.job, text, ctx, task, saved)

    async def _drop_draft(self, job: int | None = None) -> None:
        """Withdraw the draft (of ``job``, or whichever there is): the user went on."""
        draft = self._draft
        if draft is not None and (job is None or draft.job == job):
            self._draft = None
            await self._cancel_draft(draft)

    async def _cancel_draft(self, draft: _Drafted) -> None:
        draft.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await draft.task
        self.history = draft.history  # the draft's request and reply never happened

    async def on_heard(self, interrupted: Interrupted) -> None:
        # The player's report is about one turn: a reply already under way for a newer turn
        # (the user went on and was answered) must not be cancelled by it.
        if self._replies.event_id == interrupted.event_id:
            await self._replies.cancel()
        self._keep_heard(interrupted)

    async def _barge_in(self) -> None:
        """The user talks: cut what the agent is saying, stop producing more, and keep in the
        history only what the user actually heard of the reply."""
        held, self._held = self._held, None
        await self._drop_draft()
        interrupted = await self.ctx.interrupt()
        if interrupted is None and held is not None:
            interrupted = held.interrupted  # cut already, on the hint this confirms
        await self._replies.cancel()
        self._keep_heard(interrupted)

    async def _pause(self) -> None:
        """The detector hints at the user's voice: stop what is playing now. The reply goes on
        being produced (into a turn no one hears) until the hint is confirmed or withdrawn."""
        if self._held is not None:
            return
        interrupted = await self.ctx.interrupt()
        if interrupted is None:
            return  # nothing was playing: there is nothing to cut or to resume
        sentences = next(
            (said for t, said in self._said.items() if t.event_id == interrupted.event_id), []
        )
        self._held = _Held(interrupted, sentences)

    async def _resume(self) -> None:
        """The hint was no one talking: say the rest of the cut reply, as a new turn."""
        held, self._held = self._held, None
        if held is None or self._request or self._replies.event_id != held.interrupted.event_id:
            return  # the user has said something since, or another reply took over
        await self._replies.cancel()  # it was still producing into the cut turn
        rest = _unheard(" ".join(held.sentences), held.interrupted.delivered)
        if not rest:
            return
        turn = self.ctx.begin_turn()
        heard_before = " ".join(p for p in (self._heard_before, held.interrupted.delivered) if p)
        spoken = self._saying(turn)
        self._replies.start(self._speak(turn, _single(rest), spoken), turn.event_id)
        self._history_reply, self._heard_before = turn.event_id, heard_before

    def _saying(self, turn: AgentTurn) -> list[str]:
        """A new list of the sentences ``turn`` will say, kept for a resume (the last few)."""
        spoken: list[str] = []
        self._said[turn] = spoken
        while len(self._said) > 4:
            del self._said[next(iter(self._said))]
        return spoken

    def _keep_heard(self, interrupted: Interrupted | None) -> None:
        if (
            interrupted is not None
            and interrupted.event_id == self._history_reply
            and self.history
            and self.history[-1].role == "assistant"
        ):
            heard = " ".join(p for p in (self._heard_before, interrupted.delivered) if p)
            if heard:
                self.history[-1] = ChatMessage("assistant", heard)
            else:
                self.history.pop()  # nothing was heard: the request is still unanswered

    async def _reply(self, turn: AgentTurn, text: str, ctx: AgentContext | None = None) -> None:
        ctx = ctx if ctx is not None else self.ctx
        if self.history and self.history[-1].role == "user":
            # The previous reply was cut off before the agent said anything (or before it was
            # produced at all): what the user said then and now is one request.
            text = f"{self.history.pop().content} {text}"
        self.history.append(ChatMessage("user", text))
        history.trim_history(self.history)
        t0 = _now()
        pieces = self.brain.respond(
            list(self.history),
            system_prompt=self._system_prompt(),
            tools=ctx.agent.tools,
            call_tool=lambda name, params: self._call_tool(ctx, turn, name, params),
        )
        spoken = self._saying(turn)
        try:
            await self._speak(turn, _sentences(_timed(pieces, turn, ctx, t0)), spoken, ctx)
        except BrainError as exc:
            await ctx.fail("llm_error", str(exc))
        finally:
            reply = " ".join(spoken).strip()
            if reply:
                self.history.append(ChatMessage("assistant", reply))
                self._history_reply, self._heard_before = turn.event_id, ""

    async def _speak(
        self,
        turn: AgentTurn,
        sentences: AsyncIterator[str],
        spoken: list[str] | None = None,
        ctx: AgentContext | None = None,
    ) -> None:
        """Synthesise sentence by sentence while the brain is still producing the next ones.

        The reply text goes out as one ``agent_response`` once the brain has finished (as
        ElevenLabs does), usually while the first sentence is already playing.
        """
        ctx = ctx if ctx is not None else self.ctx
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
                await ctx.agent_response(turn, " ".join(heard))

        producer = asyncio.create_task(produce())
        t0 = _now()
        first_audio = True
        synth_s = audio_s = 0.0
        try:
            while (sentence := await queue.get()) is not None:
                if ctx.agent.text_only:
                    continue
                pieces = split_first_clause(sentence) if first_audio else [sentence]
                chunks = (c for piece in pieces for c in self.tts.synthesize(piece))
                while True:
                    t_chunk = _now()
                    chunk = await self._next_chunk(ctx, chunks)
                    if chunk is None:
                        break
                    synth_s += _now() - t_chunk
                    audio_s += chunk.pcm.size / SAMPLE_RATE
                    if first_audio:
                        ms = (_now() - t0) * 1000
                        await ctx.stage(turn, "tts_first_audio", ms)
                        first_audio = False
                    await ctx.agent_audio(turn, chunk.pcm, chunk.alignment)
            await producer
            if audio_s:  # real-time factor = tts_synth / tts_audio
                await ctx.stage(turn, "tts_synth", synth_s * 1000)
                await ctx.stage(turn, "tts_audio", audio_s * 1000)
            await ctx.finish_audio(turn)
        finally:
            # Wait for the producer to stop too: a cancelled reply (barge-in, a withdrawn
            # draft) must not leave a task behind for the loop to find at shutdown.
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer

    async def _next_chunk(self, ctx: AgentContext, chunks: Any) -> Any:
        try:
            return await self._run(next, chunks, None)
        except Exception as exc:
            log.exception("text-to-speech failed")
            await ctx.fail("tts_cascade_error", f"text-to-speech failed: {exc}")
            return None

    async def _call_tool(
        self, ctx: AgentContext, turn: AgentTurn, name: str, params: dict[str, Any]
    ) -> ToolResult:
        t0 = _now()
        result = await ctx.call_tool(turn, name, params)
        await ctx.stage(turn, "tool", (_now() - t0) * 1000)
        return result

    def _system_prompt(self) -> str:
        notes = [n for n in self._context_notes.values() if n]
        prompt = self.ctx.agent.prompt
        if notes:
            prompt += "\n\nContext from the application:\n" + "\n".join(f"- {n}" for n in notes)
        return prompt


def _now() -> float:
    """The adapter's clock: the event loop's, so a simulated loop runs simulated time."""
    return asyncio.get_running_loop().time()


def _unheard(text: str, heard: str) -> str:
    """``text`` after the words of ``heard`` (whole words, as the conversation core counts
    what was heard)."""
    words = text.split()
    return " ".join(words[len(heard.split()) :])


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
            await ctx.stage(turn, "brain_first_text", (_now() - t0) * 1000)
            first = False
        yield piece
    await ctx.stage(turn, "brain", (_now() - t0) * 1000)
