"""Execution records: one JSON document each, written with their metrics by one script."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chronos.backends import cursor
from chronos.backends.base import ExecutionStore, check_version_kind, sort_versions
from chronos.backends.redis_stack import documents as docs
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import (
    HOURLY_SKETCH_RETENTION_MS,
    RAW_RETENTION_MS,
    RedisCore,
)
from chronos.backends.redis_stack.jobs import check_limit
from chronos.backends.redis_stack.keys import SKETCH_GRAINS, dec, enc, totals_bucket_field
from chronos.backends.redis_stack.search import Query, aggregate, search_newest_first, words
from chronos.errors import ValidationError
from chronos.models import (
    FAILURE_STATUSES,
    TERMINAL_STATUSES,
    Execution,
    ExecutionQuery,
    Page,
    VersionStats,
    WriteOutcome,
    duration_bucket,
)
from chronos.retention import RetentionPolicy

#: The largest LIMIT offset RediSearch accepts (its MAXSEARCHRESULTS default).
MAX_OFFSET = 1_000_000
TEXT_FIELDS = ["error_type", "error_message", "error_stack", "stdout", "stderr"]
#: Margin kept from the raw series' retention edge, so a sample never lands where TS.ADD
#: would refuse it (the server's clock may differ a little from ours).
_RETENTION_MARGIN_MS = 3600 * 1000


def event_data(execution: Execution, outcome: str) -> dict[str, Any]:
    """The summary of an execution carried by live ``execution`` events."""
    return {
        "execId": execution.exec_id,
        "jobId": execution.job_id,
        "status": execution.status,
        "startedAt": execution.started_at,
        "finishedAt": execution.finished_at,
        "durationMs": execution.effective_duration_ms(),
        "exitCode": execution.exit_code,
        "outcome": outcome,
    }


def _floor(ms: int, step: int) -> int:
    return ms - ms % step


class RedisExecutions(RedisCore, ExecutionStore):
    @translated
    def write_executions(
        self, tenant_id: str, executions: Sequence[Execution]
    ) -> list[WriteOutcome]:
        for ex in executions:
            if ex.tenant_id != tenant_id:
                raise ValueError(f"execution {ex.exec_id!r} belongs to tenant {ex.tenant_id!r}")
        if not executions:
            return []
        now = self.clock()
        policy = self.retention_policy(tenant_id)
        calls = [self._write_call(ex, now, policy) for ex in executions]
        return self.run_scripts("WRITE_EXECUTION", calls)

    def _write_call(
        self, ex: Execution, now: int, policy: RetentionPolicy
    ) -> tuple[list[str], list[Any]]:
        k = self.keys
        t, job = ex.tenant_id, ex.job_id
        # A run counts when it finished; a clock running ahead never plants future samples.
        at = min(ex.finished_at if ex.finished_at is not None else ex.started_at, now)
        counted = ex.terminal and at >= now - RAW_RETENTION_MS + _RETENTION_MARGIN_MS
        hour, day = _floor(at, SKETCH_GRAINS["h"]), _floor(at, SKETCH_GRAINS["d"])
        hour_expiry = hour + HOURLY_SKETCH_RETENTION_MS
        day_expiry = day + policy.metrics_retention_ms
        expires_at = policy.expires_at(ex.started_at, now)
        duration = ex.effective_duration_ms()
        if duration is not None and duration < 0:
            duration = None
        event = docs.dumps({"type": "execution", "data": event_data(ex, "")})
        keys = [
            k.execution(t, ex.exec_id), k.job(t, job), k.job_state(t, job),
            *k.all_series(t, job),
            k.sketch(t, None, "h", hour), k.sketch(t, None, "d", day),
            k.sketch(t, job, "h", hour), k.sketch(t, job, "d", day),
            k.timeouts(),
            k.totals(t, job),
            k.job_executions(t, job), k.tenant_execution_jobs(t),
        ]  # fmt: skip
        args = [
            docs.dumps(docs.execution_to_doc(ex)),
            ex.status,
            "1" if ex.terminal else "0",
            str(_floor(at, 60_000)) if counted else "",
            "1" if ex.status == "success" else "0",
            "1" if ex.status in FAILURE_STATUSES else "0",
            "" if duration is None else str(duration),
            str(expires_at or 0),
            k.events_channel(t),
            event[: -len('"}}')],  # the script appends the outcome and closes the JSON
            str(RAW_RETENTION_MS),
            str(policy.metrics_retention_ms),
            str(hour_expiry) if hour_expiry > now else "0",
            str(day_expiry) if day_expiry > now else "0",
            str(ex.started_at),
            "" if ex.finished_at is None else str(ex.finished_at),
            ex.exec_id,
            str(ex.finished_at if ex.finished_at is not None else ex.started_at),
            k.pair(t, ex.exec_id),
            ex.trigger_id or "",
            "" if duration is None else totals_bucket_field(duration_bucket(duration)),
            enc(ex.exec_id),
            enc(job),
            str(policy.max_executions_per_job),
            k.tenant_execution_prefix(t),
        ]
        return keys, args

    @translated
    def get_execution(self, tenant_id: str, exec_id: str) -> Execution | None:
        doc = self.client().json().get(self.keys.execution(tenant_id, exec_id))
        return docs.execution_from_doc(doc) if doc else None

    @translated
    def search_executions(self, tenant_id: str, query: ExecutionQuery) -> Page[Execution]:
        check_limit(query.limit)
        if query.text is not None and not words(query.text):
            return Page(items=[])  # nothing literal to look for
        before, skip = None, 0
        if query.cursor:
            position = cursor.decode(query.cursor, "executions", ts=int, skip=int)
            before, skip = position["ts"], position["skip"]
            if not 0 <= skip <= MAX_OFFSET:  # tampered: RediSearch would refuse the offset
                raise ValidationError("cursor is not valid",
                                      details={"cursor": query.cursor[:100]})  # fmt: skip
        q = Query().tag("tenant", enc(tenant_id))
        if query.job_id is not None:
            q.tag("job", enc(query.job_id))
        if query.statuses:
            q.tag("status", *(enc(status) for status in sorted(set(query.statuses))))
        if query.job_version is not None:
            q.tag("version", enc(query.job_version))
        if query.host is not None:
            q.tag("host", enc(query.host))
        if query.trigger_id is not None:
            q.tag("trigger", enc(query.trigger_id))
        q.text(TEXT_FIELDS, query.text)
        until = None if query.until is None else query.until - 1
        highs = [h for h in (before, until) if h is not None]
        found = search_newest_first(
            self.client(), self.keys.index_alias("executions"), q, field="started_at",
            low=query.since, high=min(highs) if highs else None, offset=skip,
            limit=query.limit + 1, now=self.clock(),
        )  # fmt: skip
        items = [docs.execution_from_doc(d) for d in found[: query.limit]]
        next_cursor = None
        if len(found) > query.limit:
            last = items[-1].started_at
            ties = sum(1 for item in items if item.started_at == last)
            if before == last:
                ties += skip
            next_cursor = cursor.encode("executions", ts=last, skip=ties)
        return Page(items=items, next_cursor=next_cursor)

    @translated
    def version_stats(
        self, tenant_id: str, job_id: str, by: str, since: int, until: int
    ) -> list[VersionStats]:
        check_version_kind(by)
        field = "@version" if by == "job" else "@app_version"
        q = Query().tag("tenant", enc(tenant_id)).tag("job", enc(job_id))
        q.tag("status", *sorted(TERMINAL_STATUSES)).numeric("started_at", since, until - 1)
        r, index = self.client(), self.keys.index_alias("executions")
        # Counts and starts per version and status; then the durations per version, of the
        # runs that reported one. A duration is not sortable, so it is loaded from the
        # documents (at most the per-job cap of them).
        counts = aggregate(r, index, q, [
            "GROUPBY", 2, field, "@status", "REDUCE", "COUNT", 0, "AS", "n",
            "REDUCE", "MIN", 1, "@started_at", "AS", "first",
            "REDUCE", "MAX", 1, "@started_at", "AS", "last",
        ])  # fmt: skip
        timed = q.copy().numeric("duration_ms", None, None)
        durations = aggregate(r, index, timed, [
            "LOAD", 1, "@duration_ms", "GROUPBY", 1, field,
            "REDUCE", "AVG", 1, "@duration_ms", "AS", "avg",
            "REDUCE", "QUANTILE", 2, "@duration_ms", "0.95", "AS", "p95",
        ])  # fmt: skip
        name = field[1:]
        stats: dict[str | None, VersionStats] = {}
        for row in counts:
            version = _version(row.get(name))
            first, last = int(float(row["first"])), int(float(row["last"]))
            group = stats.get(version)
            if group is None:
                group = stats[version] = VersionStats(version, first_started_at=first)
            n, status = int(row["n"]), row.get("status")
            group.runs += n
            group.success += n if status == "success" else 0
            group.failure += n if status in FAILURE_STATUSES else 0
            group.first_started_at = min(group.first_started_at, first)
            group.last_started_at = max(group.last_started_at, last)
        for row in durations:
            group = stats.get(_version(row.get(name)))
            if group is not None:  # written between the two reads: counted next time
                group.duration_avg_ms = _number(row.get("avg"))
                group.duration_p95_ms = _number(row.get("p95"))
        return sort_versions(list(stats.values()))


def _version(value: Any) -> str | None:
    """A group's version: the TAG holds ``enc(version)``; no value means none was reported."""
    return None if value is None or value == "" else dec(str(value))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: nothing to average
