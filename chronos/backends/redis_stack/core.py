"""State shared by the role mixins of the Redis Stack backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import scripts
from chronos.backends.redis_stack.connection import LazyClient
from chronos.backends.redis_stack.keys import Keys
from chronos.retention import BOUNDS, RetentionPolicy, RetentionSettings
from chronos.timeutil import now_ms

#: Raw per-minute samples are kept this long; late executions older than this are stored but
#: not counted (the hourly and daily compactions are kept for ``metrics_retention_ms``).
RAW_RETENTION_MS = 8 * 24 * 3600 * 1000
#: Hourly duration sketches are kept this long; daily ones for ``metrics_retention_ms``.
HOURLY_SKETCH_RETENTION_MS = 8 * 24 * 3600 * 1000
#: How long a process trusts a tenant's retention settings it read (see ``retention_policy``).
RETENTION_CACHE_S = 5.0


class RedisCore:
    """The client, key names, clock and registered scripts."""

    name = "redis-stack"

    def __init__(self, url: str, options: BackendOptions) -> None:
        self.url = url
        self.options = options
        self.keys = Keys(options.key_prefix)
        self.clock: Callable[[], int] = now_ms
        self._client = LazyClient(url, options)
        self._shas: dict[str, str] = {}
        #: Retention policies by tenant, with the monotonic time they stop being trusted.
        self._retention_cache: dict[str, tuple[RetentionPolicy, float]] = {}

    def client(self) -> redis.Redis:
        return self._client.get()

    def sha(self, name: str) -> str:
        """The SHA1 of script ``scripts.NAME``, loaded into the server on first use."""
        found = self._shas.get(name)
        if found is None:
            found = self.client().script_load(getattr(scripts, name))
            self._shas[name] = found
        return found

    def run_scripts(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)``, pipelined in one round trip.

        EVALSHA without redis-py's per-pipeline ``SCRIPT EXISTS`` check; if the server lost
        its script cache (restart, ``SCRIPT FLUSH``), load it again and retry, which is safe
        because every script here is idempotent.
        """
        for attempt in (1, 2):
            sha = self.sha(name)
            pipe = self.client().pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                self._shas.pop(name, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def retention_settings(self, tenant_id: str) -> RetentionSettings:
        """The tenant's own retention settings, read now (fields of its hash; absent: None)."""
        stored = self.client().hgetall(self.keys.tenant_retention(tenant_id))
        return RetentionSettings(**{name: int(stored[name]) for name in BOUNDS if name in stored})

    def retention_policy(self, tenant_id: str) -> RetentionPolicy:
        """The tenant's retention as writes apply it: from this process's cache while it is
        younger than ``RETENTION_CACHE_S`` (a batch costs no extra round trip), so a change
        reaches every process within that time."""
        cached = self._retention_cache.get(tenant_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        policy = self.options.default_retention.under(self.retention_settings(tenant_id))
        if len(self._retention_cache) > 10_000:
            self._retention_cache.clear()
        self._retention_cache[tenant_id] = (policy, time.monotonic() + RETENTION_CACHE_S)
        return policy

    def close(self) -> None:
        self._client.close()
        self._shas.clear()
