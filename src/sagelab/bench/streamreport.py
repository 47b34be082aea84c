"""The streaming-accuracy check's results: per-case and pooled WER, the verdict, the figure.

Pure functions over what each transcription path heard (``Heard``), so the arithmetic of the
1-point bound is checked without a model or a socket. Scores come from
``sagelab.metrics.accuracy.score`` (one normalisation for every WER in sagelab); a pooled WER
is total word edits over total reference words, as the usual corpus WER is.

Two offline baselines, both computed from the case definition, never from what the server did:

* ``offline``: each case's whole speech in one Whisper call, with all of its context;
* ``offline per turn``: the speech cut at every pause at least as long as the agent's
  end-of-turn silence, each piece transcribed alone (``streamcases.turns``). That is what a
  turn-taker that loses nothing hears with that end-of-turn rule.

The bound is on streaming against *per turn*: audio the server drops or cuts wrongly makes
streaming worse than it. The gap between the two baselines is the cost of ending turns at
pauses (Whisper hears each turn without the rest of the passage); it is reported, not
charged to streaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.bench.streamcases import CaseAudio
from sagelab.metrics.accuracy import score

TOLERANCE = 0.01  # one WER point
OFFLINE = "offline"  # the whole case in one call
PER_TURN = "offline per turn"  # the case cut at the agent's end-of-turn pauses
BASELINES = (OFFLINE, PER_TURN)


@dataclass(frozen=True)
class Heard:
    """What one transcription path made of one case."""

    case: str
    mode: str  # "offline", "offline per turn" or "<n> ms"
    chunk_ms: int | None
    transcripts: tuple[str, ...]
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.transcripts if t.strip())


def mode_name(chunk_ms: int) -> str:
    return f"{chunk_ms} ms"


def per_case_table(cases: Sequence[CaseAudio], heard: Sequence[Heard]) -> Any:
    """One row per (case, mode): reference, hypothesis, WER and its edit counts."""
    import pandas as pd

    by_id = {a.case.id: a for a in cases}
    rows = []
    for h in heard:
        audio = by_id[h.case]
        acc = score(audio.reference, h.text)
        rows.append({
            "case": h.case, "kind": audio.case.kind, "mode": h.mode, "chunk_ms": h.chunk_ms,
            "wer": acc.wer, "word_errors": acc.word_errors, "ref_words": acc.ref_words,
            "transcripts": len(h.transcripts), "texts": list(h.transcripts),
            "reference": acc.reference,
            "hypothesis": acc.hypothesis, "error": h.error, **h.details,
        })  # fmt: skip
    order = [*BASELINES, *sorted({h.mode for h in heard} - set(BASELINES), key=_chunk_of)]
    df = pd.DataFrame(rows)
    df["mode"] = pd.Categorical(df["mode"], categories=order, ordered=True)
    return df.sort_values(["mode", "case"], kind="stable").reset_index(drop=True)


def _chunk_of(mode: str) -> int:
    return int(mode.split()[0])


def baseline_of(modes: Any) -> str:
    """The baseline streaming is held to: per turn when there is one (see the module
    docstring), else the whole case."""
    return PER_TURN if PER_TURN in set(modes) else OFFLINE


def pooled_table(per_case: Any, tolerance: float = TOLERANCE) -> Any:
    """Pooled WER per mode (total edits / total reference words), its difference in points
    from the per-turn baseline (``delta_points``) and from the whole-case one
    (``delta_whole_points``), and whether it is within ``tolerance`` of the per-turn
    baseline with no failed conversation; ``attrs["passed"]`` says whether every chunk size
    is, ``attrs["baseline"]`` which baseline that is."""
    grouped = per_case.groupby("mode", observed=True)
    table = grouped.agg(
        cases=("case", "count"),
        ref_words=("ref_words", "sum"),
        word_errors=("word_errors", "sum"),
        failed_sessions=("error", lambda s: int(s.notna().sum())),
    )
    table["wer"] = table["word_errors"] / table["ref_words"]
    if OFFLINE not in table.index:
        raise ValueError("the per-case table has no offline rows to compare with")
    baseline = baseline_of(table.index)
    table["delta_points"] = (table["wer"] - float(table.loc[baseline, "wer"])) * 100
    table["delta_whole_points"] = (table["wer"] - float(table.loc[OFFLINE, "wer"])) * 100
    table["within_1_point"] = (table["delta_points"].abs() <= tolerance * 100 + 1e-9) & (
        table["failed_sessions"] == 0
    )
    streaming = table.drop(index=[m for m in BASELINES if m in table.index])
    table.attrs["passed"] = bool(len(streaming) and streaming["within_1_point"].all())
    table.attrs["tolerance_points"] = tolerance * 100
    table.attrs["baseline"] = baseline
    return table.reset_index()


def failures(per_case: Any, tolerance: float = TOLERANCE) -> Any:
    """Streaming rows that lost more than ``tolerance`` against the baseline (per turn when
    there is one) on the same case, or whose conversation failed, with the transcripts of
    every path side by side."""
    modes = set(per_case["mode"].astype(str))
    baseline = baseline_of(modes)
    streaming = per_case[~per_case["mode"].isin(BASELINES)].copy()
    columns = ["case", "mode", "wer"]
    for mode, name in ((OFFLINE, "offline"), (PER_TURN, "per_turn")):
        if mode not in modes:
            continue
        rows = per_case[per_case["mode"] == mode].set_index("case")
        streaming[f"{name}_wer"] = streaming["case"].map(rows["wer"])
        streaming[f"{name}_hypothesis"] = streaming["case"].map(rows["hypothesis"])
        streaming[f"{name}_transcripts"] = streaming["case"].map(rows["transcripts"])
        columns += [f"{name}_wer"]
    base = "per_turn" if baseline == PER_TURN else "offline"
    worse = streaming["wer"] - streaming[f"{base}_wer"] > tolerance + 1e-9
    columns += ["reference", "hypothesis", "offline_hypothesis"]
    if baseline == PER_TURN:
        columns += ["per_turn_hypothesis", "per_turn_transcripts"]
    columns += ["transcripts", "texts", "error"]
    if "timed_out" in streaming.columns:
        columns.append("timed_out")
    return streaming.loc[worse | streaming["error"].notna(), columns].reset_index(drop=True)


def wer_bars(per_case: Any, pooled: Any) -> Any:
    """Grouped bars: WER per case and pooled, one bar per mode (the two offline baselines,
    then each chunk size), so a chunk size that loses words stands out against them."""
    from matplotlib.figure import Figure

    modes = list(pooled["mode"])
    cases = list(dict.fromkeys(per_case["case"]))
    labels = [*cases, "pooled"]
    values = np.full((len(modes), len(labels)), np.nan)
    for i, mode in enumerate(modes):
        rows = per_case[per_case["mode"] == mode].set_index("case")["wer"]
        for j, case in enumerate(cases):
            if case in rows.index:
                values[i, j] = float(rows[case]) * 100
        values[i, -1] = float(pooled.loc[pooled["mode"] == mode, "wer"].iloc[0]) * 100
    fig = Figure(figsize=(max(8, 0.9 * len(labels) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(labels))
    colors = ["#444444", "#1b6ca8", "#6a994e", "#e9a23b", "#c1121f", "#7b2cbf"]
    for i, mode in enumerate(modes):
        ax.bar(x + (i - (len(modes) - 1) / 2) * width, np.nan_to_num(values[i]), width,
               label=mode, color=colors[i % len(colors)])  # fmt: skip
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("WER (%)")
    passed = pooled.attrs.get("passed")
    verdict = "" if passed is None else (" — within 1 point" if passed else " — NOT within 1 pt")
    against = pooled.attrs.get("baseline", OFFLINE)
    ax.set_title(f"Streaming WER per case and pooled, against {against}{verdict}", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, ncols=len(modes))
    return fig


@dataclass
class StreamingReport:
    per_case: Any
    pooled: Any
    failures: Any
    conditions: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.pooled.attrs["passed"])

    def as_dict(self) -> dict[str, Any]:
        import json

        def records(df: Any) -> Any:
            return json.loads(df.to_json(orient="records"))

        return {"passed": self.passed, "conditions": self.conditions,
                "pooled": records(self.pooled), "per_case": records(self.per_case),
                "failures": records(self.failures)}  # fmt: skip


def report(
    cases: Sequence[CaseAudio], heard: Sequence[Heard], conditions: dict[str, Any]
) -> StreamingReport:
    per_case = per_case_table(cases, heard)
    pooled = pooled_table(per_case)
    return StreamingReport(per_case, pooled, failures(per_case), conditions)


def save_plot(result: StreamingReport, folder: Path) -> Path:
    from sagelab.metrics.plots import save_figure

    return save_figure(wer_bars(result.per_case, result.pooled), folder / "streaming_wer.png")
