"""Running migrations: a lock, a stored version, and index builds that never expose a
half-built index.

An index change never alters the live index. It creates a new versioned index, waits until
RediSearch has finished indexing the existing documents into it, moves the alias that queries
use (``FT.ALIASUPDATE``, atomic), and only then drops the old version without its documents.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from chronos.backends.redis_stack.keys import Keys

LOCK_TTL_MS = 10 * 60 * 1000
LOCK_WAIT_S = 10 * 60
INDEX_BUILD_TIMEOUT_S = 30 * 60

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    description: str
    apply: Callable[[MigrationContext], None]


@dataclass(slots=True)
class MigrationContext:
    r: redis.Redis
    keys: Keys

    def index_exists(self, name: str) -> bool:
        try:
            self.r.execute_command("FT.INFO", name)
        except redis.ResponseError as exc:
            if "unknown index" in str(exc).lower() or "no such index" in str(exc).lower():
                return False
            raise
        return True

    def build_index(self, name: str, version: int, definition: Sequence[str]) -> None:
        """Make ``version`` of index ``name`` the live one behind its alias."""
        target = self.keys.index_version(name, version)
        if not self.index_exists(target):
            self.r.execute_command("FT.CREATE", target, *definition)
        self._wait_indexed(target)
        self.r.execute_command("FT.ALIASUPDATE", self.keys.index_alias(name), target)
        pattern = re.compile(re.escape(self.keys.index_alias(name)) + r":v\d+")
        for other in self.r.execute_command("FT._LIST"):
            other = other.decode() if isinstance(other, bytes) else other
            if other != target and pattern.fullmatch(other):
                self.r.execute_command("FT.DROPINDEX", other)  # keeps the documents

    def _wait_indexed(self, index: str) -> None:
        deadline = time.monotonic() + INDEX_BUILD_TIMEOUT_S
        while True:
            info = _info_dict(self.r.execute_command("FT.INFO", index))
            if str(info.get("indexing", "0")) in ("0", "0.0") and float(
                info.get("percent_indexed", 1)
            ) >= 1:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"index {index} still building after {INDEX_BUILD_TIMEOUT_S}s")
            time.sleep(0.1)


def _info_dict(info: Any) -> dict[str, Any]:
    if isinstance(info, dict):
        return info
    return dict(zip(info[::2], info[1::2]))


def _applied(r: redis.Redis, keys: Keys) -> dict[str, int]:
    return {name: int(ms) for name, ms in r.hgetall(keys.schema_applied()).items()}


def migrate(
    r: redis.Redis, keys: Keys, migrations: Sequence[Migration], now: Callable[[], int]
) -> list[str]:
    """Apply the pending migrations in order under a lock; return the names applied."""
    if all(m.name in _applied(r, keys) for m in migrations):
        return []
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_S
    while not r.set(keys.schema_lock(), token, nx=True, px=LOCK_TTL_MS):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"another process has held the migration lock {keys.schema_lock()!r} for "
                f"{LOCK_WAIT_S}s; if it died, the lock expires by itself within "
                f"{LOCK_TTL_MS // 60000} minutes"
            )
        time.sleep(0.1)
    try:
        done: list[str] = []
        applied = _applied(r, keys)
        ctx = MigrationContext(r=r, keys=keys)
        for position, migration in enumerate(migrations, start=1):
            if migration.name in applied:
                continue
            migration.apply(ctx)
            r.hset(keys.schema_applied(), migration.name, now())
            r.set(keys.schema_version(), position)
            done.append(migration.name)
        return done
    finally:
        r.eval(_RELEASE, 1, keys.schema_lock(), token)


def status(r: redis.Redis, keys: Keys, migrations: Sequence[Migration]) -> list[dict[str, Any]]:
    applied = _applied(r, keys)
    return [
        {"name": m.name, "description": m.description, "applied_at": applied.get(m.name)}
        for m in migrations
    ]


def ensure_live_indexes(
    r: redis.Redis, keys: Keys, live: dict[str, tuple[int, Callable[[Keys], list[str]]]]
) -> list[str]:
    """Rebuild any live index that has gone missing (e.g. dropped by hand); return their names."""
    ctx = MigrationContext(r=r, keys=keys)
    rebuilt = []
    for name, (version, definition) in live.items():
        if not ctx.index_exists(keys.index_alias(name)):
            ctx.build_index(name, version, definition(keys))
            rebuilt.append(keys.index_version(name, version))
    return rebuilt
