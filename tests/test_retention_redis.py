"""Retention on a real Redis Stack, seen from Redis itself: trimmed records leave the search
index, series and sketches get their tenant's metrics retention (and a new one when it
changes), stale set members are tolerated, and the migration builds the per-job sets."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import migrations_redis
from chronos.backends.redis_stack import RedisStackBackend
from chronos.backends.redis_stack.keys import METRICS, enc
from chronos.models import Execution
from chronos.retention import DAY_MS, RetentionSettings
from chronos.timeutil import now_ms
from migrations_redis import m0002_job_executions

pytestmark = pytest.mark.redis

HOUR = 3_600_000
#: A UTC midnight two days ago: counted in metrics, inside every default retention.
T0 = (now_ms() // DAY_MS - 2) * DAY_MS


def run(tenant: str, exec_id: str, job: str, started_at: int, **kw: Any) -> Execution:
    kw.setdefault("status", "success")
    kw.setdefault("finished_at", started_at + 1500)
    return Execution(tenant_id=tenant, exec_id=exec_id, job_id=job, started_at=started_at, **kw)


def indexed(backend: RedisStackBackend, tenant: str) -> list[str]:
    """Keys of the tenant's documents that FT.SEARCH finds, straight from the index."""
    reply = backend.client().execute_command(
        "FT.SEARCH", backend.keys.index_alias("executions"), "@tenant:{$t}", "PARAMS", 2,
        "t", enc(tenant), "NOCONTENT", "LIMIT", 0, 10_000, "DIALECT", 2,
    )  # fmt: skip
    return sorted(str(row["id"]) for row in reply["results"])


def keys_of(backend: RedisStackBackend, tenant: str, ids: list[str]) -> list[str]:
    return sorted(backend.keys.execution(tenant, i) for i in ids)


def test_trimmed_and_swept_records_leave_the_search_index(redis_backend: RedisStackBackend) -> None:
    b = redis_backend
    b.set_retention("t:1", RetentionSettings(max_executions_per_job=2))
    for i in range(5):
        b.write_executions("t:1", [run("t:1", f"e|{i}", "j*", T0 + i * HOUR)])
    assert indexed(b, "t:1") == keys_of(b, "t:1", ["e|3", "e|4"])
    assert b.client().zrange(b.keys.job_executions("t:1", "j*"), 0, -1) == ["e%7C3", "e%7C4"]

    b.set_retention("t:1", RetentionSettings(max_executions_per_job=2, execution_days=2))
    assert b.sweep_executions("t:1", T0 + 2 * DAY_MS + 3 * HOUR + 1, 100) == 1
    assert indexed(b, "t:1") == keys_of(b, "t:1", ["e|4"])


def test_stale_members_of_expired_records_are_tolerated(redis_backend: RedisStackBackend) -> None:
    b, r = redis_backend, redis_backend.client()
    for i in range(4):
        b.write_executions("acme", [run("acme", f"e{i}", "a", T0 + i * HOUR)])
    r.delete(b.keys.execution("acme", "e0"), b.keys.execution("acme", "e2"))  # "expired"
    b.set_retention("acme", RetentionSettings(max_executions_per_job=1))
    b.write_executions("acme", [run("acme", "e4", "a", T0 + 4 * HOUR)])  # trims e0, e1, e2
    assert indexed(b, "acme") == keys_of(b, "acme", ["e3", "e4"])
    assert b.sweep_executions("acme", now_ms(), 100) == 1
    assert indexed(b, "acme") == keys_of(b, "acme", ["e4"])
    b.set_retention("acme", RetentionSettings(execution_days=1))
    r.delete(b.keys.execution("acme", "e4"))
    assert b.sweep_executions("acme", now_ms(), 100) == 1  # only its member was left
    assert r.exists(b.keys.job_executions("acme", "a")) == 0


def retention_of(r: redis.Redis, key: str) -> int:
    return int(r.execute_command("TS.INFO", key)["retentionTime"])


def test_series_and_sketches_get_their_tenants_metrics_retention(
    redis_backend: RedisStackBackend,
) -> None:
    b, r, k = redis_backend, redis_backend.client(), redis_backend.keys
    b.set_retention("short", RetentionSettings(metrics_days=30))
    for tenant in ("short", "default"):
        b.write_executions(tenant, [run(tenant, "e1", "a", T0 + HOUR, duration_ms=1500)])
    for tenant, days in (("short", 30), ("default", 400)):
        for scope in (None, "a"):
            assert retention_of(r, k.series(tenant, scope, "runs", "raw")) == 8 * DAY_MS
            for metric in METRICS:
                for res in ("1h", "1d"):
                    series = k.series(tenant, scope, metric, res)
                    assert retention_of(r, series) == days * DAY_MS
            assert r.pexpiretime(k.sketch(tenant, scope, "d", T0)) == T0 + days * DAY_MS
            hour = T0 + HOUR  # of the finish
            assert r.pexpiretime(k.sketch(tenant, scope, "h", hour)) == hour + 8 * DAY_MS

    edges = [T0, T0 + DAY_MS]
    before = (b.metric_buckets("short", "a", edges), b.duration_quantiles("short", None, edges,
                                                                           [0.5]))  # fmt: skip
    b.set_retention("short", RetentionSettings(metrics_days=100))
    for scope in (None, "a"):
        for metric in METRICS:
            assert retention_of(r, k.series("short", scope, metric, "1d")) == 100 * DAY_MS
        assert r.pexpiretime(k.sketch("short", scope, "d", T0)) == T0 + 100 * DAY_MS
    assert retention_of(r, k.series("default", "a", "runs", "1d")) == 400 * DAY_MS
    assert r.pexpiretime(k.sketch("default", "a", "d", T0)) == T0 + 400 * DAY_MS
    assert (b.metric_buckets("short", "a", edges),
            b.duration_quantiles("short", None, edges, [0.5])) == before  # fmt: skip


def test_zset_memory_for_ten_thousand_executions(redis_backend: RedisStackBackend) -> None:
    """The per-job set costs about 130 bytes a record (uuid ids); the cap bounds it per job."""
    b = redis_backend
    start = now_ms() - DAY_MS
    for n in range(0, 10_000, 1000):
        b.write_executions("acme", [
            run("acme", f"{i:08x}-0000-4000-8000-{i:012x}", "a", start + i * 1000)
            for i in range(n, n + 1000)
        ])  # fmt: skip
    key = b.keys.job_executions("acme", "a")
    assert b.client().zcard(key) == 10_000
    used = b.client().memory_usage(key, samples=0)
    assert used is not None and used / 10_000 < 160, used


def test_migration_builds_the_sets_from_the_index(
    redis_backend: RedisStackBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, r, k = redis_backend, redis_backend.client(), redis_backend.keys
    written = {("t|1", "a:b"): 5, ("t|1", "*"): 2, ("acme", "a:b"): 3}
    for (tenant, job), count in written.items():
        b.write_executions(tenant, [run(tenant, f"{job}/{i}", job, T0 + i * 60_000)
                                    for i in range(count)])  # fmt: skip
    expected = {
        k.job_executions(t, j): r.zrange(k.job_executions(t, j), 0, -1, withscores=True)
        for t, j in written
    }
    jobs = {t: r.smembers(k.tenant_execution_jobs(t)) for t in ("t|1", "acme")}
    assert jobs == {"t|1": {"a%3Ab", "%2A"}, "acme": {"a%3Ab"}}
    # As before this migration: the sets are not there and it is not applied.
    r.delete(*expected, *(k.tenant_execution_jobs(t) for t in jobs))
    r.hdel(k.schema_applied(), m0002_job_executions.MIGRATION.name)
    monkeypatch.setattr(m0002_job_executions, "BATCH", 3)  # several cursor reads

    assert b.migrate() == ["0002_job_executions"]
    assert {key: r.zrange(key, 0, -1, withscores=True) for key in expected} == expected
    assert {t: r.smembers(k.tenant_execution_jobs(t)) for t in jobs} == jobs
    assert b.migrate() == []
    m0002_job_executions.apply(migrations_redis.MigrationContext(r=r, keys=k))  # again
    assert {key: r.zrange(key, 0, -1, withscores=True) for key in expected} == expected

    b.set_retention("t|1", RetentionSettings(max_executions_per_job=1))
    assert b.sweep_executions("t|1", now_ms(), 100) == 5
    assert indexed(b, "t|1") == keys_of(b, "t|1", ["a:b/4", "*/1"])
    assert len(indexed(b, "acme")) == 3
