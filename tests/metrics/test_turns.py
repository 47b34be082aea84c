"""``turn_breakdown`` and ``turn_audio`` on hand-written timelines: turns numbered as a person
counts them, voice-to-voice split into stages, interrupted turns with what was heard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from metrics_synthetic import MS, Script

from sagelab.client.timeline import Timeline
from sagelab.metrics.turns import (
    BREAKDOWN_COLUMNS,
    COLUMN_HELP,
    heard_words,
    rounded,
    stage_parts,
    turn_audio,
    turn_breakdown,
)

pytestmark = pytest.mark.fast
STAGE = "internal_sagelab_stage"


def stage(s: Script, ms: float, event_id: int, name: str, value: float) -> None:
    s.at(ms, "recv", STAGE, event_id, stage=name, ms=value)


def conversation() -> Script:
    """A greeting (event 1), a spoken question answered with a tool (event 5), and a reply
    (event 9) the user cut off with Interrupt after 1 s of its 2 s of audio."""
    s = Script()
    s.response(100, 1, "Hello, I am Audio Sage.").stream(120, 1, 5)
    s.speech(2000, 3000)
    for name, value in [
        ("endpointing", 300),
        ("stt", 150),
        ("tool", 20),
        ("brain_first_text", 70),  # holds the tool's 20 ms
        ("brain", 90),
        ("tts_first_audio", 170),  # holds the brain's 70 ms to first text
    ]:
        stage(s, 3300, 5, name, value)
    s.transcript(3450, 5, "search for oslo").response(3520, 5, "I found two accounts.")
    s.at(3500, "recv", "agent_tool_request", 5, tool_name="search_records", tool_call_id="c1")
    s.stream(3700, 5, 3)
    s.speech(6000, 6800)
    s.transcript(7300, 9, "tell me more").response(7400, 9, "one two three four five six")
    s.stream(7500, 9, 20)
    s.at(8500, "local", "user_interrupt", 9)
    s.at(8520, "local", "playback_end", 9, played_ms=1000.0, flushed=True)
    return s


def test_turns_are_numbered_from_one_and_the_greeting_is_named() -> None:
    table = turn_breakdown(conversation().timeline)
    assert list(table.columns) == list(BREAKDOWN_COLUMNS)
    assert table["turn"].tolist() == [0, 1, 2]
    assert table["kind"].tolist() == ["greeting", "speech", "speech"]
    assert table["event_id"].tolist() == [1, 5, 9]
    greeting = table.iloc[0]
    assert greeting["agent_text"] == "Hello, I am Audio Sage."
    assert math.isnan(greeting["voice_to_voice_ms"]) and math.isnan(greeting["stt_ms"])


def test_a_drafted_reply_says_how_far_ahead_it_was_prepared() -> None:
    s = conversation()
    stage(s, 3300, 5, "draft", 180.0)
    table = turn_breakdown(s.timeline)
    assert table.iloc[1]["drafted_ms"] == pytest.approx(180)
    assert math.isnan(table.iloc[0]["drafted_ms"]) and math.isnan(table.iloc[2]["drafted_ms"])


def test_voice_to_voice_is_split_into_nested_stages_and_the_rest_is_network() -> None:
    row = turn_breakdown(conversation().timeline).iloc[1]
    assert row["voice_to_voice_ms"] == pytest.approx(700)  # speech end 3000 → audio 3700
    parts = {p: row[f"{p}_ms"] for p in ("endpointing", "stt", "brain", "tool", "tts")}
    assert parts == {"endpointing": 300, "stt": 150, "brain": 50, "tool": 20, "tts": 100}
    assert row["network_ms"] == pytest.approx(700 - 620)
    assert row["tools"] == ["search_records"]
    assert set(COLUMN_HELP) >= {f"{p}_ms" for p in parts} | {"network_ms"}


def test_unreported_stages_leave_network_unknown_rather_than_absorbing_them() -> None:
    parts = stage_parts({"voice_to_voice_ms": 900.0, "stage_endpointing_ms": 300.0})
    assert parts["endpointing"] == 300 and math.isnan(parts["stt"])
    assert math.isnan(parts["network"])


def test_an_interrupted_turn_keeps_the_share_of_words_played() -> None:
    row = turn_breakdown(conversation().timeline).iloc[2]
    assert bool(row["interrupted"])
    assert row["played_ms"] == 1000.0
    assert row["heard_text"] == "one two three"  # 1 s of 2 s → half of six words
    assert not bool(turn_breakdown(conversation().timeline).iloc[1]["interrupted"])


def test_what_the_client_told_the_server_and_a_correction_win_over_the_estimate() -> None:
    s = conversation()
    s.at(8530, "send", "internal_sagelab_heard", 9, played_ms=1000.0, text="one two")
    assert turn_breakdown(s.timeline).iloc[2]["heard_text"] == "one two"
    s = conversation()
    s.at(8530, "recv", "agent_response_correction", 9, corrected_agent_response="one")
    assert turn_breakdown(s.timeline).iloc[2]["heard_text"] == "one"


def test_heard_words_rounds_down_to_whole_words() -> None:
    assert heard_words("a b c d", 499, 1000) == "a"
    assert heard_words("a b c d", 5000, 1000) == "a b c d"
    assert heard_words("a b c d", math.nan, 1000) == ""
    assert heard_words("", 10, 1000) == ""


def test_turn_audio_cuts_both_sides_of_one_turn_from_a_saved_timeline(tmp_path) -> None:
    timeline = Timeline()
    timeline.t0_ns = 0
    chunk = 1600  # 100 ms
    for k in range(30):  # the user speaks from 1.0 s to 2.0 s, silence around it
        loud = 10 <= k < 20
        pcm = np.full(chunk, 1000 if loud else 0, dtype=np.int16)
        timeline.add_audio("send", pcm, t_ns=k * 100 * MS)
    timeline.add(
        "local", "user_speech", speech_start_ns=1000 * MS, speech_end_ns=2000 * MS,
        start_ns=0, end_ns=3000 * MS,
    )  # fmt: skip
    timeline.add("recv", "user_transcript", event_id=2, t_ns=2500 * MS, user_transcript="hi")
    timeline.add("recv", "agent_response", event_id=2, t_ns=2600 * MS, agent_response="hello")
    for k in range(4):
        pcm = np.full(chunk, 2000 + k, dtype=np.int16)
        timeline.add_audio("recv", pcm, t_ns=(2700 + 100 * k) * MS, event_id=2)
    loaded = Timeline.load(timeline.save(tmp_path / "run"))
    user, agent = turn_audio(loaded, 2)
    assert agent.size == 4 * chunk and agent[0] == 2000 and agent[-1] == 2003
    # the speech, with up to 300 ms before and 100 ms after it (chunks at both edges)
    assert 10 * chunk <= user.size <= 15 * chunk
    assert (user != 0).sum() == 10 * chunk
    with pytest.raises(KeyError, match="event_id 99"):
        turn_audio(loaded, 99)


def test_stage_breakdown_draws_one_stacked_bar_per_answered_turn() -> None:
    from sagelab.metrics.plots import stage_breakdown

    table = turn_breakdown(conversation().timeline)
    fig = stage_breakdown(table)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # the greeting has nothing to break down, turn 2 no stage timings: both left out
    assert labels == ["turn 1"]
    # turn 1's six segments end at its voice-to-voice (700 ms), written beside the bar
    ends = [p.get_x() + p.get_width() for p in ax.patches]
    assert len(ends) == 6 and max(ends) == pytest.approx(700)
    assert "700 ms" in [t.get_text() for t in ax.texts]
    rounded_table = rounded(table)
    assert str(rounded_table["network_ms"].dtype) == "Int64"
    assert rounded_table.loc[1, "network_ms"] == 80
