"""``GET /metrics``: Prometheus metrics.

- ``Authorization: Bearer <CHRONOS_METRICS_TOKEN>`` (the operator): the server metrics, the
  scanner's, and the job metrics of every tenant (each with its ``tenant`` label). If the
  backend cannot be read, the answer is still 200, with the server metrics and
  ``chronos_backend_up 0``: the monitoring of an outage must not go dark with it.
- A ``read``-scoped API key (``x-api-key`` or ``Authorization: Bearer``): its tenant's job
  metrics only.
- Neither: 401; a key without the ``read`` scope: 403 (JSON, as everywhere in the API).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, request
from prometheus_client.metrics_core import Metric

from chronos import job_metrics
from chronos.auth import authenticate
from chronos.errors import BackendUnavailable, ChronosError, Unauthorized
from chronos.extension import get_backend
from chronos.prometheus import count_backend_error, render, server_metrics, token_matches
from chronos.timeutil import now_ms

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _operator() -> bool:
    presented = _bearer()
    token = current_app.config.get("CHRONOS_METRICS_TOKEN")
    return presented is not None and token_matches(presented, token)


@bp.get("/metrics")
def metrics() -> Response:
    if _operator():
        return render(_operator_families(), request.headers.get("Accept"))
    if _bearer() is None and not request.headers.get("x-api-key"):
        raise Unauthorized("send a read-scoped API key ('x-api-key'), or the metrics token "
                           "as 'Authorization: Bearer'")  # fmt: skip
    g.principal = principal = authenticate("read")
    families = job_metrics.job_families(get_backend(), [principal.tenant_id], now_ms())
    return render(families, request.headers.get("Accept"))


def _operator_families() -> list[Metric]:
    found: list[Metric] = []
    try:
        backend, now = get_backend(), now_ms()
        found += job_metrics.scanner_families(backend, now)
        found += job_metrics.job_families(backend, backend.list_tenants(), now)
        up = True
    except ChronosError as exc:
        if isinstance(exc, BackendUnavailable):
            count_backend_error(exc)
        else:
            log.error("metrics: could not read the backend: %s", exc.for_operators)
        found, up = [], False
    metrics = server_metrics()
    server = list(metrics.families()) if metrics is not None else []
    return [*server, *found, *job_metrics.backend_up(up)]
