"""Raw measurements from locust workers to the master, in batches over locust's own messaging.

Workers may run on other machines, so nothing goes through files: a worker's users write each
unrounded value into a :class:`RowBatcher`, which a greenlet empties about once a second into a
``sagelab_rows`` message; the master's :class:`Collector` writes every row it receives into
``raw-<worker>.jsonl`` in the run directory (the master's own disk), which the runner reads
exactly as it read per-process logs before. Both classes are free of locust and gevent, so the
bookkeeping is unit-tested; ``sagelab.loadtest.locustplugin`` wires them to locust.

Clocks: every latency is a difference of ``time.monotonic()`` on the worker that measured it,
so no figure compares two machines' clocks. A row also carries when it was measured on that
monotonic clock, and each batch when it was sent on it; the master places the row on its own
wall clock as "received now, minus how long ago the worker says it measured it". That is off
by the batch's one-way network delay (milliseconds), which only matters for drawing rows on
the plots' time axis and cutting a capacity search into steps, never for a latency.

Bookkeeping: batches are numbered, and a worker's last batch (sent as locust stops its users)
carries its own tally of every row it measured, per metric. A worker whose last batch never
came (killed, its machine lost, its network cut) is *lost*: the runner reports it and exits
with its own code instead of presenting a partial run as a whole one.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: One row on the wire: user, metric, value (ms or None), monotonic s, error, extra fields.
Row = list[Any]


class RowBatcher:
    """A worker's measurements waiting for the next batch, and its own tally of all of them."""

    def __init__(self, name: str, clock: Any = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._rows: list[Row] = []
        self._lock = threading.Lock()
        self.seq = 0
        self.tally: Counter[str] = Counter()  # metric -> rows measured (ok or failed)
        self.failures: Counter[str] = Counter()
        self.local_addresses: set[str] = set()
        self.final_sent = False
        self.dropped = 0  # rows measured after the last batch left (counted nowhere else)

    def write(
        self,
        user: int,
        metric: str,
        value_ms: float | None,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        value = None if value_ms is None or not math.isfinite(value_ms) else float(value_ms)
        row: Row = [user, metric, value, self._clock(), error, extra or None]
        with self._lock:
            if self.final_sent:
                self.dropped += 1
                return
            self._rows.append(row)
            self.tally[metric] += 1
            if error is not None:
                self.failures[metric] += 1

    def pending(self) -> int:
        return len(self._rows)

    def take(self, *, cpu_percent: float | None = None, final: bool = False) -> dict[str, Any]:
        """The next batch message: rows since the last one, this worker's CPU, and (last
        batch only) its tally."""
        with self._lock:
            rows, self._rows = self._rows, []
            self.seq += 1
            batch: dict[str, Any] = {
                "name": self.name,
                "seq": self.seq,
                "now": self._clock(),
                "rows": rows,
                "cpu": cpu_percent,
                "final": final,
            }
            if final:
                self.final_sent = True
                batch["tally"] = dict(self.tally)
                batch["failures"] = dict(self.failures)
                batch["local_addresses"] = sorted(self.local_addresses)
        return batch

    def own_summary(self) -> dict[str, Any]:
        """What this worker measured, as it counted it (written to its own folder)."""
        return {
            "name": self.name,
            "rows": sum(self.tally.values()),
            "tally": dict(self.tally),
            "failures": dict(self.failures),
            "local_addresses": sorted(self.local_addresses),
            "batches": self.seq,
            "dropped_after_last_batch": self.dropped,
        }


@dataclass
class WorkerRecord:
    """What the master knows of one worker; ``w`` numbers workers in the order they joined."""

    w: int
    client_id: str
    name: str = ""
    joined_at: float = 0.0
    last_seen: float | None = None
    batches: int = 0
    rows: int = 0
    missing_batches: int = 0
    missing_at: float | None = None  # locust stopped hearing its heartbeat
    complete: bool = False  # its last batch arrived
    tally: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    local_addresses: list[str] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (master wall t, % of a core)
    _seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        out["cpu"] = [list(c) for c in self.cpu]
        return out


class Collector:
    """The master's side: one raw log per worker, and a record of every worker that joined."""

    def __init__(self, run_dir: Path, clock: Any = time.time) -> None:
        self.run_dir = run_dir
        self._clock = clock
        self.workers: dict[str, WorkerRecord] = {}
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()

    def joined(self, client_id: str) -> WorkerRecord:
        with self._lock:
            rec = self.workers.get(client_id)
            if rec is None:
                rec = WorkerRecord(len(self.workers) + 1, client_id, joined_at=self._clock())
                self.workers[client_id] = rec
            return rec

    def missing(self, client_id: str) -> None:
        rec = self.workers.get(client_id)
        if rec is not None and rec.missing_at is None and not rec.complete:
            rec.missing_at = self._clock()

    def receive(self, client_id: str, batch: dict[str, Any]) -> int:
        """Write a batch's rows to its worker's raw log; returns how many rows it held."""
        rec = self.joined(client_id)
        received = self._clock()
        rec.name = str(batch.get("name") or rec.name)
        seq = int(batch["seq"])
        if seq > rec._seq + 1:
            rec.missing_batches += seq - rec._seq - 1
        rec._seq = max(rec._seq, seq)
        sent_mono = float(batch["now"])
        lines = []
        for user, metric, value, mono, error, extra in batch["rows"]:
            row = {
                "w": rec.w,
                "user": user,
                "metric": metric,
                "value_ms": value,
                "t": received - (sent_mono - mono),
                "ok": error is None,
                "error": error,
                **(extra or {}),
            }
            lines.append(json.dumps(row) + "\n")
        with self._lock:
            fh = self._files.get(client_id)
            if fh is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                fh = self._files[client_id] = (self.run_dir / f"raw-{rec.w}.jsonl").open(
                    "a", encoding="utf-8"
                )
            fh.writelines(lines)
            fh.flush()  # a capacity search reads the logs while the test runs
        rec.batches += 1
        rec.rows += len(lines)
        rec.last_seen = received
        if batch.get("cpu") is not None:
            rec.cpu.append((received, float(batch["cpu"])))
        if batch.get("final"):
            rec.complete = True
            rec.missing_at = None
            rec.tally = {str(k): int(v) for k, v in (batch.get("tally") or {}).items()}
            rec.failures = {str(k): int(v) for k, v in (batch.get("failures") or {}).items()}
            rec.local_addresses = list(batch.get("local_addresses") or [])
        return len(lines)

    def incomplete(self) -> list[WorkerRecord]:
        return [r for r in self.workers.values() if not r.complete]

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()

    def write_roster(self, path: Path) -> None:
        """``workers.json``: every worker's record, for the runner's summary."""
        rows = [r.as_dict() for r in sorted(self.workers.values(), key=lambda r: r.w)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1))
