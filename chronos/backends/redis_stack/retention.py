"""Per-tenant retention on Redis Stack: settings in a hash, the sweep, and metrics retention.

Each job's executions are in a sorted set by ``started_at`` (``Keys.job_executions``, kept by
the write script), and the tenant's jobs with executions in a set, so that the cap and the
retention period are enforced by score ranges and never by scanning the keyspace. Deleting a
document removes its search index entry (RediSearch follows the keyspace).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from chronos.backends.base import RetentionStore
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import RedisCore
from chronos.backends.redis_stack.keys import FIRST_MONDAY_MS, METRICS, WEEK_MS, dec
from chronos.retention import BOUNDS, RetentionSettings

#: Most members one sweep script removes: each script call stays short (about a millisecond).
SWEEP_PER_CALL = 200
#: Jobs (metric scopes) handled per pipelined round trip when applying a metrics retention.
SCOPES_PER_ROUND = 200


class RedisRetention(RedisCore, RetentionStore):
    @translated
    def get_retention(self, tenant_id: str) -> RetentionSettings:
        return self.retention_settings(tenant_id)

    @translated
    def set_retention(self, tenant_id: str, settings: RetentionSettings) -> None:
        settings.check()
        before = self.options.default_retention.under(self.retention_settings(tenant_id))
        key = self.keys.tenant_retention(tenant_id)
        pipe = self.client().pipeline(transaction=True)
        pipe.delete(key)
        values = {name: getattr(settings, name) for name in BOUNDS}
        if any(v is not None for v in values.values()):
            pipe.hset(key, mapping={n: v for n, v in values.items() if v is not None})
        pipe.execute()
        self._retention_cache.pop(tenant_id, None)
        after = self.retention_policy(tenant_id)
        if after.metrics_retention_ms != before.metrics_retention_ms:
            self._apply_metrics_retention(tenant_id, after.metrics_retention_ms)

    def _job_ids(self, tenant_id: str) -> Iterator[str]:
        """The tenant's jobs that have had executions (encoded ids), in batches."""
        yield from self.client().sscan_iter(self.keys.tenant_execution_jobs(tenant_id),
                                            count=1000)  # fmt: skip

    def _apply_metrics_retention(self, tenant_id: str, retention_ms: int) -> None:
        """Give the tenant's compactions and daily sketches ``retention_ms``: per scope (the
        tenant, each job), the days its daily duration count has samples for are the days
        that have a sketch; each gets its new expiry (one in the past deletes it)."""
        scopes: list[str | None] = [None]
        for encoded in self._job_ids(tenant_id):
            scopes.append(dec(encoded))
            if len(scopes) >= SCOPES_PER_ROUND:
                self._apply_to_scopes(tenant_id, scopes, retention_ms)
                scopes = []
        if scopes:
            self._apply_to_scopes(tenant_id, scopes, retention_ms)

    def _apply_to_scopes(
        self, tenant_id: str, scopes: Sequence[str | None], retention_ms: int
    ) -> None:
        k, r = self.keys, self.client()
        pipe = r.pipeline(transaction=False)
        for scope in scopes:
            pipe.execute_command("TS.RANGE", k.series(tenant_id, scope, "dur_n", "1d"),
                                 "-", "+", "LATEST")  # fmt: skip
        days = pipe.execute(raise_on_error=False)
        pipe = r.pipeline(transaction=False)
        for scope, reply in zip(scopes, days):
            for ts, _ in _samples(reply):
                day = int(ts)
                pipe.pexpireat(k.sketch(tenant_id, scope, "d", day), day + retention_ms)
                week = day - (day - FIRST_MONDAY_MS) % WEEK_MS  # made by reads, see metrics.py
                pipe.pexpireat(k.sketch(tenant_id, scope, "w", week), week + retention_ms)
            for metric in METRICS:
                for resolution in ("1h", "1d"):
                    pipe.execute_command("TS.ALTER", k.series(tenant_id, scope, metric,
                                         resolution), "RETENTION", retention_ms)  # fmt: skip
        for reply in pipe.execute(raise_on_error=False):
            _samples(reply)  # raises what is not "no such series"

    @translated
    def sweep_executions(self, tenant_id: str, now: int, limit: int) -> int:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        policy = self.options.default_retention.under(self.retention_settings(tenant_id))
        if policy.max_executions_per_job == 0 and policy.execution_ttl_ms is None:
            return 0
        cutoff = policy.cutoff(now)
        fixed = [
            self.keys.tenant_execution_prefix(tenant_id),
            policy.max_executions_per_job,
            "" if cutoff is None else cutoff,
        ]
        removed = 0
        pending = list(self._job_ids(tenant_id))
        while pending and removed < limit:
            # Split what is left of the limit into script-sized budgets, one job each.
            left = limit - removed
            count = min(len(pending), -(-left // SWEEP_PER_CALL))
            batch, pending = pending[:count], pending[count:]
            budgets = [min(SWEEP_PER_CALL, left - i * SWEEP_PER_CALL) for i in range(count)]
            calls = [
                ([self.keys.job_executions(tenant_id, dec(job))],
                 [*fixed, budget, policy.late_keep_ms()])
                for job, budget in zip(batch, budgets)
            ]  # fmt: skip
            done = [int(n) for n in self.run_scripts("SWEEP_EXECUTIONS", calls)]
            removed += sum(done)
            # A job that used its whole budget may have more: it goes round again.
            pending = [j for j, b, n in zip(batch, budgets, done) if n >= b] + pending
        return removed


def _samples(reply: Any) -> list[Any]:
    """A ``TS.RANGE``/``TS.ALTER`` reply; nothing for a series never created."""
    if isinstance(reply, Exception):
        if "does not exist" in str(reply).lower():
            return []
        raise reply
    return list(reply) if isinstance(reply, list) else []
