"""Per-minute counts and exact duration percentiles for :class:`MemoryBackend`.

The in-memory backend keeps every duration, so its percentiles are exact (linear interpolation
between the closest ranks, as ``numpy.quantile`` does by default) rather than sketched.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from chronos.models import FAILURE_STATUSES, MetricBucket

MINUTE_MS = 60_000


def validate_edges(edges: Sequence[int]) -> list[int]:
    """The edges as a list; ``ValueError`` unless there are two or more, strictly increasing."""
    result = list(edges)
    if len(result) < 2:
        raise ValueError("edges needs at least two items")
    if any(b <= a for a, b in zip(result, result[1:], strict=False)):
        raise ValueError("edges must be strictly increasing")
    return result


def validate_quantiles(quantiles: Sequence[float]) -> list[float]:
    result = [float(q) for q in quantiles]
    if any(not 0.0 <= q <= 1.0 for q in result):
        raise ValueError("every quantile must be within [0, 1]")
    return result


def interpolated_quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted, non-empty ``ordered`` by linear interpolation."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def _bucket_index(edges: Sequence[int], ts: int) -> int | None:
    """Which bucket ``[edges[i], edges[i+1])`` holds ``ts``, or ``None``."""
    i = bisect.bisect_right(edges, ts) - 1
    return i if 0 <= i < len(edges) - 1 else None


@dataclass(slots=True)
class MinuteCounts:
    runs: int = 0
    success: int = 0
    failure: int = 0
    duration_sum_ms: float = 0.0
    duration_count: int = 0


@dataclass(slots=True)
class MetricSeries:
    """The metrics of one scope (a job, or a whole tenant)."""

    minutes: dict[int, MinuteCounts] = field(default_factory=dict)
    #: ``(minute, duration_ms)`` of every counted run that had a duration.
    durations: list[tuple[int, int]] = field(default_factory=list)

    def add(self, at: int, status: str, duration_ms: int | None) -> None:
        """Count one terminal run whose metric time is ``at``."""
        minute = at - at % MINUTE_MS
        counts = self.minutes.setdefault(minute, MinuteCounts())
        counts.runs += 1
        if status == "success":
            counts.success += 1
        elif status in FAILURE_STATUSES:
            counts.failure += 1
        if duration_ms is not None:
            counts.duration_sum_ms += duration_ms
            counts.duration_count += 1
            self.durations.append((minute, duration_ms))

    def forget_before(self, before: int) -> None:
        """Drop the minutes (and their durations) that start before ``before``."""
        self.minutes = {m: c for m, c in self.minutes.items() if m >= before}
        self.durations = [(m, d) for m, d in self.durations if m >= before]

    def buckets(self, edges: Sequence[int]) -> list[MetricBucket]:
        result = [MetricBucket(start=a, end=b) for a, b in zip(edges, edges[1:], strict=False)]
        for minute, counts in self.minutes.items():
            i = _bucket_index(edges, minute)
            if i is None:
                continue
            bucket = result[i]
            bucket.runs += counts.runs
            bucket.success += counts.success
            bucket.failure += counts.failure
            bucket.duration_sum_ms += counts.duration_sum_ms
            bucket.duration_count += counts.duration_count
        return result

    def quantiles(
        self, edges: Sequence[int], quantiles: Sequence[float]
    ) -> list[list[float | None]]:
        per_bucket: list[list[int]] = [[] for _ in range(len(edges) - 1)]
        for minute, duration in self.durations:
            i = _bucket_index(edges, minute)
            if i is not None:
                per_bucket[i].append(duration)
        result: list[list[float | None]] = []
        for values in per_bucket:
            values.sort()
            if values:
                result.append([interpolated_quantile(values, q) for q in quantiles])
            else:
                result.append([None] * len(quantiles))
        return result
