"""``turn_table``, ``tool_call_table`` and ``ping_table`` on hand-written timelines."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from metrics_synthetic import MS, Script

from sagelab.client.timeline import Timeline
from sagelab.metrics import ping_table, tool_call_table, turn_table


def conversation() -> Script:
    """A greeting, a spoken turn, a turn cut by a barge-in, the reply to it, a typed turn."""
    s = Script()
    s.at(0, "local", "connecting").at(30, "recv", "conversation_initiation_metadata")
    s.response(40, 1, "Hello!").stream(50, 1, 5)  # the greeting: no user input before it
    s.speech(1000, 2000, sent_until_ms=3000)
    s.transcript(2500, 2).response(2600, 2, "Sure.").stream(2700, 2, 3)
    s.speech(4000, 5000)
    s.transcript(5400, 3).response(5450, 3, "A long answer").stream(5500, 3, 6)
    s.speech(6000, 7000)  # the barge-in, 500 ms into the long answer
    s.at(6120, "recv", "interruption", 3).audio(6150, 3, stale=True).audio(6250, 3, stale=True)
    s.at(6130, "recv", "agent_response_correction", 3, corrected_agent_response="A long")
    s.transcript(7600, 4, "wait").response(7650, 4, "Okay.").stream(7800, 4, 2)
    s.at(9000, "send", "user_message", text="typed")
    s.response(9300, 5, "Typed back.").stream(9420, 5, 2)
    return s


def test_each_agent_turn_gets_its_latencies_from_the_input_it_answers() -> None:
    t = turn_table(conversation().timeline).set_index("event_id")
    assert list(t.index) == [1, 2, 3, 4, 5]
    assert [None if pd.isna(x) else x for x in t["user_input"]] == [
        None, "speech", "speech", "speech", "text"
    ]  # fmt: skip

    greeting = t.loc[1]
    assert math.isnan(greeting["voice_to_voice_ms"]) and math.isnan(greeting["ttfa_ms"])
    assert greeting["audio_chunks"] == 5 and greeting["audio_ms"] == pytest.approx(500)

    # End of speech (not the end of sending) → first audio; transcript → first audio; etc.
    spoken = t.loc[2]
    assert spoken["voice_to_voice_ms"] == pytest.approx(700)
    assert spoken["ttfa_ms"] == pytest.approx(200)
    assert spoken["transcript_ms"] == pytest.approx(500)
    assert spoken["agent_text_ms"] == pytest.approx(600)
    assert spoken["user_text"] == "hello" and spoken["agent_text"] == "Sure."

    typed = t.loc[5]  # a typed turn: its end is the message sent; there is no speech
    assert math.isnan(typed["voice_to_voice_ms"]) and math.isnan(typed["transcript_ms"])
    assert typed["ttfa_ms"] == pytest.approx(420) and typed["agent_text_ms"] == pytest.approx(300)
    assert typed["user_text"] == "typed"


def test_an_interrupted_turn_measures_the_barge_in_and_drops_stale_audio() -> None:
    t = turn_table(conversation().timeline).set_index("event_id")
    cut = t.loc[3]
    assert cut["interrupted"] and not t.drop(index=3)["interrupted"].any()
    assert cut["barge_in_ns"] == 6000 * MS
    assert cut["interruption_ms"] == pytest.approx(120)  # speech onset → interruption
    assert cut["interruption_audio_ms"] == pytest.approx(250)  # … → last chunk, stale included
    assert cut["stale_chunks"] == 2 and cut["audio_chunks"] == 6
    assert cut["last_audio_ns"] == 6000 * MS  # stale chunks are not its audio
    assert cut["corrected_text"] == "A long"
    # The reply to the barge-in is measured from the end of the barge-in speech.
    assert t.loc[4, "voice_to_voice_ms"] == pytest.approx(800)
    assert t.loc[4, "ttfa_ms"] == pytest.approx(200)


def test_an_interruption_after_the_audio_stopped_arriving_counts_zero_audio_latency() -> None:
    s = Script().speech(0, 500).transcript(900, 2).stream(1000, 2, 3)
    s.speech(2000, 2600).at(2100, "recv", "interruption", 2)
    row = turn_table(s.timeline).set_index("event_id").loc[2]
    assert row["interruption_ms"] == pytest.approx(100)
    assert row["interruption_audio_ms"] == 0


def test_a_split_utterance_measures_only_its_second_half_from_the_end_of_speech() -> None:
    # The server cut one utterance in two at a pause: the first turn's transcript came
    # before the user had finished, so no input had ended by then.
    s = Script().speech(0, 3000, sent_until_ms=4000)
    s.transcript(1500, 2, "first half").response(1550, 2).stream(1600, 2, 2)
    s.transcript(3500, 3, "second half").response(3550, 3).stream(3600, 3, 2)
    t = turn_table(s.timeline).set_index("event_id")
    assert math.isnan(t.loc[2, "voice_to_voice_ms"])
    assert t.loc[3, "voice_to_voice_ms"] == pytest.approx(600)


def test_only_the_latest_unanswered_input_is_claimed_and_only_once() -> None:
    s = Script().speech(0, 400).speech(1000, 1400)  # two inputs, one answer
    s.transcript(1900, 2).stream(2000, 2, 1)
    s.transcript(2500, 3).stream(2600, 3, 1)  # no new input: nothing to measure from
    t = turn_table(s.timeline).set_index("event_id")
    assert t.loc[2, "voice_to_voice_ms"] == pytest.approx(600)
    assert t.loc[2, "user_speech_start_ns"] == 1000 * MS
    assert math.isnan(t.loc[3, "voice_to_voice_ms"])


def test_turns_without_audio_and_transcripts_without_event_ids() -> None:
    # Text-only replies; a relay transcript has no event id and belongs to the next reply.
    s = Script().speech(0, 1000)
    s.transcript(1500, None, "relay words").response(1600, 1, "text only")
    t = turn_table(s.timeline).set_index("event_id")
    row = t.loc[1]
    assert row["user_text"] == "relay words"
    assert row["transcript_ms"] == pytest.approx(500)
    assert math.isnan(row["voice_to_voice_ms"]) and math.isnan(row["first_audio_ns"])
    assert row["audio_ms"] == 0 and row["audio_chunks"] == 0


def tool_script() -> Script:
    s = Script().speech(0, 1000).transcript(1400, 2)
    s.at(1450, "recv", "client_tool_call", 2, tool_name="lookup", tool_call_id="c1",
         parameters={"q": "x"})  # fmt: skip
    s.at(1490, "send", "client_tool_result", tool_call_id="c1", is_error=True)
    # The server reports client tools with agent_tool_response too; the client's own
    # result is the end of a client tool call.
    s.at(1495, "recv", "agent_tool_response", 2, tool_name="lookup", tool_call_id="c1",
         tool_type="client", is_error=True)  # fmt: skip
    s.at(1500, "recv", "agent_tool_request", 2, tool_name="search", tool_call_id="s1",
         tool_type="webhook")  # fmt: skip
    s.at(1525, "recv", "agent_tool_response", 2, tool_name="search", tool_call_id="s1",
         tool_type="webhook", is_error=False)  # fmt: skip
    s.at(1530, "recv", "client_tool_call", 2, tool_name="slow", tool_call_id="c2")
    s.at(1600, "recv", "internal_sagelab_stage", 2, stage="tool", ms=40.0)
    s.at(1601, "recv", "internal_sagelab_stage", 2, stage="tool", ms=25.0)
    s.at(1602, "recv", "internal_sagelab_stage", 2, stage="endpointing", ms=400.0)
    return s.response(1700, 2).stream(1800, 2, 2)


def test_tool_calls_are_timed_from_call_to_result_by_kind() -> None:
    calls = tool_call_table(tool_script().timeline).set_index("tool_call_id")
    assert list(calls.index) == ["c1", "s1", "c2"]
    assert list(calls["kind"]) == ["client", "server", "client"]
    assert calls.loc["c1", "duration_ms"] == pytest.approx(40)
    assert calls.loc["s1", "duration_ms"] == pytest.approx(25)
    assert calls.loc["c1", "is_error"] and not calls.loc["s1", "is_error"]
    assert calls.loc["c1", "parameters"] == {"q": "x"}
    unanswered = calls.loc["c2"]
    assert not unanswered["answered"] and pd.isna(unanswered["is_error"])
    assert math.isnan(unanswered["duration_ms"])


def test_a_turn_counts_its_tools_and_sums_repeated_stages() -> None:
    row = turn_table(tool_script().timeline).set_index("event_id").loc[2]
    assert row["tool_calls"] == 3 and row["tool_errors"] == 1
    assert row["tools"] == ["lookup", "search", "slow"]
    assert row["stage_tool_ms"] == pytest.approx(65)
    assert row["stage_endpointing_ms"] == pytest.approx(400)
    assert row["voice_to_voice_ms"] == pytest.approx(800)


def test_several_sessions_stack_with_their_names_and_stage_columns() -> None:
    plain = conversation().timeline
    tools = tool_script().timeline
    t = turn_table({"a": plain, "b": tools})
    assert list(t["session"]) == ["a"] * 5 + ["b"]
    assert {"stage_tool_ms", "stage_endpointing_ms"} <= set(t.columns)
    assert t.columns[-2:].tolist() == ["stage_endpointing_ms", "stage_tool_ms"]
    assert list(turn_table([plain, tools])["session"]) == [0] * 5 + [1]
    assert t.attrs["t0_ns"] == 0


def test_an_empty_timeline_gives_empty_tables_with_their_columns() -> None:
    empty = Timeline()
    for table in (turn_table(empty), tool_call_table(empty), ping_table(empty)):
        assert len(table) == 0 and "session" in table.columns
    assert "voice_to_voice_ms" in turn_table(empty).columns


def test_round_trips_from_the_servers_ping_ms_and_websocket_pings() -> None:
    s = Script()
    s.at(100, "recv", "ping", 1, ping_ms=None)  # the first ping has no measurement yet
    s.at(200, "recv", "ping", 2, ping_ms=3)
    s.at(250, "local", "ws_rtt", rtt_ms=0.42)
    pings = ping_table(s.timeline)
    assert list(pings["source"]) == ["ping_ms", "ws_rtt"]
    assert list(pings["rtt_ms"]) == [3.0, 0.42]
    assert list(pings["event_id"].fillna(-1)) == [2, -1]


def test_a_list_of_something_else_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"Timeline\.load"):
        turn_table([[{"type": "audio"}]])  # type: ignore[list-item]
