"""Builds a ``LocalAgent`` from an agent's ``options`` in the agents file.

Options (all optional)::

    backend: local
    options:
      vad: {threshold: 0.5, end_silence_ms: 500, min_speech_ms: 100,
            onset_lookback_ms: 1000,   # a turn's start reaches back over weak speech (0: off)
            barge_in_threshold: 0.3,   # the agent stops on this first hint of a voice...
            barge_in_rise_db: 15}      # ...or on a sudden voice-like sound (null: Silero only)
      stt: {model: null, compute_type: int8, cpu_threads: 1}   # null: bundled tiny.en weights
      tts: {model: null, config: null, length_scale: 1.0}      # null: bundled Piper joe voice
      brain: rules                                             # echo | rules | openai | llm
      brain_options: {...}                                     # see the brain's docstring
      vad_events: false                                        # send vad_score events
      draft_replies: true      # start the reply on a pause's speculative transcript, held
                               # until the turn is confirmed (read_only tools run early)
      split_after_s: 8         # a turn this long is cut at its next pause and that piece
                               # transcribed while the user goes on (null: only at 30 s)
      end_of_turn: {min_silence_ms: 400, threshold: 0.9, max_silence_ms: 800,
                    ask_ahead_ms: 200,             # ask the model this much before min_silence
                    model_patience_ms: 100,        # no answer by min_silence + this: end there
                    model: null, cpu_threads: 1}   # Smart Turn (sagelab[turn]); model: ONNX path
      end_of_turn: {silence_only: 400}             # or: silence alone ends a turn

Without ``end_of_turn`` the VAD's ``end_silence_ms`` alone ends a turn. With it, the VAD's own
wait is set from the policy (``max_silence_ms``, or the ``silence_only`` value): setting
``vad.end_silence_ms`` to something else as well is refused, since one of the two would be
silently ignored.

Smart Turn ships in ``sagelab[turn]``, not in ``sagelab[local]``. When a model policy names no
``model`` file and that extra is not installed, the agent still runs, on the silence rule at
``min_silence_ms`` (the policy never ends a turn sooner anyway), and the server says so once
in its log; a ``model`` path that cannot be loaded is an error.

Models load once per process (``prepare`` at server start does it ahead of the first caller).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from sagelab.agents.base import AgentContext
from sagelab.agents.local.brain import BrainError, create_brain
from sagelab.agents.local.endofturn import EndOfTurnModel, EndOfTurnPolicy, get_smart_turn
from sagelab.agents.local.pipeline import LocalAgent
from sagelab.agents.local.stt import get_stt
from sagelab.agents.local.tts import get_tts
from sagelab.agents.local.vad import VadTurnDetector

log = logging.getLogger(__name__)


def _resolve(value: Any, base_dir: Path) -> Any:
    if isinstance(value, str) and (value.startswith("./") or value.startswith("../")):
        return base_dir / value
    return value


def _stt(options: dict[str, Any], base_dir: Path) -> Any:
    stt = dict(options.get("stt") or {})
    if "model" in stt:
        stt["model"] = _resolve(stt["model"], base_dir)
    return get_stt(**stt)


def _tts(options: dict[str, Any], base_dir: Path) -> Any:
    tts = dict(options.get("tts") or {})
    for key in ("model", "config"):
        if key in tts:
            tts[key] = _resolve(tts[key], base_dir)
    return get_tts(**tts)


def _brain_options(options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    brain_options = dict(options.get("brain_options") or {})
    if "model_path" in brain_options:  # the llm brain's GGUF file
        brain_options["model_path"] = _resolve(brain_options["model_path"], base_dir)
    return brain_options


_warned_no_model = False


def _smart_turn_installed() -> bool:
    if "pipecat" in sys.modules:
        return sys.modules["pipecat"] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec("pipecat") is not None
    except (ImportError, ValueError):
        return False


_POLICY_KEYS = {
    "min_silence_ms",
    "threshold",
    "max_silence_ms",
    "reask_ms",
    "likely_threshold",
    "likely_silence_ms",
}
_MODEL_KEYS = {"model", "cpu_threads"}
_TAKER_KEYS = {"ask_ahead_ms", "model_patience_ms"}


def end_of_turn_policy(options: dict[str, Any]) -> EndOfTurnPolicy | None:
    """The agent's ``end_of_turn`` option as a policy (None: the VAD's silence alone)."""
    raw = options.get("end_of_turn")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(
            "options.end_of_turn must be a mapping: {min_silence_ms, threshold, max_silence_ms} "
            f"or {{silence_only: ms}}, got {raw!r}"
        )
    if "silence_only" in raw:
        if set(raw) != {"silence_only"}:
            raise ValueError("options.end_of_turn.silence_only takes no other key")
        return EndOfTurnPolicy.silence_only(float(raw["silence_only"]))
    unknown = set(raw) - _POLICY_KEYS - _MODEL_KEYS - _TAKER_KEYS
    if unknown:
        raise ValueError(
            f"options.end_of_turn: unknown key(s) {sorted(unknown)}; use "
            f"{sorted(_POLICY_KEYS | _MODEL_KEYS | _TAKER_KEYS)} or silence_only"
        )
    policy = EndOfTurnPolicy(**{k: v for k, v in raw.items() if k in _POLICY_KEYS})
    if policy.uses_model and raw.get("model") is None and not _smart_turn_installed():
        global _warned_no_model
        if not _warned_no_model:
            _warned_no_model = True
            log.warning(
                "end_of_turn: the Smart Turn model is not installed (pip install "
                "'sagelab[turn]'); ending turns on %g ms of silence instead",
                policy.min_silence_ms,
            )
        return EndOfTurnPolicy.silence_only(policy.min_silence_ms)
    return policy


def _vad_options(options: dict[str, Any], policy: EndOfTurnPolicy | None) -> dict[str, Any]:
    vad = dict(options.get("vad") or {})
    if policy is None:
        return vad
    wait = policy.max_silence_ms
    if "end_silence_ms" in vad and float(vad["end_silence_ms"]) != wait:
        raise ValueError(
            f"options.vad.end_silence_ms ({vad['end_silence_ms']}) conflicts with "
            f"options.end_of_turn (whose silence limit is {wait:g} ms): with end_of_turn set, "
            "leave vad.end_silence_ms out"
        )
    vad["end_silence_ms"] = wait
    return vad


def _end_of_turn_model(
    options: dict[str, Any], policy: EndOfTurnPolicy | None, base_dir: Path
) -> EndOfTurnModel | None:
    if policy is None or not policy.uses_model:
        return None
    raw = options["end_of_turn"]
    return get_smart_turn(
        _resolve(raw.get("model"), base_dir), cpu_threads=int(raw.get("cpu_threads", 1))
    )


def prepare(options: dict[str, Any], base_dir: Path) -> None:
    """Load (and warm) the models an agent needs, so its first session does not wait.

    Also checks the turn-taking options, so a mistake stops the server at start."""
    policy = end_of_turn_policy(options)
    _vad_options(options, policy)
    stt = _stt(options, base_dir)
    if hasattr(stt, "warmup"):
        stt.warmup()
    _tts(options, base_dir)
    if options.get("brain") == "llm":  # a local LLM loads once per process, here
        try:
            create_brain("llm", _brain_options(options, base_dir))
        except BrainError as exc:
            # Not installed (no sagelab[llm-local]) or a bad model path: one clear line, not a
            # traceback at every start; sessions of this agent are refused with the same text.
            log.warning("the llm brain is not ready: %s", exc)
    model = _end_of_turn_model(options, policy, base_dir)
    if model is not None and hasattr(model, "warmup"):
        model.warmup()


def create(ctx: AgentContext, base_dir: Path) -> LocalAgent:
    options = ctx.agent.options
    brain_name = options.get("brain", "rules")
    brain_options = _brain_options(options, base_dir)
    if brain_name == "rules":
        variables = {**ctx.agent.dynamic_variables, **brain_options.get("variables", {})}
        brain_options["variables"] = variables
    policy = end_of_turn_policy(options)
    return LocalAgent(
        ctx,
        detector=VadTurnDetector(**_vad_options(options, policy)),
        stt=_stt(options, base_dir),
        tts=_tts(options, base_dir),
        brain=create_brain(brain_name, brain_options),
        vad_events=bool(options.get("vad_events", False)),
        # Milliseconds of silence before a speculative transcription starts; null turns
        # speculation off (every transcription then starts at the end of the turn).
        speculate_after_ms=options.get("speculate_after_ms", 160),
        draft_replies=bool(options.get("draft_replies", True)),
        split_after_s=options.get("split_after_s", 8.0),
        end_of_turn=policy,
        end_of_turn_model=_end_of_turn_model(options, policy, base_dir),
        **_taker_options(options),
    )


def _taker_options(options: dict[str, Any]) -> dict[str, Any]:
    raw = options.get("end_of_turn") or {}
    patience = raw.get("model_patience_ms")
    return {
        "ask_ahead_ms": float(raw.get("ask_ahead_ms", 0.0)),
        "model_patience_ms": None if patience is None else float(patience),
    }
