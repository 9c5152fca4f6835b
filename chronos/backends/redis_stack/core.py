"""State shared by the role mixins of the Redis Stack backend."""

from __future__ import annotations

from collections.abc import Callable

import redis

from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import scripts
from chronos.backends.redis_stack.connection import LazyClient
from chronos.backends.redis_stack.keys import Keys
from chronos.timeutil import now_ms

#: Raw per-minute samples are kept this long; late executions older than this are stored but
#: not counted (the hourly and daily compactions are kept for ``metrics_retention_ms``).
RAW_RETENTION_MS = 8 * 24 * 3600 * 1000
#: Hourly duration sketches are kept this long; daily ones for ``metrics_retention_ms``.
HOURLY_SKETCH_RETENTION_MS = 8 * 24 * 3600 * 1000


class RedisCore:
    """The client, key names, clock and registered scripts."""

    name = "redis-stack"

    def __init__(self, url: str, options: BackendOptions) -> None:
        self.url = url
        self.options = options
        self.keys = Keys(options.key_prefix)
        self.clock: Callable[[], int] = now_ms
        self._client = LazyClient(url, options)
        self._scripts: dict[str, redis.commands.core.Script] = {}

    def client(self) -> redis.Redis:
        return self._client.get()

    def script(self, name: str) -> redis.commands.core.Script:
        """A registered script (``scripts.NAME``); EVALSHA with a fallback to EVAL."""
        found = self._scripts.get(name)
        if found is None:
            found = self.client().register_script(getattr(scripts, name))
            self._scripts[name] = found
        return found

    def close(self) -> None:
        self._client.close()
        self._scripts.clear()
