"""Percentile summaries for benchmark reports: p50/p95/p99 everywhere, never only a mean.

A thin, JSON-friendly view of ``sagelab.metrics.summarize_values``, so every benchmark and the
metrics tables compute percentiles one way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sagelab.metrics.summary import summarize_values


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[Any]) -> Summary:
        s = summarize_values(values)
        return cls(int(s["count"]), s["p50"], s["p95"], s["p99"], s["max"], s["mean"])

    def as_dict(self, digits: int = 2) -> dict[str, float | int | None]:
        def r(x: float) -> float | None:
            return None if math.isnan(x) else round(x, digits)

        return {
            "n": self.n,
            "p50": r(self.p50),
            "p95": r(self.p95),
            "p99": r(self.p99),
            "max": r(self.max),
            "mean": r(self.mean),
        }
