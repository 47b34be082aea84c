"""Per-session tables, errors, active sessions and the overview, on hand-written timelines."""

from __future__ import annotations

import math

import pytest
from metrics_synthetic import MS, Script

from sagelab.metrics import active_sessions, error_table, overview, session_table


def session(offset_ms: float, *, close: bool = True, cut: bool = False) -> Script:
    s = Script()
    o = offset_ms
    s.at(o, "local", "connecting").at(o + 5, "local", "connected")
    s.at(o + 40, "recv", "conversation_initiation_metadata", conversation_id=f"conv_{o:g}")
    s.response(o + 50, 1).stream(o + 60, 1, 3)
    s.speech(o + 1000, o + 2000)
    s.transcript(o + 2500, 2).stream(o + 2700, 2, 2)
    s.at(o + 2600, "recv", "client_tool_call", 2, tool_name="lookup", tool_call_id="c1")
    s.at(o + 2650, "send", "client_tool_result", tool_call_id="c1", is_error=False)
    if cut:
        s.speech(o + 2750, o + 3200).at(o + 2800, "recv", "interruption", 2)
        s.at(o + 3000, "recv", "error", code=1011, error_type="llm_error", message="boom")
        s.at(o + 3100, "recv", "invalid_frame", error="not JSON")
    if close:
        s.at(o + 60_000, "local", "closed", code=1000, reason="done")
    return s


def test_one_row_per_session_with_setup_duration_and_counts() -> None:
    table = session_table({"plain": session(0).timeline, "cut": session(0, cut=True).timeline})
    plain, cut = table.set_index("session").loc["plain"], table.set_index("session").loc["cut"]
    assert plain["setup_ms"] == pytest.approx(40) and plain["handshake_ms"] == pytest.approx(5)
    assert plain["duration_s"] == pytest.approx(60)
    assert plain["conversation_id"] == "conv_0"
    assert plain["agent_turns"] == 2 and plain["user_turns"] == 1
    assert plain["tool_calls"] == 1 and plain["tool_errors"] == 0
    assert plain["errors"] == 0 and plain["error_types"] == {}
    assert plain["close_code"] == 1000 and plain["close_reason"] == "done"
    assert plain["audio_received_s"] == pytest.approx(0.5)
    assert plain["underruns"] == 0 and plain["stutter_ratio"] == 0
    assert cut["interruptions"] == 1 and cut["interruptions_per_min"] == pytest.approx(1.0)
    assert cut["errors"] == 2
    assert cut["error_types"] == {"llm_error": 1, "invalid_frame": 1}


def test_a_session_still_open_lasts_until_its_last_event() -> None:
    [row] = session_table(session(0, close=False).timeline).to_dict("records")
    assert row["duration_s"] == pytest.approx(3.0)  # sending ended at 3 s, the last event
    assert math.isnan(row["closed_ns"]) and row["close_code"] is None


def test_errors_one_per_row() -> None:
    errors = error_table([session(0).timeline, session(0, cut=True).timeline])
    assert list(errors["session"]) == [1, 1]
    assert list(errors["error_type"]) == ["llm_error", "invalid_frame"]
    assert errors.iloc[0]["code"] == 1011 and errors.iloc[0]["message"] == "boom"


def test_active_sessions_step_up_and_down() -> None:
    # Open at 0, 10 s and 20 s; closed after 60 s each, the last never.
    tables = session_table(
        [session(0).timeline, session(10_000).timeline, session(20_000, close=False).timeline]
    )
    steps = active_sessions(tables)
    assert list(steps["active"]) == [1, 2, 3, 2, 1]
    assert list(steps["t"]) == [t * MS for t in (0, 10_000, 20_000, 60_000, 70_000)]
    with pytest.raises(KeyError, match="start=/end="):
        active_sessions(tables.drop(columns=["connect_ns"]), start="connect_ns")


def test_the_overview_lists_the_web_apps_figures() -> None:
    timelines = [session(0).timeline, session(10_000, cut=True).timeline]
    o = overview(timelines)
    assert o["sessions"] == 2 and o["active_sessions"] == 0 and o["peak_active_sessions"] == 2
    assert o["session_duration_s"]["p50"] == pytest.approx(60)
    assert o["voice_to_voice_ms"]["count"] == 2 and o["voice_to_voice_ms"]["p50"] == 700
    assert o["tool_calls"] == 2 and o["tool_success_rate"] == 1.0
    assert o["tool_duration_ms"]["p99"] == pytest.approx(50)
    assert o["tool_duration_ms_by_name"]["lookup"]["count"] == 2
    assert o["errors_by_type"] == {"llm_error": 1, "invalid_frame": 1}
    assert o["errors_per_session"]["llm_error"] == 0.5
    assert o["errors_per_min"]["llm_error"] == pytest.approx(1 / 2)  # one in two minutes
    assert o["interruptions"] == 1 and o["interruptions_per_min"] == pytest.approx(0.5)
    assert o["interrupted_turn_ratio"] == pytest.approx(1 / 4)
    # From tables already built, figures whose table is missing are left out.
    partial = overview(session_table(timelines))
    assert "tool_calls" not in partial and partial["interruptions"] == 1
