"""The streaming-accuracy check's results: per-case and pooled WER, the verdict, the figure.

Pure functions over what each transcription path heard (``Heard``), so the arithmetic of the
1-point bound is checked without a model or a socket. Scores come from
``sagelab.metrics.accuracy.score`` (one normalisation for every WER in sagelab); a pooled WER
is total word edits over total reference words, as the usual corpus WER is.
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
OFFLINE = "offline"


@dataclass(frozen=True)
class Heard:
    """What one transcription path made of one case."""

    case: str
    mode: str  # "offline" or "<n> ms"
    chunk_ms: int | None
    transcripts: tuple[str, ...]
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.transcripts if t.strip())


def mode_name(chunk_ms: int | None) -> str:
    return OFFLINE if chunk_ms is None else f"{chunk_ms} ms"


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
            "transcripts": len(h.transcripts), "reference": acc.reference,
            "hypothesis": acc.hypothesis, "error": h.error, **h.details,
        })  # fmt: skip
    order = [mode_name(None), *sorted({h.mode for h in heard} - {OFFLINE}, key=_chunk_of)]
    df = pd.DataFrame(rows)
    df["mode"] = pd.Categorical(df["mode"], categories=order, ordered=True)
    return df.sort_values(["mode", "case"], kind="stable").reset_index(drop=True)


def _chunk_of(mode: str) -> int:
    return int(mode.split()[0])


def pooled_table(per_case: Any, tolerance: float = TOLERANCE) -> Any:
    """Pooled WER per mode (total edits / total reference words), its difference from
    offline in points, and whether it is within ``tolerance``; ``attrs["passed"]`` says
    whether every chunk size is."""
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
    offline = float(table.loc[OFFLINE, "wer"])
    table["delta_points"] = (table["wer"] - offline) * 100
    table["within_1_point"] = (table["delta_points"].abs() <= tolerance * 100 + 1e-9) & (
        table["failed_sessions"] == 0
    )
    streaming = table.drop(index=OFFLINE)
    table.attrs["passed"] = bool(len(streaming) and streaming["within_1_point"].all())
    table.attrs["tolerance_points"] = tolerance * 100
    return table.reset_index()


def failures(per_case: Any, tolerance: float = TOLERANCE) -> Any:
    """Streaming rows that lost more than ``tolerance`` against offline on the same case,
    with both transcripts side by side."""
    offline = per_case[per_case["mode"] == OFFLINE].set_index("case")
    streaming = per_case[per_case["mode"] != OFFLINE].copy()
    streaming["offline_wer"] = streaming["case"].map(offline["wer"])
    streaming["offline_hypothesis"] = streaming["case"].map(offline["hypothesis"])
    worse = streaming["wer"] - streaming["offline_wer"] > tolerance + 1e-9
    columns = ["case", "mode", "wer", "offline_wer", "reference", "hypothesis",
               "offline_hypothesis", "transcripts", "error"]  # fmt: skip
    if "timed_out" in streaming.columns:
        columns.append("timed_out")
    return streaming.loc[worse | streaming["error"].notna(), columns].reset_index(drop=True)


def wer_bars(per_case: Any, pooled: Any) -> Any:
    """Grouped bars: WER per case and pooled, one bar per mode (offline, then each chunk
    size), so a chunk size that loses words stands out against offline."""
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
    ax.set_title(f"Streaming vs offline WER per case and pooled{verdict}")
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
