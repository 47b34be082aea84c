"""The chunks as the browser's player got them, without a browser: the end report's chunk list
(``arrivals_ms``, ``durations_ms``) checked on the kernel side, and turned into a chunk table
that the playout model runs on (``delivered_chunk_table``), so the player is checked against
its rule on what it really received rather than on the kernel's network arrival times."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sagelab.client.timeline import Timeline
from sagelab.metrics import delivered_chunk_table, player_playout, playout
from sagelab.notebook import ClockSync, PlayerOutput, WidgetMessageError
from sagelab.notebook.assets import source
from sagelab.notebook.messages import MAX_ARRIVALS, parse_player_events

MS = 1_000_000


def end(**fields: Any) -> dict[str, Any]:
    return {"kind": "end", "event_id": 3, "b_ms": 900.0, "played_ms": 400.0, **fields}


def synced(offset_ms: float = 0.0) -> ClockSync:
    """A clock on which browser ms ``b`` is kernel ns ``(b - offset_ms) * 1e6``."""
    clock = ClockSync()
    clock.add(0, offset_ms, 0)
    return clock


# -- the kernel side of the report ---------------------------------------------------------


def test_an_end_report_carries_its_chunks_as_floats() -> None:
    raw = end(arrivals_ms=[10, 110.5], durations_ms=[100, 100.0], arrivals_left_off=2)
    [event] = parse_player_events({"events": [raw]}, synced())
    assert event.type == "playback_end"
    assert event.data["arrivals_ms"] == [10.0, 110.5]
    assert event.data["durations_ms"] == [100.0, 100.0]
    assert event.data["arrivals_left_off"] == 2
    assert all(isinstance(v, float) for v in event.data["arrivals_ms"])
    flushed = end(arrivals_ms=[1.0], durations_ms=[20.0], flushed=True, interrupted_ms=15)
    [cut] = parse_player_events({"events": [flushed]}, synced())
    assert cut.data["interrupted_ms"] == 15.0 and cut.data["arrivals_left_off"] == 0
    # Reports without a chunk list (an older player) are still read.
    [bare] = parse_player_events({"events": [end()]}, synced())
    assert "arrivals_ms" not in bare.data


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arrivals_ms": "10,20", "durations_ms": [1, 2]}, "arrivals_ms must be a list"),
        ({"arrivals_ms": [1, "2"], "durations_ms": [1, 2]}, "finite numbers"),
        ({"arrivals_ms": [1, True], "durations_ms": [1, 2]}, "finite numbers"),
        ({"arrivals_ms": [1, math.inf], "durations_ms": [1, 2]}, "finite numbers"),
        ({"arrivals_ms": [1, 2], "durations_ms": [1, math.nan]}, "finite numbers"),
        ({"arrivals_ms": [1, 2], "durations_ms": [1]}, "2 arrivals but 1 durations"),
        ({"arrivals_ms": [1, 2]}, "both arrivals_ms and durations_ms"),
        ({"durations_ms": [1, 2]}, "both arrivals_ms and durations_ms"),
        ({"arrivals_ms": [1], "durations_ms": [-5]}, "negative chunk duration"),
        ({"arrivals_ms": [1], "durations_ms": [5], "arrivals_left_off": -1}, "a count"),
        ({"arrivals_ms": [1], "durations_ms": [5], "arrivals_left_off": 1.5}, "a count"),
        ({"arrivals_ms": [1], "durations_ms": [5], "arrivals_left_off": True}, "a count"),
        ({"arrivals_ms": [1], "durations_ms": [5], "interrupted_ms": "now"}, "interrupted_ms"),
        ({"interrupted_ms": 5.0}, "needs arrivals_ms"),
        (
            {"arrivals_ms": [0.0] * (MAX_ARRIVALS + 1), "durations_ms": [1.0] * (MAX_ARRIVALS + 1)},
            f"at most {MAX_ARRIVALS}",
        ),
    ],
)
def test_a_malformed_chunk_list_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(WidgetMessageError, match=re.escape(message)):
        parse_player_events({"events": [end(**fields)]}, synced())


def test_only_an_end_report_lists_chunks() -> None:
    raw = {"kind": "start", "event_id": 3, "b_ms": 5.0, "arrivals_ms": [1], "durations_ms": [1]}
    with pytest.raises(WidgetMessageError, match="only a player end event"):
        parse_player_events({"events": [raw]}, synced())


def test_a_bad_report_reaches_neither_the_records_nor_the_metrics() -> None:
    output = PlayerOutput(lambda content, buffers: None)
    bad = end(arrivals_ms=[1, 2], durations_ms=[1])
    with pytest.raises(WidgetMessageError):
        output.handle({"type": "player", "events": [bad]})
    assert output.records() == []


def test_the_browser_list_is_as_long_as_the_kernel_accepts() -> None:
    # player.js keeps the first MAX_ARRIVALS chunks of a turn; the kernel refuses longer lists.
    found = re.search(r"const MAX_ARRIVALS = (\d+);", source("player.js"))
    assert found is not None and int(found.group(1)) == MAX_ARRIVALS


# -- the chunk table and the model on it ----------------------------------------------------


def late_chunk_records() -> list[dict[str, Any]]:
    """One turn of five 100 ms chunks at 0, 100, 200, 550, 650 ms (browser clock): with an
    80 ms jitter buffer the queue runs dry at 380 ms and the fourth chunk plays at 630."""
    arrivals = [1000.0, 1100.0, 1200.0, 1550.0, 1650.0]
    return [
        {"type": "playback_start", "event_id": 1, "t_ns": 1080 * MS, "browser_ms": 1080.0},
        {
            "type": "playback_underrun",
            "event_id": 1,
            "t_ns": 1380 * MS,
            "browser_ms": 1380.0,
            "gap_ms": 250.0,
        },
        {
            "type": "playback_end",
            "event_id": 1,
            "t_ns": 1830 * MS,
            "browser_ms": 1830.0,
            "played_ms": 500.0,
            "flushed": False,
            "arrivals_ms": arrivals,
            "durations_ms": [100.0] * 5,
            "arrivals_left_off": 0,
        },
    ]


def test_a_late_chunk_is_exactly_one_underrun() -> None:
    table = delivered_chunk_table(late_chunk_records())
    assert list(table["t_ns"]) == [a * MS for a in (1000, 1100, 1200, 1550, 1650)]
    assert list(table["seq"]) == [0, 1, 2, 3, 4]
    assert list(table["samples"]) == [1600] * 5
    assert table.attrs["chunks_left_off"] == 0
    model = playout(table, jitter_buffer_ms=80)
    assert model.underrun_count == 1
    [gap] = model.underruns.to_dict("records")
    assert gap["t_ns"] == pytest.approx(1380 * MS)  # 1080 + 3 chunks
    assert gap["gap_ms"] == pytest.approx(250)  # dry at 1380, the late chunk plays at 1630
    assert model.audio_ms == pytest.approx(500)
    assert model.turns.iloc[0]["playback_start_delay_ms"] == pytest.approx(80)


def test_in_time_chunks_are_no_underrun() -> None:
    records = late_chunk_records()
    records[-1]["arrivals_ms"] = [1000.0, 1100.0, 1200.0, 1300.0, 1400.0]
    assert playout(delivered_chunk_table(records), jitter_buffer_ms=80).underrun_count == 0


def test_arrivals_are_put_on_the_reports_clock() -> None:
    # The kernel placed the end report (browser 1830 ms) at kernel 5,000 ms.
    records = late_chunk_records()
    records[-1]["t_ns"] = 5000 * MS
    table = delivered_chunk_table(records)
    assert table["t_ns"].iloc[0] == pytest.approx((1000 - 1830 + 5000) * MS)
    # Without the report's clock the browser's is kept: the model's figures do not change.
    for r in records:
        r["t_ns"] = None
    table = delivered_chunk_table(records)
    assert table["t_ns"].iloc[0] == pytest.approx(1000 * MS)
    assert playout(table, jitter_buffer_ms=80).underrun_count == 1


def test_a_flushed_turn_is_cut_where_the_flush_came() -> None:
    records = late_chunk_records()
    records[-1] |= {"flushed": True, "interrupted_ms": 1300.0}
    records[-1]["arrivals_ms"] = records[-1]["arrivals_ms"][:3]
    records[-1]["durations_ms"] = [100.0] * 3
    table = delivered_chunk_table(records)
    assert table["interrupted_ns"].tolist() == [1300 * MS] * 3
    model = playout(table, jitter_buffer_ms=80)
    assert model.audio_ms == pytest.approx(220)  # 1080 → 1300
    assert model.underrun_count == 0 and bool(model.turns.iloc[0]["flushed"])


def test_the_last_end_report_of_a_turn_has_all_of_it() -> None:
    records = late_chunk_records()
    early = {**records[-1], "arrivals_ms": [1000.0, 1100.0], "durations_ms": [100.0, 100.0]}
    table = delivered_chunk_table([*records[:-1], early, records[-1]])
    assert len(table) == 5


def test_turns_sessions_and_what_was_left_off() -> None:
    records = late_chunk_records()
    other = {**records[-1], "event_id": 2, "arrivals_left_off": 7}
    table = delivered_chunk_table(pd.DataFrame([*records, other]))
    assert sorted(set(table["event_id"])) == [1, 2]
    assert table.attrs["chunks_left_off"] == 7
    model = playout(table, jitter_buffer_ms=80)
    assert list(model.turns["underruns"]) == [1, 1]
    # No end report yet (or one without a list): no rows, but the same columns.
    empty = delivered_chunk_table(records[:1])
    assert len(empty) == 0 and list(empty.columns) == list(table.columns)
    assert playout(empty).underrun_count == 0


def test_a_list_that_does_not_add_up_is_refused() -> None:
    records = late_chunk_records()
    records[-1]["durations_ms"] = [100.0] * 4
    with pytest.raises(ValueError, match="5 arrivals_ms but 4 durations_ms"):
        delivered_chunk_table(records)


def test_from_a_panel_timeline(tmp_path: Path) -> None:
    # As ConversationPanel records the player's reports: local events with the kernel's t_ns,
    # the report's own browser_ms, and its fields.
    timeline = Timeline()
    records = late_chunk_records()
    for r in records:
        fields = {k: v for k, v in r.items() if k not in ("type", "event_id", "t_ns")}
        timeline.add(
            "local", r["type"], event_id=1, t_ns=r["t_ns"] + 7 * MS, clock_synced=True, **fields
        )
    table = delivered_chunk_table(timeline)
    assert table["t_ns"].iloc[0] == pytest.approx(1007 * MS)
    assert set(table["session"]) == {0}
    delivered = playout(table, jitter_buffer_ms=80)
    heard = player_playout(timeline)
    # The player's own report of the underrun agrees with the model on what it received.
    assert delivered.underrun_count == heard.underrun_count == 1
    assert delivered.underruns["gap_ms"].iloc[0] == pytest.approx(heard.underruns["gap_ms"].iloc[0])
    # A saved session gives the same table.
    timeline.save(tmp_path)
    pd.testing.assert_frame_equal(delivered_chunk_table(Timeline.load(tmp_path)), table)
