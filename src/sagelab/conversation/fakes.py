"""Fakes for what is slow (speech-to-text, text-to-speech) and for the user's voice, with
timing that a test scripts, so conversation behaviour can be checked in simulated time.

The fakes behave like the real models where the core can tell: ``FakeSTT`` returns a
``Transcript`` as ``WhisperSTT`` does, ``FakeTTS`` yields ``SpeechChunk``s sentence by sentence
as ``PiperTTS`` does. What they add is *traceability*: the user's "speech" is built by
``MarkedSpeech`` so that every 10 ms unit of it carries its own sample value, and ``FakeSTT``
"transcribes" audio by reading those values back. A transcript therefore says exactly which
pieces of the user's speech reached it, and a test can check that each piece was transcribed
once, in order, however the audio was chunked, paused and cut into turns.

Real models keep their own tests (``tests/local``); these are for the core.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from sagelab.agents.local.stt import Transcript
from sagelab.agents.local.tts import SpeechChunk

SAMPLE_RATE = 16_000
UNIT = 160  # samples in one traceable unit of speech (10 ms)
_BASE = 1000  # sample value of unit 0; loud enough for any detector (about -30 dBFS)
_MAX_UNITS = 32767 - _BASE
_TOKEN = re.compile(r"u(\d+)x(\d+)")


@dataclass
class MarkedSpeech:
    """A user's audio: silences and speech runs, every speech unit marked with its index.

    ``add_speech(ms)`` and ``add_silence(ms)`` append to the stream; ``pcm`` is the result.
    Speech is a constant-level signal (a detector's idea of speech, not a voice): use the
    energy detector or a scripted one with it, not Silero.
    """

    parts: list[np.ndarray] = field(default_factory=list)
    units: int = 0
    samples: int = 0
    speech_ranges: list[tuple[int, int]] = field(default_factory=list)

    def add_silence(self, ms: float) -> MarkedSpeech:
        n = int(ms * SAMPLE_RATE / 1000)
        self.parts.append(np.zeros(n, dtype=np.int16))
        self.samples += n
        return self

    def add_speech(self, ms: float) -> MarkedSpeech:
        n_units = max(1, round(ms / 10))
        if self.units + n_units > _MAX_UNITS:
            raise ValueError("MarkedSpeech holds at most about 317 s of speech")
        values = np.arange(self.units, self.units + n_units, dtype=np.int32) + _BASE
        self.parts.append(np.repeat(values, UNIT).astype(np.int16))
        self.speech_ranges.append((self.samples, self.samples + n_units * UNIT))
        self.units += n_units
        self.samples += n_units * UNIT
        return self

    def add_click(self, ms: float) -> MarkedSpeech:
        """A loud burst that is not speech (a click, a knock): no unit, nothing to transcribe,
        but a detector hears it."""
        n = int(ms * SAMPLE_RATE / 1000)
        self.parts.append(np.full(n, -_BASE, dtype=np.int16))
        self.samples += n
        return self

    def with_clicks(self, clicks: Sequence[tuple[int, int]]) -> MarkedSpeech:
        """A copy with a click at each ``(at_ms, ms)``, over silence only, so every mark of
        speech stays readable."""
        pcm = self.pcm.copy()
        for at_ms, ms in clicks:
            segment = pcm[at_ms * 16 : (at_ms + ms) * 16]
            segment[segment == 0] = -_BASE
        return MarkedSpeech([pcm], self.units, self.samples, list(self.speech_ranges))

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.int16)


class LevelVad:
    """Silero's interface (``reset``, ``probabilities`` per 512-sample window) scoring how
    much of each window is loud: a window half into speech scores about 0.47, as Silero's
    probability rises over a word's first windows. For ``VadTurnDetector`` on
    ``MarkedSpeech``, where the real model would hear no voice."""

    def reset(self) -> None:
        pass

    def probabilities(self, pcm: np.ndarray) -> np.ndarray:
        windows = np.abs(pcm.astype(np.int32)).reshape(-1, 512)
        return (0.95 * (windows >= _BASE).mean(axis=1)).astype(np.float32)


def describe_units(pcm: np.ndarray) -> str:
    """The marked units in ``pcm`` as text, ``u<index>x<samples>`` per run, in order."""
    values = pcm[pcm >= _BASE].astype(np.int32) - _BASE
    if values.size == 0:
        return ""
    cuts = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], cuts])
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    return " ".join(f"u{values[s]}x{n}" for s, n in zip(starts, lengths, strict=True))


def heard_units(texts: list[str]) -> list[tuple[int, int]]:
    """Join transcripts (in the order released) into ``(unit, samples)`` runs; a unit cut in
    two by a turn boundary is joined back, so only a real repeat or loss shows."""
    runs: list[tuple[int, int]] = []
    for text in texts:
        for unit, n in ((int(u), int(n)) for u, n in _TOKEN.findall(text)):
            if runs and runs[-1][0] == unit:
                runs[-1] = (unit, runs[-1][1] + n)
            else:
                runs.append((unit, n))
    return runs


class FakeSTT:
    """Speech-to-text that reads the marks back (see the module docstring).

    ``delay_s`` is how long a call takes in the simulation; the adapter under test decides
    how to wait for it. ``calls`` records every audio length transcribed.
    """

    def __init__(self, delay_s: float = 0.2) -> None:
        self.delay_s = delay_s
        self.calls: list[int] = []

    def transcribe(self, pcm16k: np.ndarray) -> Transcript:
        self.calls.append(int(pcm16k.size))
        return Transcript(describe_units(pcm16k), pcm16k.size / SAMPLE_RATE, self.delay_s, None)


def last_unit(pcm: np.ndarray) -> int | None:
    """The index of the last marked unit of speech in ``pcm`` (None: no speech in it)."""
    values = pcm[pcm >= _BASE]
    return int(values[-1]) - _BASE if values.size else None


class FakeEndOfTurn:
    """An end-of-turn model (``EndOfTurnModel``) whose answers the test scripts.

    ``answer`` is either a function of the audio asked about (it can read the marks back with
    :func:`last_unit`, e.g. to say "finished" only after the last unit of a sentence) or a
    sequence of probabilities used in turn, cycled. ``delay_s`` is how long a call takes in the
    simulation; ``calls`` records the length of every audio judged.
    """

    def __init__(
        self,
        answer: Callable[[np.ndarray], float] | Sequence[float] = (1.0,),
        delay_s: float = 0.05,
    ) -> None:
        self._answer = answer if callable(answer) else itertools.cycle(list(answer) or [1.0])
        self.delay_s = delay_s
        self.calls: list[int] = []

    def probability(self, audio: np.ndarray) -> float:
        self.calls.append(int(audio.size))
        if audio.size == 0:
            raise ValueError("an end-of-turn model needs some audio of the turn, got none")
        if callable(self._answer):
            return float(self._answer(audio))
        return float(next(self._answer))


class FakeTTS:
    """Text-to-speech that yields ``chunks`` pieces of audio per sentence, ``ms_per_char``
    of speech per character, with an exact character alignment."""

    native_rate = SAMPLE_RATE

    def __init__(self, ms_per_char: float = 60.0, chunks: int = 2, delay_s: float = 0.05) -> None:
        self.ms_per_char = ms_per_char
        self.chunks = max(1, chunks)
        self.delay_s = delay_s

    def synthesize(self, text: str) -> Iterator[SpeechChunk]:
        """Pieces cut between words (a piece keeps its trailing space), as a streaming TTS
        cuts at clause or word boundaries, never inside a word."""
        per_char = int(self.ms_per_char * SAMPLE_RATE / 1000)
        words = re.findall(r"\S+\s*", text)
        bounds = np.linspace(0, len(words), min(self.chunks, len(words)) + 1).round().astype(int)
        for a, b in itertools.pairwise(bounds.tolist()):
            piece = "".join(words[a:b])
            if not piece:
                continue
            pcm = np.full(len(piece) * per_char, 500, dtype=np.int16)
            alignment = [(c, i * per_char / SAMPLE_RATE) for i, c in enumerate(piece)]
            yield SpeechChunk(pcm=pcm, text=piece, alignment=alignment)
