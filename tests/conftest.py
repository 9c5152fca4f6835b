"""Test fixtures: a real Redis Stack for the whole session, isolated per test by key prefix.

The session starts its own Redis Stack server (from the pinned PyPI wheels, see
``chronos.embedded``) on a free loopback port, and stops it at the end. If it cannot start,
the tests that need it fail; they are never skipped. ``CHRONOS_TEST_REDIS_URL`` points the
suite at an already running Redis Stack instead. Nothing is ever flushed: each test works
under its own key prefix and deletes only its own keys and indices afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import RedisStackBackend
from chronos.embedded import RedisStackServer


@pytest.fixture(scope="session")
def redis_stack_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("CHRONOS_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisStackServer(root=tmp_path_factory.mktemp("redis-stack"), persistent=False)
    try:
        url = server.start()
    except Exception as exc:  # a failure, not a skip: CI must go red without Redis Stack
        pytest.fail(f"could not start the test Redis Stack server: {exc}", pytrace=False)
    yield url
    server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


def cleanup_prefix(url: str, prefix: str) -> None:
    """Delete the indices and keys under ``prefix`` (and nothing else)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        for name in r.execute_command("FT._LIST"):
            if name.startswith(prefix):
                r.execute_command("FT.DROPINDEX", name)
        batch = []
        for key in r.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                r.delete(*batch)
                batch.clear()
        if batch:
            r.delete(*batch)
    finally:
        r.close()


@pytest.fixture
def redis_backend(redis_stack_url: str, key_prefix: str) -> Iterator[RedisStackBackend]:
    """A migrated Redis Stack backend under a fresh key prefix."""
    backend = RedisStackBackend(redis_stack_url, BackendOptions(key_prefix=key_prefix))
    backend.migrate()
    yield backend
    backend.close()
    cleanup_prefix(redis_stack_url, key_prefix)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "instance"
