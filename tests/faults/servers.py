"""The processes the fault tests break: a private Redis Stack and a gunicorn server.

Both are real: the Redis Stack server from the pinned wheels (``chronos.embedded``), with its
append-only file fsync'd on every write, on a fixed loopback port so that a restart comes back
where the clients look for it; and gunicorn with threaded workers serving ``create_app()`` as
in production. Process ids come from the objects that started them and from ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chronos.embedded import RedisStackServer, free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def kill_hard(pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL ``pid`` (no chance to flush or say goodbye) and wait until it is gone.

    ``process`` is its ``Popen`` when it is our child: it reaps it (and knows it did).
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait(10)
    else:
        wait_for(lambda: not alive(pid), 10, f"process {pid} to die")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a process that is not our child: gunicorn's workers)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie some other parent has not reaped yet


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``, from ``/proc``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


class PrivateRedis:
    """A persistent Redis Stack of the test's own (never the session's shared server), on a
    fixed port and data dir, so that it can be SIGKILLed and started again in its place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.server = RedisStackServer(root=root, persistent=True, fsync="always", port=self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again), on the same port and data dir; returns once it serves its data."""
        self.server = RedisStackServer(root=self.root, persistent=True, fsync="always",
                                       port=self.port)  # fmt: skip
        assert self.server.start() == self.url

    def pid(self) -> int:
        pid = self.server.pid()
        assert pid is not None, "the private Redis Stack is not running"
        return pid

    def kill(self) -> None:
        """SIGKILL the server: what a crash or the OOM killer does."""
        kill_hard(self.pid(), self.server.process)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections open and answers nothing."""
        os.kill(self.pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, AssertionError):
            self.thaw()
        self.server.stop()


class Gunicorn:
    """``gunicorn -k gthread`` serving ``chronos:create_app()`` as a subprocess.

    Uses the repository's ``gunicorn.conf.py`` when there is one (production hooks and all);
    the options given here override it where they overlap. Logs go to files in ``logs``.
    """

    def __init__(self, env: Mapping[str, str], logs: Path, workers: int = 2,
                 threads: int = 4, port: int | None = None) -> None:  # fmt: skip
        self.env = {k: v for k, v in env.items() if k != "GUNICORN_CMD_ARGS"}
        self.logs = logs
        self.workers = workers
        self.threads = threads
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        # It runs in ``logs``, where gunicorn finds no ``gunicorn.conf.py`` of its own accord.
        command = [sys.executable, "-m", "gunicorn"]
        config = REPO / "gunicorn.conf.py"
        if config.exists():
            command += ["--config", str(config)]
        return command + [
            "--worker-class", "gthread", "--workers", str(self.workers),
            "--threads", str(self.threads), "--bind", f"127.0.0.1:{self.port}",
            "--timeout", "30", "--graceful-timeout", "2",
            "--access-logfile", str(self.logs / "access.log"),
            "--error-logfile", str(self.logs / "error.log"),
            "chronos:create_app()",
        ]  # fmt: skip

    def start(self, ready_timeout: float = 60) -> None:
        """Start the master and wait until all its workers run and one answers ``/healthz``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        quiet = subprocess.DEVNULL  # gunicorn logs to files of its own
        self.process = subprocess.Popen(
            self.command(), env=self.env, cwd=self.logs, stdin=quiet, stdout=quiet, stderr=quiet,
            start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: len(self.worker_pids()) == self.workers, ready_timeout,
                 "the gunicorn workers to start")  # fmt: skip
        wait_for(lambda: get_json(self.url + "/healthz")[0] == 200, ready_timeout,
                 "gunicorn to answer /healthz")  # fmt: skip

    def master_pid(self) -> int:
        assert self.process is not None and self.process.poll() is None, self.errors()
        return self.process.pid

    def worker_pids(self) -> set[int]:
        if self.process is None or self.process.poll() is not None:
            return set()
        return children(self.process.pid)

    def busy_workers(self) -> set[int]:
        """The workers holding an accepted client connection: in the middle of a request."""
        established = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                for row in Path(table).read_text().splitlines()[1:]:
                    cols = row.split()
                    local_port = int(cols[1].rsplit(":", 1)[1], 16)
                    if local_port == self.port and cols[3] == "01":  # ESTABLISHED
                        established.add(cols[9])  # the socket's inode
        busy = set()
        for pid in self.worker_pids():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        link = os.readlink(fd)
                        if link.startswith("socket:[") and link[8:-1] in established:
                            busy.add(pid)
                            break
        return busy

    def kill(self) -> None:
        """SIGKILL the master and its workers at once (a crashed host, ``kill -9`` of all)."""
        if self.process is None:
            return
        workers = self.worker_pids()
        kill_hard(self.process.pid, self.process)
        for pid in workers:
            kill_hard(pid)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def access_statuses(self) -> list[int]:
        """The status of every request gunicorn logged (common log format)."""
        path = self.logs / "access.log"
        if not path.exists():
            return []
        statuses = []
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split('" ')
            if len(parts) >= 2 and parts[1].split(" ", 1)[0].isdigit():
                statuses.append(int(parts[1].split(" ", 1)[0]))
        return statuses

    def errors(self) -> str:
        path = self.logs / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def get_json(url: str, headers: Mapping[str, str] | None = None,
             timeout: float = 10) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """``GET url``: status, headers (lower-case names) and the parsed JSON body (or ``None``).

    A refused connection answers ``(0, {}, None)``.
    """
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, head, raw = exc.code, exc.headers, exc.read()
    except (ConnectionError, urllib.error.URLError):
        return 0, {}, None
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return status, {k.lower(): v for k, v in head.items()}, body


def post_json(url: str, payload: Any, headers: Mapping[str, str],
              timeout: float = 10) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """``POST url`` with a JSON body; the same answer shape as :func:`get_json`."""
    data = json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, head, raw = exc.code, exc.headers, exc.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return status, {k.lower(): v for k, v in head.items()}, body


class Scanner:
    """A ``chronos scheduler`` process (the cron scanner), its output kept in ``log``."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Scanner:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chronos.cli", "scheduler"], env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        return self

    def kill(self) -> None:
        """SIGKILL: the scanner stops wherever it is in its tick."""
        assert self.process is not None and self.process.poll() is None, self.output()
        kill_hard(self.process.pid, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                kill_hard(self.process.pid, self.process)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
