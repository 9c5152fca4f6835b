"""``GET /healthz``: is this process able to serve, and what backend does it talk to."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from chronos import __version__
from chronos.errors import BackendUnavailable, ChronosError
from chronos.extension import get_state
from chronos.http_errors import error_response
from chronos.scheduler.service import HEARTBEAT

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@bp.get("/api/health")
def healthz() -> Response:
    """``{"status": "ok", "version", "backend": {...}}``; 503 when the backend is down or
    lacks a module."""
    try:
        backend = get_state().backend()
        report = backend.health()
    except BackendUnavailable as exc:
        return error_response(503, exc.code, exc.message, {"status": "unavailable"},
                              exc.retry_after)  # fmt: skip
    except ChronosError as exc:
        return error_response(503, exc.code, exc.message, {"status": "unavailable"}, 30)
    status = "ok" if report.get("status") == "ok" else "degraded"
    state = get_state()
    beat = backend.last_beat(HEARTBEAT)
    scanner = {"state": "running", "lastTick": beat} if beat else {
        "state": "not running", "hint": "start `chronos scheduler` (chronos serve starts one)"}
    live = state.live_hub().report()
    response = jsonify({"status": status, "version": __version__, "backend": report,
                        "scanner": scanner, "live": live})  # fmt: skip
    response.status_code = 200 if status == "ok" else 503
    return response
