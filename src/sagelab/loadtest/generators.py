"""The load generators' own health: which workers took part, which were lost, which were busy.

A load test measures the target only while the generators keep up: a worker whose one core is
saturated, or whose chunks leave late, adds its own delay to every figure it reports. Each
worker reports its process's CPU (% of one core: a locust worker is one process) with every
batch, and its send lateness is in its raw rows, so the master can tell "the target is slow"
from "the generator is slow" and say which generator. A worker whose last batch never came is
lost: its sessions ended without a word, and the figures cover only part of the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: A locust worker at this share of its one core is the bottleneck, not the target.
MAX_WORKER_CPU_P95 = 90.0
#: One chunk in a hundred leaving a whole chunk (100 ms) late: the worker fell behind real time.
MAX_SEND_LATENESS_P99_MS = 100.0


def read_roster(path: Path) -> list[dict[str, Any]]:
    """The master's ``workers.json``; empty when the master never wrote one (it crashed)."""
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()))


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def worker_report(roster: list[dict[str, Any]], raw: pd.DataFrame, t0: float) -> dict[str, Any]:
    """Per worker: rows, completeness, CPU and send lateness; who was lost; bottleneck flags.

    ``rows_match`` compares what the worker says it measured (its last batch's tally) with the
    rows of it the master holds: with a complete worker they must be equal.
    """
    workers = []
    lost: list[str] = []
    reasons: list[str] = []
    for rec in roster:
        w = int(rec["w"])
        name = rec.get("name") or rec["client_id"]
        mine = raw[raw["w"] == w] if len(raw) else raw
        late = mine[(mine["metric"] == "send_lateness") & mine["ok"]]["value_ms"].dropna()
        cpu = [c for _, c in rec.get("cpu", [])][1:]  # the first sample spans the start-up
        turns = int((mine["metric"] == "first_audio").sum()) if len(mine) else 0
        entry = {
            "w": w,
            "name": name,
            "complete": bool(rec["complete"]),
            "rows": int(rec["rows"]),
            "turns": turns,
            "sessions": int((mine["metric"] == "connect").sum()) if len(mine) else 0,
            "batches": int(rec["batches"]),
            "missing_batches": int(rec.get("missing_batches", 0)),
            "rows_match": (sum(rec["tally"].values()) == len(mine)) if rec["complete"] else None,
            "cpu_percent": {"p50": _pct(cpu, 50), "p95": _pct(cpu, 95), "max": _pct(cpu, 100)},
            "send_lateness_p99_ms": _pct(late.tolist(), 99),
            "local_addresses": rec.get("local_addresses", []),
        }
        if not rec["complete"]:
            last = rec.get("missing_at") or rec.get("last_seen")
            entry["lost_after_s"] = round(last - t0, 1) if last else None
            lost.append(name)
        p95 = entry["cpu_percent"]["p95"]
        if p95 is not None and p95 >= MAX_WORKER_CPU_P95:
            reasons.append(f"worker {name}: CPU p95 {p95:.0f} % of its core")
        lateness = entry["send_lateness_p99_ms"]
        if lateness is not None and lateness >= MAX_SEND_LATENESS_P99_MS:
            reasons.append(f"worker {name}: send lateness p99 {lateness:.0f} ms")
        workers.append(entry)
    return {
        "workers": workers,
        "workers_lost": lost,
        "generator_bottleneck": reasons,
    }
