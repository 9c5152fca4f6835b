"""Gunicorn settings for Chronos, read from ``GUNICORN_*`` environment variables.

This module is a gunicorn configuration module. It is installed with the package, so
``chronos serve`` loads it as ``-c python:chronos.gunicorn_config`` from any installation, and
the checkout's ``gunicorn.conf.py`` re-exports it for ``gunicorn -c gunicorn.conf.py wsgi:app``
(gunicorn also reads ``./gunicorn.conf.py`` by itself when started without ``-c``). One module
of defaults, two entry points, no copy to drift.

=================================== ============================================================
``GUNICORN_BIND``                   Address(es) to listen on, comma-separated
                                    (``127.0.0.1:5000``; ``unix:/run/chronos/web.sock``).
``GUNICORN_WORKERS``                Worker processes (the CPUs this process may use, at least 2).
``GUNICORN_THREADS``                Threads per worker (16). Every open websocket (a dashboard
                                    tab on ``/ws/live``, an SDK runner on ``/ws/runner``) holds
                                    one thread for as long as it is open, so a worker serves at
                                    most ``threads`` websockets and requests at once: size it as
                                    the websockets you expect per worker plus the requests in
                                    flight.
``GUNICORN_WORKER_CONNECTIONS``     Open connections per worker, kept-alive ones included (1000).
``GUNICORN_TIMEOUT``                Seconds a silent worker lives before the master restarts it
                                    (60). Threaded workers report from their main thread, so a
                                    long request or a websocket does not count as silence.
``GUNICORN_GRACEFUL_TIMEOUT``       Seconds a stopping worker waits for open requests and
                                    websockets before it is killed (20); websocket clients
                                    reconnect to another worker.
``GUNICORN_KEEPALIVE``              Seconds an idle keep-alive connection stays open (5); keep it
                                    below the reverse proxy's upstream keep-alive.
``GUNICORN_FORWARDED_ALLOW_IPS``    Proxies whose ``X-Forwarded-Proto`` gunicorn believes
                                    (``127.0.0.1,::1``). See also ``CHRONOS_TRUST_PROXY``.
``GUNICORN_MAX_REQUESTS``           A worker is replaced after about this many requests (10000;
                                    0 never), which bounds slow memory growth...
``GUNICORN_MAX_REQUESTS_JITTER``    ...plus a random 0..this (1000), so workers do not all
                                    restart at once.
``GUNICORN_ACCESS_LOG``             Access log file, ``-`` for stdout (default), ``off`` for none.
``GUNICORN_ERROR_LOG``              Error log file, ``-`` for stderr (default).
``GUNICORN_LOG_LEVEL``              ``debug``, ``info`` (default), ``warning``, ``error``.
``GUNICORN_CONTROL_SOCKET``         Path of gunicorn's control socket (gunicorn 25.1+). Unset:
                                    none. Its default is one path per user, which two servers
                                    of the same user would fight over.
=================================== ============================================================

``preload_app`` stays off: each worker imports the app after the fork, so no Redis connection
(or pool, or lock) is ever shared between processes.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from chronos.errors import ConfigError

DEFAULT_BIND = "127.0.0.1:5000"
DEFAULT_THREADS = 16
#: How often a worker looks whether it is stopping (see ``post_worker_init``).
STOP_WATCH_INTERVAL_S = 0.2

#: Who sent it, the proxy's view of the client, the request, status, size, referrer, agent,
#: and how long it took in milliseconds.
ACCESS_LOG_FORMAT = (
    '%(h)s %({x-forwarded-for}i)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
)

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def default_workers() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count), at least 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(2, cpus)


def _int(environ: Mapping[str, str], name: str, default: int, low: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")
    return value


def _text(environ: Mapping[str, str], name: str, default: str) -> str:
    return environ.get(name, "").strip() or default


def settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Gunicorn's settings, by gunicorn's names, from ``environ``; ``ConfigError`` if one is
    unreadable."""
    access_log = _text(environ, "GUNICORN_ACCESS_LOG", "-")
    level = _text(environ, "GUNICORN_LOG_LEVEL", "info").lower()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"GUNICORN_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    control_socket = environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
    binds = [b.strip() for b in _text(environ, "GUNICORN_BIND", DEFAULT_BIND).split(",")]
    found: dict[str, Any] = {
        "bind": [b for b in binds if b],
        # flask-sock runs a websocket inside its request: it needs real threads.
        "worker_class": "gthread",
        "workers": _int(environ, "GUNICORN_WORKERS", default_workers(), low=1),
        "threads": _int(environ, "GUNICORN_THREADS", DEFAULT_THREADS, low=1),
        "worker_connections": _int(environ, "GUNICORN_WORKER_CONNECTIONS", 1000, low=1),
        "timeout": _int(environ, "GUNICORN_TIMEOUT", 60, low=1),
        "graceful_timeout": _int(environ, "GUNICORN_GRACEFUL_TIMEOUT", 20, low=1),
        "keepalive": _int(environ, "GUNICORN_KEEPALIVE", 5, low=0),
        "forwarded_allow_ips": _text(environ, "GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1"),
        "max_requests": _int(environ, "GUNICORN_MAX_REQUESTS", 10000),
        "max_requests_jitter": _int(environ, "GUNICORN_MAX_REQUESTS_JITTER", 1000),
        "accesslog": None if access_log.lower() == "off" else access_log,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": _text(environ, "GUNICORN_ERROR_LOG", "-"),
        "loglevel": level,
        "preload_app": False,
        "control_socket_disable": not control_socket,
    }
    if control_socket:
        found["control_socket"] = control_socket
    return found


def serve_command(environ: Mapping[str, str], host: str | None = None, port: int | None = None,
                  workers: int | None = None, threads: int | None = None,
                  ) -> tuple[list[str], list[str]]:  # fmt: skip
    """The gunicorn command line of ``chronos serve`` and the addresses it will listen on.

    Gunicorn loads this very module (``python:chronos.gunicorn_config``), so ``chronos serve``
    and ``gunicorn -c gunicorn.conf.py`` share every default; the options given to
    ``chronos serve`` go on the command line, which gunicorn puts above its config module.
    """
    binds: list[str] = settings(environ)["bind"]
    command = [sys.executable, "-m", "gunicorn", "--config", "python:chronos.gunicorn_config"]
    if host is not None or port is not None:
        default_host, _, default_port = DEFAULT_BIND.rpartition(":")
        host = host or default_host
        if ":" in host and not host.startswith("["):  # an IPv6 address
            host = f"[{host}]"
        binds = [f"{host}:{port or default_port}"]
        command += ["--bind", binds[0]]
    if workers is not None:
        command += ["--workers", str(workers)]
    if threads is not None:
        command += ["--threads", str(threads)]
    return [*command, "chronos:create_app()"], binds


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's hook in the master after a worker exited: hands it on to
    ``chronos.prometheus.child_exit`` (Prometheus multiprocess mode marks the worker's gauges
    dead) when that module is part of this installation, and does nothing otherwise."""
    if importlib.util.find_spec("chronos.prometheus") is None:
        return
    hook = getattr(importlib.import_module("chronos.prometheus"), "child_exit", None)
    if hook is None:
        return
    try:
        hook(server, worker)
    except Exception:  # the master must go on replacing workers whatever the metrics do
        server.log.exception("chronos: child_exit hook failed for worker %s", worker.pid)


def post_worker_init(worker: Any) -> None:
    """Gunicorn's hook in each worker once the app is loaded: when the worker starts to stop
    (SIGTERM, ``GUNICORN_MAX_REQUESTS`` reached, a reload), tell the app, so that its
    websockets close at once instead of holding the worker for the whole graceful timeout.

    The worker flags both ways of stopping only by clearing ``worker.alive``, so a daemon
    thread watches that flag.
    """
    # What is alive now (modules, the app, its templates) lives as long as the worker: keep it
    # out of the garbage collector's full passes, which otherwise walk it every time and put
    # tens of milliseconds into a request now and then (see docs/benchmarks.md).
    gc.freeze()
    extensions = getattr(worker.wsgi, "extensions", None)
    state = extensions.get("chronos") if isinstance(extensions, dict) else None
    if state is None:  # not the Chronos app (or wrapped beyond recognition): nothing to tell
        return

    def watch() -> None:
        while worker.alive:
            time.sleep(STOP_WATCH_INTERVAL_S)
        state.stopping.set()

    threading.Thread(target=watch, name="chronos-stop-watch", daemon=True).start()


# Gunicorn reads a config module's globals by setting name; these are the values above.
_settings = settings(os.environ)
bind = _settings["bind"]
worker_class = _settings["worker_class"]
workers = _settings["workers"]
threads = _settings["threads"]
worker_connections = _settings["worker_connections"]
timeout = _settings["timeout"]
graceful_timeout = _settings["graceful_timeout"]
keepalive = _settings["keepalive"]
forwarded_allow_ips = _settings["forwarded_allow_ips"]
max_requests = _settings["max_requests"]
max_requests_jitter = _settings["max_requests_jitter"]
accesslog = _settings["accesslog"]
access_log_format = _settings["access_log_format"]
errorlog = _settings["errorlog"]
loglevel = _settings["loglevel"]
preload_app = _settings["preload_app"]
control_socket_disable = _settings["control_socket_disable"]
if "control_socket" in _settings:
    control_socket = _settings["control_socket"]

#: What ``gunicorn.conf.py`` re-exports: the settings above and the hooks.
__all__ = [*_settings, "child_exit", "post_worker_init"]
