"""Builds a ``LocalAgent`` from an agent's ``options`` in the agents file.

Options (all optional)::

    backend: local
    options:
      vad: {threshold: 0.5, end_silence_ms: 500, min_speech_ms: 100}
      stt: {model: null, compute_type: int8, cpu_threads: 1}   # null: bundled tiny.en weights
      tts: {model: null, config: null, length_scale: 1.0}      # null: bundled Piper joe voice
      brain: rules                                             # echo | rules | openai | llm
      brain_options: {...}                                     # see the brain's docstring
      vad_events: false                                        # send vad_score events

Models load once per process (``prepare`` at server start does it ahead of the first caller).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sagelab.agents.base import AgentContext
from sagelab.agents.local.brain import BrainError, create_brain
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


def prepare(options: dict[str, Any], base_dir: Path) -> None:
    """Load (and warm) the models an agent needs, so its first session does not wait."""
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


def create(ctx: AgentContext, base_dir: Path) -> LocalAgent:
    options = ctx.agent.options
    brain_name = options.get("brain", "rules")
    brain_options = _brain_options(options, base_dir)
    if brain_name == "rules":
        variables = {**ctx.agent.dynamic_variables, **brain_options.get("variables", {})}
        brain_options["variables"] = variables
    return LocalAgent(
        ctx,
        detector=VadTurnDetector(**(options.get("vad") or {})),
        stt=_stt(options, base_dir),
        tts=_tts(options, base_dir),
        brain=create_brain(brain_name, brain_options),
        vad_events=bool(options.get("vad_events", False)),
        # Milliseconds of silence before a speculative transcription starts; null turns
        # speculation off (every transcription then starts at the end of the turn).
        speculate_after_ms=options.get("speculate_after_ms", 160),
    )
