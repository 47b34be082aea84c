"""Figures drawn from the metric DataFrames: the same pictures in a notebook, a report, a CI run.

Every function takes the tables of ``sagelab.metrics`` (``turn_table``, ``tool_call_table``,
``playout(...).turns``, ``accuracy_table``) and returns a matplotlib ``Figure``; nothing is
computed here that a table does not already hold, so a figure can never disagree with the
numbers printed beside it. Percentiles in legends come from ``summarize_values``.

* ``latency_cdf``: one cumulative distribution per latency or stage: medians and tails at once,
  which a bar of means hides.
* ``conversation_timeline``: one lane each for user speech, endpointing, STT, brain, tool calls,
  TTS and playback, on the client's clock: where a turn's time went.
* ``stutter_vs_load``: a stutter figure (``stutter_ratio``, ``gap_ms``, ``underruns``…) against
  concurrency: when does audio start to break up.
* ``wer_per_utterance``: word error rate of each utterance, with the pooled WER.
* ``stage_breakdown``: one stacked bar per turn (or step) of ``turn_breakdown``'s stages, with
  the voice-to-voice total written at its end.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, so no GUI backend, no
figure leak in long runs, safe off the main thread); ``save_figure`` writes PNGs. In Jupyter,
the returned figure is displayed inline like any matplotlib figure (the first plot registers
IPython's PNG formatter if nothing has yet).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("sagelab's plots need matplotlib: pip install 'sagelab[metrics]'") from exc

from sagelab.metrics.summary import summarize_values

# Latency columns of ``turn_table`` worth a CDF, in pipeline order, with their labels.
LATENCY_LABELS: dict[str, str] = {
    "voice_to_voice_ms": "voice-to-voice",
    "ttfa_ms": "time to first audio",
    "interruption_ms": "interruption",
    "stage_endpointing_ms": "endpointing",
    "stage_stt_ms": "STT (after end of turn)",
    "stage_stt_compute_ms": "STT compute",
    "stage_brain_ms": "brain",
    "stage_tool_ms": "tool",
    "stage_tts_first_audio_ms": "TTS to first audio",
}
DEFAULT_LATENCIES = tuple(LATENCY_LABELS)
LATENCY_COLORS = {
    "voice_to_voice_ms": "#1d3557",
    "ttfa_ms": "#457b9d",
    "interruption_ms": "#d62828",
    "stage_endpointing_ms": "#8d99ae",
    "stage_stt_ms": "#e9c46a",
    "stage_stt_compute_ms": "#b08900",
    "stage_brain_ms": "#f4a261",
    "stage_tool_ms": "#9b5de5",
    "stage_tts_first_audio_ms": "#e76f51",
}

LANES = ("user speech", "endpointing", "STT", "brain", "tool calls", "TTS", "playback")
LANE_COLORS = {
    "user speech": "#2a9d8f",
    "endpointing": "#8d99ae",
    "STT": "#e9c46a",
    "brain": "#f4a261",
    "tool calls": "#9b5de5",
    "TTS": "#e76f51",
    "playback": "#264653",
}
ERROR_COLOR = "#d62828"
_PALETTE = (
    "#264653", "#2a9d8f", "#e76f51", "#8d99ae", "#e9c46a", "#f4a261", "#9b5de5", "#00b4d8",
    "#6a994e",
)  # fmt: skip


def _enable_notebook_display() -> None:
    """Make returned figures render in Jupyter. IPython registers its PNG formatter for
    figures when the inline backend loads, which a pyplot-free ``Figure`` never triggers;
    a notebook that already set up matplotlib display keeps its own settings."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    if Figure in shell.display_formatter.formatters["image/png"].type_printers:
        return
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    _enable_notebook_display()
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (or whatever ``path``'s suffix names), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def _finite(values: Any) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def latency_cdf(
    turns: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    title: str = "Latency by stage",
    log: bool | None = None,
) -> Figure:
    """Empirical CDFs of latency columns of a ``turn_table`` (or any table of ``*_ms``).

    ``columns`` defaults to the turn table's latencies and stages that hold values. ``log``
    (default: when values span more than two decades, as a 2 ms brain and a 1 s voice-to-voice
    do) draws the x axis in log scale. Each legend entry gives p50, p95 and n.
    """
    if columns is None:
        columns = [c for c in DEFAULT_LATENCIES if c in turns.columns]
    else:
        missing = [c for c in columns if c not in turns.columns]
        if missing:
            have = ", ".join(map(str, turns.columns))
            raise KeyError(f"no column {missing[0]!r} in the table; it has: {have}")
    series = {c: _finite(turns[c]) for c in columns}
    series = {c: v for c, v in series.items() if v.size}
    fig, ax = _figure(11, 4.6)
    if not series:
        ax.text(0.5, 0.5, "no latency measurements", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_title(title)
        return fig
    lo = min(float(v.min()) for v in series.values())
    hi = max(float(v.max()) for v in series.values())
    if log is None:
        log = lo > 0 and hi / lo > 100
    for k, (col, values) in enumerate(series.items()):
        s = summarize_values(values)
        label = (
            f"{LATENCY_LABELS.get(col, col)}  p50 {_ms(s['p50'])}, p95 {_ms(s['p95'])}"
            f" (n={s['count']})"
        )
        color = LATENCY_COLORS.get(col, _PALETTE[k % len(_PALETTE)])
        if values.size == 1:
            ax.plot(values, [1.0], "o", color=color, label=label)
        else:
            ax.ecdf(values, label=label, color=color, linewidth=1.8)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("milliseconds" + (" (log scale)" if log else ""))
    ax.set_ylabel("fraction of turns ≤ x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    fig.legend(loc="outside right center", fontsize=8, frameon=False)
    return fig


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def conversation_spans(
    turns: pd.DataFrame,
    tools: pd.DataFrame | None = None,
    playout: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Where each lane of ``conversation_timeline`` is busy: ``lane, start_ns, end_ns, label,
    error``, one row per span.

    The client stamps when things arrive; the server's stage events say how long each stage
    took. A stage is drawn ending where its result reached the client (STT at the transcript,
    brain at the reply text, TTS at the first audio), except endpointing, which starts at the
    end of the user's speech. Playback comes from a playout table (``playout(...).turns``);
    without one, from the first to the last audio chunk received.
    """
    rows: list[dict[str, Any]] = []

    def add(lane: str, start: float, end: float, label: str = "", error: bool = False) -> None:
        if math.isfinite(start) and math.isfinite(end) and end >= start:
            rows.append(
                {"lane": lane, "start_ns": start, "end_ns": end, "label": label, "error": error}
            )

    def value(row: Any, column: str) -> float:
        v = row.get(column, float("nan")) if hasattr(row, "get") else float("nan")
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    for _, row in turns.iterrows():
        speech_start, speech_end = (
            value(row, "user_speech_start_ns"),
            value(row, "user_speech_end_ns"),
        )
        add("user speech", speech_start, speech_end, str(row.get("user_text") or ""))
        text_sent = value(row, "user_text_sent_ns")
        add("user speech", text_sent, text_sent + 50e6, "typed")
        add("endpointing", speech_end, speech_end + value(row, "stage_endpointing_ms") * 1e6)
        transcript = value(row, "user_transcript_ns")
        add("STT", transcript - value(row, "stage_stt_ms") * 1e6, transcript)
        reply = value(row, "agent_text_ns")
        add("brain", reply - value(row, "stage_brain_ms") * 1e6, reply)
        first_audio = value(row, "first_audio_ns")
        add("TTS", first_audio - value(row, "stage_tts_first_audio_ms") * 1e6, first_audio)
        if playout is None:
            add("playback", first_audio, value(row, "last_audio_ns"))
    if tools is not None:
        for _, call in tools.iterrows():
            end = value(call, "result_ns")
            start = value(call, "call_ns")
            if not math.isfinite(end):
                end = start
            is_error = call.get("is_error")
            failed = bool(is_error) if is_error is not pd.NA and is_error is not None else False
            add("tool calls", start, max(end, start), str(call.get("name") or ""), failed)
    if playout is not None:
        for _, turn in playout.iterrows():
            add("playback", value(turn, "playback_start_ns"), value(turn, "playback_end_ns"),
                "cut" if bool(turn.get("flushed")) else "")  # fmt: skip
    return pd.DataFrame(rows, columns=["lane", "start_ns", "end_ns", "label", "error"])


def conversation_timeline(
    turns: pd.DataFrame,
    tools: pd.DataFrame | None = None,
    playout: pd.DataFrame | None = None,
    *,
    t0_ns: float | None = None,
    title: str = "Conversation timeline",
    min_width_s: float = 0.04,
) -> Figure:
    """One lane each for user speech, endpointing, STT, brain, tool calls, TTS and playback.

    ``turns`` is one session's ``turn_table``; ``tools`` its ``tool_call_table`` (failed calls
    are red); ``playout`` its ``playout(...).turns``. Times are seconds from ``t0_ns``
    (default: the table's ``attrs["t0_ns"]``, the timeline's start). Interruptions are dashed
    red lines. Spans shorter than ``min_width_s`` (a 2 ms brain) are widened to stay visible.
    """
    spans = conversation_spans(turns, tools, playout)
    if t0_ns is None:
        t0_ns = turns.attrs.get("t0_ns")
    if t0_ns is None:
        t0_ns = float(spans["start_ns"].min()) if len(spans) else 0.0
    fig, ax = _figure(12, 4.2)
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    lanes = list(LANES)
    for i, lane in enumerate(lanes):
        mine = spans[spans["lane"] == lane]
        if mine.empty:
            continue
        starts = (mine["start_ns"].to_numpy() - t0_ns) / 1e9
        widths = np.maximum((mine["end_ns"].to_numpy() - mine["start_ns"].to_numpy()) / 1e9,
                            min_width_s)  # fmt: skip
        colors = [ERROR_COLOR if e else LANE_COLORS[lane] for e in mine["error"]]
        y = len(lanes) - 1 - i
        ax.broken_barh(list(zip(starts, widths, strict=True)), (y - 0.35, 0.7),
                       facecolors=colors, label=lane)  # fmt: skip
        if lane == "tool calls":  # a tool call is too short to see: name it, failures in red
            for x, w, text, failed in zip(starts, widths, mine["label"], mine["error"],
                                          strict=True):  # fmt: skip
                ax.annotate(text + (" (failed)" if failed else ""), (x + w, y),
                            xytext=(4, 0), textcoords="offset points", fontsize=9,
                            va="center", ha="left", annotation_clip=False,
                            color=ERROR_COLOR if failed else "black")  # fmt: skip
    for cut in _finite(turns["interruption_ns"]) if "interruption_ns" in turns.columns else []:
        ax.axvline((cut - t0_ns) / 1e9, color=ERROR_COLOR, linestyle="--", linewidth=1)
    ax.set_yticks(range(len(lanes)), list(reversed(lanes)))
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_xlabel("seconds since the session started")
    ax.set_title(title)
    handles = [Patch(color=ERROR_COLOR, label="failed tool call")]
    if "interruption_ns" in turns.columns and _finite(turns["interruption_ns"]).size:
        handles.append(Patch(facecolor="white", edgecolor=ERROR_COLOR, linestyle="--",
                             label="interruption"))  # fmt: skip
    if (
        tools is not None
        and "is_error" in tools.columns
        and bool(tools["is_error"].fillna(False).any())
    ):
        ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    elif len(handles) > 1:
        ax.legend(handles=handles[1:], loc="upper right", fontsize=8, frameon=False)
    return fig


def stutter_vs_load(
    table: pd.DataFrame,
    *,
    load: str = "sessions",
    metric: str = "stutter_ratio",
    title: str | None = None,
) -> Figure:
    """A stutter column against a load column: every value as a dot, p50 and p95 as lines.

    ``table`` has one row per turn or session with a ``load`` column (concurrent sessions, say)
    and a ``metric`` column from a playout table (``stutter_ratio``, ``gap_ms``,
    ``underruns``, ``underruns_per_min``, ``prebuffer_needed_ms``).
    """
    for col in (load, metric):
        if col not in table.columns:
            raise KeyError(
                f"no column {col!r} in the table; it has: {', '.join(map(str, table.columns))}"
            )
    fig, ax = _figure(7.5, 4.5)
    ratio = metric == "stutter_ratio"
    scale = 100.0 if ratio else 1.0
    data = table[[load, metric]].apply(pd.to_numeric, errors="coerce").dropna()
    levels = sorted(data[load].unique())
    p50, p95 = [], []
    for level in levels:
        values = data.loc[data[load] == level, metric].to_numpy() * scale
        s = summarize_values(values)
        p50.append(s["p50"])
        p95.append(s["p95"])
        ax.scatter(np.full(values.size, level), values, s=14, alpha=0.35, color=_PALETTE[1])
    if levels:
        ax.plot(levels, p50, "o-", color=_PALETTE[0], label="p50")
        ax.plot(levels, p95, "s--", color=_PALETTE[2], label="p95")
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(load.replace("_", " "))
    unit = {"stutter_ratio": "% of playout in gaps", "gap_ms": "ms of gaps",
            "prebuffer_needed_ms": "ms"}.get(metric, "")  # fmt: skip
    ax.set_ylabel(f"{metric.replace('_', ' ')}" + (f" ({unit})" if unit else ""))
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"Stutter against load: {metric.replace('_', ' ')}")
    return fig


def wer_per_utterance(
    accuracy: pd.DataFrame,
    *,
    label: str | None = None,
    overall_wer: float | None = None,
    title: str = "Word error rate per utterance",
) -> Figure:
    """Horizontal bars of each utterance's ``wer`` (a fraction), labelled by ``label``
    (default: ``id``, else ``reference``), with ``overall_wer`` (pooled; default: the
    table's ``attrs["wer"]``, which ``accuracy_table`` sets) as a line."""
    if "wer" not in accuracy.columns:
        raise KeyError(
            "the table needs a 'wer' column (one row per utterance): build it with "
            "sagelab.metrics.accuracy_table"
        )
    if label is None:
        label = next((c for c in ("id", "utterance", "reference") if c in accuracy.columns), None)
    names = [str(v) for v in accuracy[label]] if label else [str(i) for i in range(len(accuracy))]
    names = [n if len(n) <= 48 else n[:20] + "…" + n[-27:] for n in names]  # keep both ends
    wer = pd.to_numeric(accuracy["wer"], errors="coerce").to_numpy(dtype=float) * 100
    fig, ax = _figure(8, max(2.5, 0.32 * len(names) + 1.2))
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    y = np.arange(len(names))[::-1]
    colors = [_PALETTE[1] if v == 0 else _PALETTE[2] for v in np.nan_to_num(wer)]
    ax.barh(y, np.nan_to_num(wer), color=colors, height=0.7)
    for yi, v in zip(y, wer, strict=True):  # the value, so a perfect 0 % is visible too
        ax.annotate("–" if not math.isfinite(v) else f"{v:.0f}%", (np.nan_to_num(v), yi),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(y, names, fontsize=8)
    if overall_wer is None:
        overall_wer = accuracy.attrs.get("wer")
    if overall_wer is not None and math.isfinite(overall_wer):
        ax.axvline(overall_wer * 100, color=_PALETTE[0], linestyle="--",
                   label=f"pooled WER {overall_wer:.1%}")  # fmt: skip
        # Below the axes, where it cannot cover a bar's value.
        fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    ax.set_xlabel("WER (%)")
    top = float(np.nanmax(wer)) * 1.1 if np.isfinite(wer).any() else 0.0
    ax.set_xlim(0, max(10.0, top))
    ax.set_title(title)
    return fig


STAGE_PART_LABELS = {
    "endpointing_ms": "endpointing",
    "stt_ms": "STT",
    "brain_ms": "brain",
    "tool_ms": "tool",
    "tts_ms": "TTS",
    "network_ms": "network & rest",
}
STAGE_PART_COLORS = {
    "endpointing_ms": "#8d99ae",
    "stt_ms": "#e9c46a",
    "brain_ms": "#f4a261",
    "tool_ms": "#9b5de5",
    "tts_ms": "#e76f51",
    "network_ms": "#457b9d",
}


def stage_breakdown(
    table: pd.DataFrame,
    *,
    label: str | None = None,
    title: str = "Where each turn's time went",
) -> Figure:
    """One horizontal stacked bar per row of ``table``: its ``endpointing_ms`` … ``network_ms``
    (``sagelab.metrics.turns.turn_breakdown``, or medians of it per step), with
    ``voice_to_voice_ms`` written at the end of the bar. Rows without stages are left out.

    ``label`` names the column that labels the bars (default: ``turn`` as "turn N", the
    greeting skipped since nobody waited for it; else the index).
    """
    parts = [c for c in STAGE_PART_LABELS if c in table.columns]
    if not parts:
        raise KeyError(
            "the table has no stage columns (endpointing_ms … network_ms): build it with "
            "sagelab.metrics.turns.turn_breakdown"
        )
    values = table[parts].apply(pd.to_numeric, errors="coerce")
    keep = values.notna().any(axis=1)
    if "kind" in table.columns:
        keep &= table["kind"] != "greeting"
    rows, values = table[keep], values[keep].fillna(0.0)
    if label is not None:
        names = [str(v) for v in rows[label]]
    elif "turn" in rows.columns:
        names = [f"turn {v}" for v in rows["turn"]]
    else:
        names = [str(v) for v in rows.index]
    fig, ax = _figure(9, max(2.2, 0.45 * len(names) + 1.4))
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    y = np.arange(len(names))[::-1]
    left = np.zeros(len(names))
    for col in parts:
        widths = values[col].to_numpy(dtype=float)
        ax.barh(y, widths, left=left, height=0.6, color=STAGE_PART_COLORS[col],
                label=STAGE_PART_LABELS[col])  # fmt: skip
        left += widths
    totals = (
        pd.to_numeric(rows["voice_to_voice_ms"], errors="coerce").to_numpy(dtype=float)
        if "voice_to_voice_ms" in rows.columns
        else left
    )
    for yi, end, total in zip(y, left, totals, strict=True):
        shown = total if math.isfinite(total) else end
        ax.annotate(_ms(shown), (max(end, shown if math.isfinite(shown) else 0), yi),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)  # fmt: skip
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlabel("ms from the end of the user's speech to the reply's first audio")
    ax.set_xlim(0, max(1.0, float(np.nanmax(np.append(left, totals))) * 1.15) if len(left) else 1)
    ax.set_title(title)
    if len(names):
        fig.legend(loc="outside lower center", ncols=len(parts), fontsize=8, frameon=False)
    return fig
