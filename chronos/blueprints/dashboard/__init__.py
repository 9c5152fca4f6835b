"""The dashboard: server-rendered pages for logged-in users, templates in ``chronos/templates``.

Pages need a session (``login_required``; ``admin_required`` for changes only admins may
make), and set ``g.principal`` from it. Every POST to this blueprint, the login form included,
must carry the session's CSRF token (``csrf_token()`` in templates) in a hidden ``csrf_token``
field: ``check_csrf`` refuses it with 400 before the view runs otherwise.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Blueprint, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from chronos.auth import Principal, session_principal
from chronos.errors import BadRequest, Forbidden
from chronos.timeutil import to_iso

P = ParamSpec("P")
R = TypeVar("R")

bp = Blueprint("dashboard", __name__)

CSRF_FIELD = "csrf_token"
CSRF_EXPIRED = "the form expired, reload and retry"


@bp.app_template_global()
def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


@bp.before_request
def check_csrf() -> None:
    """Refuse a POST (or any unsafe method) whose form lacks the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(
        sent.encode(), expected.encode()
    ):
        raise BadRequest(CSRF_EXPIRED)


@bp.app_context_processor
def _current_user() -> dict[str, Principal | None]:
    return {"current_user": session_principal()}


@bp.app_template_filter("iso")
def _iso(ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 UTC (for ``<time datetime=...>``); empty for ``None``."""
    return to_iso(ms) or ""


def _login_redirect() -> Response:
    here = request.script_root + request.full_path.rstrip("?")
    target = here if request.method == "GET" else None
    return redirect(url_for("dashboard.login", next=target))


def login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Page decorator: redirect to ``/login?next=...`` without a session; else set
    ``g.principal`` (the user's tenant, name, and ``admin`` in its scopes for admins)."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        principal = session_principal()
        if principal is None:
            return _login_redirect()
        g.principal = principal
        return view(*args, **kwargs)

    return wrapper


def is_admin() -> bool:
    """Whether the logged-in user (``g.principal``) is an admin of its tenant."""
    return "admin" in g.principal.scopes


def admin_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Like ``login_required``, and answer 403 to users who are not admins."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        if not is_admin():
            raise Forbidden("only administrators may do this")
        return view(*args, **kwargs)

    return login_required(wrapper)


from chronos.blueprints.dashboard import auth, keys, pages  # noqa: E402, F401
