"""Figures of a prompt-lab run: per variant, reply length, time to first audio, tools, checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["plot_lab"]


def plot_lab(replies: pd.DataFrame, path: Path | None = None) -> Any:
    """Four panels side by side; saved to ``path`` when given. Returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    variants = list(dict.fromkeys(replies["variant"])) if len(replies) else []
    _box(axes[0], replies, variants, "reply_words", "reply length (words)")
    _box(axes[1], replies, variants, "time_to_first_audio_ms", "time to first audio (ms)")
    _bars(
        axes[2],
        variants,
        {
            "tool call rate": [_rate(replies, v, lambda r: r["tool_calls"] > 0) for v in variants],
            "calls that ran": [_validity(replies, v) for v in variants],
        },
        "tools (share)",
    )
    checks = [c for c in replies.columns if c.startswith("check_")]
    _bars(
        axes[3],
        variants,
        {c.removeprefix("check_"): [_rate(replies, v, lambda r, c=c: r[c]) for v in variants]
         for c in checks},
        "reply checks (pass rate)",
    )  # fmt: skip
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def _box(ax: Any, replies: pd.DataFrame, variants: list[str], column: str, title: str) -> None:
    data = [replies.loc[replies["variant"] == v, column].dropna().astype(float) for v in variants]
    if any(len(d) for d in data):
        ax.boxplot([d.tolist() for d in data], showmeans=True)
        ax.set_xticks(range(1, len(variants) + 1), variants)
    ax.set_title(title)


def _bars(ax: Any, variants: list[str], series: dict[str, list[float]], title: str) -> None:
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(variants))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(variants))], variants)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    if series:
        ax.legend(fontsize="small")


def _rate(replies: pd.DataFrame, variant: str, pick: Any) -> float:
    rows = replies[replies["variant"] == variant]
    if not len(rows):
        return float("nan")
    return float(pick(rows).dropna().astype(bool).mean())


def _validity(replies: pd.DataFrame, variant: str) -> float:
    rows = replies[replies["variant"] == variant]
    calls = rows["tool_calls"].sum()
    return float(1 - rows["tool_errors"].sum() / calls) if calls else float("nan")
