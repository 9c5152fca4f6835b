"""Websocket clients across restarts: the SDK runner on ``/ws/runner`` and a dashboard client
on ``/ws/live``, first across a restart of the web server, then across a Redis SIGKILL.

The runner must reconnect by itself and run every trigger once: those fired while it was away
(the stream keeps them, docs/runner-protocol.md) and those fired after it came back. The live
socket is what ``chronos/static/live.js`` relies on: a connection cut by a restart is replaced
by a new one that says ``hello`` and gets events again; one that stays open across a Redis
restart gets events again once ``/api/health`` reports the subscription ``connected``.

One gunicorn worker (eight threads), so that ``/api/health`` reports the live state of the
process that holds the sockets.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chronos_sdk import ChronosRunner
from conftest import WSClient
from simple_websocket import ConnectionClosed

from chronos.backends.base import Backend
from chronos.extension import get_state
from chronos.models import ExecutionQuery, Job, Trigger
from chronos.scheduler.scanner import trigger_id_for
from chronos.timeutil import now_ms

from .checks import wait_indexed
from .servers import Gunicorn, PrivateRedis, get_json, post_json, wait_for

JOB = "job:resume"


def fire(backend: Backend, tenant: str, job_id: str) -> str:
    """Queue a trigger for ``job_id`` now, as the scanner does when it fires an instant."""
    instant = now_ms()
    trigger_id = trigger_id_for(tenant, job_id, instant)
    backend.enqueue_triggers([Trigger(tenant, job_id, trigger_id, scheduled_for=instant,
                                      fired_at=instant, deadline=instant + 60_000)])  # fmt: skip
    return trigger_id


class Runs:
    """The runner's handler: which runs happened (the server has their trigger ids)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1


def started_runner(url: str, key: str, runs: Runs) -> ChronosRunner:
    runner = ChronosRunner(api_key=key, endpoint=url, flush_interval=0.05,
                           reconnect_base=0.1, reconnect_cap=0.5)  # fmt: skip
    runner.register(JOB, runs)
    runner.start()
    wait_for(lambda: runner.connected, 20, "the runner to connect")
    return runner


def triggers_run(backend: Backend, tenant: str, url: str, prefix: str) -> list[str]:
    """The trigger ids of the runs the runner reported (a trigger run twice shows twice)."""
    wait_indexed(url, prefix)
    page = backend.search_executions(tenant, ExecutionQuery(job_id=JOB, limit=100))
    return sorted(e.trigger_id for e in page.items if e.trigger_id)


def wait_run(backend: Backend, tenant: str, url: str, prefix: str, trigger_ids: list[str],
             timeout: float = 20) -> None:  # fmt: skip
    wait_for(lambda: triggers_run(backend, tenant, url, prefix) == sorted(trigger_ids), timeout,
             f"runs of {trigger_ids}", every=0.1)  # fmt: skip


class LiveSocket:
    """A ``/ws/live`` client doing what ``live.js`` does: connect again until ``hello``."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.replace("http://", "ws://") + "/ws/live"
        self.key = key
        self.connections = 0
        self.ws: WSClient | None = None

    def connect(self, timeout: float = 20) -> None:
        def attempt() -> bool:
            with contextlib.suppress(ConnectionError, ConnectionClosed, OSError):
                self.ws = WSClient.connect(self.url, headers={"x-api-key": self.key})
                if self.next("hello", 5) is not None:
                    self.connections += 1
                    return True
            return False

        wait_for(attempt, timeout, "a live connection that says hello", every=0.2)

    def next(self, kind: str, timeout: float = 5) -> dict[str, Any] | None:
        """The next message of ``kind``; ``None`` on timeout. Raises if the socket closed."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = self.ws.receive(timeout=left)
            message = json.loads(raw) if raw is not None else None
            if message is not None and message.get("type") == kind:
                return message
        return None

    def execution(self, exec_id: str, timeout: float = 5) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.next("execution", left)
            if event is not None and event["data"]["execId"] == exec_id:
                return True
        return False

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                self.ws.close()


def refusal(ws: WSClient, timeout: float = 10) -> tuple[dict[str, Any] | None, int]:
    """The ``error`` message the server sent before closing, and the close code."""
    error = None
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionClosed):
        while time.monotonic() < deadline:
            raw = ws.receive(timeout=deadline - time.monotonic())
            message = json.loads(raw) if raw is not None else {}
            if message.get("type") == "error":
                error = message
    return error, ws.close_reason


def ingest_one(url: str, key: str, exec_id: str) -> None:
    now = now_ms()
    status, _, body = post_json(url + "/api/ingest/executions/batch", {"executions": [
        {"execId": exec_id, "jobId": "job:other", "status": "success", "startedAt": now - 5,
         "finishedAt": now}]}, {"x-api-key": key})  # fmt: skip
    assert status == 200, body


def live_state(url: str) -> str | None:
    status, _, body = get_json(url + "/api/health")
    return body["live"]["state"] if status == 200 else None


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Runners and sockets a test opens; closed afterwards."""
    opened: list[Any] = []
    yield opened
    for thing in opened:
        with contextlib.suppress(ConnectionClosed, OSError):  # closed by the server already
            thing.close()


@pytest.mark.slow
def test_runner_and_live_socket_resume_after_a_web_server_restart(
    app, tenants, redis_stack_url, key_prefix, shared_prefix_cleanup, server_env, gunicorns,
    runs, closing, tmp_path: Path,
) -> None:  # fmt: skip
    key = tenants.key("acme", "ingest", "read")
    backend = get_state(app).backend()
    backend.upsert_jobs("acme", [Job("acme", JOB)], now_ms())
    server = Gunicorn(server_env(redis_stack_url, key_prefix), tmp_path / "gunicorn",
                      workers=1, threads=8)  # fmt: skip
    gunicorns.append(server)
    server.start()
    runner = started_runner(server.url, key, runs)
    closing.append(runner)
    live = LiveSocket(server.url, key)
    closing.append(live)
    live.connect()

    before = fire(backend, "acme", JOB)
    wait_run(backend, "acme", redis_stack_url, key_prefix, [before])
    ingest_one(server.url, key, "seen-live-1")
    assert live.execution("seen-live-1")

    server.stop()  # a deploy: SIGTERM, websockets cut after the graceful timeout
    wait_for(lambda: not runner.connected, 20, "the runner to notice the restart")
    with pytest.raises(ConnectionClosed):
        live.next("execution", 10)  # the old live socket is gone (live.js reconnects)
    while_away = fire(backend, "acme", JOB)  # the scanner runs on: this one waits in Redis
    server.start()

    wait_for(lambda: runner.connected, 20, "the runner to reconnect")
    assert runner.listener.connections == 2
    after = fire(backend, "acme", JOB)
    wait_run(backend, "acme", redis_stack_url, key_prefix, [before, while_away, after])
    live.connect()
    assert live_state(server.url) == "connected"
    ingest_one(server.url, key, "seen-live-2")
    assert live.execution("seen-live-2")
    time.sleep(0.5)  # room for a duplicate run to show up
    assert runs.count == 3
    assert triggers_run(backend, "acme", redis_stack_url, key_prefix) == sorted(
        [before, while_away, after]
    )
    # each ack was recorded when it came, the one of `before` too, although the server
    # stopped right after that run: no trigger waits for a redelivery
    wait_for(lambda: {t.status for t in backend.list_triggers("acme", JOB, 10)} == {"delivered"},
             2, "every trigger recorded as delivered")  # fmt: skip


@pytest.mark.slow
def test_runner_and_live_socket_resume_after_a_redis_sigkill(
    private_redis: PrivateRedis, private_app, private_tenants, server_env, gunicorns, runs,
    closing, tmp_path: Path,
) -> None:  # fmt: skip
    key = private_tenants.key("acme", "ingest", "read")
    backend = get_state(private_app).backend()
    backend.upsert_jobs("acme", [Job("acme", JOB)], now_ms())
    url = private_redis.url
    server = Gunicorn(server_env(url, "fault:"), tmp_path / "gunicorn", workers=1, threads=8)
    gunicorns.append(server)
    server.start()
    runner = started_runner(server.url, key, runs)
    closing.append(runner)
    live = LiveSocket(server.url, key)
    closing.append(live)
    live.connect()

    before = fire(backend, "acme", JOB)
    wait_run(backend, "acme", url, "fault:", [before])
    ingest_one(server.url, key, "seen-live-1")
    assert live.execution("seen-live-1")

    ws_url = server.url.replace("http://", "ws://")
    probe = WSClient.connect(ws_url + "/ws/runner", headers={"x-api-key": key})
    closing.append(probe)
    probe.send(json.dumps({"type": "hello", "jobs": ["job:probe"]}))
    assert json.loads(probe.receive(timeout=10))["type"] == "ready"
    unseen = private_tenants.key("acme", "ingest", "read")  # this worker never looked it up

    private_redis.kill()
    wait_for(lambda: get_json(server.url + "/api/health")[0] == 503, 10, "health to say 503")
    # An open runner socket is told why and closed with "try again later", not dropped.
    error, code = refusal(probe)
    assert (error or {}).get("code") == "backend_unavailable" and code == 1013, (error, code)
    # A new socket whose key cannot be checked now is not told its key is bad (4401 would
    # make live.js back off as if logged out): 1013, and the client retries.
    for path in ("/ws/runner", "/ws/live"):
        ws = WSClient.connect(ws_url + path, headers={"x-api-key": unseen})
        closing.append(ws)
        error, code = refusal(ws)
        assert (error or {}).get("code") == "backend_unavailable" and code == 1013, path
    wait_for(lambda: not runner.connected, 20, "the runner to be told the server cannot serve")
    private_redis.start()

    wait_for(lambda: live_state(server.url) == "connected", 30, "the live subscription back")
    wait_for(lambda: runner.connected, 20, "the runner to reconnect")
    after = fire(backend, "acme", JOB)
    wait_run(backend, "acme", url, "fault:", [before, after], timeout=30)
    ingest_one(server.url, key, "seen-live-2")
    if not live.execution("seen-live-2"):  # the socket stayed open: it must get events
        raise AssertionError("the live socket got no events after the Redis restart")
    time.sleep(0.5)
    assert runs.count == 2
    assert live.connections == 1  # never cut: live.js shows no gap beyond the outage
    assert 500 not in server.access_statuses()
