"""Hardening: session cookie flags, proxy trust, security headers, and JSON bodies.

Every response outside ``/api/`` carries a strict Content-Security-Policy: scripts and styles
come only from Chronos itself, so templates hold no inline ``<script>``, ``style=`` or ``on...=``
attributes. The JSON API is for programs and gets none of these headers.

Python's JSON parser raises ``RecursionError`` on deeply nested input (``[[[[...``), not the
``ValueError`` Flask expects of bad JSON, so such a body would end as a 500. The app's JSON
provider turns it into a ``ValueError``: the body is refused like any unreadable JSON (400),
after at most about a thousand levels of parsing. A body without ``Content-Length``
(chunked) is cut by Werkzeug at ``MAX_CONTENT_LENGTH`` without a word; the app's request
class answers 413 when anything was left after the cut, as for an announced length.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Response, request
from flask import Request as FlaskRequest
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from chronos.errors import ConfigError

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with too deeply nested input refused as invalid JSON."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None


class Request(FlaskRequest):
    """Flask's request, whose body is never silently cut at the size limit."""

    def get_data(self, *args: Any, **kwargs: Any) -> Any:
        data = super().get_data(*args, **kwargs)
        limit = self.max_content_length
        streamed = limit is not None and self.content_length is None
        # A streamed body stops at the limit: one more byte from the server says whether that
        # was its end.
        if streamed and len(data) >= limit and self.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
        return data


def _add_headers(response: Response) -> Response:
    if not request.path.startswith("/api/"):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Set the session cookie flags and lifetime, trust the proxy if told, add the headers,
    parse JSON with ``JSONProvider``, read bodies with ``Request``."""
    app.json = JSONProvider(app)
    app.request_class = Request
    hours = app.config["CHRONOS_SESSION_HOURS"]
    if not isinstance(hours, int) or hours < 1:
        raise ConfigError(f"CHRONOS_SESSION_HOURS must be at least 1, got {hours!r}")
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=hours)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = bool(app.config["CHRONOS_SECURE_COOKIES"])
    if app.config["CHRONOS_TRUST_PROXY"]:
        # One proxy hop: the client address, scheme, host and prefix it forwards.
        proxied = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)
        app.wsgi_app = proxied  # type: ignore[method-assign]
    app.after_request(_add_headers)
