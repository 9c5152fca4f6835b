"""Logging in and out of the dashboard.

A failed login says the same thing, after the same work, whether the user exists or not:
unknown users have their password checked against a dummy hash. Attempts are limited per
username and per client address, across all workers, through the backend's rate limiter.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from chronos.accounts import verify_password
from chronos.auth import client_address, rate_wait, session_principal
from chronos.blueprints.dashboard import bp
from chronos.errors import RateLimited
from chronos.extension import get_backend

FAILED = "wrong username or password"
WINDOW_MS = 15 * 60 * 1000
PER_USER = 10
PER_ADDRESS = 30
MAX_PASSWORD = 1024
#: The hash of a random, forgotten password: unknown users cost one scrypt too.
DUMMY_HASH = "scrypt$oBPc6whfB+zKhIOArDOOcA==$7dC0wWHa7EfvYdlGxBgyvoY8+X36xv9WCOwhqtYamRI="


def safe_next(target: str | None, fallback: str = "/") -> str:
    """``target`` if it is a path on this site, else ``fallback`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return fallback
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return fallback  # browsers drop tabs and newlines and read "\" as "/": "/\t/evil.com"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def _check_rate(username: str) -> None:
    # Every attempt counts, not only failures: each one costs an scrypt.
    wait_ms = rate_wait([(f"login:user:{username.lower()[:64]}", PER_USER, WINDOW_MS),
                         (f"login:addr:{client_address()}", PER_ADDRESS, WINDOW_MS)])  # fmt: skip
    if wait_ms:
        raise RateLimited("too many login attempts; wait a few minutes and retry",
                          retry_after=-(-wait_ms // 1000))  # fmt: skip


def _authenticate(username: str, password: str) -> bool:
    user = get_backend().get_user(username) if username else None
    stored = user.password_hash if user is not None else DUMMY_HASH
    ok = verify_password(password[:MAX_PASSWORD], stored)
    if not ok or user is None or len(password) > MAX_PASSWORD:
        return False
    session.clear()
    session["user"] = user.username
    session["tenant"] = user.tenant_id
    session["admin"] = bool(user.is_admin)
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True
    current_app.logger.info("dashboard login: %s (tenant %s)", user.username, user.tenant_id)
    return True


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    target = safe_next(request.values.get("next"), request.script_root + "/")
    if request.method == "GET":
        if session_principal() is not None:
            return redirect(target)
        return render_template("login.html", next=target, username="", error=None), 200
    username = request.form.get("username", "").strip()
    _check_rate(username)
    if _authenticate(username, request.form.get("password", "")):
        return redirect(target, 303)
    return render_template("login.html", next=target, username=username, error=FAILED), 401


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("dashboard.login"), 303)
