"""Per-session figures and the web app's overview.

``session_table`` has one row per session:

``setup_ms``
    ``Session.start`` began connecting (the ``connecting`` marker; the timeline's start for
    recordings without it) → ``conversation_initiation_metadata`` received. It includes the
    TCP and WebSocket handshakes (``handshake_ms``: connecting → socket open) and the server's
    agent start-up.
``duration_s``
    connecting → the socket closed (or the last recorded event, for a session still open).
``interruptions_per_min``
    ``interruption`` events per minute of ``duration_s``.
``errors`` and ``error_types``
    ``error`` events (by ``error_type``) and frames the client could not parse
    (``invalid_frame``); ``error_table`` lists them one per row.
``underruns``, ``stutter_ratio``
    from the playout model with the given jitter buffer (``sagelab.metrics.stutter``).

``overview`` condenses sessions into the figures the web app lists: active sessions, session
duration, audio latency (voice-to-voice and time to first audio), tool-call success rate and
duration, error rates by type (per session and per minute), interruption frequency (per minute
and per agent turn), each latency as p50/p95/p99.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from sagelab.client.timeline import Timeline
from sagelab.metrics._events import (
    TimelineLike,
    Timelines,
    events_of,
    ms_between,
    named,
    per_session,
    t0_of,
)
from sagelab.metrics.latency import tool_call_table, turn_table
from sagelab.metrics.stutter import playout
from sagelab.metrics.summary import summarize_values

NAN = float("nan")
SESSION_COLUMNS = (
    "session",
    "conversation_id",
    "connect_ns",
    "metadata_ns",
    "closed_ns",
    "setup_ms",
    "handshake_ms",
    "duration_s",
    "agent_turns",
    "user_turns",
    "interruptions",
    "interruptions_per_min",
    "tool_calls",
    "tool_errors",
    "errors",
    "error_types",
    "audio_sent_s",
    "audio_received_s",
    "underruns",
    "stutter_ratio",
    "close_code",
    "close_reason",
)
ERROR_COLUMNS = ("t_ns", "error_type", "code", "message")


def session_table(timelines: Timelines, *, jitter_buffer_ms: float = 0.0) -> pd.DataFrame:
    """One row per session (column meanings in this module's docstring)."""
    rows = [_session_row(name, tl, jitter_buffer_ms) for name, tl in named(timelines)]
    df = pd.DataFrame(rows, columns=list(SESSION_COLUMNS))
    t0s = [t for _, tl in named(timelines) if (t := t0_of(tl)) is not None]
    df.attrs["t0_ns"] = min(t0s) if t0s else None
    return df


def _session_row(name: Any, timeline: TimelineLike, jitter_buffer_ms: float) -> dict[str, Any]:
    events = events_of(timeline)

    def first(type_: str, direction: str) -> Any:
        return next((e for e in events if e.type == type_ and e.direction == direction), None)

    connecting = first("connecting", "local")
    connected = first("connected", "local")
    metadata = first("conversation_initiation_metadata", "recv")
    closed = first("closed", "local")
    if connecting is not None:
        connect_ns = float(connecting.t_ns)
    elif isinstance(timeline, Timeline):
        connect_ns = float(timeline.t0_ns)
    else:
        connect_ns = float(events[0].t_ns) if events else NAN
    last_ns = float(max((e.t_ns for e in events), default=NAN))
    end_ns = float(closed.t_ns) if closed is not None else last_ns
    duration_s = ms_between(connect_ns, end_ns) / 1000
    turns = turn_table(timeline) if events else None
    tools = tool_call_table(timeline) if events else None
    errors = _errors(events)
    interruptions = sum(1 for e in events if e.type == "interruption" and e.direction == "recv")
    stutter = playout(timeline, jitter_buffer_ms) if events else None
    return {
        "session": name,
        "conversation_id": metadata.data.get("conversation_id") if metadata else None,
        "connect_ns": connect_ns,
        "metadata_ns": float(metadata.t_ns) if metadata else NAN,
        "closed_ns": float(closed.t_ns) if closed else NAN,
        "setup_ms": ms_between(connect_ns, float(metadata.t_ns)) if metadata else NAN,
        "handshake_ms": ms_between(connect_ns, float(connected.t_ns))
        if connected and connecting
        else NAN,
        "duration_s": duration_s,
        "agent_turns": len(turns) if turns is not None else 0,
        "user_turns": sum(
            1
            for e in events
            if (e.type == "user_speech" and e.data.get("speech_end_ns") is not None)
            or (e.type == "user_message" and e.direction == "send")
        ),
        "interruptions": interruptions,
        "interruptions_per_min": interruptions / (duration_s / 60) if duration_s > 0 else NAN,
        "tool_calls": len(tools) if tools is not None else 0,
        "tool_errors": int(tools["is_error"].fillna(False).sum()) if tools is not None else 0,
        "errors": len(errors),
        "error_types": dict(Counter(r["error_type"] for r in errors)),
        "audio_sent_s": sum(
            float(e.data.get("duration_s", 0.0)) for e in events if e.type == "user_audio_chunk"
        ),
        "audio_received_s": sum(
            float(e.data.get("duration_s", 0.0))
            for e in events
            if e.type == "audio" and e.direction == "recv"
        ),
        "underruns": stutter.underrun_count if stutter else 0,
        "stutter_ratio": stutter.stutter_ratio if stutter else NAN,
        "close_code": closed.data.get("code") if closed else None,
        "close_reason": closed.data.get("reason") if closed else None,
    }


def _errors(events: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for e in events:
        if e.type == "error" and e.direction == "recv":
            rows.append(
                {
                    "t_ns": float(e.t_ns),
                    "error_type": str(e.data.get("error_type") or "error"),
                    "code": e.data.get("code"),
                    "message": str(e.data.get("message", "")),
                }
            )
        elif e.type == "invalid_frame":
            rows.append(
                {
                    "t_ns": float(e.t_ns),
                    "error_type": "invalid_frame",
                    "code": None,
                    "message": str(e.data.get("error", "")),
                }
            )
    return rows


def error_table(timelines: Timelines) -> pd.DataFrame:
    """One row per ``error`` event received or frame the client could not parse."""

    def build(tl: TimelineLike) -> pd.DataFrame:
        return pd.DataFrame(_errors(events_of(tl)), columns=list(ERROR_COLUMNS))

    return per_session(timelines, build, ERROR_COLUMNS)


def active_sessions(
    sessions: pd.DataFrame, start: str | None = None, end: str | None = None
) -> pd.DataFrame:
    """How many sessions were open over time: a step series (``t``, ``active``), one row per
    change. Works on ``session_table`` (monotonic ns) and ``store_session_table`` (epoch
    seconds); a session not yet closed stays open to the end."""
    start = start or ("connect_ns" if "connect_ns" in sessions.columns else "started_at")
    end = end or ("closed_ns" if "closed_ns" in sessions.columns else "ended_at")
    for col in (start, end):
        if col not in sessions.columns:
            raise KeyError(
                f"active_sessions needs a {col!r} column: pass a session_table or "
                "store_session_table, or name the columns with start=/end="
            )
    changes = [(float(t), +1) for t in sessions[start] if pd.notna(t)]
    changes += [(float(t), -1) for t in sessions[end] if pd.notna(t)]
    changes.sort(key=lambda c: (c[0], c[1]))  # a close at the same instant counts first
    rows, active = [], 0
    for t, delta in changes:
        active += delta
        rows.append((t, active))
    return pd.DataFrame(rows, columns=["t", "active"])


def overview(
    sessions: pd.DataFrame | Timelines,
    turns: pd.DataFrame | None = None,
    tool_calls: pd.DataFrame | None = None,
    errors: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The web app's list of figures, from timelines or from tables already built.

    With timelines, every table is built from them. With tables, pass the ones you have
    (``session_table`` or ``store_session_table``, ``turn_table``/``store_turn_table``,
    ``tool_call_table``/``store_tool_call_table``, ``error_table``); figures whose table is
    missing are left out.
    """
    if not isinstance(sessions, pd.DataFrame):
        timelines = sessions
        sessions = session_table(timelines)
        turns = turn_table(timelines)
        tool_calls = tool_call_table(timelines)
        errors = error_table(timelines)
    n = len(sessions)
    minutes = float(np.nansum(sessions["duration_s"].to_numpy(dtype=float))) / 60 if n else 0.0
    series = active_sessions(sessions) if n else pd.DataFrame(columns=["t", "active"])
    out: dict[str, Any] = {
        "sessions": n,
        "active_sessions": int(series["active"].iloc[-1]) if len(series) else 0,
        "peak_active_sessions": int(series["active"].max()) if len(series) else 0,
        "session_duration_s": summarize_values(sessions["duration_s"]),
    }
    if "setup_ms" in sessions.columns:
        out["setup_ms"] = summarize_values(sessions["setup_ms"])
    if "interruptions" in sessions.columns:
        total = int(sessions["interruptions"].fillna(0).sum())
        out["interruptions"] = total
        out["interruptions_per_min"] = total / minutes if minutes > 0 else NAN
    if turns is not None:
        out["agent_turns"] = len(turns)
        for col in ("voice_to_voice_ms", "ttfa_ms"):
            if col in turns.columns:
                out[col] = summarize_values(turns[col])
        if len(turns) and "interrupted" in turns.columns:
            out["interrupted_turn_ratio"] = float(turns["interrupted"].astype(bool).mean())
    if tool_calls is not None:
        out["tool_calls"] = len(tool_calls)
        ok = tool_calls["answered"].astype(bool) & ~tool_calls["is_error"].fillna(True).astype(bool)
        out["tool_success_rate"] = float(ok.mean()) if len(tool_calls) else NAN
        out["tool_duration_ms"] = summarize_values(tool_calls["duration_ms"])
        out["tool_duration_ms_by_name"] = {
            str(name): summarize_values(group["duration_ms"])
            for name, group in tool_calls.groupby("name")
        }
    if errors is not None:
        counts = Counter(str(t) for t in errors["error_type"])
        out["errors"] = len(errors)
        out["errors_by_type"] = dict(counts)
        out["errors_per_session"] = {k: v / n for k, v in counts.items()} if n else {}
        out["errors_per_min"] = {k: v / minutes for k, v in counts.items()} if minutes else {}
    return out
