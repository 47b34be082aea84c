"""``sagelab loadtest``: a server process, locust headless as a subprocess, one summary.

Locust runs in its own process because it monkey-patches the standard library for gevent on
import, which would break asyncio code in this process; the server runs in another, so the
CPU and memory sampled are the server's alone, not the load generator's.

Percentiles come from the raw JSONL the users write, not from locust's CSV: locust stores
response times rounded (to 10 ms above 100 ms, 100 ms above 1 s), too coarse for p99 of a
few-millisecond ping. Request and failure counts come from locust's ``_stats.csv``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sagelab.bench.serverproc import ResourceSampler, ServerProcess
from sagelab.bench.stats import Summary
from sagelab.loadtest.measure import FAILURE_NAMES, METRICS, PER_FRAME


@dataclass
class LoadtestOptions:
    users: int
    spawn_rate: float
    run_time: str
    target: str | None = None
    agent: str = "scripted"
    max_error_rate: float = 0.02
    max_p95_first_audio_ms: float = 1000.0
    out_dir: Path | None = None
    locustfile: Path | None = None
    data_dir: Path | None = None


@dataclass
class LoadtestResult:
    summary: dict[str, Any]
    run_dir: Path
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def repo_root(data_dir: Path) -> Path:
    """The repository holding ``data/``; ``loadtests/`` sits next to it."""
    return data_dir.parent


def run_loadtest(opts: LoadtestOptions) -> LoadtestResult:
    """Run one load test end to end and return its summary and threshold violations."""
    from sagelab.cli import data_dir as default_data_dir

    data = opts.data_dir or default_data_dir()
    locustfile = opts.locustfile or repo_root(data) / "loadtests" / "locustfile.py"
    if not locustfile.is_file():
        raise FileNotFoundError(f"locustfile not found: {locustfile}")
    run_dir = opts.out_dir or Path("runs") / f"loadtest-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    raw_path = run_dir / "raw.jsonl"
    raw_path.unlink(missing_ok=True)

    sampler: ResourceSampler | None = None
    t_start = time.time()
    mono_start = time.monotonic()
    if opts.target is None:
        store = Path(tempfile.mkdtemp(prefix="sagelab-loadtest-")) / "store.sqlite3"
        with ServerProcess(
            agents=[opts.agent],
            store_path=str(store),
            max_sessions=max(50, opts.users),
            log_path=run_dir / "server.log",
        ) as srv:
            sampler = ResourceSampler(srv.pid).start()
            try:
                rc = _run_locust(opts, locustfile, srv.http_url, run_dir, raw_path, data)
            finally:
                sampler.stop()
        host = srv.http_url
    else:
        host = opts.target
        rc = _run_locust(opts, locustfile, host, run_dir, raw_path, data)

    stats_csv = run_dir / "locust_stats.csv"
    if not stats_csv.is_file():
        log = (run_dir / "locust.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"locust exited with {rc} and wrote no stats:\n{log}")
    stats = pd.read_csv(stats_csv)
    raw = _read_raw(raw_path)
    summary = summarize(stats, raw, sampler)
    summary.update(
        {
            "users": opts.users,
            "spawn_rate": opts.spawn_rate,
            "run_time": opts.run_time,
            "agent": opts.agent,
            "host": host,
            "target": opts.target,
            "locust_exit_code": rc,
            "run_dir": str(run_dir),
            "started_at": t_start,
        }
    )
    violations = check_thresholds(summary, opts.max_error_rate, opts.max_p95_first_audio_ms)
    if rc not in (0, 1):  # 0: no failures, 1: some failures (judged above); else locust broke
        violations.append(f"locust exited with code {rc}, see {run_dir / 'locust.log'}")
    summary["thresholds"] = {
        "max_error_rate": opts.max_error_rate,
        "max_p95_first_audio_ms": opts.max_p95_first_audio_ms,
        "violations": violations,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot = _plot(raw, sampler, mono_start, t_start, run_dir / "loadtest.png")
    if plot is not None:
        summary["plot"] = str(plot)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return LoadtestResult(summary, run_dir, violations)


def _run_locust(
    opts: LoadtestOptions, locustfile: Path, host: str, run_dir: Path, raw: Path, data: Path
) -> int:
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "-u",
        str(opts.users),
        "-r",
        str(opts.spawn_rate),
        "-t",
        opts.run_time,
        "--host",
        host,
        "--csv",
        str(run_dir / "locust"),
        "--only-summary",
    ]
    env = os.environ | {
        "SAGELAB_AGENT": opts.agent,
        "SAGELAB_RAW_LOG": str(raw.resolve()),
        "SAGELAB_DATA": str(data.resolve()),
    }
    with (run_dir / "locust.log").open("wb") as log:
        # Locust exits 1 when any request failed; that is judged below from the figures.
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def _read_raw(path: Path) -> pd.DataFrame:
    cols = ["user", "metric", "value_ms", "t", "ok", "error"]
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=cols)
    return pd.read_json(path, lines=True, dtype={"value_ms": float})


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarize(
    stats: pd.DataFrame, raw: pd.DataFrame, sampler: ResourceSampler | None
) -> dict[str, Any]:
    """Per-metric percentiles from raw values; counts and error rate from locust's stats.

    The error rate is failures over the requests that can fail (connects, metadata, pings,
    replies, closes, error events); the per-frame ``audio_gap`` and ``send_lateness`` never
    fail and would otherwise dilute a few broken sessions into a rate of ~0.
    """
    rows = stats[stats["Name"] != "Aggregated"]
    counts = {
        str(r["Name"]): {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"])}
        for _, r in rows.iterrows()
    }
    ok = raw[raw["ok"].astype(bool)] if len(raw) else raw
    metrics: dict[str, Any] = {}
    for name in METRICS:
        values = ok.loc[ok["metric"] == name, "value_ms"].tolist() if len(ok) else []
        entry: dict[str, Any] = Summary.of(values).as_dict(2)
        entry.update(counts.get(name, {"requests": 0, "failures": 0}))
        if len(ok):
            entry["users_with_samples"] = int(ok.loc[ok["metric"] == name, "user"].nunique())
        metrics[name] = entry
    for name in FAILURE_NAMES:
        if name in counts:
            metrics[name] = counts[name]
    requests = sum(c["requests"] for n, c in counts.items() if n not in PER_FRAME)
    failures = sum(c["failures"] for c in counts.values())
    failed = raw[~raw["ok"].astype(bool)] if len(raw) else raw
    samples = sorted({str(e) for e in failed["error"].tolist()})[:5] if len(failed) else []
    return {
        "metrics": metrics,
        "requests": int(sum(c["requests"] for c in counts.values())),
        "failures": int(failures),
        "error_rate": round(failures / requests, 5) if requests else 0.0,
        "error_samples": samples,
        "server": sampler.summary() if sampler is not None else None,
    }


def check_thresholds(
    summary: dict[str, Any], max_error_rate: float, max_p95_ms: float
) -> list[str]:
    """Human-readable reasons the run failed; empty when it passed."""
    out: list[str] = []
    if summary["error_rate"] > max_error_rate:
        out.append(f"error rate {summary['error_rate']:.2%} > {max_error_rate:.2%}")
    first = summary["metrics"]["first_audio"]
    if first["n"] == 0:
        out.append("no first_audio sample: no agent ever answered")
    elif first["p95"] is not None and first["p95"] > max_p95_ms:
        out.append(f"first_audio p95 {first['p95']:.0f} ms > {max_p95_ms:.0f} ms")
    return out


def _plot(
    raw: pd.DataFrame,
    sampler: ResourceSampler | None,
    mono_start: float,
    t_start: float,
    path: Path,
) -> Path | None:
    """Latency percentiles per 5 s window, and server CPU/RSS, over the run (if matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = raw[raw["ok"].astype(bool)] if len(raw) else raw
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    if len(ok):
        ok = ok.assign(window=((ok["t"] - t_start) // 5 * 5).astype(float))
        for ax, names in ((axes[0], ("first_audio",)), (axes[1], ("ping_rtt", "audio_gap"))):
            for name in names:
                per = ok[ok["metric"] == name].groupby("window")["value_ms"]
                if per.ngroups == 0:
                    continue
                for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
                    ax.plot(per.quantile(q), style, marker=".", label=f"{name} p{int(q * 100)}")
            ax.set_ylabel("ms")
            ax.legend(loc="upper left", fontsize=8)
            ax.grid(alpha=0.3)
    if sampler is not None and sampler.times:
        x = [t - mono_start for t in sampler.times]
        axes[2].plot(x, sampler.cpu, color="tab:red", label="server CPU % of a core")
        axes[2].set_ylabel("CPU %")
        rss = axes[2].twinx()
        rss.plot(x, sampler.rss_mb, color="tab:blue", label="server RSS MB")
        rss.set_ylabel("RSS MB")
        axes[2].legend(loc="upper left", fontsize=8)
        rss.legend(loc="upper right", fontsize=8)
    axes[2].set_xlabel("seconds since start")
    axes[0].set_title("sagelab loadtest")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_table(summary: dict[str, Any], console: Any) -> None:
    """The human view of :func:`summarize`: one row per metric, then errors and server load."""
    from rich.table import Table

    table = Table(
        title=f"loadtest: {summary['users']} users, {summary['run_time']}, agent {summary['agent']}"
    )
    table.add_column("metric")
    for col in ("p50", "p95", "p99", "max", "n", "fails"):
        table.add_column(col, justify="right")
    for name in METRICS:
        m = summary["metrics"][name]
        cells = [str(_num(m[c])) if _num(m[c]) is not None else "–" for c in ("p50", "p95", "p99")]
        cells += [str(m["max"]) if m["max"] is not None else "–", str(m["n"]), str(m["failures"])]
        table.add_row(f"{name} (ms)", *cells)
    console.print(table)
    console.print(
        f"requests {summary['requests']}, failures {summary['failures']}, "
        f"error rate {summary['error_rate']:.2%}"
        + (f" ({'; '.join(summary['error_samples'])})" if summary["error_samples"] else "")
    )
    if summary.get("server"):
        cpu, rss = summary["server"]["cpu_percent"], summary["server"]["rss_mb"]
        console.print(
            f"server CPU % of one core p50/p95/max: {cpu['p50']}/{cpu['p95']}/{cpu['max']}; "
            f"RSS MB start/max/end: {rss['start']}/{rss['max']}/{rss['end']}"
        )
    console.print(f"run directory: {summary['run_dir']}")
    for v in summary["thresholds"]["violations"]:
        console.print(f"[bold red]threshold broken:[/] {v}")
