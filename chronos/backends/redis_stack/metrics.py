"""Bucketed counts from RedisTimeSeries and duration percentiles from t-digest sketches.

Reads cost O(buckets + samples in the range at the chosen resolution); they never touch
execution documents, so their cost does not grow with the number of stored executions.
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections.abc import Sequence
from typing import Any

from chronos.backends.base import MetricsStore
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import (
    HOURLY_SKETCH_RETENTION_MS,
    RAW_RETENTION_MS,
    RedisCore,
)
from chronos.backends.redis_stack.keys import METRICS, RESOLUTION_MS, SKETCH_GRAINS
from chronos.models import MetricBucket


def check_edges(edges: Sequence[int]) -> None:
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError("edges must be strictly increasing, with at least two of them")


def _floor(ms: int, step: int) -> int:
    return ms - ms % step


class RedisMetrics(RedisCore, MetricsStore):
    def _resolution(self, edges: Sequence[int], now: int) -> str:
        """The coarsest series whose buckets tile the edges; finer data widens to it."""
        if all(e % RESOLUTION_MS["1d"] == 0 for e in edges):
            return "1d"
        if all(e % RESOLUTION_MS["1h"] == 0 for e in edges):
            return "1h"
        if edges[0] >= now - RAW_RETENTION_MS + RESOLUTION_MS["1h"]:
            return "raw"
        return "1h"

    @translated
    def metric_buckets(
        self, tenant_id: str, job_id: str | None, edges: Sequence[int]
    ) -> list[MetricBucket]:
        check_edges(edges)
        res = self._resolution(edges, self.clock())
        start = _floor(edges[0], RESOLUTION_MS[res])
        pipe = self.client().pipeline(transaction=False)
        for metric in METRICS:
            key = self.keys.series(tenant_id, job_id, metric, res)
            args = ["TS.RANGE", key, start, edges[-1] - 1]
            if res != "raw":
                args.append("LATEST")  # include the still-open compaction bucket
            pipe.execute_command(*args)
        replies = pipe.execute(raise_on_error=False)
        buckets = [MetricBucket(start=a, end=b) for a, b in zip(edges, edges[1:])]
        inner = list(edges[1:-1])
        for metric, reply in zip(METRICS, replies):
            if isinstance(reply, Exception):
                if "does not exist" in str(reply).lower():
                    continue  # nothing was ever counted in this scope
                raise reply
            for ts, value in reply:
                bucket = buckets[bisect.bisect_right(inner, int(ts))]
                _add(bucket, metric, float(value))
        return buckets

    @translated
    def duration_quantiles(
        self,
        tenant_id: str,
        job_id: str | None,
        edges: Sequence[int],
        quantiles: Sequence[float],
    ) -> list[list[float | None]]:
        check_edges(edges)
        if not quantiles or any(not 0 <= q <= 1 for q in quantiles):
            raise ValueError("quantiles must be a non-empty list of numbers in [0, 1]")
        now = self.clock()
        calls: list[tuple[list[str], list[Any]]] = []
        for a, b in zip(edges, edges[1:]):
            grain = "h" if a >= now - HOURLY_SKETCH_RETENTION_MS + SKETCH_GRAINS["h"] else "d"
            step = SKETCH_GRAINS[grain]
            sources = [
                self.keys.sketch(tenant_id, job_id, grain, t)
                for t in range(_floor(a, step), b, step)
            ]
            scratch = self.keys.scratch(f"td:{uuid.uuid4().hex}")
            calls.append(([scratch, *sources], [repr(float(q)) for q in quantiles]))
        result: list[list[float | None]] = []
        for reply in self.run_scripts("QUANTILES", calls):
            if reply is None:
                result.append([None] * len(quantiles))
                continue
            values = [float(v) for v in reply]
            result.append([None if math.isnan(v) else v for v in values])
        return result


def _add(bucket: MetricBucket, metric: str, value: float) -> None:
    if metric == "runs":
        bucket.runs += round(value)
    elif metric == "success":
        bucket.success += round(value)
    elif metric == "failure":
        bucket.failure += round(value)
    elif metric == "dur_sum":
        bucket.duration_sum_ms += value
    elif metric == "dur_n":
        bucket.duration_count += round(value)
