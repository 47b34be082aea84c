"""Tables from the server's conversation store, shaped like the timeline tables.

The store sees every session the server served, not only those a sagelab client recorded, so
the web app's figures (session duration, tool-call success and duration, interruptions) come
from here. Its times are epoch seconds taken by the server when it wrote each row (a turn's
``started_at`` is when its first text was sent), so these tables carry ``started_at`` /
``ended_at`` instead of the client's ``*_ns`` socket stamps, and client-side latencies such as
voice-to-voice are not in them. Pass ``ConversationStore.get_conversation`` results (or
``list_conversations`` summaries, which have no turns or tool calls).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

NAN = float("nan")
STORE_SESSION_COLUMNS = (
    "session",
    "agent_id",
    "protocol",
    "started_at",
    "ended_at",
    "duration_s",
    "agent_turns",
    "user_turns",
    "interruptions",
    "interruptions_per_min",
    "tool_calls",
    "tool_errors",
    "close_code",
    "end_reason",
)
STORE_TURN_COLUMNS = (
    "session",
    "event_id",
    "role",
    "started_at",
    "ended_at",
    "interrupted",
    "text",
    "corrected_text",
)
STORE_TOOL_COLUMNS = (
    "session",
    "event_id",
    "tool_call_id",
    "name",
    "parameters",
    "started_at",
    "ended_at",
    "duration_ms",
    "answered",
    "is_error",
    "result",
)


def _records(records: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    items = [records] if isinstance(records, Mapping) else list(records)
    for r in items:
        if not isinstance(r, Mapping) or "id" not in r or "started_at" not in r:
            raise TypeError(
                "expected conversation records from ConversationStore.get_conversation "
                f"(dicts with 'id' and 'started_at'), got {type(r).__name__}"
            )
    return items


def store_session_table(records: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per stored conversation: duration, turns, interruptions, tool calls, close."""
    rows = []
    for r in _records(records):
        turns = r.get("turns")
        tools = r.get("tool_calls")
        ended = r.get("ended_at")
        duration = (ended - r["started_at"]) if ended is not None else NAN
        cuts = sum(1 for t in turns if t["interrupted"]) if turns is not None else NAN
        rows.append(
            {
                "session": r["id"],
                "agent_id": r.get("agent_id"),
                "protocol": r.get("protocol"),
                "started_at": float(r["started_at"]),
                "ended_at": float(ended) if ended is not None else NAN,
                "duration_s": duration,
                "agent_turns": sum(1 for t in turns if t["role"] == "agent") if turns else 0,
                "user_turns": sum(1 for t in turns if t["role"] == "user") if turns else 0,
                "interruptions": cuts,
                "interruptions_per_min": cuts / (duration / 60) if duration > 0 else NAN,
                "tool_calls": len(tools) if tools is not None else 0,
                "tool_errors": sum(1 for t in tools if t["is_error"]) if tools else 0,
                "close_code": r.get("close_code"),
                "end_reason": r.get("end_reason"),
            }
        )
    return pd.DataFrame(rows, columns=list(STORE_SESSION_COLUMNS))


def store_turn_table(records: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per stored turn (user and agent), with what the user heard of cut replies."""
    rows = [
        {
            "session": r["id"],
            "event_id": t.get("event_id"),
            "role": t["role"],
            "started_at": float(t["started_at"]),
            "ended_at": float(t["ended_at"]) if t.get("ended_at") is not None else NAN,
            "interrupted": bool(t["interrupted"]),
            "text": t["text"],
            "corrected_text": t.get("corrected_text"),
        }
        for r in _records(records)
        for t in r.get("turns") or []
    ]
    return pd.DataFrame(rows, columns=list(STORE_TURN_COLUMNS))


def store_tool_call_table(
    records: Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> pd.DataFrame:
    """One row per stored tool call; its duration is the server's (call sent → result)."""
    rows = [
        {
            "session": r["id"],
            "event_id": t.get("event_id"),
            "tool_call_id": t["tool_call_id"],
            "name": t["name"],
            "parameters": t.get("parameters"),
            "started_at": float(t["started_at"]),
            "ended_at": float(t["ended_at"]) if t.get("ended_at") is not None else NAN,
            "duration_ms": float(t["duration_ms"]) if t.get("duration_ms") is not None else NAN,
            "answered": t.get("ended_at") is not None,
            "is_error": bool(t["is_error"]) if t.get("ended_at") is not None else pd.NA,
            "result": t.get("result"),
        }
        for r in _records(records)
        for t in r.get("tool_calls") or []
    ]
    df = pd.DataFrame(rows, columns=list(STORE_TOOL_COLUMNS))
    df["is_error"] = df["is_error"].astype("boolean")
    df["answered"] = df["answered"].astype(bool)
    return df
