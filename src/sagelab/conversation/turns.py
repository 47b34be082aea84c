"""Turn-taking for a listening agent, sans I/O: which audio is a user turn, and when to answer.

``TurnTaker`` is fed the user's audio with the time it arrived and the results of the
speech-to-text jobs it asked for; it returns actions (start or cancel a transcription, barge
in, a user turn is heard). It never reads a clock, starts a task or touches a model, so the
same object runs in real time inside the server and in simulated time in the tests, where
every chunk size, pause pattern and model delay can be tried.

The guarantee it exists for: **every sample of detected speech is transcribed exactly once,
in order.** Audio is addressed by absolute sample offsets in the session's input stream, and
an utterance is a half-open range ``[start, end)`` cut from one buffer:

- an utterance starts at the detector's ``speech_start`` minus the pre-roll, but never before
  the end of the previous one, so two ranges never overlap;
- it ends where the detector *decided* the turn was over (everything up to that sample,
  including the silence it waited through), or, for a monologue longer than
  ``max_utterance_s``, where the limit was reached (the next range starts there);
- each range is transcribed by exactly one job whose result is used; a speculative job started
  during a pause is used only if the pause it was started in is the one that ended the turn,
  and is cancelled otherwise;
- results are released in range order whatever order the jobs finish in.

Long turns are transcribed while the user goes on (``split_after_s``): once the utterance
under way is that long, the next pause that got a speculative transcription is kept as a cut
instead of being thrown away when the user resumes (if the pause was heard to last
``SPLIT_MARGIN_MS`` past the transcribed audio). The piece before it is a turn released
with ``final=False``, and the next range starts exactly where it ended, so the rules above
hold unchanged; at the real end of the turn only the audio since the last cut is left to
transcribe, however long the user talked. The cut is in a pause the detector heard, so no
word is split (the ``max_utterance_s`` limit, the last resort, may split one).

When the user goes on talking after a turn ended (they only paused, or they talk over the
reply), nothing is thrown away: the earlier turn's transcript is released with
``final=False``, and the reply waits for the utterance that follows, so the request is
answered as one. A reply that had started but said nothing by then is the caller's to merge
(the caller knows what was heard; see ``LocalAgent``).

Semantic end of turn
--------------------
With an :class:`~sagelab.agents.local.endofturn.EndOfTurnPolicy` that uses a model, silence
alone no longer ends a turn early. The detector's own end-of-silence wait is the policy's
fallback (``max_silence_ms``); the turn-taker follows the current pause through the detector's
``silence_start`` and, at ``min_silence_ms``, asks the model (``PredictEndOfTurn``) and starts
the speculative transcription of the same pause, so speech-to-text runs while the model
thinks. The answer comes back as an input (``end_of_turn(job, probability, now)``); if the
policy says *end*, the turn ends where the model's audio ended, exactly as if the detector
had decided there, and the speculative transcript is the turn's. If the user speaks again
before the detector's own wait is over (it still counts them as speaking), the next utterance
starts where the ended one stopped, so the range rules above hold unchanged.

Drafts
------
A speculative transcript that lands while its pause is still open, with nothing earlier
pending, is offered as a ``Draft``: if the pause ends the turn, that text is the turn's. The
caller may prepare its reply meanwhile, saying nothing until the ``UserTurn`` with the same
``job`` confirms it; a ``CancelTranscription`` of that job, a ``UserTurn`` of it that is not
final (the pause became a cut in a long turn) or a confirmed ``BargeIn`` withdraws it.
The turn-taker itself does nothing differently for a draft.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sagelab.agents.turns import TurnEvent

if TYPE_CHECKING:  # only a type: the core must not import the model package
    from sagelab.agents.local.endofturn import EndOfTurnPolicy, Verdict

SAMPLE_RATE = 16_000

__all__ = [
    "BargeIn",
    "CancelEndOfTurn",
    "CancelTranscription",
    "Draft",
    "FalseBargeIn",
    "PredictEndOfTurn",
    "SpeechDetector",
    "Transcribe",
    "TranscriptionFailed",
    "TurnAction",
    "TurnTaker",
    "UserTurn",
]


class SpeechDetector(Protocol):
    """What turn-taking needs from a voice activity detector (Silero or energy based)."""

    def feed(self, pcm: np.ndarray) -> list[TurnEvent]: ...

    @property
    def silence_start(self) -> int | None:
        """While speaking: where the current pause began; else None."""
        ...

    @property
    def voice_at(self) -> int | None:
        """While not speaking: where speech may be starting, before the detector confirms
        it (an early hint for barge-in); None when there is no such hint."""
        ...

    @property
    def judged(self) -> int:
        """Samples the detector has judged (fed, less a partial window it still holds): a
        pause is known to go on only this far."""
        ...


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcribe:
    """Start speech-to-text on ``audio`` (samples ``[start, end)``); answer with ``job``."""

    job: int
    audio: np.ndarray = field(repr=False)
    start: int
    end: int
    speculative: bool = False


@dataclass(frozen=True)
class CancelTranscription:
    """The result of ``job`` will not be used (the user went on talking)."""

    job: int


@dataclass(frozen=True)
class Draft:
    """The speculative transcript of the pause under way: if this pause ends the turn, ``text``
    is the turn's (it comes back as the ``UserTurn`` with the same ``job``, ``final`` and with
    nothing before it still pending).

    The caller may prepare its reply now, while the end of turn is still being decided, as
    long as nothing of it reaches the user: the final ``UserTurn`` confirms the draft; a
    ``CancelTranscription`` of ``job`` or a ``UserTurn`` of it with ``final=False`` (the user
    went on) or a confirmed ``BargeIn`` withdraws it.
    """

    job: int
    text: str
    start: int
    end: int


def _ends(verdict: Verdict) -> bool:
    """``Verdict.END``, compared by value so the core needs no import of the model package."""
    return verdict.value == "end"


@dataclass(frozen=True)
class PredictEndOfTurn:
    """Ask the end-of-turn model whether the user has finished, from ``audio`` (samples
    ``[start, end)``: the utterance so far, its trailing silence included); answer with
    ``TurnTaker.end_of_turn(job, probability, now)``."""

    job: int
    audio: np.ndarray = field(repr=False)
    start: int
    end: int


@dataclass(frozen=True)
class CancelEndOfTurn:
    """The answer to ``job`` will not be used (the user spoke again, or the turn ended)."""

    job: int


@dataclass(frozen=True)
class BargeIn:
    """The user started talking: whatever the agent is saying must stop.

    ``provisional``: only the detector's early hint (``voice_at``) says so, a window or two
    into what may be speech. Cut what is playing, nothing more: a ``FalseBargeIn`` follows
    if the hint fades without speech (what was cut may go on), a confirmed ``BargeIn`` if it
    was speech (then drop the rest as for any barge-in).
    """

    sample: int
    provisional: bool = False


@dataclass(frozen=True)
class FalseBargeIn:
    """The hint a provisional ``BargeIn`` acted on faded without becoming speech (a click, a
    breath): what it cut may go on. ``sample`` is the hint's, as in that ``BargeIn``."""

    sample: int


@dataclass(frozen=True)
class UserTurn:
    """A transcribed utterance, released in order.

    ``final`` says the user is done (no speech under way, nothing earlier pending): reply to
    everything heard since the last final turn. ``endpointing_ms`` is the audio the detector
    needed after the end of speech to decide (None for a split monologue), ``stt_wait_ms`` the
    time from that decision to the transcript, ``stt_compute_ms`` the model's own time.
    ``eot_model_ms`` is, when the end-of-turn model ended the turn, the time from asking it to
    its answer (part of ``endpointing_ms``); None when silence ended it.
    """

    text: str
    start: int
    end: int
    final: bool
    endpointing_ms: float | None
    stt_wait_ms: float
    stt_compute_ms: float
    eot_model_ms: float | None = None
    job: int | None = None  # the transcription it came from (a ``Draft``'s, if there was one)

    @property
    def utterance_ms(self) -> float:
        return (self.end - self.start) * 1000 / SAMPLE_RATE


@dataclass(frozen=True)
class TranscriptionFailed:
    """Speech-to-text failed on samples ``[start, end)``; the caller reports it."""

    start: int
    end: int
    message: str


TurnAction = (
    Transcribe
    | CancelTranscription
    | Draft
    | PredictEndOfTurn
    | CancelEndOfTurn
    | BargeIn
    | FalseBargeIn
    | UserTurn
    | TranscriptionFailed
)


@dataclass(eq=False)
class _Segment:
    start: int
    end: int
    ended_at: float
    endpointing_ms: float | None
    job: int
    text: str | None = None
    compute_ms: float = 0.0
    done_at: float | None = None
    error: str | None = None
    eot_model_ms: float | None = None


@dataclass
class _Guess:
    silence_start: int
    job: int
    end: int
    quiet_until: int  # samples fed when the detector last reported this pause


# How much longer than its speculative transcription a pause must be seen to last before it
# may become a cut: a detector reports speech resuming a window or three after it does (Silero
# rises late on a soft onset), and a cut must not take the first sound of the next word.
SPLIT_MARGIN_MS = 100


@dataclass
class _Pause:
    """What the end-of-turn model was asked, and said, about the current pause."""

    silence_start: int
    asked: int = 0  # questions asked in this pause
    job: int | None = None  # the question in flight
    end: int = 0  # samples fed when last asked: the audio the model judged
    asked_at: float = 0.0
    probability: float | None = None  # the latest answer
    model_ms: float | None = None  # how long the latest answer took


class TurnTaker:
    """One session's turn-taking state. Inputs carry their time; outputs are actions.

    ``end_of_turn`` (optional) is the policy that ends a pause: without one, or with a
    silence-only policy, the detector's ``speech_end`` (and the policy's silence limit) end
    turns as before. ``ask_ahead_ms`` asks the model that much before the policy's
    ``min_silence_ms``, so its time is hidden in the silence; the turn still never ends
    before ``min_silence_ms``. ``model_patience_ms`` (None: wait up to ``max_silence_ms``)
    bounds the wait for the model's first answer: when the silence reaches
    ``min_silence_ms + model_patience_ms`` with no answer, the turn ends there, as the silence
    rule of that length would end it. With a model policy, build the detector with the policy's
    ``max_silence_ms`` as its own wait (the fallback); a shorter detector wait would end turns
    before the model is ever asked. ``split_after_s`` (None: off) cuts a turn that long at its
    next speculated pause, so it is transcribed in pieces while the user talks (module
    docstring); it needs ``speculate_after_ms``.
    """

    def __init__(
        self,
        detector: SpeechDetector,
        *,
        preroll_ms: float = 300,
        max_utterance_s: float = 30.0,
        speculate_after_ms: float | None = 160,
        end_of_turn: EndOfTurnPolicy | None = None,
        ask_ahead_ms: float = 0.0,
        model_patience_ms: float | None = None,
        split_after_s: float | None = None,
    ) -> None:
        if preroll_ms < 0 or max_utterance_s <= 0 or ask_ahead_ms < 0:
            raise ValueError("preroll_ms and ask_ahead_ms must be >= 0 and max_utterance_s > 0")
        if split_after_s is not None and split_after_s <= 0:
            raise ValueError(f"split_after_s must be > 0 or None, got {split_after_s}")
        self._split = None if split_after_s is None else int(split_after_s * SAMPLE_RATE)
        if model_patience_ms is not None and model_patience_ms < 0:
            raise ValueError(f"model_patience_ms must be >= 0 or None, got {model_patience_ms}")
        self._patience = model_patience_ms
        self.detector = detector
        self.policy = end_of_turn
        self._preroll = int(preroll_ms * SAMPLE_RATE / 1000)
        self._max = int(max_utterance_s * SAMPLE_RATE)
        # Silences (ms) at which the model is asked: the policy's points, ``ask_ahead_ms``
        # early, so that its answer is there when the policy may use it.
        self._asks = [
            max(0.0, ms - ask_ahead_ms) for ms in (end_of_turn.asks_at() if end_of_turn else [])
        ]
        speculate = speculate_after_ms
        if self._asks:
            # The transcript is wanted by the time the model answers: speculate at the
            # question at the latest, so speech-to-text and the model run side by side.
            speculate = self._asks[0] if speculate is None else min(speculate, self._asks[0])
        self._speculate = None if speculate is None else int(speculate * SAMPLE_RATE / 1000)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (first sample, pcm)
        self._fed = 0
        self._utterance: int | None = None  # start of the utterance under way
        self._last_end = 0
        self._segments: deque[_Segment] = deque()
        self._jobs = itertools.count(1)
        self._guess: _Guess | None = None
        self._guess_results: dict[int, tuple[str, float, float]] = {}
        self._guess_errors: dict[int, str] = {}
        self._pause: _Pause | None = None
        # The pause in which the policy ended a turn while the detector, whose own wait is
        # longer, still counts the user as speaking: speech before that wait is over is a new
        # utterance that the detector will not announce with a ``speech_start``.
        self._ended_in: int | None = None
        # The detector's hint a provisional ``BargeIn`` was sent for, until it is confirmed
        # or withdrawn.
        self._hinted: int | None = None

    # -- state for adapters and tests ----------------------------------------------------

    @property
    def samples_fed(self) -> int:
        return self._fed

    @property
    def user_speaking(self) -> bool:
        return self._utterance is not None

    @property
    def pending(self) -> int:
        """Utterances cut but not yet released (waiting for their transcript or an earlier one)."""
        return len(self._segments)

    # -- inputs ----------------------------------------------------------------------------

    def audio(self, pcm: np.ndarray, now: float) -> list[TurnAction]:
        """A chunk of user audio (16 kHz PCM16, any size) that arrived at ``now``."""
        events = self.detector.feed(pcm)
        if pcm.size:
            self._chunks.append((self._fed, pcm))
            self._fed += pcm.size
        actions: list[TurnAction] = []
        for event in events:
            if event.kind == "speech_start":
                self._ended_in = None
                if self._utterance is None:
                    self._utterance = max(self._last_end, event.sample - self._preroll)
                    actions.extend(self._drop_guess())
                    actions.append(BargeIn(event.sample))
                continue
            if self._utterance is None and self._ended_in is not None:
                if event.sample == self._ended_in:
                    self._ended_in = None  # the detector's wait caught up with the policy
                    continue
                # Within this chunk the user spoke again after the ended pause and stopped.
                actions.extend(self._resume())
            if self._utterance is not None:
                end = event.decided if event.decided is not None else self._fed
                end = max(self._utterance, min(end, self._fed))
                endpointing = (self._fed - event.sample) * 1000 / SAMPLE_RATE
                actions.extend(self._end_utterance(end, now, max(0.0, endpointing), event.sample))
        if self._ended_in is not None and self.detector.silence_start != self._ended_in:
            actions.extend(self._resume())
        actions.extend(self._follow_hint())
        if self._utterance is not None and self._fed - self._utterance > self._max:
            # A monologue longer than the limit is transcribed in pieces rather than held.
            actions.extend(self._drop_guess())
            actions.extend(self._end_utterance(self._fed, now, None, None))
            self._utterance = self._fed
        actions.extend(self._maybe_speculate(now))
        actions.extend(self._consult_policy(now))
        self._trim()
        actions.extend(self._release(now))
        return actions

    def end_of_turn(self, job: int, probability: float, now: float) -> list[TurnAction]:
        """The answer to a ``PredictEndOfTurn``: P(the user has finished) in [0, 1]."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        pause = self._pause
        if pause is None or pause.job != job or self._utterance is None or self.policy is None:
            return []  # stale: the user spoke again, or the turn ended otherwise
        pause.job, pause.probability = None, probability
        pause.model_ms = max(0.0, (now - pause.asked_at) * 1000)
        silence_ms = self._silence_ms(pause.silence_start)
        if not _ends(self.policy.decide(silence_ms, probability)):
            return []  # not finished; or finished, and the silence is not long enough yet
        actions = self._end_by_policy(pause.end, now, pause.model_ms)
        actions.extend(self._release(now))
        return actions

    def end_of_turn_failed(self, job: int, message: str, now: float) -> list[TurnAction]:
        """The model could not answer: the pause is left to the silence fallback."""
        pause = self._pause
        if pause is not None and pause.job == job:
            pause.job, pause.probability = None, 0.0
        return []

    def transcribed(self, job: int, text: str, compute_ms: float, now: float) -> list[TurnAction]:
        """The result of a ``Transcribe`` job."""
        segment = self._segment_for(job)
        if segment is None:
            guess = self._guess
            if guess is None or guess.job != job:
                return []
            self._guess_results[job] = (text, compute_ms, now)
            if text.strip() and not self._segments and self._utterance is not None:
                # Nothing earlier is pending, so if this pause ends the turn, this is the
                # last text of the request: the caller can prepare the reply meanwhile.
                return [Draft(job, text.strip(), self._utterance, guess.end)]
            return []
        segment.text, segment.compute_ms, segment.done_at = text, compute_ms, now
        return self._release(now)

    def transcription_failed(self, job: int, message: str, now: float) -> list[TurnAction]:
        segment = self._segment_for(job)
        if segment is None:
            if self._guess is not None and self._guess.job == job:
                self._guess_errors[job] = message
            return []
        segment.text, segment.error, segment.done_at = "", message, now
        return self._release(now)

    # -- internals -------------------------------------------------------------------------

    def _segment_for(self, job: int) -> _Segment | None:
        return next((s for s in self._segments if s.job == job), None)

    def _end_utterance(
        self,
        end: int,
        now: float,
        endpointing_ms: float | None,
        silence_start: int | None,
        eot_model_ms: float | None = None,
    ) -> list[TurnAction]:
        assert self._utterance is not None
        start, self._utterance = self._utterance, None
        self._last_end = end
        actions: list[TurnAction] = self._drop_pause()
        guess = self._guess
        if guess is not None and silence_start is not None and guess.silence_start == silence_start:
            # The pause the guess was made in is the one that ended the turn, so its transcript
            # is the turn's. The turn ends where the guess's audio ended: what came after is
            # the same pause as far as the detector could tell, and stays available as the
            # next utterance's pre-roll, in case a soft onset hid in it.
            self._last_end = guess.end
            self._keep_guess(start, now, endpointing_ms).eot_model_ms = eot_model_ms
            return actions
        actions.extend(self._drop_guess())
        job = next(self._jobs)
        segment = _Segment(start, end, now, endpointing_ms, job)
        segment.eot_model_ms = eot_model_ms
        self._segments.append(segment)
        actions.append(Transcribe(job, self._slice(start, end), start, end))
        return actions

    def _resume(self) -> list[TurnAction]:
        """The user spoke again in a pause the policy had ended: a new utterance, from where
        the ended one stopped (the detector gives no onset here; nothing is skipped)."""
        self._ended_in = None
        self._utterance = self._last_end
        actions = self._drop_guess()
        actions.append(BargeIn(self._fed))
        return actions

    def _follow_hint(self) -> list[TurnAction]:
        """A provisional ``BargeIn`` when the detector hints at speech, and a ``FalseBargeIn``
        when the hint fades before any utterance starts."""
        if self._utterance is not None:
            self._hinted = None  # confirmed (an onset, or speech resumed in an ended pause)
            return []
        hint = self.detector.voice_at
        if self._hinted is None:
            if hint is None:
                return []
            self._hinted = hint
            return [BargeIn(hint, provisional=True)]
        if hint is None:
            sample, self._hinted = self._hinted, None
            return [FalseBargeIn(sample)]
        return []

    def _consult_policy(self, now: float) -> list[TurnAction]:
        """Ask the model, or end the turn, as the policy says for the current pause."""
        if self.policy is None or self._utterance is None:
            return []
        silence = self.detector.silence_start
        actions: list[TurnAction] = []
        if self._pause is not None and self._pause.silence_start != silence:
            actions.extend(self._drop_pause())
        if silence is None:
            return actions
        if self._pause is None:
            self._pause = _Pause(silence)
        pause, policy = self._pause, self.policy
        silence_ms = self._silence_ms(silence)
        if silence_ms < policy.max_silence_ms:
            fed_ms = (self._fed - silence) * 1000 / SAMPLE_RATE  # asking early costs nothing
            due = (
                pause.asked < len(self._asks)
                and fed_ms >= self._asks[pause.asked]
                and not self._finished(pause.probability)  # an answer in hand is kept
            )
            if due and pause.job is None and self._fed > self._utterance:
                # (An utterance just split from a monologue has no audio to judge yet.)
                pause.asked += 1
                pause.job, pause.end, pause.asked_at = next(self._jobs), self._fed, now
                pause.probability = pause.model_ms = None
                audio = self._slice(self._utterance, self._fed)
                actions.append(PredictEndOfTurn(pause.job, audio, self._utterance, self._fed))
                return actions
            patience = self._patience
            late = (
                patience is not None
                and pause.job is not None
                and pause.asked == 1
                and silence_ms >= policy.min_silence_ms + patience
            )
            if late and patience is not None:
                # The model is slower than the silence it was meant to save (a loaded
                # machine): the silence rule at this length decides instead, so the turn ends
                # no later, and cuts no more often, than that rule would.
                limit = silence + int((policy.min_silence_ms + patience) * SAMPLE_RATE / 1000)
                actions.extend(self._end_by_policy(min(self._fed, limit), now, None))
                return actions
            if pause.job is not None or pause.probability is None:
                return actions  # the answer is awaited (or there is no model)
        verdict = policy.decide(silence_ms, pause.probability)
        if not _ends(verdict):
            return actions
        if silence_ms < policy.max_silence_ms:
            # The model said "finished" and the silence is now long enough: the turn ends
            # where the audio it judged ended.
            actions.extend(self._end_by_policy(pause.end, now, pause.model_ms))
        else:
            # The silence limit: the turn ends where the limit was reached, as the detector's
            # own ``speech_end`` would have ended it.
            limit = silence + int(policy.max_silence_ms * SAMPLE_RATE / 1000)
            actions.extend(self._end_by_policy(min(self._fed, limit), now, None))
        return actions

    def _silence_ms(self, silence_start: int) -> float:
        """How long the pause is known to have lasted: only as far as the detector judged
        the audio (the rest of the last chunk may be the user speaking again)."""
        return (min(self._fed, self.detector.judged) - silence_start) * 1000 / SAMPLE_RATE

    def _finished(self, probability: float | None) -> bool:
        """The model's answer says the user is done (no re-ask can improve on that)."""
        threshold = self.policy.threshold if self.policy is not None else None
        return probability is not None and threshold is not None and probability >= threshold

    def _end_by_policy(self, end: int, now: float, eot_model_ms: float | None) -> list[TurnAction]:
        assert self._utterance is not None and self._pause is not None
        silence = self._pause.silence_start
        endpointing = max(0.0, (self._fed - silence) * 1000 / SAMPLE_RATE)
        actions = self._end_utterance(
            max(self._utterance, end), now, endpointing, silence, eot_model_ms
        )
        self._ended_in = silence
        return actions

    def _drop_pause(self) -> list[TurnAction]:
        pause, self._pause = self._pause, None
        if pause is None or pause.job is None:
            return []
        return [CancelEndOfTurn(pause.job)]

    def _maybe_speculate(self, now: float) -> list[TurnAction]:
        if self._utterance is None or self._speculate is None:
            return []
        silence = self.detector.silence_start
        actions: list[TurnAction] = []
        guess = self._guess
        if guess is not None and guess.silence_start == silence:
            guess.quiet_until = self._fed
        elif guess is not None:
            # The user went on after the pause the guess was made in: its transcript is not
            # the turn's, but in a long turn it is a piece worth keeping.
            if self._splits_at(guess):
                self._split_at_guess(guess, now)
            else:
                actions.extend(self._drop_guess())
        if silence is None or self._guess is not None:
            return actions
        if self._fed - silence < self._speculate:
            return actions
        job = next(self._jobs)
        self._guess = _Guess(silence, job, self._fed, self._fed)
        start = self._utterance
        actions.append(Transcribe(job, self._slice(start, self._fed), start, self._fed, True))
        return actions

    def _splits_at(self, guess: _Guess) -> bool:
        """A pause is a cut in a turn long enough to cut, if it was heard to go on for the
        margin past the end of its guess (so the next word began after that end)."""
        assert self._utterance is not None
        margin = SPLIT_MARGIN_MS * SAMPLE_RATE // 1000
        return (
            self._split is not None
            and guess.end - self._utterance >= self._split
            and guess.quiet_until - guess.end >= margin
        )

    def _split_at_guess(self, guess: _Guess, now: float) -> None:
        """Keep the guess's range as a piece of the turn under way (see ``split_after_s``)."""
        assert self._utterance is not None
        self._keep_guess(self._utterance, now, None)
        self._utterance = self._last_end = guess.end

    def _keep_guess(self, start: int, now: float, endpointing_ms: float | None) -> _Segment:
        """The guess's job becomes the transcription of ``[start, guess.end)``, with its result
        (or failure) if it already came."""
        guess, self._guess = self._guess, None
        assert guess is not None
        segment = _Segment(start, guess.end, now, endpointing_ms, guess.job)
        if guess.job in self._guess_results:
            segment.text, segment.compute_ms, segment.done_at = self._guess_results.pop(guess.job)
        elif guess.job in self._guess_errors:
            segment.text, segment.error = "", self._guess_errors.pop(guess.job)
            segment.done_at = now
        self._segments.append(segment)
        return segment

    def _drop_guess(self) -> list[TurnAction]:
        guess, self._guess = self._guess, None
        if guess is None:
            return []
        self._guess_results.pop(guess.job, None)
        self._guess_errors.pop(guess.job, None)
        return [CancelTranscription(guess.job)]

    def _release(self, now: float) -> list[TurnAction]:
        """Release finished utterances in order; a later one never overtakes an earlier one."""
        actions: list[TurnAction] = []
        while self._segments and self._segments[0].done_at is not None:
            s = self._segments.popleft()
            assert s.done_at is not None
            if s.error is not None:
                actions.append(TranscriptionFailed(s.start, s.end, s.error))
            final = not self._segments and self._utterance is None
            actions.append(
                UserTurn(
                    text=(s.text or "").strip(),
                    start=s.start,
                    end=s.end,
                    final=final,
                    endpointing_ms=s.endpointing_ms,
                    stt_wait_ms=max(0.0, (s.done_at - s.ended_at) * 1000),
                    stt_compute_ms=s.compute_ms,
                    eot_model_ms=s.eot_model_ms,
                    job=s.job,
                )
            )
        return actions

    def _slice(self, start: int, end: int) -> np.ndarray:
        parts = []
        for first, pcm in self._chunks:
            last = first + pcm.size
            if last <= start:
                continue
            if first >= end:
                break
            parts.append(pcm[max(0, start - first) : min(pcm.size, end - first)])
        if not parts:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def _trim(self) -> None:
        """Keep only audio that may still be cut: the utterance under way, or the pre-roll."""
        if self._utterance is not None:
            keep = self._utterance
        elif self._ended_in is not None:
            keep = self._last_end  # the user may still go on from there
        else:
            # A ``speech_start`` is reported after the onset (the detector needs some speech to
            # be sure): keep the pre-roll plus a second of margin for that delay.
            keep = max(self._last_end, self._fed - self._preroll - SAMPLE_RATE)
        while self._chunks and self._chunks[0][0] + self._chunks[0][1].size <= keep:
            self._chunks.popleft()
