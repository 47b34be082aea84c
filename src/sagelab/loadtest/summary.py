"""From the users' raw logs to figures, a budget verdict and a table.

Everything is computed from the raw JSONL the users write (merged across locust worker
processes), not from locust's own statistics: locust stores response times rounded (to 10 ms
above 100 ms, 100 ms above 1 s), too coarse for the p99 of a few-millisecond ping, and in a
distributed run the events a worker fires while it is being stopped may never reach the
master. The same :func:`measure` serves a whole run and one step of a capacity search, so a
step is judged exactly like a run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sagelab.bench.stats import Summary
from sagelab.loadtest.measure import FAILURE_NAMES, METRICS, NOT_COUNTED

RAW_COLUMNS = ["w", "user", "metric", "value_ms", "t", "ok", "error", "code"]


@dataclass(frozen=True)
class Budget:
    """What a run (or one step of a capacity search) must meet to count as sustainable.

    ``max_stutter_share`` is the share of agent turns in which a player would have run dry at
    least once (the web app's own target is "under 5 % stutter").
    """

    max_error_rate: float = 0.02
    max_p95_first_audio_ms: float | None = 1000.0
    max_p95_voice_to_voice_ms: float | None = None
    max_stutter_share: float = 0.05

    def violations(self, figures: dict[str, Any]) -> list[str]:
        """Human-readable reasons ``figures`` (from :func:`measure`) break the budget."""
        out: list[str] = []
        if figures["error_rate"] > self.max_error_rate:
            out.append(f"error rate {figures['error_rate']:.2%} > {self.max_error_rate:.2%}")
        metrics = figures["metrics"]
        if metrics["first_audio"]["n"] == 0:
            out.append("no first_audio sample: no agent ever answered")
        for name, limit in (
            ("first_audio", self.max_p95_first_audio_ms),
            ("voice_to_voice", self.max_p95_voice_to_voice_ms),
        ):
            p95 = metrics[name]["p95"]
            if limit is not None and p95 is not None and p95 > limit:
                out.append(f"{name} p95 {p95:.0f} ms > {limit:.0f} ms")
        share = figures["stutter"]["share"]
        if share is not None and share > self.max_stutter_share:
            out.append(f"stutter in {share:.1%} of turns > {self.max_stutter_share:.1%}")
        return out

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def read_raw(paths: Iterable[Path]) -> pd.DataFrame:
    """All raw logs as one DataFrame; ``session`` tells users of different workers apart."""
    frames = [
        pd.read_json(p, lines=True, dtype={"value_ms": float, "error": str})
        for p in paths
        if p.is_file() and p.stat().st_size > 0
    ]
    if not frames:
        return pd.DataFrame(columns=[*RAW_COLUMNS, "session"])
    return _finish(pd.concat(frames, ignore_index=True))


class RawTail:
    """Reads raw logs while users still write them, parsing each complete line once.

    A capacity search judges every step as soon as it ends; re-reading whole logs at each step
    would cost more and more CPU on the machine under test as the run grows.
    """

    def __init__(self, paths: Iterable[Path] | Callable[[], Iterable[Path]]) -> None:
        # A callable is asked again each time: a worker's log appears when it first reports.
        self._paths = paths if callable(paths) else (lambda fixed=list(paths): fixed)
        self._offsets: dict[Path, int] = {}
        self._rows: list[dict[str, Any]] = []

    def frame(self, since: float = 0.0) -> pd.DataFrame:
        """The rows written so far from wall time ``since`` on, as :func:`read_raw` returns
        them; older rows are forgotten, so a long search holds only what it still judges."""
        for path in self._paths():
            if not path.is_file():
                continue
            offset = self._offsets.get(path, 0)
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for next time
            self._offsets[path] = offset + end
            self._rows.extend(json.loads(line) for line in data[:end].splitlines() if line)
        self._rows = [r for r in self._rows if r["t"] >= since]
        raw = pd.DataFrame(self._rows, columns=RAW_COLUMNS)
        raw["value_ms"] = raw["value_ms"].astype(float)
        return _finish(raw)


def _finish(raw: pd.DataFrame) -> pd.DataFrame:
    for col in RAW_COLUMNS:
        if col not in raw.columns:
            raw[col] = 0 if col == "w" else None
    raw["ok"] = raw["ok"].astype(bool)
    raw["session"] = raw["w"].astype(str) + ":" + raw["user"].astype(str)
    return raw.sort_values("t", kind="stable", ignore_index=True)


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def measure(raw: pd.DataFrame) -> dict[str, Any]:
    """Percentiles per metric, error rate, stutter and close codes of a slice of raw rows.

    The error rate is failures over the events that can fail: connects, metadata, signed URLs,
    replies (``first_audio``), session ends and error events. Per-frame, per-ping and per-turn
    measurements never fail and would dilute a few broken sessions into a rate of ~0.
    """
    ok = raw[raw["ok"]] if len(raw) else raw
    metrics: dict[str, Any] = {}
    for name in METRICS:
        rows = raw[raw["metric"] == name] if len(raw) else raw
        good = ok[ok["metric"] == name] if len(ok) else ok
        entry: dict[str, Any] = Summary.of(good["value_ms"].tolist()).as_dict(2)
        entry["failures"] = int((~rows["ok"]).sum()) if len(rows) else 0
        entry["users_with_samples"] = int(good["session"].nunique()) if len(good) else 0
        metrics[name] = entry
    counted = raw[~raw["metric"].isin(NOT_COUNTED)] if len(raw) else raw
    failed = raw[~raw["ok"]] if len(raw) else raw
    for name in FAILURE_NAMES:
        rows = raw[raw["metric"] == name] if len(raw) else raw
        metrics[name] = {"requests": len(rows), "failures": int((~rows["ok"]).sum())}
    errors = failed["error"].astype(str).value_counts().head(5) if len(failed) else pd.Series()
    stutter = ok[ok["metric"] == "stutter"]["value_ms"] if len(ok) else pd.Series(dtype=float)
    closes = raw[raw["metric"] == "close"] if len(raw) else raw
    codes = closes["code"].dropna().astype(int).value_counts() if len(closes) else pd.Series()
    return {
        "metrics": metrics,
        "requests": len(raw),
        "counted_requests": len(counted),
        "failures": len(failed),
        "error_rate": round(len(failed) / len(counted), 5) if len(counted) else 0.0,
        "error_samples": [f"{n}x {msg}" for msg, n in errors.items()],
        "sessions": int(metrics["connect"]["n"] + metrics["connect"]["failures"]),
        "stutter": {
            "turns": len(stutter),
            "turns_with_stutter": int((stutter > 0).sum()),
            "share": round(float((stutter > 0).mean()), 4) if len(stutter) else None,
            "total_ms": round(float(stutter.sum()), 1),
        },
        "close_codes": {str(code): int(n) for code, n in codes.items()},
    }


def print_table(summary: dict[str, Any], console: Any) -> None:
    """The human view of a run's summary: one row per metric, then errors and server load."""
    from rich.table import Table

    title = (
        f"loadtest: {summary['users']} users, {summary['run_time']}, {summary['protocol']}, "
        f"agent {summary['agent']}, {len(summary.get('workers', []))} locust worker(s)"
    )
    table = Table(title=title)
    table.add_column("metric")
    for col in ("p50", "p95", "p99", "max", "n", "fails"):
        table.add_column(col, justify="right")
    for name in METRICS:
        m = summary["metrics"][name]
        if m["n"] == 0 and m["failures"] == 0:
            continue
        cells = [str(_num(m[c])) if _num(m[c]) is not None else "–" for c in ("p50", "p95", "p99")]
        cells += [str(m["max"]) if m["max"] is not None else "–", str(m["n"]), str(m["failures"])]
        table.add_row(f"{name} (ms)", *cells)
    console.print(table)
    st = summary["stutter"]
    console.print(
        f"sessions {summary['sessions']}, requests {summary['requests']}, failures "
        f"{summary['failures']}, error rate {summary['error_rate']:.2%}; stutter in "
        f"{st['turns_with_stutter']} of {st['turns']} turns ({st['total_ms']} ms); "
        f"close codes {summary['close_codes']}"
    )
    for sample in summary["error_samples"]:
        console.print(f"  [red]{sample}[/]")
    if summary.get("server"):
        cpu, rss = summary["server"]["cpu_percent"], summary["server"]["rss_mb"]
        console.print(
            f"server CPU % of one core p50/p95/max: {cpu['p50']}/{cpu['p95']}/{cpu['max']}; "
            f"RSS MB start/max/end: {rss['start']}/{rss['max']}/{rss['end']}"
        )
    print_workers(summary, console)
    if summary.get("capacity"):
        print_steps(summary["capacity"], console)
    console.print(f"run directory: {summary['run_dir']}")
    for v in summary["thresholds"]["violations"]:
        console.print(f"[bold red]threshold broken:[/] {v}")


def print_workers(summary: dict[str, Any], console: Any) -> None:
    """One line per load generator: what it sent, its CPU and lateness; lost ones in red."""
    for wk in summary.get("workers", []):
        cpu = wk["cpu_percent"]
        state = "complete" if wk["complete"] else f"[bold red]LOST[/] after {wk['lost_after_s']} s"
        console.print(
            f"worker {wk['w']} {wk['name']}: {state}; {wk['sessions']} sessions, "
            f"{wk['turns']} turns, {wk['rows']} rows; CPU % of its core p50/p95 "
            f"{cpu['p50']}/{cpu['p95']}; send lateness p99 {wk['send_lateness_p99_ms']} ms",
            highlight=False,
        )
    for reason in summary.get("generator_bottleneck", []):
        console.print(f"[bold yellow]load generator busy, figures suspect:[/] {reason}")


def print_steps(capacity: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="capacity search: one row per step")
    for col in ("users", "p95 first audio", "p95 voice-to-voice", "errors", "stutter"):
        table.add_column(col, justify="right")
    table.add_column("verdict", overflow="fold")
    for s in capacity["steps"]:
        f = s["figures"]
        share = f["stutter"]["share"]
        table.add_row(
            str(s["users"]),
            str(_num(f["first_audio_p95"]) or "–"),
            str(_num(f["voice_to_voice_p95"]) or "–"),
            f"{f['error_rate']:.2%}",
            f"{share:.1%}" if share is not None else "–",
            "ok" if not s["violations"] else "; ".join(s["violations"]),
        )
    console.print(table)
    best = capacity["sustainable_users"]
    console.print(
        f"[bold]largest sustainable load: {best} sessions[/]"
        if best
        else "[bold red]not even the first step met the budget[/]"
    )
