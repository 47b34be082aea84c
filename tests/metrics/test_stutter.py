"""The playout model and player reports on hand-written chunk arrivals."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from metrics_synthetic import MS, Script

from sagelab.client.timeline import Timeline
from sagelab.metrics import chunk_table, player_playout, playout


def arrivals(*times_ms: float, event_id: int = 1, size_ms: float = 100) -> Script:
    s = Script()
    for t in times_ms:
        s.audio(t, event_id, size_ms)
    return s


def test_chunks_arriving_in_time_never_underrun() -> None:
    # Each chunk arrives exactly as the one before finishes: just in time is in time.
    result = playout(arrivals(0, 100, 200, 300, 400).timeline)
    [turn] = result.turns.to_dict("records")
    assert turn["audio_ms"] == pytest.approx(500) and turn["gap_ms"] == 0
    assert turn["underruns"] == 0 and turn["stutter_ratio"] == 0
    assert turn["prebuffer_needed_ms"] == 0 and turn["playback_start_delay_ms"] == 0
    assert len(result.underruns) == 0


def test_a_late_chunk_is_one_underrun_of_exactly_its_lateness() -> None:
    s = arrivals(0, 50, 100, 450, 460)  # the fourth is needed at 300 and arrives at 450
    result = playout(s.timeline)
    [turn] = result.turns.to_dict("records")
    assert turn["underruns"] == 1 and turn["gap_ms"] == pytest.approx(150)
    assert turn["audio_ms"] == pytest.approx(500)
    assert turn["stutter_ratio"] == pytest.approx(150 / 650)
    assert turn["underruns_per_min"] == pytest.approx(1 / (650 / 60_000))
    assert turn["prebuffer_needed_ms"] == pytest.approx(150)
    assert turn["playback_end_ns"] == 650 * MS
    [gap] = result.underruns.to_dict("records")
    assert gap["t_ns"] == 300 * MS and gap["resume_ns"] == 450 * MS
    assert gap["at_audio_ms"] == pytest.approx(300)
    assert result.stutter_ratio == pytest.approx(150 / 650) and result.underrun_count == 1


def test_a_jitter_buffer_of_the_needed_prebuffer_hides_the_gap_and_less_does_not() -> None:
    chunks = chunk_table(arrivals(0, 50, 100, 450, 460).timeline)
    hidden = playout(chunks, jitter_buffer_ms=150).turns.iloc[0]
    assert hidden["underruns"] == 0 and hidden["playback_start_delay_ms"] == pytest.approx(150)
    short = playout(chunks, jitter_buffer_ms=100).turns.iloc[0]
    # Needed at 400, arrives at 450, then plays after the 100 ms buffer refills: 150 ms.
    assert short["underruns"] == 1 and short["gap_ms"] == pytest.approx(150)


def test_an_interruption_flushes_the_turn_and_its_stale_audio() -> None:
    s = arrivals(0, 100, 200)
    s.at(250, "recv", "interruption", 1).audio(260, 1, stale=True).audio(270, 1)
    chunks = chunk_table(s.timeline)
    assert list(chunks["stale"]) == [False, False, False, True, True]  # flagged or late
    assert list(chunks["seq"]) == [0, 1, 2, 3, 4]
    assert chunks["interarrival_ms"].iloc[1:].tolist() == pytest.approx([100, 100, 60, 10])
    [turn] = playout(chunks).turns.to_dict("records")
    assert turn["flushed"] and turn["chunks"] == 3
    assert turn["audio_ms"] == pytest.approx(250) and turn["playback_end_ns"] == 250 * MS
    assert turn["underruns"] == 0


def test_a_gap_cut_short_by_an_interruption_counts_only_until_the_cut() -> None:
    s = arrivals(0, 250).at(300, "recv", "interruption", 1)
    [turn] = playout(s.timeline).turns.to_dict("records")
    assert turn["gap_ms"] == pytest.approx(150) and turn["audio_ms"] == pytest.approx(150)
    buffered = playout(s.timeline, jitter_buffer_ms=100).turns.iloc[0]
    # Plays 100-200, starved until 350 but cut at 300.
    assert buffered["gap_ms"] == pytest.approx(100) and buffered["audio_ms"] == pytest.approx(100)
    # Audio that ends before the cut and nothing more in time: that is the end, not a gap.
    quiet = arrivals(0, 500).at(300, "recv", "interruption", 1)
    assert playout(quiet.timeline).turns.iloc[0]["underruns"] == 0


def test_each_turn_is_played_on_its_own_clock() -> None:
    s = arrivals(0, 100, event_id=1)
    s.audio(5000, 2).audio(5100, 2).audio(5400, 2)  # the pause between turns is not a gap
    result = playout(s.timeline)
    turns = result.turns.set_index("event_id")
    assert list(turns["underruns"]) == [0, 1]
    assert turns.loc[2, "gap_ms"] == pytest.approx(200)
    assert result.prebuffer_needed_ms == pytest.approx(200)
    summary = result.summary()
    assert summary["underruns"] == 1 and summary["turns"] == 2
    assert summary["gap_length_ms"]["p50"] == pytest.approx(200)


def test_no_audio_means_no_turns_and_undefined_ratios() -> None:
    result = playout(Timeline())
    assert len(result.turns) == 0 and result.underrun_count == 0
    assert math.isnan(result.stutter_ratio) and math.isnan(result.prebuffer_needed_ms)


def test_bad_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="jitter_buffer_ms must be >= 0"):
        playout(Timeline(), jitter_buffer_ms=-1)
    with pytest.raises(ValueError, match="chunk_table"):
        playout(pd.DataFrame({"t_ns": [0]}))


def test_player_reports_fill_the_same_table() -> None:
    s = arrivals(0, 50, 100, 450, 460)
    s.at(20, "local", "playback_start", 1)
    s.at(320, "local", "playback_underrun", 1, gap_ms=140.0)
    s.at(310, "local", "playback_end", 1, played_ms=300.0, flushed=False)  # drained, then more
    s.at(700, "local", "playback_end", 1, played_ms=500.0, flushed=False)
    model = playout(s.timeline)
    player = player_playout(s.timeline)
    assert list(player.turns.columns) == list(model.turns.columns)
    [turn] = player.turns.to_dict("records")
    assert turn["source"] == "player" and turn["underruns"] == 1
    assert turn["stutter_ratio"] == pytest.approx(140 / 640)
    assert turn["playback_start_delay_ms"] == pytest.approx(20)  # first chunk came at 0
    assert turn["prebuffer_needed_ms"] == pytest.approx(150)  # from the arrivals
    assert player.underruns.iloc[0]["resume_ns"] == pytest.approx(460 * MS)
    # The player and the model agree on the number of underruns.
    assert player.underrun_count == model.underrun_count


def test_player_reports_as_records_and_their_errors() -> None:
    records = [
        {"type": "playback_start", "event_id": 4, "t_ns": 0},
        {"type": "playback_end", "event_id": 4, "t_ns": 10, "played_ms": 900.0, "flushed": True},
    ]
    result = player_playout(records)
    [turn] = result.turns.to_dict("records")
    assert turn["audio_ms"] == 900 and turn["underruns"] == 0 and turn["flushed"]
    assert math.isnan(turn["first_arrival_ns"])  # no chunks given
    assert player_playout(pd.DataFrame(records)).turns.iloc[0]["audio_ms"] == 900
    with pytest.raises(ValueError, match="unknown type 'stall'"):
        player_playout([{"type": "stall", "event_id": 1}])
    with pytest.raises(ValueError, match="needs gap_ms"):
        player_playout([{"type": "playback_underrun", "event_id": 1, "t_ns": 5}])
