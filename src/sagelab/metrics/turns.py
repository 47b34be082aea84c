"""Turns as a person reads them: numbered, with where the time went and what was heard.

``turn_table`` is the full record of every agent turn (timestamps, every latency, every stage);
``turn_breakdown`` is the readable view of the same timeline, the one the notebook panel shows
live and a notebook draws from a saved run (``Timeline.load``):

``turn``
    1, 2, 3 … for the agent's answers in order; the greeting (an agent turn before any user
    input) is turn 0 with ``kind == "greeting"``.
``kind``
    ``greeting``, ``speech`` (answers spoken input), ``text`` (answers typed input) or
    ``agent`` (a later turn the agent started on its own).
``voice_to_voice_ms``
    end of the user's speech → the reply's first audio (``turn_table``'s definition).
``endpointing_ms`` ``stt_ms`` ``brain_ms`` ``tool_ms`` ``tts_ms`` ``network_ms``
    voice-to-voice split into the server's stages (``internal_sagelab_stage`` events). The
    local agent times its stages nested, from when each began: ``tts_first_audio`` runs from
    the start of the reply, so it holds the brain's time to its first text
    (``brain_first_text``), which holds the tool calls made before it. The breakdown takes the
    nesting apart: ``brain = brain_first_text − tool``, ``tts = tts_first_audio −
    brain_first_text``. ``network_ms`` is what is left of voice-to-voice: the network both
    ways, the server's queues and the client's own stamping. Stages a server did not report
    are NaN, and then ``network_ms`` is NaN too (it would silently absorb them).
``interrupted`` ``played_ms`` ``heard_text``
    the reply was cut (a barge-in's ``interruption``, or the user's own Interrupt); how much
    of it was played before it stopped (the player's report, or the ``internal_sagelab_heard``
    the client sent), and the words heard: the client's own reading when it sent one (it knows
    what its player played), else the server's ``agent_response_correction`` (the server only
    models when the client played), else the share of the reply's words played
    (``heard_words``).

``turn_audio`` cuts the user's and the agent's audio of one turn out of a timeline recorded
with audio, so any turn can be heard again.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sagelab.client.timeline import Timeline
from sagelab.metrics._events import TimelineLike, events_of
from sagelab.metrics.latency import turn_table

HEARD_EVENT = "internal_sagelab_heard"
# A replayed user turn starts a little before its first speech chunk and ends just after its
# last, so the first and last syllables are not clipped.
_PRE_ROLL_NS = 300_000_000
_POST_ROLL_NS = 100_000_000
STAGE_PARTS = ("endpointing", "stt", "brain", "tool", "tts", "network")
BREAKDOWN_COLUMNS = (
    "turn",
    "kind",
    "event_id",
    "user_text",
    "agent_text",
    "voice_to_voice_ms",
    *(f"{part}_ms" for part in STAGE_PARTS),
    "drafted_ms",
    "interrupted",
    "played_ms",
    "heard_text",
    "tools",
)
# What each column of the breakdown means, in a line: the panel's tooltips and the notebooks'
# legends read these, so the words are the same everywhere.
COLUMN_HELP: dict[str, str] = {
    "turn": "agent turns in order; the greeting is the agent speaking first",
    "voice_to_voice_ms": "end of your speech → first audio of the reply (what you waited)",
    "endpointing_ms": "silence the server waited for before deciding your turn had ended",
    "stt_ms": "speech-to-text still running after the end of your turn",
    "brain_ms": "the agent deciding what to say, to its first text (tool calls excluded)",
    "tool_ms": "tool calls made before the reply's first words",
    "tts_ms": "text-to-speech of the first words, to the first audio",
    "network_ms": "the rest of voice-to-voice: network both ways, queues, the client",
    "drafted_ms": "the reply was prepared this long before your turn ended (its brain, "
    "read-only tools and first audio ran in the pause; held until the turn was confirmed)",
    "interrupted": "the reply was cut off (barge-in or Interrupt)",
    "played_ms": "how much of the reply's audio was played before it stopped",
    "heard_text": "the words of the reply that were actually heard",
}


def _num(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def stage_parts(row: Any) -> dict[str, float]:
    """One ``turn_table`` row's voice-to-voice split into ``STAGE_PARTS`` (ms, NaN if unknown).

    See the module docstring for how the nested stage timings are taken apart.
    """

    def get(name: str) -> float:
        return _num(row.get(name, math.nan)) if hasattr(row, "get") else math.nan

    v2v = get("voice_to_voice_ms")
    tool = get("stage_tool_ms")
    first_text = get("stage_brain_first_text_ms")
    if math.isnan(first_text):
        first_text = get("stage_brain_ms")
    tts_first = get("stage_tts_first_audio_ms")
    tool_part = 0.0 if math.isnan(tool) else tool
    parts = {
        "endpointing": get("stage_endpointing_ms"),
        "stt": get("stage_stt_ms"),
        "brain": max(0.0, first_text - tool_part) if not math.isnan(first_text) else math.nan,
        "tool": tool_part if not (math.isnan(first_text) and math.isnan(tool)) else math.nan,
        "tts": (
            max(0.0, tts_first - first_text)
            if not math.isnan(tts_first) and not math.isnan(first_text)
            else tts_first
        ),
    }
    known = [parts[k] for k in ("endpointing", "stt", "brain", "tts")]
    if math.isnan(v2v) or any(math.isnan(x) for x in known):
        parts["network"] = math.nan
    else:
        parts["network"] = max(0.0, v2v - sum(known) - tool_part)
    return parts


def heard_words(text: str, played_ms: float, audio_ms: float) -> str:
    """The words of ``text`` heard when ``played_ms`` of its ``audio_ms`` of speech played:
    the same share of the words, rounded down to whole words (what the server does without
    alignment)."""
    if not text or not math.isfinite(played_ms) or not math.isfinite(audio_ms) or audio_ms <= 0:
        return ""
    words = text.split()
    n = math.floor(len(words) * min(1.0, max(0.0, played_ms) / audio_ms) + 1e-9)
    return " ".join(words[:n])


def _heard_reports(timeline: TimelineLike) -> dict[int, dict[str, Any]]:
    """``event_id`` → what was played of a cut turn: the client's ``internal_sagelab_heard``,
    else the player's ``playback_end`` with ``flushed``."""
    reports: dict[int, dict[str, Any]] = {}
    for e in events_of(timeline):
        if e.event_id is None:
            continue
        if e.type == HEARD_EVENT and e.direction == "send":
            reports.setdefault(e.event_id, {}).update(e.data)  # what the client settled on
        elif e.type == "playback_end" and e.direction == "local" and e.data.get("flushed"):
            reports.setdefault(e.event_id, {}).setdefault("played_ms", e.data.get("played_ms"))
        elif e.type == "user_interrupt" and e.direction == "local":
            reports.setdefault(e.event_id, {})
    return reports


def turn_breakdown(timeline: TimelineLike) -> pd.DataFrame:
    """One row per agent turn of one session, numbered as a person counts them; columns in
    ``BREAKDOWN_COLUMNS`` (meanings in ``COLUMN_HELP`` and this module's docstring)."""
    table = turn_table(timeline)
    reports = _heard_reports(timeline)
    rows = []
    number = 0
    for i, r in enumerate(table.to_dict("records")):
        event_id = int(r["event_id"])
        user_input = r.get("user_input")
        kind = user_input if isinstance(user_input, str) else "greeting" if i == 0 else "agent"
        if kind != "greeting":
            number += 1
        report = reports.get(event_id)
        interrupted = bool(r.get("interrupted")) or report is not None
        played = _num((report or {}).get("played_ms"))
        agent_text = r.get("agent_text") or ""
        heard: str | None = None
        if interrupted:
            corrected = r.get("corrected_text")
            if isinstance((report or {}).get("text"), str):
                heard = report["text"]  # type: ignore[index]
            elif isinstance(corrected, str):
                heard = corrected
            else:
                heard = heard_words(agent_text, played, _num(r.get("audio_ms")))
        parts = (
            stage_parts(r) if kind in ("speech", "text") else dict.fromkeys(STAGE_PARTS, math.nan)
        )
        rows.append(
            {
                "turn": 0 if kind == "greeting" else number,
                "kind": kind,
                "event_id": event_id,
                "user_text": r.get("user_text"),
                "agent_text": agent_text or None,
                "voice_to_voice_ms": _num(r.get("voice_to_voice_ms")),
                **{f"{k}_ms": v for k, v in parts.items()},
                "drafted_ms": _num(r.get("stage_draft_ms")),
                "interrupted": interrupted,
                "played_ms": played,
                "heard_text": heard,
                "tools": list(r.get("tools") or []),
            }
        )
    return pd.DataFrame(rows, columns=list(BREAKDOWN_COLUMNS))


def turn_audio(timeline: Timeline, event_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(user, agent)`` 16 kHz PCM16 of one agent turn: the speech it answered (from the
    first chunk holding speech to the end of speech) and the reply's audio as received.

    Needs a timeline recorded with audio (``record_audio=True``, or loaded from a folder with
    ``user.wav`` and ``agent.wav``); either part is empty when there was none.
    """
    if not isinstance(timeline, Timeline):
        raise TypeError("turn_audio needs a Timeline with audio (Timeline.load(folder))")
    table = turn_table(timeline)
    match = table[table["event_id"] == event_id]
    if match.empty:
        raise KeyError(f"no agent turn with event_id {event_id} in this timeline")
    row = match.iloc[0]
    agent_pcm = timeline.agent_audio
    pieces = [
        agent_pcm[e.data["offset"] : e.data["offset"] + e.data["samples"]]
        for e in timeline.events
        if e.type == "audio"
        and e.direction == "recv"
        and e.event_id == event_id
        and not e.data.get("stale")
        and "offset" in e.data
    ]
    agent = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    user = np.zeros(0, np.int16)
    start, end = _num(row["user_speech_start_ns"]), _num(row["user_speech_end_ns"])
    if not math.isnan(start) and not math.isnan(end):
        chunks = [
            e
            for e in timeline.events
            if e.type == "user_audio_chunk"
            and e.direction == "send"
            and "offset" in e.data
            and start - _PRE_ROLL_NS <= e.t_ns <= end + _POST_ROLL_NS
        ]
        if chunks:
            first, last = chunks[0].data, chunks[-1].data
            user = timeline.user_audio[first["offset"] : last["offset"] + last["samples"]]
    return user.astype(np.int16, copy=False), agent.astype(np.int16, copy=False)


def rounded(table: pd.DataFrame) -> pd.DataFrame:
    """For display: millisecond columns (named ``…_ms`` or ``… ms``) as whole numbers (missing
    stays missing), other float columns to three decimals. The data behind it is untouched
    (save that)."""
    out = table.copy()
    for col in out.columns:
        is_ms = str(col).endswith(("_ms", " ms"))
        if is_ms and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = pd.to_numeric(out[col], errors="coerce").round(0).astype("Int64")
        elif pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].round(3)
    return out
