"""The retention role of :class:`~chronos.backends.memory.MemoryBackend`, and its data.

The memory twin of the Redis Stack layout: each ``(tenant, job)`` keeps its execution ids
ordered by ``started_at`` (``JobExecutions``, the per-job sorted set), entries may outlive
their expired records, the cap trims a few per write and the sweep does the rest.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import Any

from chronos.backends.base import BackendOptions, RetentionStore
from chronos.backends.memory_metrics import MetricSeries
from chronos.backends.memory_triggers import SortedIndex
from chronos.retention import TRIM_PER_WRITE, RetentionPolicy, RetentionSettings

Pair = tuple[str, str]


class JobExecutions:
    """Every job's execution ids by ``(started_at, exec_id)``, like a sorted set per job."""

    def __init__(self) -> None:
        self._order: dict[Pair, list[tuple[int, str]]] = {}
        self._started: dict[Pair, dict[str, int]] = {}

    def add(self, tenant_id: str, job_id: str, exec_id: str, started_at: int) -> None:
        self.remove(tenant_id, job_id, exec_id)
        self._started.setdefault((tenant_id, job_id), {})[exec_id] = started_at
        bisect.insort(self._order.setdefault((tenant_id, job_id), []), (started_at, exec_id))

    def remove(self, tenant_id: str, job_id: str, exec_id: str) -> None:
        started = self._started.get((tenant_id, job_id), {}).pop(exec_id, None)
        if started is not None:
            order = self._order[(tenant_id, job_id)]
            del order[bisect.bisect_left(order, (started, exec_id))]

    def count(self, tenant_id: str, job_id: str) -> int:
        return len(self._started.get((tenant_id, job_id), {}))

    def oldest(self, tenant_id: str, job_id: str, n: int) -> list[tuple[int, str]]:
        return list(self._order.get((tenant_id, job_id), [])[: max(0, n)])

    def jobs(self, tenant_id: str) -> list[str]:
        return [job for tenant, job in self._order if tenant == tenant_id]


class MemoryRetention(RetentionStore):
    """Retention settings and the sweep, mixed into the memory backend (which sets these up)."""

    options: BackendOptions
    clock: Callable[[], int]
    _lock: threading.RLock
    #: The backend's stored records by tenant and exec id (each with ``record``, ``expires_at``).
    _executions: dict[str, dict[str, Any]]
    _metrics: dict[tuple[str, str | None], MetricSeries]
    _live_execution: Callable[[str, str], Any]
    _timeouts: SortedIndex
    _retention: dict[str, RetentionSettings]
    _job_executions: JobExecutions

    def get_retention(self, tenant_id: str) -> RetentionSettings:
        with self._lock:
            return self._retention.get(tenant_id, RetentionSettings())

    def set_retention(self, tenant_id: str, settings: RetentionSettings) -> None:
        settings.check()
        with self._lock:
            self._retention[tenant_id] = settings

    def retention_policy(self, tenant_id: str) -> RetentionPolicy:
        return self.options.default_retention.under(self.get_retention(tenant_id))

    def _index_execution(self, tenant_id: str, job_id: str, exec_id: str, started_at: int,
                         policy: RetentionPolicy) -> None:  # fmt: skip
        """Record a written execution in its job's order and trim the job toward its cap:
        its oldest few beyond the cap, but never the one written now (an old record arriving
        late stays until the next write or sweep), as the Redis write script does."""
        index = self._job_executions
        index.add(tenant_id, job_id, exec_id, started_at)
        cap = policy.max_executions_per_job
        excess = min(index.count(tenant_id, job_id) - cap, TRIM_PER_WRITE) if cap else 0
        for _, oldest in index.oldest(tenant_id, job_id, excess):
            if oldest != exec_id:
                self._delete_execution(tenant_id, job_id, oldest)

    def _delete_execution(self, tenant_id: str, job_id: str, exec_id: str) -> None:
        self._job_executions.remove(tenant_id, job_id, exec_id)
        self._executions.get(tenant_id, {}).pop(exec_id, None)
        self._timeouts.remove(tenant_id, exec_id)  # nothing is left to time out

    def sweep_executions(self, tenant_id: str, now: int, limit: int) -> int:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._lock:
            policy = self.retention_policy(tenant_id)
            removed = 0
            for job_id in self._job_executions.jobs(tenant_id):
                removed += self._sweep_job(tenant_id, job_id, policy, now, limit - removed)
                if removed >= limit:
                    break
            self._forget_metrics(tenant_id, now - policy.metrics_retention_ms)
            return removed

    def _sweep_job(self, tenant_id: str, job_id: str, policy: RetentionPolicy, now: int,
                   budget: int) -> int:  # fmt: skip
        index, removed = self._job_executions, 0
        cap = policy.max_executions_per_job
        if cap:
            excess = min(index.count(tenant_id, job_id) - cap, budget)
            for _, exec_id in index.oldest(tenant_id, job_id, excess):
                self._delete_execution(tenant_id, job_id, exec_id)
                removed += 1
        cutoff = policy.cutoff(now)
        if cutoff is None:
            return removed
        for started_at, exec_id in index.oldest(tenant_id, job_id, budget - removed):
            if started_at >= cutoff:
                break
            stored = self._live_execution(tenant_id, exec_id)  # drops it if expired
            if stored is not None:
                left = None if stored.expires_at is None else stored.expires_at - now
                if policy.sweep_deletes(left):
                    self._delete_execution(tenant_id, job_id, exec_id)
            index.remove(tenant_id, job_id, exec_id)
            removed += 1
        return removed

    def _forget_metrics(self, tenant_id: str, before: int) -> None:
        """Drop the tenant's metrics older than its retention (Redis expires them itself)."""
        for (tenant, _), series in self._metrics.items():
            if tenant == tenant_id:
                series.forget_before(before)
