"""Test fixtures: a real Redis Stack for the whole session, isolated per test by key prefix.

The session starts its own Redis Stack server (from the pinned PyPI wheels, see
``chronos.embedded``) on a free loopback port, and stops it at the end. If it cannot start,
the tests that need it fail; they are never skipped. ``CHRONOS_TEST_REDIS_URL`` points the
suite at an already running Redis Stack instead. Nothing is ever flushed: each test works
under its own key prefix and deletes only its own keys and indices afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import simple_websocket
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from chronos import create_app
from chronos.accounts import generate_api_key, hash_password
from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import RedisStackBackend
from chronos.embedded import RedisStackServer, free_port
from chronos.extension import get_state
from chronos.models import User
from chronos.timeutil import now_ms


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


@pytest.fixture
def app(redis_stack_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Flask]:
    """The app on the session's Redis Stack, under this test's own key prefix."""
    app = create_app(
        {
            "TESTING": True,
            "CHRONOS_BACKEND_URL": redis_stack_url,
            "CHRONOS_KEY_PREFIX": key_prefix,
            "CHRONOS_DATA_DIR": str(tmp_path / "instance"),
        }
    )
    yield app
    get_state(app).close()
    cleanup_prefix(redis_stack_url, key_prefix)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Tenants:
    """Creates users and API keys through the backend: ``tenants.key("acme", "ingest", "read")``
    returns a plaintext key of a user in tenant ``acme``."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def key(self, tenant: str, *scopes: str, username: str | None = None) -> str:
        backend = get_state(self.app).backend()
        username = username or f"{tenant}-user"
        if backend.get_user(username) is None:
            backend.create_user(User(username=username, tenant_id=tenant,
                                     password_hash=hash_password("password-123")))  # fmt: skip
        new = generate_api_key(tenant, username, "test", tuple(scopes or ("ingest",)), now_ms())
        backend.create_api_key(new.record)
        return new.plaintext

    @staticmethod
    def headers(key: str) -> dict[str, str]:
        return {"x-api-key": key}


@pytest.fixture
def tenants(app: Flask) -> Tenants:
    return Tenants(app)


class LiveServer:
    """The app served over HTTP on a fixed port, which can be stopped and started again."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(10)
            self._server = None


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    """The test app served over real HTTP (and websockets) on a free port."""
    server = LiveServer(app)
    server.start()
    yield server
    server.stop()




class WSClient(simple_websocket.Client):
    """``simple_websocket.Client`` that does not sit on what came with the 101 answer.

    simple-websocket 1.1.0 takes only the first event of the read that holds the handshake
    answer; a message the server sends right after the 101 (the hello of ``/ws/live``,
    ``ready``/``error`` of ``/ws/runner``) can share that TCP segment and then stays unread
    until more bytes arrive. Handling the pending events at the end of the handshake delivers
    it at once. (Found by ``bench/realtime.py``, which carries the same fix.)
    """

    def handshake(self) -> None:
        super().handshake()
        self.connected = self._handle_events()
