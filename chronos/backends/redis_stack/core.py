"""State shared by the role mixins of the Redis Stack backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        self._shas: dict[str, str] = {}

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

    def close(self) -> None:
        self._client.close()
        self._shas.clear()
