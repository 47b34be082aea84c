"""Semantic end of turn: has the user finished, judged from the sound of the turn so far.

Silence alone cannot be both short and safe: people pause inside sentences ("front ...
center") for as long as they pause between turns, so a 200 ms silence rule cuts them off and a
500 ms one makes every reply wait half a second. An end-of-turn model listens to the turn (the
last 8 s of it, the trailing silence included) and says how likely it is that the speaker is
done: falling intonation and a complete phrase score high, a rising "and ..." scores low.

Two pieces, kept apart so the decision stays testable without a model or a clock:

* :class:`EndOfTurnPolicy` (pure): from the current silence and, once asked, the model's
  probability, decide *wait*, *ask the model* or *end the turn*. A silence-only rule is the
  same policy without a threshold.
* :class:`SmartTurn`: Smart Turn v3 (pipecat's BSD-2-Clause end-of-turn model, a Whisper-tiny
  encoder with a classifier head, ~8.7 MB ONNX) run with ONNX Runtime. The ONNX file is read
  from the installed ``pipecat-ai`` package (extra ``sagelab[turn]``); pipecat itself is
  never imported, only located, so its runtime dependencies are not loaded. The feature
  extraction is Whisper's 80-bin log-mel over an 8 s window, padded in front with zeros and
  normalised to zero mean and unit variance, as pipecat's own ``LocalSmartTurnAnalyzerV3``
  does (re-implemented here in numpy, checked against it in the tests).

Measured trade-offs and the recommended default: ``docs/turn-taking.md``.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sagelab.agents.local.errors import ModelLoadError
from sagelab.audio import PCM16, SAMPLE_RATE, ensure_pcm16

__all__ = [
    "MAX_AUDIO_S",
    "EndOfTurnModel",
    "EndOfTurnPolicy",
    "SmartTurn",
    "Verdict",
    "bundled_smart_turn_path",
    "get_smart_turn",
    "log_mel_features",
]

MAX_AUDIO_S = 8
"""Smart Turn v3 sees the last 8 s of the turn; anything earlier is dropped."""
_WINDOW = MAX_AUDIO_S * SAMPLE_RATE
_N_FFT = 400
_HOP = 160
_N_MELS = 80


@runtime_checkable
class EndOfTurnModel(Protocol):
    """Anything that scores "the speaker has finished" for the audio of a turn so far."""

    def probability(self, audio: PCM16) -> float:
        """P(turn complete) for 16 kHz PCM16 ending now (the trailing silence included)."""
        ...


class Verdict(enum.Enum):
    """What to do at this moment of silence."""

    WAIT = "wait"
    """Keep listening (too little silence, or the model said "not finished")."""
    ASK = "ask"
    """Enough silence to ask the end-of-turn model; call again with its probability."""
    END = "end"
    """The turn is over."""


@dataclass(frozen=True)
class EndOfTurnPolicy:
    """When a silence ends the user's turn. Pure: the caller supplies silence and probability.

    * below ``min_silence_ms`` of silence: wait;
    * from ``min_silence_ms`` on, with a ``threshold``: ask the model once (``ASK`` while
      ``probability`` is ``None``), then end if it says at least ``threshold``;
    * with ``likely_threshold`` and ``likely_silence_ms``: an answer below ``threshold`` but at
      least ``likely_threshold`` ("probably finished") ends the turn at ``likely_silence_ms``,
      so the wait shortens as the model grows surer instead of jumping from the shortest to
      the longest;
    * at ``max_silence_ms``: end whatever the model said (the fallback for a model that keeps
      saying "not finished" to someone who has stopped);
    * ``threshold=None``: silence only; the turn ends at ``max_silence_ms``.

    The caller asks once per silence: a new silence (after speech resumed) starts again with
    ``probability=None``. ``reask_ms``, when set, asks again every ``reask_ms`` of further
    silence after a "not finished", for models whose confidence grows with the silence they
    hear; the caller passes ``None`` again at those points, see :meth:`asks_at`.

    The defaults (400 ms, 0.9, 800 ms) are the measured recommendation: on the real speech
    set they cut no utterance off, as today's 400 ms silence rule, and when speakers hesitate
    700 ms mid-sentence they cut 7 of 21 where the silence rule cuts 16 (``docs/turn-taking.md``
    has the table, and the quicker ``EndOfTurnPolicy(200, 0.9, 800)`` with its price).
    """

    min_silence_ms: float = 400.0
    threshold: float | None = 0.9
    max_silence_ms: float = 800.0
    reask_ms: float | None = None
    likely_threshold: float | None = None
    likely_silence_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_silence_ms", "max_silence_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
        if self.min_silence_ms > self.max_silence_ms:
            raise ValueError(
                f"min_silence_ms ({self.min_silence_ms}) must not exceed max_silence_ms "
                f"({self.max_silence_ms})"
            )
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1) or None, got {self.threshold}")
        if self.reask_ms is not None and not self.reask_ms > 0:
            raise ValueError(f"reask_ms must be positive or None, got {self.reask_ms}")
        likely = (self.likely_threshold, self.likely_silence_ms)
        if (likely[0] is None) != (likely[1] is None):
            raise ValueError("likely_threshold and likely_silence_ms go together")
        if self.likely_threshold is not None and self.likely_silence_ms is not None:
            if self.threshold is None or not 0.0 < self.likely_threshold < self.threshold:
                raise ValueError(
                    f"likely_threshold must be in (0, threshold), got {self.likely_threshold}"
                )
            if not self.min_silence_ms <= self.likely_silence_ms <= self.max_silence_ms:
                raise ValueError(
                    "likely_silence_ms must be between min_silence_ms and max_silence_ms, "
                    f"got {self.likely_silence_ms}"
                )

    @classmethod
    def silence_only(cls, silence_ms: float) -> EndOfTurnPolicy:
        """Today's rule: the turn ends after ``silence_ms`` of silence, no model."""
        return cls(min_silence_ms=silence_ms, threshold=None, max_silence_ms=silence_ms)

    @property
    def uses_model(self) -> bool:
        return self.threshold is not None

    def asks_at(self) -> list[float]:
        """The silences (ms) at which the model is consulted, in order (empty without one)."""
        if self.threshold is None:
            return []
        points = [self.min_silence_ms]
        if self.reask_ms is not None:
            while points[-1] + self.reask_ms < self.max_silence_ms:
                points.append(points[-1] + self.reask_ms)
        return points

    def decide(self, silence_ms: float, probability: float | None = None) -> Verdict:
        """The verdict after ``silence_ms`` of silence, given the model's latest answer for
        this silence (``None``: not asked yet, or a re-ask is due)."""
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if silence_ms >= self.max_silence_ms:
            return Verdict.END
        if self.threshold is None or silence_ms < self.min_silence_ms:
            return Verdict.WAIT
        if probability is None:
            return Verdict.ASK
        if probability >= self.threshold:
            return Verdict.END
        if (
            self.likely_threshold is not None
            and self.likely_silence_ms is not None
            and probability >= self.likely_threshold
            and silence_ms >= self.likely_silence_ms
        ):
            return Verdict.END
        return Verdict.WAIT


# -- Whisper log-mel features (as transformers' WhisperFeatureExtractor, chunk_length=8) ------


def _mel_filters() -> npt.NDArray[np.float64]:
    """Slaney-scale, Slaney-normalised triangular filters, ``[n_fft // 2 + 1, 80]``."""

    def hz_to_mel(f: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        mel = 3.0 * f / 200.0
        log = f >= 1000.0
        mel[log] = 15.0 + np.log(f[log] / 1000.0) * (27.0 / np.log(6.4))
        return mel

    def mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        f = 200.0 * m / 3.0
        log = m >= 15.0
        f[log] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log] - 15.0))
        return f

    edges = np.array([0.0, SAMPLE_RATE / 2], dtype=np.float64)
    lo, hi = hz_to_mel(edges.copy())
    hz = mel_to_hz(np.linspace(lo, hi, _N_MELS + 2))
    fft_hz = np.linspace(0, SAMPLE_RATE // 2, _N_FFT // 2 + 1)
    slopes = hz[None, :] - fft_hz[:, None]
    diff = np.diff(hz)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (hz[2:] - hz[:-2]))[None, :]


_FILTERS = _mel_filters()
_HANN = np.hanning(_N_FFT + 1)[:-1]  # periodic, as torch.hann_window


def log_mel_features(audio: PCM16) -> npt.NDArray[np.float32]:
    """Smart Turn's input for the last 8 s of ``audio``: ``[80, 800]`` float32.

    Shorter audio is padded with zeros in front (the model reads the end of the turn at the
    end of its window); the waveform is normalised to zero mean and unit variance first.
    """
    samples = ensure_pcm16(audio, "audio")[-_WINDOW:]
    x = np.zeros(_WINDOW, dtype=np.float32)
    x[_WINDOW - samples.size :] = samples.astype(np.float32) / 32768.0
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (_N_FFT // 2, _N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2
    # einsum, not ``@``: a BLAS call wakes OpenBLAS's threads, which then spin on the other
    # core through the whole model call (127 ms of CPU for a 64 ms answer, measured), CPU
    # that Whisper and Piper need. The product is small; einsum's own loop takes ~4 ms.
    mel = np.log10(np.maximum(1e-10, np.einsum("fm,tf->mt", _FILTERS, power)))[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


# -- the model ------------------------------------------------------------------------------


def bundled_smart_turn_path() -> Path:
    """Smart Turn v3 ONNX inside the installed ``pipecat-ai`` wheel (newest v3 file there).

    Located through the import system's spec, not imported: importing pipecat would load
    loguru and its version banner for a file name.
    """
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the Smart Turn end-of-turn model ships inside the pipecat-ai package, which is not "
            "installed: pip install 'sagelab[turn]' (or pipecat-ai), or pass model_path= to a "
            "Smart Turn v3 ONNX file"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "audio/turn/smart_turn/data"
    candidates = sorted(data.glob("smart-turn-v3*.onnx"))
    if not candidates:
        raise ModelLoadError(
            f"no smart-turn-v3*.onnx in {data}: this pipecat-ai release does not ship Smart "
            "Turn v3; install pipecat-ai>=1.14 or pass model_path= to the ONNX file"
        )
    return candidates[-1]


class SmartTurn:
    """Smart Turn v3 on ONNX Runtime: one session per process, ``cpu_threads`` threads a call.

    Thread-safe (ONNX Runtime allows concurrent ``run`` on one session), so it can be called
    from any model-executor worker. A call costs the feature extraction (~5 ms of numpy) plus
    the encoder over 8 s (tens of ms on one core; see ``docs/turn-taking.md``).
    """

    def __init__(self, model_path: str | Path | None = None, *, cpu_threads: int = 1) -> None:
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {cpu_threads}")
        import onnxruntime

        self.path = Path(model_path) if model_path is not None else bundled_smart_turn_path()
        self.cpu_threads = cpu_threads
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning threads would burn the core Whisper or Piper is waiting for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the Smart Turn model from {self.path}: {exc}. Reinstall "
                "pipecat-ai (pip install 'sagelab[turn]') or pass model_path= to a Smart Turn "
                "v3 ONNX file"
            ) from exc
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != ["input_features"]:
            raise ModelLoadError(
                f"{self.path} is not a Smart Turn v3 graph (inputs "
                f"{[i.name for i in inputs]}, expected ['input_features'])"
            )

    def probability(self, audio: PCM16) -> float:
        """P(turn complete) for the turn so far (16 kHz PCM16; only the last 8 s count)."""
        samples = ensure_pcm16(audio, "audio")
        if samples.size == 0:
            raise ValueError("Smart Turn needs some audio of the turn, got none")
        features = log_mel_features(samples)[None, :, :]
        (out, *_rest) = self._session.run(None, {"input_features": features})
        return float(np.asarray(out).reshape(-1)[0])

    def warmup(self) -> None:
        """One call on a second of silence so the first real turn skips ORT's allocations."""
        self.probability(np.zeros(SAMPLE_RATE, dtype=np.int16))


_models: dict[tuple[Path, int], SmartTurn] = {}
_models_lock = threading.Lock()


def get_smart_turn(model_path: str | Path | None = None, *, cpu_threads: int = 1) -> SmartTurn:
    """The process-wide :class:`SmartTurn` for this file and thread count."""
    path = (Path(model_path) if model_path is not None else bundled_smart_turn_path()).resolve()
    key = (path, cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = SmartTurn(path, cpu_threads=cpu_threads)
        return model
