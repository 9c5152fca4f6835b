"""The embedded Redis Stack: started on demand, reused, private, and durable across a SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chronos import create_app, embedded
from chronos.embedded import MAX_SOCKET_PATH, MODULES, Distribution, RedisStackServer
from chronos.extension import get_state
from chronos.models import Execution, ExecutionQuery, Job
from chronos.timeutil import now_ms

MINUTE = 60_000


def server_pid(data_dir: Path) -> int:
    return int(json.loads((data_dir.resolve() / "redis" / "server.json").read_text())["pid"])


def is_alive(pid: int) -> bool:
    """Whether ``pid`` still runs; reaps it if it is a dead child of this process."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or reaped already
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return reaped == 0


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.02)
    return False


def stop_all(data_dir: Path, pids: set[int]) -> None:
    """Stop the data dir's server and make sure no process we saw is left running."""
    with contextlib.suppress(Exception):
        embedded.shutdown(data_dir)
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        pids.add(server_pid(data_dir))
    for pid in pids:
        if not wait_dead(pid, 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_dead(pid)


@pytest.fixture
def embedded_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose embedded server (if any test starts one) is stopped afterwards."""
    data_dir = tmp_path / "instance"
    yield data_dir
    stop_all(data_dir, set())


@pytest.fixture
def no_backend_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHRONOS_BACKEND_URL", raising=False)


def config_get(url: str, name: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return str(client.config_get(name)[name])
    finally:
        client.close()


# the distribution and the command line ------------------------------------------------------


def test_the_distribution_has_the_server_and_the_four_modules() -> None:
    dist = Distribution.locate()
    assert dist.server.is_file()
    assert os.access(dist.server, os.X_OK)
    for module in ("rejson.so", "redisearch.so", "redistimeseries.so", "redisbloom.so"):
        assert module in MODULES
        assert (dist.modules / module).is_file()
    assert dist.openssl.is_dir()


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def test_a_persistent_server_fsyncs_every_write_and_listens_on_a_socket(tmp_path: Path) -> None:
    server = RedisStackServer(root=tmp_path / "redis", persistent=True)
    args = server.command(Distribution.locate())
    assert option(args, "--appendonly") == "yes"
    assert option(args, "--appendfsync") == "always"
    assert option(args, "--port") == "0"  # no TCP listener at all
    assert option(args, "--unixsocket") == str(tmp_path / "redis" / "redis.sock")
    assert option(args, "--unixsocketperm") == "700"
    assert "0.0.0.0" not in args
    assert "--bind" not in args
    assert server.url == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
    for module in MODULES:
        assert any(arg.endswith(module) for arg in args)


def test_a_long_root_listens_on_loopback_only(tmp_path: Path) -> None:
    root = tmp_path / ("d" * MAX_SOCKET_PATH)
    server = RedisStackServer(root=root, persistent=True, fsync="everysec")
    args = server.command(Distribution.locate())
    assert "--unixsocket" not in args
    assert option(args, "--bind") == "127.0.0.1"
    assert option(args, "--protected-mode") == "yes"
    assert option(args, "--appendfsync") == "everysec"
    assert "0.0.0.0" not in args
    assert server.url == f"redis://127.0.0.1:{server.port}/0"


def test_a_throwaway_server_keeps_nothing(tmp_path: Path) -> None:
    args = RedisStackServer(root=tmp_path, persistent=False).command(Distribution.locate())
    assert option(args, "--appendonly") == "no"
    assert "--appendfsync" not in args
    assert option(args, "--save") == ""


# ensure_running ------------------------------------------------------------------------------


def test_ensure_running_starts_once_then_reuses(embedded_dir: Path) -> None:
    assert embedded.running_url(embedded_dir) is None
    url, started = embedded.ensure_running(embedded_dir)
    assert started is True
    sock = embedded_dir.resolve() / "redis" / "redis.sock"
    assert url == f"unix://{sock}"
    assert embedded.ensure_running(embedded_dir) == (url, False)
    assert embedded.running_url(embedded_dir) == url
    assert config_get(url, "appendonly") == "yes"
    assert config_get(url, "appendfsync") == "always"
    pid = server_pid(embedded_dir)
    assert embedded.shutdown(embedded_dir) is True
    assert wait_dead(pid)
    assert embedded.running_url(embedded_dir) is None
    assert embedded.shutdown(embedded_dir) is False


def test_ensure_running_with_a_long_path_uses_loopback(tmp_path: Path) -> None:
    data_dir = tmp_path / ("n" * 50) / ("m" * 50)
    assert len(str(data_dir / "redis" / "redis.sock")) > MAX_SOCKET_PATH
    try:
        url, started = embedded.ensure_running(data_dir)
        assert started is True
        assert url.startswith("redis://127.0.0.1:")
        assert config_get(url, "bind") == "127.0.0.1"
        assert embedded.ensure_running(data_dir) == (url, False)
    finally:
        stop_all(data_dir, set())


# durability ----------------------------------------------------------------------------------


def test_acknowledged_writes_survive_a_sigkill(embedded_dir: Path, no_backend_url: None) -> None:
    config = {"CHRONOS_DATA_DIR": str(embedded_dir), "TESTING": True}
    seen: set[int] = set()
    tenant, job = "t:1", "nightly|backup"
    start = (now_ms() // MINUTE - 60) * MINUTE  # an hour ago, on a minute boundary
    try:
        app = create_app(config)
        backend = get_state(app).backend()
        assert backend.name == "redis-stack"
        backend.upsert_jobs(tenant, [Job(tenant_id=tenant, id=job, name="backup")], start)
        for i in range(50):
            run = Execution(
                tenant_id=tenant,
                exec_id=f"e{i}",
                job_id=job,
                status="failed" if i % 5 == 0 else "success",
                started_at=start + i * 1000,
                finished_at=start + i * 1000 + 500,
                duration_ms=500,
            )
            assert backend.write_executions(tenant, [run]) == ["created"]

        pid = server_pid(embedded_dir)
        seen.add(pid)
        os.kill(pid, signal.SIGKILL)
        assert wait_dead(pid), "the embedded server survived SIGKILL"
        get_state(app).close()

        again = get_state(create_app(config)).backend()
        new_pid = server_pid(embedded_dir)
        seen.add(new_pid)
        assert new_pid != pid
        assert is_alive(new_pid)

        for i in range(50):
            found = again.get_execution(tenant, f"e{i}")
            assert found is not None, f"e{i} was acknowledged but lost"
            assert found.started_at == start + i * 1000
        ids: list[str] = []
        cursor = None
        while True:
            page = again.search_executions(tenant, ExecutionQuery(limit=20, cursor=cursor))
            ids += [e.exec_id for e in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(ids) == sorted(f"e{i}" for i in range(50))
        [bucket] = again.metric_buckets(tenant, None, [start, start + 60 * MINUTE])
        assert (bucket.runs, bucket.success, bucket.failure) == (50, 40, 10)
        stored = again.get_job(tenant, job)
        assert stored is not None
        assert stored.state.last_exec_id == "e49"
        again.close()
    finally:
        stop_all(embedded_dir, seen)
