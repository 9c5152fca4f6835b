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

from chronos.backends.base import TOTAL_COUNTS, MetricsStore
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import (
    HOURLY_SKETCH_RETENTION_MS,
    RAW_RETENTION_MS,
    RedisCore,
)
from chronos.backends.redis_stack.keys import (
    FIRST_MONDAY_MS,
    METRICS,
    RESOLUTION_MS,
    SKETCH_GRAINS,
    WEEK_MS,
    totals_bucket_field,
)
from chronos.models import DURATION_BUCKETS_MS, JobTotals, MetricBucket

#: ``metric_buckets`` lets the server sum each bucket when the series hold more than this many
#: samples a bucket on average (one command a bucket and metric instead of one a metric).
SERVER_SUM_SAMPLES = 32
#: The ``metric_totals`` count each series feeds.
_COUNT_OF = {"runs": "runs", "success": "success", "failure": "failure",
             "dur_sum": "duration", "dur_n": "duration"}  # fmt: skip
#: Jobs per ``TOTALS`` script call (each call holds its jobs' keys; the calls are pipelined).
TOTALS_JOBS = 100


def check_edges(edges: Sequence[int]) -> None:
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError("edges must be strictly increasing, with at least two of them")


def check_quantiles(quantiles: Sequence[float]) -> None:
    if not quantiles or any(not 0 <= q <= 1 for q in quantiles):
        raise ValueError("quantiles must be a non-empty list of numbers in [0, 1]")


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

    def _range(self, key: str, res: str, start: int, end: int) -> list[Any]:
        """``TS.RANGE`` of one series over ``[start, end)`` at resolution ``res``."""
        args: list[Any] = ["TS.RANGE", key, start, end - 1]
        if res != "raw":
            args.append("LATEST")  # include the still-open compaction bucket
        return args

    @translated
    def metric_buckets(
        self, tenant_id: str, job_id: str | None, edges: Sequence[int]
    ) -> list[MetricBucket]:
        check_edges(edges)
        res = self._resolution(edges, self.clock())
        start = _floor(edges[0], RESOLUTION_MS[res])
        buckets = [MetricBucket(start=a, end=b) for a, b in zip(edges, edges[1:])]
        pipe = self.client().pipeline(transaction=False)
        if (edges[-1] - start) // RESOLUTION_MS[res] > SERVER_SUM_SAMPLES * len(buckets):
            # Many samples a bucket (a day of minutes, a week of a busy job's minutes): the
            # server sums each bucket and answers one sample instead of thousands.
            lows = [start, *edges[1:-1]]
            for metric in METRICS:
                key = self.keys.series(tenant_id, job_id, metric, res)
                for low, high in zip(lows, edges[1:]):
                    pipe.execute_command(*self._range(key, res, low, high), "ALIGN", "-",
                                         "AGGREGATION", "sum", high - low)  # fmt: skip
            replies = pipe.execute(raise_on_error=False)
            for m, metric in enumerate(METRICS):
                for i, bucket in enumerate(buckets):
                    for _, value in _samples(replies[m * len(buckets) + i]):
                        _add(bucket, metric, float(value))
            return buckets
        for metric in METRICS:
            key = self.keys.series(tenant_id, job_id, metric, res)
            pipe.execute_command(*self._range(key, res, start, edges[-1]))
        replies = pipe.execute(raise_on_error=False)
        inner = list(edges[1:-1])
        for metric, reply in zip(METRICS, replies):
            for ts, value in _samples(reply):
                bucket = buckets[bisect.bisect_right(inner, int(ts))]
                _add(bucket, metric, float(value))
        return buckets

    @translated
    def metric_totals(
        self,
        tenant_id: str,
        job_ids: Sequence[str],
        start: int,
        end: int,
        counts: Sequence[str] = TOTAL_COUNTS,
    ) -> list[MetricBucket]:
        """One round trip, a ``TOTALS`` script per ``TOTALS_JOBS`` jobs: the server sums each
        series over the segments of ``_segments``, so a 90-day table of 500 jobs reads a few
        daily samples per series instead of 2,000 hourly ones, in a handful of commands."""
        check_edges([start, end])
        segments = self._segments(start, end, self.clock())
        resolutions = list(dict.fromkeys(res for res, _, _ in segments))
        args: list[Any] = [len(resolutions)]
        for res, low, high in segments:
            args += [resolutions.index(res) + 1, low, high - 1, "1" if res != "raw" else "0"]
        metrics = [m for m in METRICS if _COUNT_OF[m] in counts]
        calls = []
        for i in range(0, len(job_ids), TOTALS_JOBS):
            keys = [
                self.keys.series(tenant_id, job_id, metric, res)
                for job_id in job_ids[i : i + TOTALS_JOBS]
                for metric in metrics
                for res in resolutions
            ]
            calls.append((keys, args))
        sums = [float(v) for reply in self.run_scripts("TOTALS", calls) for v in reply]
        result = []
        for j in range(len(job_ids)):
            bucket = MetricBucket(start=start, end=end)
            for m, metric in enumerate(metrics):
                _add(bucket, metric, sums[j * len(metrics) + m])
            result.append(bucket)
        return result

    @translated
    def job_totals(self, tenant_id: str, job_ids: Sequence[str]) -> list[JobTotals]:
        """One pipelined round trip: each job's totals hash."""
        if not job_ids:
            return []
        pipe = self.client().pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.totals(tenant_id, job_id))
        return [_totals(fields) for fields in pipe.execute()]

    def _segments(self, start: int, end: int, now: int) -> list[tuple[str, int, int]]:
        """``[start, end)`` as ``(resolution, from, to)`` pieces with the same sum as
        ``metric_buckets(..., [start, end])``: whole UTC days from the daily series and the
        hours around them from the hourly one; other edges at ``_resolution``'s choice,
        widened as there."""
        day, hour = RESOLUTION_MS["1d"], RESOLUTION_MS["1h"]
        if start % hour or end % hour:
            res = self._resolution([start, end], now)
            return [(res, _floor(start, RESOLUTION_MS[res]), end)]
        first_day, last_day = -(-start // day) * day, _floor(end, day)
        if first_day >= last_day:
            return [("1h", start, end)]
        pieces = [("1h", start, first_day), ("1d", first_day, last_day), ("1h", last_day, end)]
        return [(res, low, high) for res, low, high in pieces if low < high]

    def _quantile_call(
        self,
        tenant_id: str,
        job_id: str | None,
        a: int,
        b: int,
        quantiles: Sequence[float],
        now: int,
    ) -> tuple[list[str], list[Any]]:
        """The ``QUANTILES`` call for bucket ``[a, b)``: the sketches it is widened to.

        A bucket that starts within the hourly sketches' retention reads hourly sketches;
        an older one daily sketches, except that each whole week (Monday to Monday, UTC) that
        ended before the raw series' retention, so no run can be added to it any more, reads
        its weekly sketch, which the script makes from the days' on first use: 90 days are
        ~25 sketches to merge instead of 91."""
        args: list[Any] = [len(quantiles), *(repr(float(q)) for q in quantiles)]
        keys = [self.keys.scratch(f"td:{uuid.uuid4().hex}")]
        if a >= now - HOURLY_SKETCH_RETENTION_MS + SKETCH_GRAINS["h"]:
            step = SKETCH_GRAINS["h"]
            for t in range(_floor(a, step), b, step):
                keys.append(self.keys.sketch(tenant_id, job_id, "h", t))
                args += [1, 0]
            return keys, args
        day = SKETCH_GRAINS["d"]
        final = now - RAW_RETENTION_MS  # weeks that end before this are complete for good
        keep = self.retention_policy(tenant_id).metrics_retention_ms
        t = _floor(a, day)
        while t < b:
            if ((t - FIRST_MONDAY_MS) % WEEK_MS == 0 and t + WEEK_MS <= min(b, final)
                    and t + keep > now + 60_000):  # fmt: skip
                keys.append(self.keys.sketch(tenant_id, job_id, "w", t))
                keys += [self.keys.sketch(tenant_id, job_id, "d", d)
                         for d in range(t, t + WEEK_MS, day)]  # fmt: skip
                args += [8, t + keep]  # expires with its first day
                t += WEEK_MS
            else:
                keys.append(self.keys.sketch(tenant_id, job_id, "d", t))
                args += [1, 0]
                t += day
        return keys, args

    @translated
    def duration_quantiles(
        self,
        tenant_id: str,
        job_id: str | None,
        edges: Sequence[int],
        quantiles: Sequence[float],
    ) -> list[list[float | None]]:
        check_edges(edges)
        check_quantiles(quantiles)
        now = self.clock()
        calls = [
            self._quantile_call(tenant_id, job_id, a, b, quantiles, now)
            for a, b in zip(edges, edges[1:])
        ]
        return [_quantile_values(r, len(quantiles)) for r in self.run_scripts("QUANTILES", calls)]

    @translated
    def duration_quantiles_many(
        self,
        tenant_id: str,
        job_ids: Sequence[str],
        start: int,
        end: int,
        quantiles: Sequence[float],
    ) -> list[list[float | None]]:
        """One pipelined round trip: a ``QUANTILES`` call per job."""
        check_edges([start, end])
        check_quantiles(quantiles)
        if not job_ids:
            return []
        now = self.clock()
        calls = [
            self._quantile_call(tenant_id, job_id, start, end, quantiles, now) for job_id in job_ids
        ]
        return [_quantile_values(r, len(quantiles)) for r in self.run_scripts("QUANTILES", calls)]


def _samples(reply: Any) -> list[Any]:
    """The samples of a ``TS.RANGE`` reply; none for a series never created (nothing was
    counted in that scope)."""
    if isinstance(reply, Exception):
        if "does not exist" in str(reply).lower():
            return []
        raise reply
    return list(reply)


def _quantile_values(reply: Any, n: int) -> list[float | None]:
    if reply is None:
        return [None] * n
    values = [float(v) for v in reply]
    return [None if math.isnan(v) else v for v in values]


#: Totals hash field of each duration bucket -> the bucket's index.
_BUCKET_INDEX = {totals_bucket_field(i): i for i in range(len(DURATION_BUCKETS_MS) + 1)}


def _totals(fields: dict[str, str]) -> JobTotals:
    """A job's totals from its hash (``WRITE_EXECUTION`` keeps it; empty if never counted)."""
    totals = JobTotals(runs=int(fields.get("runs", 0)),
                       duration_sum_ms=float(fields.get("dur_sum", 0)),
                       duration_count=int(fields.get("dur_n", 0)))  # fmt: skip
    for name, value in fields.items():
        if name.startswith("status:"):
            totals.statuses[name[len("status:") :]] = int(value)
        elif name in _BUCKET_INDEX:
            totals.buckets[_BUCKET_INDEX[name]] = int(value)
    return totals


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
