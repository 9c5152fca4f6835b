"""Analytics over the metric series and duration sketches: summary, trends and the jobs table.

Plain Python: the backend and ``now`` come in as arguments. Every figure comes from
``MetricsStore`` (bucketed counts and t-digest sketches) and the job definitions; no execution
record is ever read, so the cost grows with the number of buckets and jobs, never with the
number of stored executions.

Buckets follow the user's time zone: ``bucket_edges`` gives the UTC instants of local hour,
day (midnight), week (Monday midnight) or month (the 1st, midnight) boundaries, so a local day
lasts 23 or 25 hours across a DST change. How exactly the store answers for such edges:

- counts: edges on whole UTC hours (every zone with a whole-hour offset) are answered from the
  hourly compaction, exactly, for as long as compactions are kept; edges on UTC midnights from
  the daily one. Edges off the hour (zones such as Asia/Kolkata, +05:30) are exact when the
  first edge is within the per-minute retention (8 days); otherwise the whole answer comes
  from the hourly series, each hour counted in the bucket its start falls in (up to 30 or
  45 min off at each edge).
- percentiles: a bucket that starts within the last 8 days is read from hourly sketches and
  widened to whole UTC hours; an older one from daily sketches, widened to whole UTC days (a
  local day in Paris is then read as the two UTC days it overlaps; a week or month gains up to
  a day at each end).

The jobs table widens its window to whole UTC hours, and windows over 48 hours to whole UTC
days (one daily sample a series, and weekly sketches for the final weeks, instead of an hour's
each), so that its counts and its percentiles cover the same runs; the summary counts the
last 24 h to the minute.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from chronos.backends.base import Backend
from chronos.health import HEALTHS, job_health
from chronos.models import Job, JobQuery, MetricBucket, VersionStats

HOUR = 3_600_000
DAY = 24 * HOUR

Bucket = Literal["hour", "day", "week", "month"]
BUCKETS: tuple[str, ...] = ("hour", "day", "week", "month")
#: Preset ranges end now and reach back this far.
RANGES: dict[str, int] = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
#: The bucket a preset range gets when none is asked for (25, 8, 31 and 14 buckets).
DEFAULT_BUCKETS: dict[str, str] = {"24h": "hour", "7d": "day", "30d": "day", "90d": "week"}
#: At most this many buckets per answer (90 days of hours is over it: choose a coarser bucket).
MAX_BUCKETS = 2000
#: The longest custom range: metric compactions are kept 400 days by default.
MAX_RANGE_MS = 400 * DAY
#: Jobs per batched metrics read in the jobs table.
JOB_BATCH = 500
#: Columns whose values come from merging each job's duration sketches over the window.
PERCENTILE_KEYS: tuple[str, ...] = ("p50", "p95", "p99")
#: Columns whose values come from the job documents.
JOB_KEYS: tuple[str, ...] = ("name", "lastFailureAt", "health")
#: Columns of the jobs table, by their wire names.
SORT_KEYS: tuple[str, ...] = (
    "id", "name", "runs", "success", "failure", "successRate", "avgDuration",
    "p50", "p95", "p99", "lastFailureAt", "health",
)  # fmt: skip
#: How the health column sorts ascending: the most urgent first, paused jobs last.
HEALTH_ORDER: tuple[str, ...] = ("missed", "failing", "late", "running", "ok", "paused")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class RangeError(ValueError):
    """A range, bucket or time zone that cannot be answered; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# time zones and edges ------------------------------------------------------------------------
@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``RangeError`` for anything else (looked up in the list of
    known names, so no text reaches the file system)."""
    if len(name) > 64 or name not in _zone_names():
        raise RangeError("tz", f"{name[:64]!r} is not an IANA time zone (e.g. 'Europe/Paris')")
    return ZoneInfo(name)


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _MS


def _wall(ms: int, tz: ZoneInfo) -> datetime:
    """The local wall-clock time (naive) at instant ``ms``."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).replace(tzinfo=None)


def _first_instant(wall: datetime, tz: ZoneInfo) -> int:
    """The first instant at which the local clock reads ``wall`` or later: its earlier
    occurrence when it happens twice, the end of the gap when a DST jump skips it."""
    early = _ms(wall.replace(tzinfo=tz, fold=0))
    if _wall(early, tz) == wall:
        return early
    # In a gap: fold=0 and fold=1 map to either side of the jump; bisect for it.
    lo, hi = sorted((early, _ms(wall.replace(tzinfo=tz, fold=1))))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _instants(wall: datetime, tz: ZoneInfo, both: bool) -> list[int]:
    """Where a boundary at local ``wall`` falls; with ``both``, each time the clock shows it
    (an hour repeated when the clocks go back is two hourly buckets)."""
    first = _first_instant(wall, tz)
    if both:
        second = _ms(wall.replace(tzinfo=tz, fold=1))
        if second > first and _wall(second, tz) == wall:
            return [first, second]
    return [first]


def _floor(wall: datetime, bucket: str) -> datetime:
    wall = wall.replace(minute=0, second=0, microsecond=0)
    if bucket == "hour":
        return wall
    wall = wall.replace(hour=0)
    if bucket == "week":
        return wall - timedelta(days=wall.weekday())
    if bucket == "month":
        return wall.replace(day=1)
    return wall


def _step(wall: datetime, bucket: str) -> datetime:
    if bucket == "month":
        return wall.replace(year=wall.year + wall.month // 12, month=wall.month % 12 + 1)
    return wall + {"hour": timedelta(hours=1), "day": timedelta(days=1),
                   "week": timedelta(days=7)}[bucket]  # fmt: skip


def bucket_edges(start: int, end: int, bucket: str, tz: str) -> list[int]:
    """UTC instants (ms) of the local ``bucket`` boundaries in ``tz`` covering ``[start, end)``.

    The first edge is the last boundary at or before ``start``, the last the first at or after
    ``end``. Raises ``RangeError`` (a ``ValueError``) for an unknown bucket or zone, an empty
    range, or more than ``MAX_BUCKETS`` buckets.
    """
    if bucket not in BUCKETS:
        raise RangeError("bucket", f"bucket must be one of {', '.join(BUCKETS)}")
    if end <= start:
        raise RangeError("end", "end must be after start")
    tz_info = zone(tz)
    wall = _floor(_wall(start, tz_info), bucket)
    edges: list[int] = []
    try:
        while not edges or edges[-1] < end:
            for t in _instants(wall, tz_info, bucket == "hour"):
                if edges and t <= edges[-1]:
                    continue  # the same instant again (a boundary inside a DST gap)
                if t <= start:
                    edges = [t]
                else:
                    edges.append(t)
            if len(edges) > MAX_BUCKETS + 1:
                raise RangeError("bucket", f"more than {MAX_BUCKETS} buckets: choose a "
                                 "coarser bucket or a shorter range")  # fmt: skip
            wall = _step(wall, bucket)
    except RangeError:
        raise
    except (OverflowError, ValueError):  # datetime's own limits
        raise RangeError("end", "the range reaches past the year 9999") from None
    if edges[0] < 0:
        raise RangeError("start", "the range starts before 1970")
    return edges


def resolve_range(
    range_: str, now: int, start: int | None = None, end: int | None = None
) -> tuple[int, int]:
    """``(start, end)`` of a preset range (``24h``, ``7d``, ``30d``, ``90d``: the span that
    ends at ``now``) or of ``custom`` (``start`` and ``end`` given, at most ``MAX_RANGE_MS``)."""
    if range_ == "custom":
        if start is None or end is None:
            raise RangeError("range", "a custom range needs both start and end")
        if end <= start:
            raise RangeError("end", "end must be after start")
        if end - start > MAX_RANGE_MS:
            raise RangeError("range", f"a custom range spans at most {MAX_RANGE_MS // DAY} days")
        return start, end
    if range_ not in RANGES:
        raise RangeError("range", f"range must be custom or one of {', '.join(RANGES)}")
    if start is not None or end is not None:
        raise RangeError("range", "start and end go with range=custom")
    return now - RANGES[range_], now


def default_bucket(range_: str, start: int, end: int) -> str:
    """The bucket of a preset range, or for a custom one by its length: up to 2 days hourly,
    up to 62 days daily, up to a year weekly, monthly beyond."""
    if range_ in DEFAULT_BUCKETS:
        return DEFAULT_BUCKETS[range_]
    length = end - start
    if length <= 2 * DAY:
        return "hour"
    if length <= 62 * DAY:
        return "day"
    return "week" if length <= 366 * DAY else "month"


# figures -----------------------------------------------------------------------------------
def success_rate(success: int, failure: int) -> float | None:
    """Successes among runs that succeeded or failed (cancelled runs are neither)."""
    decided = success + failure
    return success / decided if decided else None


@dataclass(slots=True)
class Totals:
    """Counts of one window, with the average and (where read) the p95 duration in ms."""

    start: int
    end: int
    runs: int = 0
    success: int = 0
    failure: int = 0
    success_rate: float | None = None
    avg_duration: float | None = None
    p95: float | None = None


@dataclass(slots=True)
class JobCounts:
    total: int = 0
    enabled: int = 0
    health: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HEALTHS, 0))


@dataclass(slots=True)
class Summary:
    timezone: str
    last24h: Totals
    #: Since the last local midnight in ``timezone``.
    today: Totals
    jobs: JobCounts


@dataclass(slots=True)
class TrendPoint:
    start: int
    end: int
    runs: int
    success: int
    failure: int
    success_rate: float | None
    avg_duration: float | None
    p50: float | None
    p95: float | None


@dataclass(slots=True)
class JobRow:
    id: str
    name: str
    runs: int
    success: int
    failure: int
    success_rate: float | None
    avg_duration: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    last_failure_at: int | None
    health: str


@dataclass(slots=True)
class JobTable:
    """A page of rows, the window they were counted over (widened to whole UTC hours, or days
    over 48 hours), and how many rows the whole table has."""

    start: int
    end: int
    rows: list[JobRow]
    total: int = 0
    offset: int = 0


def _totals(buckets: Sequence[MetricBucket], start: int, end: int) -> Totals:
    inside = [b for b in buckets if start <= b.start and b.end <= end]
    runs = sum(b.runs for b in inside)
    success, failure = sum(b.success for b in inside), sum(b.failure for b in inside)
    n = sum(b.duration_count for b in inside)
    avg = sum(b.duration_sum_ms for b in inside) / n if n else None
    return Totals(start, end, runs, success, failure, success_rate(success, failure), avg)


def all_jobs(backend: Backend, tenant_id: str) -> list[Job]:
    """Every job of the tenant, a page of 1000 per round trip (meant for up to ~10k jobs)."""
    jobs: list[Job] = []
    cursor: str | None = None
    while True:
        page = backend.list_jobs(tenant_id, JobQuery(limit=1000, cursor=cursor))
        jobs += page.items
        cursor = page.next_cursor
        if cursor is None:
            return jobs


def summary(backend: Backend, tenant_id: str, now: int, tz: str,
            jobs_list: Sequence[Job] | None = None) -> Summary:  # fmt: skip
    """The overview: runs of the last 24 h and of the local day so far, with success rate,
    average and p95 duration, and the tenant's jobs counted by health (``jobs_list`` when the
    caller has them already)."""
    day_start = bucket_edges(now, now + 1, "day", tz)[0]
    since = now - DAY
    # One read for both windows: the local day may have begun up to 25 h ago.
    buckets = backend.metric_buckets(tenant_id, None, sorted({since, day_start, now}))
    last24h, today = _totals(buckets, since, now), _totals(buckets, day_start, now)
    last24h.p95 = backend.duration_quantiles(tenant_id, None, [since, now], [0.95])[0][0]
    if now > day_start:
        today.p95 = backend.duration_quantiles(tenant_id, None, [day_start, now], [0.95])[0][0]
    jobs = JobCounts()
    for job in all_jobs(backend, tenant_id) if jobs_list is None else jobs_list:
        jobs.total += 1
        jobs.enabled += 1 if job.enabled else 0
        jobs.health[job_health(job, now)] += 1
    return Summary(tz, last24h, today, jobs)


def trends(
    backend: Backend, tenant_id: str, job_id: str | None, start: int, end: int, bucket: str,
    tz: str,
) -> list[TrendPoint]:  # fmt: skip
    """Counts, success rate, average, p50 and p95 per local bucket; empty buckets are zeros."""
    edges = bucket_edges(start, end, bucket, tz)
    buckets = backend.metric_buckets(tenant_id, job_id, edges)
    quantiles = backend.duration_quantiles(tenant_id, job_id, edges, [0.5, 0.95])
    return [
        TrendPoint(b.start, b.end, b.runs, b.success, b.failure,
                   success_rate(b.success, b.failure), b.duration_avg_ms, p50, p95)
        for b, (p50, p95) in zip(buckets, quantiles, strict=True)
    ]  # fmt: skip


def jobs_table(
    backend: Backend, tenant_id: str, start: int, end: int, sort: str, order: str, now: int,
    offset: int = 0, limit: int | None = None,
) -> JobTable:  # fmt: skip
    """The rows ``offset`` to ``offset + limit`` (all with ``limit=None``) of the table of the
    tenant's jobs over ``[start, end)`` widened to whole UTC hours (days, over 48 hours),
    sorted by ``sort`` (a name of ``SORT_KEYS``), ``asc`` or ``desc``; empty values last.

    Runs, successes and failures come for every job in a few commands (``metric_totals``);
    average durations (two more series a job), percentiles (a merge of the window's sketches
    per job) and the jobs themselves (name, health, last failure) only for the returned rows,
    unless the table is sorted by one of them."""
    if sort not in SORT_KEYS:
        raise RangeError("sort", f"sort must be one of {', '.join(SORT_KEYS)}")
    if order not in ("asc", "desc"):
        raise RangeError("order", "order must be asc or desc")
    grain = DAY if end - start > 2 * DAY else HOUR
    start, end = start - start % grain, -(-end // grain) * grain
    by_job = sort in JOB_KEYS
    ids = backend.list_job_ids(tenant_id)
    rows: list[JobRow] = []
    for i in range(0, len(ids), JOB_BATCH):
        chunk = ids[i : i + JOB_BATCH]
        totals = backend.metric_totals(tenant_id, chunk, start, end,
                                       ("runs", "success", "failure"))  # fmt: skip
        for job_id, t in zip(chunk, totals, strict=True):
            rows.append(JobRow(
                job_id, job_id, t.runs, t.success, t.failure,
                success_rate(t.success, t.failure), None, None, None, None, None, "",
            ))  # fmt: skip
    if by_job:
        rows = _add_jobs(backend, tenant_id, rows, now)
    by_duration = sort in (*PERCENTILE_KEYS, "avgDuration")
    if by_duration:
        _add_durations(backend, tenant_id, rows, start, end)
        if sort in PERCENTILE_KEYS:
            _add_percentiles(backend, tenant_id, rows, start, end)
    page = sort_rows(rows, sort, order)[offset : None if limit is None else offset + limit]
    if not by_job:
        page = _add_jobs(backend, tenant_id, page, now)
    if not by_duration:
        _add_durations(backend, tenant_id, page, start, end)
    if sort not in PERCENTILE_KEYS:
        _add_percentiles(backend, tenant_id, page, start, end)
    return JobTable(start, end, page, len(rows), offset)


def _add_jobs(backend: Backend, tenant_id: str, rows: list[JobRow], now: int) -> list[JobRow]:
    """Fill in name, last failure and health from the jobs; rows whose job is gone since its
    id was listed (deleted meanwhile) are dropped."""
    jobs = backend.get_jobs([(tenant_id, row.id) for row in rows])
    kept = []
    for row, job in zip(rows, jobs, strict=True):
        if job is not None:
            row.name, row.last_failure_at = job.name, job.state.last_failure_at
            row.health = job_health(job, now)
            kept.append(row)
    return kept


def _add_durations(
    backend: Backend, tenant_id: str, rows: Sequence[JobRow], start: int, end: int
) -> None:
    """Fill in the average duration of the rows whose jobs ran in the window."""
    ran = [row for row in rows if row.runs]
    for i in range(0, len(ran), JOB_BATCH):
        chunk = ran[i : i + JOB_BATCH]
        totals = backend.metric_totals(tenant_id, [row.id for row in chunk], start, end,
                                       ("duration",))  # fmt: skip
        for row, t in zip(chunk, totals, strict=True):
            row.avg_duration = t.duration_avg_ms


def _add_percentiles(
    backend: Backend, tenant_id: str, rows: Sequence[JobRow], start: int, end: int
) -> None:
    """Fill in p50/p95/p99 of the rows whose jobs recorded a duration in the window."""
    timed = [row for row in rows if row.avg_duration is not None]
    for i in range(0, len(timed), JOB_BATCH):
        chunk = timed[i : i + JOB_BATCH]
        ids = [row.id for row in chunk]
        quantiles = backend.duration_quantiles_many(tenant_id, ids, start, end, [0.5, 0.95, 0.99])
        for row, (p50, p95, p99) in zip(chunk, quantiles, strict=True):
            row.p50, row.p95, row.p99 = p50, p95, p99


_ATTRS = {"successRate": "success_rate", "avgDuration": "avg_duration",
          "lastFailureAt": "last_failure_at"}  # fmt: skip


def sort_rows(rows: Sequence[JobRow], sort: str, order: str) -> list[JobRow]:
    """Rows by column ``sort``; ties by id; rows without a value last in either order."""
    attr = _ATTRS.get(sort, sort)

    def key(row: JobRow) -> object:
        value = getattr(row, attr)
        if sort == "health":
            return HEALTH_ORDER.index(value) if value in HEALTH_ORDER else len(HEALTH_ORDER)
        if sort == "name":
            return (value.casefold(), value)
        return value

    ordered = sorted(rows, key=lambda row: row.id)
    present = [row for row in ordered if getattr(row, attr) is not None]
    present.sort(key=key, reverse=order == "desc")  # stable: equal keys stay in id order
    return present + [row for row in ordered if getattr(row, attr) is None]


# versions ----------------------------------------------------------------------------------
@dataclass(slots=True)
class VersionRow:
    """A version of a job (``version_stats``) against the one before it."""

    stats: VersionStats
    success_rate: float | None
    #: Success rate minus the previous version's, in percentage points.
    rate_change_pp: float | None = None
    #: The p95 duration over the previous version's, minus one (``0.4``: 40 % slower).
    p95_change: float | None = None


def compare_versions(stats: Sequence[VersionStats]) -> list[VersionRow]:
    """``stats`` (newest first) as rows, each compared with the next one (the version that
    came before it); the oldest has nothing to compare with."""
    rows = [VersionRow(v, success_rate(v.success, v.failure)) for v in stats]
    for row, before in zip(rows, rows[1:]):
        if row.success_rate is not None and before.success_rate is not None:
            row.rate_change_pp = (row.success_rate - before.success_rate) * 100
        new, old = row.stats.duration_p95_ms, before.stats.duration_p95_ms
        if new is not None and old:
            row.p95_change = new / old - 1
    return rows
