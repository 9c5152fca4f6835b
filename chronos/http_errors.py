"""The one error path: every error leaves the app as JSON with the right status.

Body shape (kept from the earlier system's envelope, so existing clients keep working)::

    {"success": false, "error": "<what was wrong>", "code": "<machine code>", "details": ...}

``Retry-After`` is set on 429 and 503.
"""

from __future__ import annotations

import logging
from typing import Any

import marshmallow
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from chronos.errors import BackendUnavailable, ChronosError, RateLimited

log = logging.getLogger(__name__)


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


def _chronos_error(exc: ChronosError) -> Response:
    if exc.status_code >= 500 and not isinstance(exc, BackendUnavailable):
        log.error("internal error: %s", exc.message, exc_info=exc)
    retry_after = exc.retry_after if isinstance(exc, RateLimited | BackendUnavailable) else None
    return error_response(exc.status_code, exc.code, exc.message, exc.details, retry_after)


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        from flask import current_app

        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return error_response(413, "payload_too_large",
                              f"the request body is over the limit of {limit} bytes",
                              {"limit_bytes": limit})  # fmt: skip
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name)


def _invalid(exc: marshmallow.ValidationError) -> Response:
    return error_response(422, "validation_error", "the input is not valid", exc.messages)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "an unexpected error occurred; see the server log")


def init_app(app: Flask) -> None:
    app.register_error_handler(ChronosError, _chronos_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(marshmallow.ValidationError, _invalid)
    app.register_error_handler(Exception, _unexpected)
