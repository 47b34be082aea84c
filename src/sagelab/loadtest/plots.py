"""Plots of a load test: what happened to latency, stutter and errors as users came in.

Every panel shares one time axis (seconds since the test started) with the number of active
users drawn behind it, because a latency figure means little without the load it was measured
under. Windows adapt to the run's length so an 8-second test and a 20-minute capacity search
both get readable curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sagelab.bench.serverproc import ResourceSampler


def users_over_time(history_csv: Path) -> pd.DataFrame:
    """Active users per second from locust's ``_stats_history.csv`` (``t`` wall s, ``users``)."""
    if not history_csv.is_file():
        return pd.DataFrame(columns=["t", "users"])
    hist = pd.read_csv(history_csv)
    hist = hist[hist["Name"] == "Aggregated"]
    return pd.DataFrame({"t": hist["Timestamp"].astype(float), "users": hist["User Count"]})


def _window_s(duration_s: float) -> float:
    return float(max(1, round(duration_s / 40)))


def _percentiles(ax: Any, ok: pd.DataFrame, name: str, qs: tuple[float, ...]) -> None:
    per = ok[ok["metric"] == name].groupby("window")["value_ms"]
    if per.ngroups == 0:
        return
    for q in qs:
        style = {0.5: "-", 0.95: "--", 0.99: ":"}[q]
        ax.plot(per.quantile(q), style, marker=".", label=f"{name} p{int(q * 100)}")


def _users(ax: Any, users: pd.DataFrame, t0: float) -> None:
    if users.empty:
        return
    twin = ax.twinx()
    twin.fill_between(users["t"] - t0, users["users"], step="post", color="0.85", alpha=0.5)
    twin.set_ylabel("active users", color="0.4")
    twin.set_ylim(bottom=0)
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)


def plot_run(
    raw: pd.DataFrame,
    users: pd.DataFrame,
    sampler: ResourceSampler | None,
    t0: float,
    mono_t0: float,
    path: Path,
    title: str,
) -> Path | None:
    """Four panels: reply latency, stutter and round trips, errors, server CPU and memory."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    # A bare Figure, not pyplot: no global backend switch, so notebooks keep theirs.
    fig = Figure(figsize=(11, 13))
    axes = fig.subplots(4, 1, sharex=True)
    end = max(float(raw["t"].max()) if len(raw) else t0, t0 + 1)
    window = _window_s(end - t0)
    if len(raw):
        data = raw.assign(window=((raw["t"] - t0) // window * window + window / 2))
        ok = data[data["ok"]]
        _percentiles(axes[0], ok, "first_audio", (0.5, 0.95, 0.99))
        _percentiles(axes[0], ok, "voice_to_voice", (0.95,))
        for name in ("audio_gap", "ping_rtt", "ws_ping_rtt"):
            _percentiles(axes[1], ok, name, (0.99,))
        stutter = ok[(ok["metric"] == "stutter") & (ok["value_ms"] > 0)]
        turns = int((ok["metric"] == "stutter").sum())
        if not len(stutter):
            axes[1].plot([], [], " ", label=f"stutter: none in {turns} turns")
        else:
            per = stutter.groupby("window")["value_ms"].sum()
            axes[1].bar(
                per.index,
                per.values,
                width=window * 0.8,
                color="tab:red",
                alpha=0.5,
                label="stutter: underrun ms per window",
            )
        failed = data[~data["ok"]]
        if len(failed):
            counts = failed.groupby(["window", "metric"]).size().unstack(fill_value=0)
            bottom = None
            for name in counts.columns:
                axes[2].bar(
                    counts.index,
                    counts[name],
                    width=window * 0.8,
                    bottom=bottom,
                    label=f"failed {name}",
                )
                bottom = counts[name] if bottom is None else bottom + counts[name]
        else:
            axes[2].text(0.5, 0.5, "no failures", transform=axes[2].transAxes, ha="center")
    axes[0].set_ylabel("ms")
    axes[0].set_title(f"reply latency ({window:g} s windows)", fontsize=10)
    axes[1].set_ylabel("ms")
    axes[1].set_title("stutter, jitter (audio_gap) and round trips, p99", fontsize=10)
    axes[2].set_ylabel("failures")
    axes[2].set_title("errors", fontsize=10)
    for ax in axes[:3]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
        _users(ax, users, t0)
    if sampler is not None and sampler.times:
        x = [t - mono_t0 for t in sampler.times]
        axes[3].plot(x, sampler.cpu, color="tab:red", label="server CPU % of a core")
        axes[3].set_ylabel("CPU %")
        rss = axes[3].twinx()
        rss.plot(x, sampler.rss_mb, color="tab:blue", label="server RSS MB")
        rss.set_ylabel("RSS MB")
        axes[3].legend(loc="upper left", fontsize=8)
        rss.legend(loc="upper right", fontsize=8)
    else:
        axes[3].text(
            0.5, 0.5, "server not sampled (--target)", transform=axes[3].transAxes, ha="center"
        )
    axes[3].set_title("server process", fontsize=10)
    axes[3].set_xlabel("seconds since start")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_capacity(
    steps: list[dict[str, Any]], budget: dict[str, Any], sustainable: int, path: Path, title: str
) -> Path | None:
    """Per step: p95 reply latency against the budget, and the error rate."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    if not steps:
        return None
    users = [s["users"] for s in steps]
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    for key, limit_key, color in (
        ("first_audio_p95", "max_p95_first_audio_ms", "tab:blue"),
        ("voice_to_voice_p95", "max_p95_voice_to_voice_ms", "tab:purple"),
    ):
        values = [s["figures"][key] for s in steps]
        if any(v is not None for v in values):
            ax.plot(users, values, marker="o", color=color, label=key.replace("_p95", " p95"))
        if budget.get(limit_key) is not None:
            ax.axhline(budget[limit_key], color=color, ls="--", lw=1, label=f"budget {limit_key}")
    half = 0.4 * (users[1] - users[0] if len(users) > 1 else 1)
    for s in steps:
        if s["violations"]:
            ax.axvspan(s["users"] - half, s["users"] + half, color="tab:red", alpha=0.15)
    if sustainable:
        ax.axvline(sustainable, color="tab:green", lw=2, label=f"sustainable: {sustainable}")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    err = ax.twinx()
    err.plot(
        users,
        [s["figures"]["error_rate"] * 100 for s in steps],
        color="tab:red",
        marker="x",
        lw=1,
        label="error rate %",
    )
    err.set_ylabel("error rate %")
    err.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = err.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
