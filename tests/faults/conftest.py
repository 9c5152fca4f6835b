"""Fixtures of the fault tests: a private Redis Stack to kill, gunicorn to kill, and the app
and API keys on whichever Redis a test uses."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Tenants, cleanup_prefix
from flask import Flask

from chronos import create_app
from chronos.extension import get_state

from .servers import Gunicorn, PrivateRedis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A persistent Redis Stack of this test only, started; stopped afterwards."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def app_on(url: str, prefix: str, data_dir: Path) -> Flask:
    config = {"CHRONOS_BACKEND_URL": url, "CHRONOS_KEY_PREFIX": prefix}
    return create_app({"TESTING": True, "CHRONOS_DATA_DIR": str(data_dir), **config})


@pytest.fixture
def private_app(private_redis: PrivateRedis, tmp_path: Path) -> Iterator[Flask]:
    """The app (in this process, for checks and API keys) on the private Redis Stack."""
    app = app_on(private_redis.url, "fault:", tmp_path / "instance")
    yield app
    get_state(app).close()


@pytest.fixture
def private_tenants(private_app: Flask) -> Tenants:
    return Tenants(private_app)


ServerEnv = Callable[[str, str], dict[str, str]]


@pytest.fixture
def server_env(tmp_path: Path) -> ServerEnv:
    """The environment of a Chronos process (gunicorn, ``chronos scheduler``) on ``url``.

    No per-job record cap: the tests count every acknowledged record in the key space, and a
    fast machine sends one job past the default 10,000 while the kills are being arranged
    (the cap then rightly drops its oldest records; the retention tests cover that)."""

    def env(url: str, prefix: str) -> dict[str, str]:
        found = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOS_")}
        found.update(CHRONOS_BACKEND_URL=url, CHRONOS_KEY_PREFIX=prefix,
                     CHRONOS_DATA_DIR=str(tmp_path / "instance"),
                     CHRONOS_SECRET_KEY="fault-tests",
                     CHRONOS_MAX_EXECUTIONS_PER_JOB="0")  # fmt: skip
        return found

    return env


@pytest.fixture
def gunicorns(tmp_path: Path) -> Iterator[list[Gunicorn]]:
    """Gunicorn servers a test starts (append them); all stopped afterwards."""
    started: list[Gunicorn] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def shared_prefix_cleanup(redis_stack_url: str, key_prefix: str) -> Iterator[None]:
    """Deletes this test's keys from the session's Redis Stack afterwards, also what
    subprocesses wrote after the ``app`` fixture's own cleanup."""
    yield
    cleanup_prefix(redis_stack_url, key_prefix)
