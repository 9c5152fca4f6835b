"""The Redis Stack backend: RedisJSON documents, RediSearch indices, RedisTimeSeries metrics,
t-digest sketches and Pub/Sub, assembled from one mixin per role."""

from __future__ import annotations

import time
from typing import Any

from chronos.backends.base import Backend, BackendOptions
from chronos.backends.redis_stack.accounts import RedisAccounts
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import RedisCore
from chronos.backends.redis_stack.executions import RedisExecutions
from chronos.backends.redis_stack.jobs import RedisJobs
from chronos.backends.redis_stack.metrics import RedisMetrics
from chronos.backends.redis_stack.realtime import RedisRealtime
from chronos.backends.redis_stack.retention import RedisRetention
from chronos.backends.redis_stack.triggers import RedisTriggers

#: Modules Chronos needs, by the names ``MODULE LIST`` reports.
REQUIRED_MODULES = ("ReJSON", "search", "timeseries", "bf")


class RedisStackBackend(
    RedisAccounts, RedisJobs, RedisExecutions, RedisMetrics, RedisRealtime, RedisTriggers,
    RedisRetention, Backend,
):  # fmt: skip
    """Serves ``redis://``, ``rediss://`` and ``unix://`` URLs."""

    name = "redis-stack"

    def __init__(self, url: str, options: BackendOptions) -> None:
        RedisCore.__init__(self, url, options)

    @translated
    def health(self) -> dict[str, Any]:
        r = self.client()
        started = time.perf_counter()
        r.ping()
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        modules = {}
        for module in r.module_list():
            modules[str(module["name"])] = int(module["ver"])
        missing = [m for m in REQUIRED_MODULES if m not in modules]
        server = r.info("server")
        report: dict[str, Any] = {
            "status": "degraded" if missing else "ok",
            "backend": self.name,
            "redis_version": server.get("redis_version"),
            "modules": modules,
            "latency_ms": latency_ms,
        }
        if missing:
            report["missing_modules"] = missing
        return report

    @translated
    def migrate(self) -> list[str]:
        import migrations_redis  # here, not at the top: it imports this package's key module

        applied = migrations_redis.migrate(
            self.client(), self.keys, migrations_redis.MIGRATIONS, self.clock
        )
        rebuilt = migrations_redis.ensure_live_indexes(
            self.client(), self.keys, migrations_redis.LIVE_INDEXES
        )
        return applied + [f"rebuilt {name}" for name in rebuilt]

    @translated
    def schema_status(self) -> list[dict[str, Any]]:
        import migrations_redis

        return migrations_redis.status(self.client(), self.keys, migrations_redis.MIGRATIONS)
