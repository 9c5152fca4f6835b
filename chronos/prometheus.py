"""Prometheus metrics of the server itself, kept per app, and the ``/metrics`` exposition.

The server metrics live in a registry of the app's own (``app.extensions["chronos_metrics"]``),
never in prometheus_client's global default registry, so several apps in one process (tests)
never collide:

=============================================== =============================================
``chronos_http_request_duration_seconds``       histogram by ``endpoint`` (the URL rule, not the
                                                raw path), ``method`` and ``status``
``chronos_ingest_items_total``                  by ``kind`` (``execution``, ``job``) and
                                                ``outcome`` (``created``, ``updated``,
                                                ``duplicate``, ``rejected``)
``chronos_websocket_clients``                   open websockets by ``socket`` (``live``,
                                                ``runner``)
``chronos_backend_errors_total``                requests that found the storage backend
                                                unavailable (answered 503)
=============================================== =============================================

Gunicorn runs several worker processes, and a scrape reaches one of them. With
``PROMETHEUS_MULTIPROC_DIR`` set in the environment before the processes start (it is read when
prometheus_client is imported), every process writes its values to files there and whichever
worker answers a scrape adds up all of them. The master must call :func:`child_exit` when a
worker exits (``chronos/gunicorn_config.py`` does), so that a dead worker's websocket count
leaves the sum; its counters and histograms stay in it, as counters must.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from chronos.errors import BackendUnavailable, ConfigError
from chronos.http_errors import backend_unavailable

EXTENSION = "chronos_metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Shortest ``CHRONOS_METRICS_TOKEN`` accepted: it guards every tenant's job metrics.
MIN_TOKEN_LENGTH = 16
INGEST_KINDS = ("execution", "job")
WRITE_OUTCOMES = ("created", "updated", "duplicate")
INGEST_OUTCOMES = (*WRITE_OUTCOMES, "rejected")
SOCKETS = ("live", "runner")
#: The ``endpoint`` label of requests that matched no route (404, 405).
UNMATCHED = "<unmatched>"
#: Methods kept as ``method`` labels; any other is ``OTHER``, so that clients cannot mint
#: series with made-up methods.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ServerMetrics:
    """The server metrics of one app, in a registry of its own."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "chronos_http_request_duration_seconds",
            "Time from the start of a request to its response, by URL rule and status.",
            ["endpoint", "method", "status"], registry=r,
        )  # fmt: skip
        self.ingest_items = Counter(
            "chronos_ingest_items",
            "Executions and job definitions received by the ingest API, by outcome.",
            ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.websocket_clients = Gauge(
            "chronos_websocket_clients", "Open websockets, by socket (live, runner).",
            ["socket"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.backend_errors = Counter(
            "chronos_backend_errors",
            "Requests that found the storage backend unavailable (answered 503).", registry=r,
        )  # fmt: skip
        # Every series exists from the start, so rate() and absent() work before traffic.
        for kind in INGEST_KINDS:
            for outcome in INGEST_OUTCOMES:
                self.ingest_items.labels(kind, outcome)
        for socket in SOCKETS:
            self.websocket_clients.labels(socket)

    def families(self) -> Iterable[Metric]:
        """The server metrics: this process's, or in multiprocess mode every process's."""
        if self.multiproc_dir:
            return MultiProcessCollector(None, path=self.multiproc_dir).collect()
        return self.registry.collect()

    def on_backend_unavailable(self, _sender: Any, **_extra: Any) -> None:
        self.backend_errors.inc()


def init_app(app: Flask) -> None:
    """Keep the app's server metrics and time every request (websockets excepted)."""
    if EXTENSION in app.extensions:
        raise RuntimeError("chronos.prometheus is already registered on this app")
    check_token(app.config.get("CHRONOS_METRICS_TOKEN"))
    metrics = ServerMetrics(multiproc_dir())
    app.extensions[EXTENSION] = metrics
    backend_unavailable.connect(metrics.on_backend_unavailable, sender=app)
    app.before_request(_start_timer)
    app.after_request(_observe_request)


def multiproc_dir() -> str | None:
    """The multiprocess directory, if multiprocess mode is on; ``ConfigError`` if it is set
    but unusable."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(f"{MULTIPROC_ENV}={path!r} is not a directory; create it (empty)")
    if values.ValueClass is values.MutexValue:
        raise ConfigError(f"{MULTIPROC_ENV} must be set before the process starts "
                          "(prometheus_client reads it when it is imported)")  # fmt: skip
    return path


def check_token(token: object) -> None:
    if token is None or token == "":
        return
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"CHRONOS_METRICS_TOKEN must be at least {MIN_TOKEN_LENGTH} "
                          "characters (it guards every tenant's job metrics)")  # fmt: skip


def token_matches(presented: str, configured: str | None) -> bool:
    """Whether ``presented`` is the configured token, in constant time (lengths included:
    the digests are compared, not the strings)."""
    if not configured:
        return False
    a = hashlib.sha256(presented.encode()).digest()
    b = hashlib.sha256(configured.encode()).digest()
    return hmac.compare_digest(a, b)


def server_metrics(app: Flask | None = None) -> ServerMetrics | None:
    """The app's server metrics, or ``None`` if this app keeps none."""
    return (app or current_app).extensions.get(EXTENSION)


def _is_websocket() -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _start_timer() -> None:
    g.prometheus_started = time.perf_counter()


def _observe_request(response: Response) -> Response:
    started = g.get("prometheus_started")
    metrics = server_metrics()
    if started is not None and metrics is not None and not _is_websocket():
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        method = request.method if request.method in METHODS else "OTHER"
        metrics.request_seconds.labels(rule, method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
    return response


def count_ingest(kind: str, outcomes: Sequence[str], rejected: int) -> None:
    """Count the items of one ingest request by outcome (``kind``: execution or job)."""
    metrics = server_metrics()
    if metrics is None:
        return
    for outcome in WRITE_OUTCOMES:
        n = sum(1 for o in outcomes if o == outcome)
        if n:
            metrics.ingest_items.labels(kind, outcome).inc(n)
    if rejected:
        metrics.ingest_items.labels(kind, "rejected").inc(rejected)


def socket_opened(kind: str) -> None:
    """Count a websocket of ``kind`` (live, runner) as open; pair with ``socket_closed``."""
    metrics = server_metrics()
    if metrics is not None:
        metrics.websocket_clients.labels(kind).inc()


def socket_closed(kind: str) -> None:
    metrics = server_metrics()
    if metrics is not None:
        metrics.websocket_clients.labels(kind).dec()


def count_backend_error(error: BackendUnavailable) -> None:
    """Count a backend outage met outside the HTTP error path (a degraded scrape)."""
    backend_unavailable.send(current_app._get_current_object(), error=error)


class _Families:
    """A collector over ready-made families, which is what the encoders take."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(families: Iterable[Metric], accept: str | None) -> Response:
    """The families in the exposition format the scraper asked for (``Accept``): Prometheus
    text by default, OpenMetrics when preferred."""
    encoder, content_type = choose_encoder(accept or "")
    return Response(encoder(_Families(list(families))), content_type=content_type)


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` hook: in multiprocess mode, drop the dead worker's live
    gauges (its open websockets) from the sums."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        mark_process_dead(worker.pid, path)
