"""The one error path: every error leaves the app with the right status, as JSON for programs
or as the ``error.html`` page for browsers.

JSON body shape (kept from the earlier system's envelope, so existing clients keep working)::

    {"success": false, "error": "<what was wrong>", "code": "<machine code>", "details": ...}

Requests under ``/api/`` and ``/ws/`` always get JSON. Other paths get the HTML page when they
come from a dashboard view or when the client prefers HTML to JSON (a browser does; a bare
``*/*`` does not). ``Retry-After`` is set on 429 and 503.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import marshmallow
from blinker import Namespace
from flask import Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from chronos.errors import BackendUnavailable, ChronosError, RateLimited

log = logging.getLogger(__name__)

#: Sent (sender: the app) each time a request finds the backend unavailable; the metrics
#: count it here, so that no view has to.
backend_unavailable = Namespace().signal("chronos.backend-unavailable")


class OutageLog:
    """Logs why the backend is unavailable (the driver's words, which the client never sees)
    at most once every ``every_s`` seconds per app: in an outage every request fails."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: float | None = None
        self._quiet = 0

    def report(self, exc: ChronosError) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.every_s:
                self._quiet += 1
                return
            quiet, self._quiet, self._last = self._quiet, 0, now
        more = f" ({quiet} more since the last report)" if quiet else ""
        log.warning("storage backend unavailable: %s%s", exc.for_operators, more)


def error_response(
    status: int, code: str, message: str, details: Any = None, retry_after: int | None = None
) -> Response:
    body: dict[str, Any] = {"success": False, "error": message, "code": code}
    if details is not None:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def wants_html() -> bool:
    """Whether the error of the current request is shown as a page rather than JSON."""
    path = request.path
    if path.startswith(("/api/", "/ws/")) or path in ("/api", "/ws"):
        return False
    if request.blueprint == "dashboard":
        return True
    accept = request.accept_mimetypes
    return accept.best_match(["application/json", "text/html"]) == "text/html"


def html_error_response(status: int, message: str, retry_after: int | None = None) -> Response:
    """The ``error.html`` page with ``status``; plain text if the template itself fails."""
    title = HTTP_STATUS_CODES.get(status, "Error")
    try:
        body = render_template("error.html", status=status, title=title, message=message)
        response = Response(body, status=status, mimetype="text/html")
    except Exception:
        log.exception("could not render error.html")
        response = Response(f"{status} {title}: {message}\n", status=status, mimetype="text/plain")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _respond(
    status: int, code: str, message: str, details: Any = None, retry_after: int | None = None
) -> Response:
    if wants_html():
        return html_error_response(status, message, retry_after)
    return error_response(status, code, message, details, retry_after)


def _chronos_error(exc: ChronosError) -> Response:
    if isinstance(exc, BackendUnavailable):
        backend_unavailable.send(current_app._get_current_object(), error=exc)
        current_app.extensions["chronos.outage_log"].report(exc)
    if exc.status_code >= 500 and not isinstance(exc, BackendUnavailable):
        log.error("internal error: %s", exc.message, exc_info=exc)
    retry_after = exc.retry_after if isinstance(exc, RateLimited | BackendUnavailable) else None
    return _respond(exc.status_code, exc.code, exc.message, exc.details, retry_after)


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return _respond(413, "payload_too_large",
                        f"the request body is over the limit of {limit} bytes",
                        {"limit_bytes": limit})  # fmt: skip
    code = (exc.name or "error").lower().replace(" ", "_")
    return _respond(exc.code or 500, code, exc.description or exc.name)


def _invalid(exc: marshmallow.ValidationError) -> Response:
    return _respond(422, "validation_error", "the input is not valid", exc.messages)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return _respond(500, "internal_error", "an unexpected error occurred; see the server log")


def init_app(app: Flask) -> None:
    app.extensions["chronos.outage_log"] = OutageLog()
    app.register_error_handler(ChronosError, _chronos_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(marshmallow.ValidationError, _invalid)
    app.register_error_handler(Exception, _unexpected)
