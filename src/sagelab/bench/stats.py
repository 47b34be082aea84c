"""Percentile summaries: p50/p95/p99 everywhere, never only a mean."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        if arr.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan)
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return cls(
            int(arr.size), float(p50), float(p95), float(p99), float(arr.max()), float(arr.mean())
        )

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
