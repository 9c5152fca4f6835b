"""The Flask extension that owns the backend of an app.

State lives in ``app.extensions["chronos"]``, never on module globals. The backend is built
on first use (after gunicorn has forked), starting the embedded Redis Stack if no backend URL
is configured, and applying pending index migrations once when ``CHRONOS_AUTO_MIGRATE`` is on.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from chronos import embedded
from chronos.backends import Backend, BackendOptions, load_backend
from chronos.models import ApiKey
from chronos.realtime import LiveHub
from chronos.scheduler.scanner import ScanSettings

DAY_MS = 24 * 3600 * 1000


class ChronosState:
    """Per-app state: settings and the lazily built backend."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._backend: Backend | None = None
        self._lock = threading.Lock()
        #: API key records by key id, with the monotonic time they stop being trusted.
        self.key_cache: dict[str, tuple[ApiKey, float]] = {}
        self._live: LiveHub | None = None
        #: Set when this server process is stopping (see ``chronos.gunicorn_config``): open
        #: websockets end with 1001 "going away" instead of holding the worker until it is
        #: killed, and their clients reconnect to another worker.
        self.stopping = threading.Event()

    @property
    def embedded(self) -> bool:
        return not self.config.get("CHRONOS_BACKEND_URL")

    @property
    def data_dir(self) -> Path:
        return Path(self.config["CHRONOS_DATA_DIR"])

    def backend_url(self) -> str:
        url = self.config.get("CHRONOS_BACKEND_URL")
        if url:
            return str(url)
        url, _ = embedded.ensure_running(self.data_dir, self.config["CHRONOS_EMBEDDED_FSYNC"])
        return url

    def options(self) -> BackendOptions:
        c = self.config
        retention = c["CHRONOS_EXECUTION_RETENTION_DAYS"]
        return BackendOptions(
            key_prefix=c["CHRONOS_KEY_PREFIX"],
            execution_ttl_ms=retention * DAY_MS if retention > 0 else None,
            metrics_retention_ms=c["CHRONOS_METRICS_RETENTION_DAYS"] * DAY_MS,
            max_executions_per_job=c["CHRONOS_MAX_EXECUTIONS_PER_JOB"],
        )

    def backend(self) -> Backend:
        backend = self._backend
        if backend is not None:
            return backend
        with self._lock:
            if self._backend is None:
                built = load_backend(self.backend_url(), self.options())
                if self.config["CHRONOS_AUTO_MIGRATE"]:
                    built.migrate()  # raises BackendUnavailable if down; retried next call
                self._backend = built
            return self._backend

    def scan_settings(self) -> ScanSettings:
        c = self.config
        return ScanSettings(catch_up_ms=c["CHRONOS_CATCH_UP_SECONDS"] * 1000,
                            default_grace_ms=c["CHRONOS_DEFAULT_GRACE_SECONDS"] * 1000)  # fmt: skip

    def live_hub(self) -> LiveHub:
        """This process's live-event fan-out, started on first use."""
        with self._lock:
            if self._live is None:
                self._live = LiveHub(self.backend)
            return self._live

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
            if self._backend is not None:
                self._backend.close()
                self._backend = None


class Chronos:
    """``Chronos(app)`` or ``chronos.init_app(app)``.

    Reads the ``CHRONOS_*`` keys of ``app.config`` (see ``chronos.config``); missing ones get
    their defaults.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "chronos" in app.extensions:
            raise RuntimeError(
                "Chronos is already registered on this app; call init_app once per app."
            )
        from chronos.config import DEFAULTS

        for name, value in DEFAULTS.items():
            app.config.setdefault(name, value)
        app.extensions["chronos"] = ChronosState(app.config)


def get_state(app: Flask | None = None) -> ChronosState:
    app = app or current_app
    try:
        return app.extensions["chronos"]
    except KeyError:
        raise RuntimeError(
            "Chronos is not registered on this app. Did you forget to call 'init_app'?"
        ) from None


def get_backend() -> Backend:
    """The current app's backend (built and connected on first use)."""
    return get_state().backend()
