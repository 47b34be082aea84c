"""Percentile summaries: p50/p95/p99 everywhere, never only a mean.

Latency distributions of voice agents have long tails (a slow tool call, a GC pause, a second
Whisper decode queued behind the first), and the tail is what users remember, so every summary
reports the median, p95, p99 and the maximum beside the mean and the sample count. Percentiles
use numpy's default linear interpolation between order statistics. NaN and infinite values are
left out (a turn without a measurement is not a zero).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

PERCENTILE_COLUMNS = ("count", "p50", "p95", "p99", "mean", "max")
_NOT_METRICS = frozenset({"session", "event_id", "seq"})  # labels, not measurements


def summarize_values(values: Iterable[Any]) -> dict[str, float]:
    """count, p50, p95, p99, mean and max of the finite numbers in ``values`` (NaN when none)."""
    finite = []
    for v in values:
        if v is None:
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            finite.append(x)
    arr = np.asarray(finite, dtype=float)
    if arr.size == 0:
        nan = float("nan")
        return {"count": 0, "p50": nan, "p95": nan, "p99": nan, "mean": nan, "max": nan}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "count": int(arr.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "max": float(arr.max()),
    }


def percentiles(
    data: pd.DataFrame | pd.Series | Mapping[str, Iterable[Any]],
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per metric with ``count, p50, p95, p99, mean, max``.

    ``data`` is a DataFrame (by default every numeric column except ``*_ns`` timestamps, flags
    and the ``session``, ``event_id`` and ``seq`` labels), a Series (one row, named after the
    series) or a mapping of name to values.
    """
    if isinstance(data, pd.Series):
        name = str(data.name) if data.name is not None else "value"
        return _frame({name: data.tolist()})
    if isinstance(data, pd.DataFrame):
        if columns is None:
            columns = [
                c
                for c in data.columns
                if pd.api.types.is_numeric_dtype(data[c])
                and not pd.api.types.is_bool_dtype(data[c])
                and not str(c).endswith("_ns")
                and str(c) not in _NOT_METRICS
            ]
        missing = [c for c in columns if c not in data.columns]
        if missing:
            raise KeyError(
                f"no column {missing[0]!r} to summarise; the table has: "
                + ", ".join(map(str, data.columns))
            )
        return _frame({str(c): data[c].tolist() for c in columns})
    if columns is not None:
        data = {k: data[k] for k in columns}
    return _frame({str(k): list(v) for k, v in data.items()})


def _frame(series: Mapping[str, list[Any]]) -> pd.DataFrame:
    rows = {name: summarize_values(values) for name, values in series.items()}
    df = pd.DataFrame.from_dict(rows, orient="index", columns=list(PERCENTILE_COLUMNS))
    df["count"] = df["count"].astype(int)
    df.index.name = "metric"
    return df
