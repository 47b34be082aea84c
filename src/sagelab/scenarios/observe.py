"""From a recorded run to one ``Observation`` per step, through the shared metric tables.

Nothing is measured here: latencies, stages, transcripts and tool calls are the rows of
``turn_table`` and ``tool_call_table`` (the same numbers ``bench pipeline`` reports); this
module only decides which agent turns answer which step. A turn belongs to the user turn step
during whose window its first sign of life (transcript, reply text or audio) arrived, unless it
answers no user input at all (a greeting); the
step's *primary* turn, whose latencies and stages are checked, is the one the metric tables
matched to the step's own input (its speech, or its typed message).

Server tool parameters never reach a ConvAI client, so they are read from the server's
conversation store when the run can reach it (``read_tool_records``).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sagelab.metrics import store_tool_call_table, tool_call_table, turn_table
from sagelab.scenarios.expectations import Observation, ToolCall
from sagelab.scenarios.model import BargeInStep, TextStep, WaitStep
from sagelab.scenarios.runner import ScenarioRun, StepRun

STAGES = ("endpointing", "stt", "stt_compute", "brain", "tool", "tts_first_audio")


def read_tool_records(
    store_path: Path, conversation_id: str, expected: int, *, timeout: float = 5.0
) -> dict[str, dict[str, Any]]:
    """The stored tool calls of a conversation by ``tool_call_id``, once ``expected`` of them
    have finished (the server's store commits in batches, a moment after the fact)."""
    from sagelab.server.store import ConversationStore

    if not store_path.exists():
        return {}
    store = ConversationStore(store_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            record = store.get_conversation(conversation_id)
            calls = store_tool_call_table(record) if record else pd.DataFrame()
            done = int(calls["answered"].sum()) if len(calls) else 0
            if done >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        with contextlib.suppress(Exception):
            store.close()
    if not len(calls):
        return {}
    return {str(row["tool_call_id"]): row for row in calls.to_dict("records")}


def observe(run: ScenarioRun) -> list[Observation | None]:
    """One observation per step (``None`` for waits and steps that never ran)."""
    turns = turn_table(run.timeline)
    tools = tool_call_table(run.timeline)
    steps = [s for s in run.steps if s.ran and not isinstance(s.step, WaitStep)]
    bounds = [s.start_ns for s in steps[1:]] + [math.inf]
    owner = _owners(turns, steps, bounds)
    out: list[Observation | None] = [None] * len(run.steps)
    for k, step_run in enumerate(steps):
        mine = turns[owner == k] if len(turns) else turns
        out[step_run.index] = _observation(step_run, mine, turns, tools, run, bounds[k])
    return out


def _owners(turns: pd.DataFrame, steps: list[StepRun], bounds: list[float]) -> pd.Series:
    if not len(turns):
        return pd.Series([], dtype=int)
    firsts = turns[["user_transcript_ns", "agent_text_ns", "first_audio_ns"]].min(axis=1)
    # A turn that answers nothing the user said or typed (a greeting, an agent speaking up
    # on its own) is nobody's reply, wherever it lands.
    answers_user = turns["user_input"].notna() | turns["user_transcript_ns"].notna()
    owner = pd.Series(-1, index=turns.index)
    for k, step_run in enumerate(steps):
        inside = (firsts >= step_run.start_ns) & (firsts < bounds[k]) & answers_user
        owner[inside] = k
    return owner


def _observation(
    step_run: StepRun,
    mine: pd.DataFrame,
    all_turns: pd.DataFrame,
    tools: pd.DataFrame,
    run: ScenarioRun,
    end_ns: float,
) -> Observation:
    primary = _primary(step_run, mine)
    latencies: dict[str, float] = {}
    if primary is not None:
        v2v = _num(primary.get("voice_to_voice_ms"))
        if not math.isfinite(v2v) and isinstance(step_run.step, TextStep):
            v2v = _num(primary.get("ttfa_ms"))  # a typed turn: message sent → first audio
        latencies["voice_to_voice"] = v2v
        for stage in STAGES:
            latencies[stage] = _num(primary.get(f"stage_{stage}_ms"))
    interrupted = False
    if isinstance(step_run.step, BargeInStep) and len(all_turns):
        cut_ns = all_turns["interruption_ns"]
        cut = all_turns[(cut_ns >= step_run.start_ns) & (cut_ns < end_ns)]
        if len(cut):
            interrupted = True
            latencies["interruption"] = _num(cut.iloc[0]["interruption_ms"])
    ids = set(mine["event_id"].tolist()) if len(mine) else set()
    calls = [
        _tool_call(row, run.tool_records)
        for row in tools.to_dict("records")
        if row["event_id"] in ids
    ]
    return Observation(
        heard=_join(mine, "user_text") if not isinstance(step_run.step, TextStep) else "",
        reply=_join(mine, "agent_text"),
        tools=calls,
        interrupted=interrupted,
        replies=int(mine["agent_text"].notna().sum()) if len(mine) else 0,
        latencies_ms={k: v for k, v in latencies.items() if math.isfinite(v)},
    )


def _primary(step_run: StepRun, mine: pd.DataFrame) -> dict[str, Any] | None:
    if not len(mine):
        return None
    rows = mine.to_dict("records")
    if step_run.sent is not None and step_run.sent.speech is not None:
        end = float(step_run.sent.speech_end_ns)
        match = [r for r in rows if _num(r.get("user_speech_end_ns")) == end]
        if match:
            return match[0]
    if isinstance(step_run.step, TextStep) and step_run.sent_ns is not None:
        match = [r for r in rows if _num(r.get("user_text_sent_ns")) == float(step_run.sent_ns)]
        if match:
            return match[0]
    if step_run.reply_event_id is not None:
        match = [r for r in rows if r["event_id"] == step_run.reply_event_id]
        if match:
            return match[0]
    return rows[0]


def _tool_call(row: dict[str, Any], stored: dict[str, dict[str, Any]]) -> ToolCall:
    record = stored.get(str(row.get("tool_call_id")))
    parameters = row.get("parameters")
    if not isinstance(parameters, dict):
        parameters = None
    if parameters is None and record is not None and isinstance(record.get("parameters"), dict):
        parameters = record["parameters"]
    is_error = row.get("is_error")
    if is_error is pd.NA or is_error is None:
        is_error = record.get("is_error") if record is not None else None
        if is_error is pd.NA:
            is_error = None
    return ToolCall(
        str(row.get("name") or ""), parameters, None if is_error is None else bool(is_error)
    )


def _join(rows: pd.DataFrame, column: str) -> str:
    if not len(rows):
        return ""
    return " ".join(str(v) for v in rows[column].tolist() if isinstance(v, str) and v)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
