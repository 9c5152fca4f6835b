"""The in-process reference backend (``memory://``): fast unit tests and demos.

It implements every role of :class:`~chronos.backends.base.Backend` with plain dicts under one
re-entrant lock. Records are deep-copied on the way in and out, so callers can never change
stored state by mutating what they passed or got back. Nothing survives the process.
"""

from __future__ import annotations

import bisect
import copy
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chronos import timeutil
from chronos.backends import cursor
from chronos.backends.base import (
    Backend,
    BackendOptions,
    Subscription,
    check_version_kind,
    sort_versions,
)
from chronos.backends.memory_events import MemoryHub
from chronos.backends.memory_metrics import (
    MetricSeries,
    interpolated_quantile,
    validate_edges,
    validate_quantiles,
)
from chronos.backends.memory_retention import JobExecutions, MemoryRetention
from chronos.backends.memory_triggers import MemoryTriggers, SortedIndex, TriggerQueues
from chronos.errors import Conflict, NotFound, ValidationError
from chronos.models import (
    FAILURE_STATUSES,
    ApiKey,
    Event,
    Execution,
    ExecutionQuery,
    Job,
    JobQuery,
    JobState,
    JobTotals,
    MetricBucket,
    Page,
    User,
    VersionStats,
    WriteOutcome,
)
from chronos.retention import RetentionSettings

MAX_LIMIT = 1000
_WORD = re.compile(r"[^\W_]+")


def words(*texts: str | None) -> set[str]:
    """The lower-cased alphanumeric words of the texts; everything else separates words."""
    return {w for text in texts if text for w in _WORD.findall(text.lower())}


def _text_matches(query: str, haystack: set[str]) -> bool:
    """Every word of the query is a whole word of the haystack. A query without a single
    word (only punctuation) matches nothing rather than everything."""
    wanted = words(query)
    return bool(wanted) and wanted <= haystack


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", details={"limit": limit})


def _check_tenant(tenant_id: str, items: Iterable[Job | Execution], what: str) -> None:
    for item in items:
        if item.tenant_id != tenant_id:
            raise ValueError(f"{what} of tenant {item.tenant_id!r} passed for {tenant_id!r}")


@dataclass(slots=True)
class _StoredExecution:
    record: Execution
    words: set[str]
    expires_at: int | None


class MemoryBackend(MemoryTriggers, MemoryRetention, Backend):
    """Everything in process memory; thread-safe, not shared between processes."""

    name = "memory"

    def __init__(
        self, url: str, options: BackendOptions, *, clock: Callable[[], int] = timeutil.now_ms
    ) -> None:
        self.url = url
        self.options = options
        #: Milliseconds now; used for execution and trigger record expiry, claim lifetimes and
        #: how long a handed-out trigger has waited. Tests replace it.
        self.clock = clock
        self._lock = threading.RLock()
        self._trigger_queued = threading.Condition(self._lock)
        self._hub = MemoryHub()
        self._users: dict[str, User] = {}
        self._api_keys: dict[str, ApiKey] = {}
        self._jobs: dict[str, dict[str, Job]] = {}
        self._job_seq: dict[str, int] = {}
        self._executions: dict[str, dict[str, _StoredExecution]] = {}
        self._metrics: dict[tuple[str, str | None], MetricSeries] = {}
        self._totals: dict[tuple[str, str], JobTotals] = {}
        self._next_fire: dict[tuple[str, str], int] = {}
        self._fire_index: list[tuple[int, str, str]] = []
        self._claims: dict[tuple[str, str, int], int] = {}
        self._rate: dict[tuple[str, int], int] = {}
        self._beats: dict[str, tuple[dict[str, Any], int]] = {}
        self._triggers = TriggerQueues()
        self._timeouts = SortedIndex()
        self._retention: dict[str, RetentionSettings] = {}
        self._job_executions = JobExecutions()

    # accounts ------------------------------------------------------------------------------
    def create_user(self, user: User) -> User:
        with self._lock:
            if user.username in self._users:
                raise Conflict(f"username {user.username!r} is taken")
            self._users[user.username] = copy.deepcopy(user)
            return copy.deepcopy(user)

    def get_user(self, username: str) -> User | None:
        with self._lock:
            return copy.deepcopy(self._users.get(username))

    def list_users(self, tenant_id: str) -> list[User]:
        with self._lock:
            found = [u for u in self._users.values() if u.tenant_id == tenant_id]
            return copy.deepcopy(sorted(found, key=lambda u: u.username))

    def list_tenants(self) -> list[str]:
        with self._lock:
            return sorted({u.tenant_id for u in self._users.values()})

    def create_api_key(self, key: ApiKey) -> ApiKey:
        with self._lock:
            if key.key_id in self._api_keys:
                raise Conflict(f"API key {key.key_id!r} exists already")
            self._api_keys[key.key_id] = copy.deepcopy(key)
            return copy.deepcopy(key)

    def get_api_key(self, key_id: str) -> ApiKey | None:
        with self._lock:
            return copy.deepcopy(self._api_keys.get(key_id))

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        with self._lock:
            # dicts keep insertion order, so reversing it breaks created_at ties newest first
            found = [k for k in reversed(self._api_keys.values()) if k.tenant_id == tenant_id]
            found.sort(key=lambda k: k.created_at, reverse=True)
            return copy.deepcopy(found)

    def revoke_api_key(self, tenant_id: str, key_id: str, now: int) -> bool:
        with self._lock:
            key = self._api_keys.get(key_id)
            if key is None or key.tenant_id != tenant_id or key.revoked_at is not None:
                return False
            key.revoked_at = now
            return True

    def touch_api_key(self, key_id: str, now: int) -> None:
        with self._lock:
            key = self._api_keys.get(key_id)
            if key is not None:
                key.last_used_at = now

    # jobs ----------------------------------------------------------------------------------
    def upsert_jobs(self, tenant_id: str, jobs: Sequence[Job], now: int) -> list[WriteOutcome]:
        _check_tenant(tenant_id, jobs, "job")
        outcomes: list[WriteOutcome] = []
        with self._lock:
            stored = self._jobs.setdefault(tenant_id, {})
            for job in jobs:
                new = copy.deepcopy(job)
                old = stored.get(job.id)
                if old is None:
                    self._job_seq[tenant_id] = self._job_seq.get(tenant_id, 0) + 1
                    new.created_at, new.seq, new.state = now, self._job_seq[tenant_id], JobState()
                    outcomes.append("created")
                else:
                    new.created_at, new.seq, new.state = old.created_at, old.seq, old.state
                    outcomes.append("updated")
                new.updated_at = now
                stored[job.id] = new
        return outcomes

    def get_job(self, tenant_id: str, job_id: str) -> Job | None:
        with self._lock:
            return copy.deepcopy(self._jobs.get(tenant_id, {}).get(job_id))

    def list_jobs(self, tenant_id: str, query: JobQuery) -> Page[Job]:
        _check_limit(query.limit)
        after = 0
        if query.cursor is not None:
            after = cursor.decode(query.cursor, "jobs", seq=int)["seq"]
        with self._lock:
            ordered = sorted(self._jobs.get(tenant_id, {}).values(), key=lambda j: j.seq)
            matching = [j for j in ordered if j.seq > after and self._job_matches(j, query)]
            page = matching[: query.limit]
            next_cursor = None
            if len(matching) > query.limit:
                next_cursor = cursor.encode("jobs", seq=page[-1].seq)
            return Page(items=copy.deepcopy(page), next_cursor=next_cursor)

    @staticmethod
    def _job_matches(job: Job, query: JobQuery) -> bool:
        if query.enabled is not None and job.enabled != query.enabled:
            return False
        if query.tag is not None and query.tag not in job.tags:
            return False
        return query.text is None or _text_matches(query.text, words(job.name, job.description))

    def set_job_enabled(self, tenant_id: str, job_id: str, enabled: bool, now: int) -> Job:
        with self._lock:
            job = self._jobs.get(tenant_id, {}).get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            job.enabled = enabled
            job.updated_at = now
            return copy.deepcopy(job)

    def delete_job(self, tenant_id: str, job_id: str) -> bool:
        with self._lock:
            self.set_next_fire(tenant_id, job_id, None)
            return self._jobs.get(tenant_id, {}).pop(job_id, None) is not None

    # executions ----------------------------------------------------------------------------
    def write_executions(
        self, tenant_id: str, executions: Sequence[Execution]
    ) -> list[WriteOutcome]:
        _check_tenant(tenant_id, executions, "execution")
        with self._lock:
            return [self._write_one(copy.deepcopy(e)) for e in executions]

    def _write_one(self, new: Execution) -> WriteOutcome:
        old = self._live_execution(new.tenant_id, new.exec_id)
        outcome: WriteOutcome
        if old is None:
            outcome = "created"
        elif old.record.status == "running" and new.terminal:
            outcome = "updated"
        else:
            return "duplicate"
        policy = self.retention_policy(new.tenant_id)
        self._executions.setdefault(new.tenant_id, {})[new.exec_id] = _StoredExecution(
            record=new,
            words=words(new.error_type, new.error_message, new.error_stack, new.stdout, new.stderr),
            expires_at=policy.expires_at(new.started_at, self.clock()),
        )
        self._index_execution(new.tenant_id, new.job_id, new.exec_id, new.started_at, policy)
        job = self._jobs.get(new.tenant_id, {}).get(new.job_id)
        if (job is not None and new.trigger_id is not None
                and job.state.last_trigger_id == new.trigger_id
                and job.state.last_trigger_started_at is None):  # fmt: skip
            job.state.last_trigger_started_at = new.started_at  # the job is not late
        if new.terminal:
            self._timeouts.remove(new.tenant_id, new.exec_id)
            self._count(new)
            self._advance_state(new)
        else:
            if job is not None and job.max_runtime_seconds is not None:
                deadline = int(new.started_at + job.max_runtime_seconds * 1000)
                self._timeouts.set(new.tenant_id, new.exec_id, deadline)
        self._hub.publish(Event(new.tenant_id, "execution", _summary(new, outcome)))
        return outcome

    def _live_execution(self, tenant_id: str, exec_id: str) -> _StoredExecution | None:
        stored = self._executions.get(tenant_id, {}).get(exec_id)
        if (
            stored is not None
            and stored.expires_at is not None
            and stored.expires_at <= self.clock()
        ):
            del self._executions[tenant_id][exec_id]
            self._timeouts.remove(tenant_id, exec_id)  # nothing is left to time out
            return None
        return stored

    def _count(self, e: Execution) -> None:
        at = e.finished_at if e.finished_at is not None else e.started_at
        duration = e.effective_duration_ms()
        for scope in ((e.tenant_id, e.job_id), (e.tenant_id, None)):
            self._metrics.setdefault(scope, MetricSeries()).add(at, e.status, duration)
        self._totals.setdefault((e.tenant_id, e.job_id), JobTotals()).add(e.status, duration)

    def _advance_state(self, e: Execution) -> None:
        job = self._jobs.get(e.tenant_id, {}).get(e.job_id)
        if job is None:
            return
        state = job.state
        at = e.finished_at if e.finished_at is not None else e.started_at
        # The last success/failure times only ever move forward, whatever order runs arrive in.
        if e.status == "success" and (state.last_success_at or 0) < at:
            state.last_success_at = at
        elif e.status in FAILURE_STATUSES and (state.last_failure_at or 0) < at:
            state.last_failure_at = at
        if state.last_started_at is not None and e.started_at < state.last_started_at:
            return  # an older run arriving late does not replace the last run
        state.last_exec_id = e.exec_id
        state.last_status = e.status
        state.last_started_at = e.started_at
        state.last_finished_at = e.finished_at
        state.last_duration_ms = e.effective_duration_ms()

    def get_execution(self, tenant_id: str, exec_id: str) -> Execution | None:
        with self._lock:
            stored = self._live_execution(tenant_id, exec_id)
            return None if stored is None else copy.deepcopy(stored.record)

    def search_executions(self, tenant_id: str, query: ExecutionQuery) -> Page[Execution]:
        _check_limit(query.limit)
        after: tuple[int, str] | None = None
        if query.cursor is not None:
            data = cursor.decode(query.cursor, "executions", s=int, id=str)
            after = (data["s"], data["id"])
        with self._lock:
            matching = [
                stored.record
                for exec_id in list(self._executions.get(tenant_id, {}))
                if (stored := self._live_execution(tenant_id, exec_id)) is not None
                and _execution_matches(stored, query)
                and (after is None or (stored.record.started_at, exec_id) < after)
            ]
            matching.sort(key=lambda e: (e.started_at, e.exec_id), reverse=True)
            page = matching[: query.limit]
            next_cursor = None
            if len(matching) > query.limit:
                last = page[-1]
                next_cursor = cursor.encode("executions", s=last.started_at, id=last.exec_id)
            return Page(items=copy.deepcopy(page), next_cursor=next_cursor)

    def version_stats(
        self, tenant_id: str, job_id: str, by: str, since: int, until: int
    ) -> list[VersionStats]:
        check_version_kind(by)
        field = "job_version" if by == "job" else "app_version"
        groups: dict[str | None, list[Execution]] = {}
        with self._lock:
            for exec_id in list(self._executions.get(tenant_id, {})):
                stored = self._live_execution(tenant_id, exec_id)
                if stored is None:
                    continue
                e = stored.record
                if e.job_id == job_id and e.terminal and since <= e.started_at < until:
                    groups.setdefault(getattr(e, field) or None, []).append(e)
        stats = []
        for version, runs in groups.items():
            durations = sorted(float(d) for e in runs if (d := e.duration_ms) is not None)
            stats.append(VersionStats(
                version, runs=len(runs),
                success=sum(e.status == "success" for e in runs),
                failure=sum(e.status in FAILURE_STATUSES for e in runs),
                duration_avg_ms=sum(durations) / len(durations) if durations else None,
                duration_p95_ms=interpolated_quantile(durations, 0.95) if durations else None,
                first_started_at=min(e.started_at for e in runs),
                last_started_at=max(e.started_at for e in runs),
            ))  # fmt: skip
        return sort_versions(stats)

    # metrics -------------------------------------------------------------------------------
    def metric_buckets(
        self, tenant_id: str, job_id: str | None, edges: Sequence[int]
    ) -> list[MetricBucket]:
        edges = validate_edges(edges)
        with self._lock:
            return self._metrics.get((tenant_id, job_id), MetricSeries()).buckets(edges)

    def duration_quantiles(
        self,
        tenant_id: str,
        job_id: str | None,
        edges: Sequence[int],
        quantiles: Sequence[float],
    ) -> list[list[float | None]]:
        edges = validate_edges(edges)
        quantiles = validate_quantiles(quantiles)
        with self._lock:
            series = self._metrics.get((tenant_id, job_id), MetricSeries())
            return series.quantiles(edges, quantiles)

    def job_totals(self, tenant_id: str, job_ids: Sequence[str]) -> list[JobTotals]:
        with self._lock:
            return [copy.deepcopy(self._totals.get((tenant_id, j), JobTotals())) for j in job_ids]

    # events --------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        self._hub.publish(event)

    def subscribe(self) -> Subscription:
        return self._hub.subscribe()

    # scheduler -----------------------------------------------------------------------------
    def beat(self, name: str, data: dict[str, Any], ttl_ms: int) -> None:
        with self._lock:
            self._beats[name] = (copy.deepcopy(data), self.clock() + ttl_ms)

    def last_beat(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            data, lapses_at = self._beats.get(name, (None, 0))
            return copy.deepcopy(data) if lapses_at > self.clock() else None

    def set_next_fire(self, tenant_id: str, job_id: str, when: int | None) -> None:
        with self._lock:
            old = self._next_fire.pop((tenant_id, job_id), None)
            if old is not None:
                i = bisect.bisect_left(self._fire_index, (old, tenant_id, job_id))
                del self._fire_index[i]
            if when is not None:
                self._next_fire[(tenant_id, job_id)] = when
                bisect.insort(self._fire_index, (when, tenant_id, job_id))

    def due_fires(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        with self._lock:
            due = self._fire_index[: max(0, limit)]
            return [(tenant, job, when) for when, tenant, job in due if when <= now]

    def claim_trigger(
        self, tenant_id: str, job_id: str, instant: int, owner: str, ttl_ms: int
    ) -> bool:
        key = (tenant_id, job_id, instant)
        with self._lock:
            now = self.clock()
            expires_at = self._claims.get(key)
            if expires_at is not None and expires_at > now:
                return False
            if len(self._claims) > 10_000:
                self._claims = {k: t for k, t in self._claims.items() if t > now}
            self._claims[key] = now + ttl_ms
            return True

    def advance_fire(self, tenant_id: str, job_id: str, expected: int, new: int | None) -> bool:
        with self._lock:
            current = self._next_fire.get((tenant_id, job_id))
            if current is None or current != expected:
                return False
            self.set_next_fire(tenant_id, job_id, new)
            return True

    def hit(self, name: str, limit: int, window_ms: int, now: int, cost: int = 1) -> int:
        start = now - now % window_ms
        with self._lock:
            if len(self._rate) > 10_000:  # forget windows that have ended
                self._rate = {k: n for k, n in self._rate.items() if k[1] + window_ms > now}
            count = self._rate.get((name, start), 0) + cost
            if cost:
                self._rate[(name, start)] = count
        return 0 if count <= limit else max(1, start + window_ms - now)

    # lifecycle -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"status": "ok", "backend": self.name}

    def migrate(self) -> list[str]:
        return []

    def schema_status(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self._hub.close_all()
        with self._trigger_queued:
            self._trigger_queued.notify_all()


def _execution_matches(stored: _StoredExecution, query: ExecutionQuery) -> bool:
    e = stored.record
    exact = (
        (query.job_id, e.job_id),
        (query.job_version, e.job_version),
        (query.host, e.host),
        (query.trigger_id, e.trigger_id),
    )
    if any(wanted is not None and wanted != actual for wanted, actual in exact):
        return False
    if query.statuses and e.status not in query.statuses:
        return False
    if query.since is not None and e.started_at < query.since:
        return False
    if query.until is not None and e.started_at >= query.until:
        return False
    return query.text is None or _text_matches(query.text, stored.words)


def _summary(e: Execution, outcome: WriteOutcome) -> dict[str, Any]:
    """The small payload of an ``execution`` event; the full record is one GET away."""
    return {
        "execId": e.exec_id,
        "jobId": e.job_id,
        "status": e.status,
        "startedAt": e.started_at,
        "finishedAt": e.finished_at,
        "durationMs": e.effective_duration_ms(),
        "exitCode": e.exit_code,
        "outcome": outcome,
    }
