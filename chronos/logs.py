"""Request ids and structured logs.

Every response carries ``X-Request-ID``: the caller's own (if it is a short token of letters,
digits, ``.``, ``_`` and ``-``) or a new one. With ``CHRONOS_LOG_FORMAT=json`` every log record
of the process, gunicorn's included (its master's too with ``gunicorn_logconfig``), is
written to stderr as one JSON object per line::

    {"time": "2026-01-31T12:00:00.123Z", "level": "INFO", "logger": "chronos.request",
     "message": "GET /api/jobs 200", "request_id": "…", "method": "GET", "path": "/api/jobs",
     "status": 200, "duration_ms": 3.2, "tenant": "acme"}

Records logged while a request is handled carry its ``request_id``, ``method``, ``path`` (never
the query string) and ``tenant`` once it is known; ``chronos.request`` logs one line per request
with its ``status`` and ``duration_ms``; ``exception`` holds a traceback's text. Secrets never
reach a line: API keys keep only their public id (``chr_<id>_[redacted]``), and bearer tokens,
passwords, cookies and the configured secrets are replaced by ``[redacted]``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from flask.logging import default_handler

from chronos.errors import ConfigError
from chronos.timeutil import to_iso

LOG_FORMATS = ("text", "json")
REQUEST_LOGGER = "chronos.request"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: Gunicorn's loggers: its handlers get the JSON formatter too.
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")
#: Fields taken from a record's attributes (``extra=``) or the request, in this order.
FIELDS = ("request_id", "method", "path", "status", "duration_ms", "tenant")
REDACTED = "[redacted]"
_PATTERNS = (
    (re.compile(r"(chr_[0-9a-f]{12}_)[A-Za-z0-9_-]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:password|passwd|secret|token|api[_-]?key|cookie|session)"
                r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"), r"\1" + REDACTED),
)  # fmt: skip


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with API key secrets, bearer tokens, passwords, cookies and ``secrets`` cut."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``secrets`` are values never to be written."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": to_iso(int(record.created * 1000)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry.update(_access_fields(record.args))
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        clean = {k: redact(v, self.secrets) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(clean, ensure_ascii=False, default=str)


def _access_fields(atoms: dict[str, Any]) -> dict[str, Any]:
    """The request fields of a gunicorn access record (never its header atoms, which hold
    the request's credentials)."""
    found: dict[str, Any] = {"method": atoms.get("m"), "path": atoms.get("U")}
    status = atoms.get("s")
    if isinstance(status, int) or (isinstance(status, str) and status.isdigit()):
        found["status"] = int(status)
    if isinstance(atoms.get("D"), int):
        found["duration_ms"] = atoms["D"] / 1000
    return {k: v for k, v in found.items() if v is not None}


class RequestContext(logging.Filter):
    """Adds the current request's id, method, path and tenant to records logged during it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            principal = g.get("principal")
            context = {"request_id": g.get("request_id"), "method": request.method,
                       "path": request.path,
                       "tenant": getattr(principal, "tenant_id", None)}  # fmt: skip
            for name, value in context.items():
                if record.__dict__.get(name) is None:
                    setattr(record, name, value)
        return True


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``CHRONOS_LOG_FORMAT=json`` puts on the root logger (one per process)."""


def init_app(app: Flask) -> None:
    """Give every request an id, and with ``CHRONOS_LOG_FORMAT=json`` log as JSON."""
    fmt = app.config.get("CHRONOS_LOG_FORMAT") or "text"
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"CHRONOS_LOG_FORMAT must be 'text' or 'json', got {fmt!r}")
    app.before_request(_start_request)
    app.after_request(_finish_request)
    if fmt == "json":
        secrets = (app.config.get("CHRONOS_METRICS_TOKEN"), app.config.get("SECRET_KEY"))
        configure_json(tuple(s for s in secrets if isinstance(s, str)))


def configure_json(secrets: tuple[str, ...] = ()) -> JsonHandler:
    """Log every record of the process as JSON to stderr, at INFO and above (replacing the
    handler of an earlier call, so building apps repeatedly never doubles lines)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, JsonHandler)]:
        root.removeHandler(old)
    formatter = JsonFormatter(secrets)
    handler = JsonHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RequestContext())
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    # Flask's own handler on the app's logger ("chronos") would write every line twice.
    logging.getLogger("chronos").removeHandler(default_handler)
    for name in GUNICORN_LOGGERS:
        for gunicorn_handler in logging.getLogger(name).handlers:
            gunicorn_handler.setFormatter(formatter)
            if not any(isinstance(f, RequestContext) for f in gunicorn_handler.filters):
                gunicorn_handler.addFilter(RequestContext())
    return handler


def gunicorn_logconfig() -> dict[str, Any]:
    """Gunicorn's ``logconfig_dict`` for JSON lines from its master too (the workers switch
    on their own when they build the app). Its access log is off: ``chronos.request`` writes
    one line per request with more in it (request id, tenant)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "chronos.logs.JsonFormatter"}},
        "handlers": {"json": {"class": "chronos.logs.JsonHandler", "formatter": "json",
                              "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }  # fmt: skip


def _start_request() -> None:
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    started = g.get("request_started")
    if started is not None and current_app.config.get("CHRONOS_LOG_FORMAT") == "json":
        took = round((time.perf_counter() - started) * 1000, 2)
        logging.getLogger(REQUEST_LOGGER).info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={"status": response.status_code, "duration_ms": took},
        )  # fmt: skip
    return response
