"""Percentile summaries, the store's tables (real SQLite) and the accuracy table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sagelab.metrics import (
    PERCENTILE_COLUMNS,
    accuracy_table,
    active_sessions,
    overview,
    percentiles,
    store_session_table,
    store_tool_call_table,
    store_turn_table,
    summarize_values,
)
from sagelab.server.store import ConversationStore


def test_percentiles_match_numpy_and_skip_missing_values() -> None:
    values = [*np.random.default_rng(7).exponential(100, 500), None, float("nan")]
    s = summarize_values(values)
    finite = np.array(values[:500])
    assert s["count"] == 500
    assert s["p50"] == pytest.approx(np.percentile(finite, 50))
    assert s["p99"] == pytest.approx(np.percentile(finite, 99))
    assert s["max"] == finite.max() and s["mean"] == pytest.approx(finite.mean())
    assert s["p50"] <= s["p95"] <= s["p99"] <= s["max"]


def test_no_values_give_a_zero_count_not_a_zero_latency() -> None:
    s = summarize_values([None, float("nan")])
    assert s["count"] == 0 and all(math.isnan(s[k]) for k in ("p50", "p95", "p99", "max"))


def test_percentiles_of_a_table_a_series_and_a_mapping() -> None:
    df = pd.DataFrame(
        {
            "a_ms": [1.0, 2.0, 3.0],
            "t_ns": [1, 2, 3],
            "event_id": [1, 2, 3],
            "ok": [True] * 3,
            "session": [0, 0, 1],
        }
    )
    table = percentiles(df)
    assert list(table.index) == ["a_ms"]  # timestamps, ids and flags are not metrics
    assert list(table.columns) == list(PERCENTILE_COLUMNS)
    assert table.loc["a_ms", "p50"] == 2.0 and table.loc["a_ms", "count"] == 3
    assert percentiles(pd.Series([5.0], name="x")).loc["x", "max"] == 5.0
    assert list(percentiles({"b": [1, 2], "c": []}).loc[:, "count"]) == [2, 0]
    with pytest.raises(KeyError, match="the table has: a_ms"):
        percentiles(df, ["nope"])


def test_store_tables_from_a_real_store(tmp_path: Path) -> None:
    with ConversationStore(tmp_path / "store.sqlite3") as store:
        store.start_conversation("c1", "scripted", "convai", started_at=1000.0)
        store.add_turn("c1", "agent", "Hello", event_id=1, started_at=1000.5)
        store.add_turn("c1", "user", "hi", event_id=2, started_at=1002.0)
        cut = store.add_turn("c1", "agent", "A long answer", event_id=2, started_at=1002.5)
        store.update_turn(cut, interrupted=True, corrected_text="A long")
        store.start_tool_call("c1", "t1", "lookup", {"q": 1}, event_id=2, started_at=1002.1)
        store.finish_tool_call("c1", "t1", "ok", is_error=False, duration_ms=42.0)
        store.start_tool_call("c1", "t2", "slow", {}, event_id=2, started_at=1002.2)
        store.end_conversation("c1", "client ended", close_code=1000, ended_at=1060.0)
        store.start_conversation("c2", "scripted", "relay", started_at=1030.0)  # still open
        store.flush()
        records = [store.get_conversation("c1"), store.get_conversation("c2")]

    sessions = store_session_table(records).set_index("session")
    assert sessions.loc["c1", "duration_s"] == 60 and sessions.loc["c1", "agent_turns"] == 2
    assert sessions.loc["c1", "interruptions"] == 1
    assert sessions.loc["c1", "interruptions_per_min"] == 1.0
    assert sessions.loc["c1", "tool_calls"] == 2 and sessions.loc["c1", "close_code"] == 1000
    assert math.isnan(sessions.loc["c2", "duration_s"])

    turns = store_turn_table(records)
    assert list(turns["role"]) == ["agent", "user", "agent"]
    assert turns.iloc[2]["interrupted"] and turns.iloc[2]["corrected_text"] == "A long"

    tools = store_tool_call_table(records).set_index("tool_call_id")
    assert tools.loc["t1", "duration_ms"] == 42 and not tools.loc["t1", "is_error"]
    assert not tools.loc["t2", "answered"] and pd.isna(tools.loc["t2", "is_error"])

    steps = active_sessions(store_session_table(records))
    assert list(steps["active"]) == [1, 2, 1]
    o = overview(store_session_table(records), tool_calls=tools.reset_index())
    assert o["peak_active_sessions"] == 2 and o["active_sessions"] == 1
    assert o["tool_success_rate"] == 0.5  # the unanswered call did not succeed
    with pytest.raises(TypeError, match="get_conversation"):
        store_session_table([{"turns": []}])


def test_accuracy_table_scores_each_utterance_and_pools_the_corpus() -> None:
    df = accuracy_table([("u1", "Turn left at the 2nd light", "turn left at the second light"),
                         ("u2", "go forward", "go for word")])  # fmt: skip
    assert list(df["id"]) == ["u1", "u2"]
    assert list(df["wer"]) == [0.0, 1.0]
    assert df.attrs["wer"] == pytest.approx(2 / 8)  # two edits over eight reference words
    assert accuracy_table([("a b", "a b")]).iloc[0]["id"] == "0"
    with pytest.raises(ValueError, match="item 0 has 1 fields"):
        accuracy_table([("only",)])  # type: ignore[list-item]
