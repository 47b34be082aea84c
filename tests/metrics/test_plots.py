"""Figures from the metric tables: the right lanes, lines and bars, in the right places.

Tables come from the real metric functions over hand-written timelines (round milliseconds,
so every expected position is simple arithmetic), and once from a real recorded session.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from metrics_synthetic import MS, Script

from sagelab.client import Session
from sagelab.metrics import accuracy_table, playout, tool_call_table, turn_table
from sagelab.metrics.plots import (
    LANES,
    conversation_spans,
    conversation_timeline,
    latency_cdf,
    save_figure,
    stutter_vs_load,
    wer_per_utterance,
)
from sagelab.server.app import SagelabServer


def stage(s: Script, ms: float, event_id: int, name: str, value: float) -> None:
    s.at(ms, "recv", "internal_sagelab_stage", event_id, stage=name, ms=value)


def conversation() -> Script:
    """A spoken turn with a failing tool call, then a turn cut by a barge-in, then its reply."""
    s = Script()
    s.at(0, "local", "connecting").at(30, "recv", "conversation_initiation_metadata")
    s.speech(1000, 2000, sent_until_ms=3000)
    for name, value in (("endpointing", 500), ("stt", 300), ("tool", 10), ("brain", 20),
                        ("tts_first_audio", 150)):  # fmt: skip
        stage(s, 2800, 2, name, value)
    s.transcript(2800, 2, "tell me about record forty two")
    s.at(2805, "recv", "agent_tool_request", 2, tool_name="get_record", tool_call_id="c1")
    s.at(2815, "recv", "agent_tool_response", 2, tool_name="get_record", tool_call_id="c1",
         is_error=True)  # fmt: skip
    s.response(2830, 2, "Sorry.").stream(2980, 2, 5)
    s.speech(4000, 5000)
    stage(s, 5800, 3, "stt", 250)
    s.transcript(5800, 3).response(5850, 3, "A long answer").stream(6000, 3, 10)
    s.speech(6500, 7200)
    s.at(6600, "recv", "interruption", 3)
    s.transcript(7900, 4, "stop").response(7950, 4, "Okay.").stream(8100, 4, 3)
    return s


def lane_bars(fig: Figure) -> dict[str, list[tuple[float, float]]]:
    """(start, width) of every bar, by the lane its collection is labelled with."""
    ax = fig.axes[0]
    out: dict[str, list[tuple[float, float]]] = {}
    for coll in ax.collections:
        if isinstance(coll, PolyCollection) and coll.get_label() in LANES:
            bars = []
            for path in coll.get_paths():
                xs = path.vertices[:, 0]
                bars.append((round(float(xs.min()), 3), round(float(xs.max() - xs.min()), 3)))
            out[coll.get_label()] = sorted(bars)
    return out


def test_timeline_has_one_lane_per_stage_with_spans_where_the_tables_put_them() -> None:
    tl = conversation().timeline
    turns, tools = turn_table(tl), tool_call_table(tl)
    fig = conversation_timeline(turns, tools, playout(tl).turns, min_width_s=0.0)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(reversed(LANES))
    bars = lane_bars(fig)
    assert set(bars) == set(LANES)
    assert bars["user speech"] == [(1.0, 1.0), (4.0, 1.0), (6.5, 0.7)]
    assert bars["endpointing"] == [(2.0, 0.5)]  # from the end of speech, for 500 ms
    assert bars["STT"] == [(2.5, 0.3), (5.55, 0.25)]  # ends when the transcript arrived
    assert bars["brain"] == [(2.81, 0.02)]  # ends when the reply text arrived
    assert bars["TTS"] == [(2.83, 0.15)]  # ends at the first audio
    assert bars["tool calls"] == [(2.805, 0.01)]
    # Playback: each turn plays from its first chunk; the cut turn stops at the interruption.
    assert bars["playback"] == [(2.98, 0.5), (6.0, 0.6), (8.1, 0.3)]
    # The failed tool call is red; the interruption is a dashed line at 6.6 s.
    tool_coll = next(c for c in ax.collections if c.get_label() == "tool calls")
    assert tuple(np.round(tool_coll.get_facecolors()[0][:3], 2)) == (0.84, 0.16, 0.16)
    cuts = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert cuts == [pytest.approx(6.6)]


def test_spans_table_is_what_the_figure_draws() -> None:
    tl = conversation().timeline
    spans = conversation_spans(turn_table(tl), tool_call_table(tl))
    tool = spans[spans["lane"] == "tool calls"].iloc[0]
    assert (tool["label"], bool(tool["error"])) == ("get_record", True)
    assert tool["end_ns"] - tool["start_ns"] == 10 * MS
    # Without a playout table, playback runs from the first to the last chunk received.
    play = spans[spans["lane"] == "playback"]
    assert list((play["start_ns"] / MS).round()) == [2980, 6000, 8100]


def test_latency_cdf_draws_one_curve_per_measured_column_with_its_percentiles() -> None:
    turns = pd.DataFrame(
        {
            "voice_to_voice_ms": [900.0, 1000.0, 1100.0],
            "stage_brain_ms": [1.0, 2.0, 3.0],
            "stage_tool_ms": [np.nan, np.nan, np.nan],  # nothing measured: no curve
        }
    )
    fig = latency_cdf(turns)
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "voice-to-voice  p50 1000 ms, p95 1090 ms (n=3)",
        "brain  p50 2.0 ms, p95 2.9 ms (n=3)",
    ]
    assert ax.get_xscale() == "log"  # 1 ms and 1 s on one axis
    # Each curve is an empirical CDF: it reaches 1 at the largest value.
    ends = sorted(
        (float(line.get_xdata()[-1]), float(line.get_ydata()[-1])) for line in ax.get_lines()
    )
    assert ends[-1][1] == pytest.approx(1.0)
    linear = latency_cdf(turns, ["voice_to_voice_ms"])
    assert linear.axes[0].get_xscale() == "linear"
    with pytest.raises(KeyError, match="no column 'ttfa' in the table; it has: voice_to_voice_ms"):
        latency_cdf(turns, ["ttfa"])


def test_stutter_against_load_has_p50_and_p95_per_load_level() -> None:
    table = pd.DataFrame(
        {"sessions": [1, 1, 2, 2, 4, 4], "stutter_ratio": [0.0, 0.0, 0.0, 0.02, 0.05, 0.15]}
    )
    fig = stutter_vs_load(table)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["p50"].get_xdata()) == [1, 2, 4]
    assert list(np.round(lines["p50"].get_ydata(), 3)) == [0.0, 1.0, 10.0]  # percent
    assert list(np.round(lines["p95"].get_ydata(), 3)) == [0.0, 1.9, 14.5]
    assert "%" in ax.get_ylabel()
    with pytest.raises(KeyError, match="no column 'users'"):
        stutter_vs_load(table, load="users")


def test_wer_bars_match_the_accuracy_table_and_show_the_pooled_wer() -> None:
    table = accuracy_table([("a", "go forward ten meters", "go forward ten meters"),
                            ("b", "front left", "front right")])  # fmt: skip
    fig = wer_per_utterance(table)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == [0.0, 50.0]
    at = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks(), strict=True))
    assert at["a"] > at["b"]  # the table's first row on top
    pooled = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert pooled[0].get_xdata()[0] == pytest.approx(table.attrs["wer"] * 100)
    with pytest.raises(KeyError, match="needs a 'wer' column"):
        wer_per_utterance(pd.DataFrame({"id": ["x"]}))


async def test_figures_of_a_real_session_save_as_png(
    server: SagelabServer, speech_dir: Path, tmp_path: Path
) -> None:
    async with Session.connect(server.http_url, "scripted", stages=True) as s:
        await s.wait_for("agent_response", timeout=10)
        mark = s.mark()
        await s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=800)
        await s.wait_for("agent_response", since=mark, timeout=10)
        await s.wait_for("audio", since=mark, timeout=10)
    turns = turn_table(s.timeline)
    timeline_png = save_figure(
        conversation_timeline(turns, tool_call_table(s.timeline), playout(s.timeline).turns),
        tmp_path / "figs" / "timeline.png",
    )
    cdf_png = save_figure(latency_cdf(turns), tmp_path / "figs" / "cdf.png")
    for png in (timeline_png, cdf_png):
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert "user speech" in lane_bars(conversation_timeline(turns))


def test_figures_render_in_a_notebook_without_pyplot() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        fig = latency_cdf(pd.DataFrame({"voice_to_voice_ms": [900.0, 1000.0]}))
        data, _ = shell.display_formatter.format(fig)
        assert base64.b64decode(data["image/png"])[:4] == b"\x89PNG"
    finally:
        InteractiveShell.clear_instance()
