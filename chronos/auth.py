"""API-key authentication and scope checks for the JSON API.

A key comes in ``x-api-key: <key>`` or ``Authorization: Bearer <key>``. It is found by its id
(O(1)), its secret compared in constant time, and its scopes checked: ``ingest`` writes,
``read`` reads, ``admin`` does both. Last use is recorded at most once a minute per key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import g, request

from chronos.accounts import key_matches, parse_api_key
from chronos.errors import Forbidden, Unauthorized
from chronos.extension import get_backend
from chronos.timeutil import now_ms

P = ParamSpec("P")
R = TypeVar("R")
TOUCH_EVERY_MS = 60_000


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    username: str
    key_id: str
    scopes: tuple[str, ...]


def _presented_key() -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(scope: str) -> Principal:
    """The principal of the request's API key, which must carry ``scope`` (or ``admin``)."""
    presented = _presented_key()
    if presented is None:
        raise Unauthorized("missing API key: send it as 'x-api-key' or 'Authorization: Bearer'")
    parsed = parse_api_key(presented)
    if parsed is None:
        raise Unauthorized("invalid API key")
    key_id, secret = parsed
    backend = get_backend()
    record = backend.get_api_key(key_id)
    if record is None or not record.active or not key_matches(record, secret):
        raise Unauthorized("invalid API key")
    if scope not in record.scopes and "admin" not in record.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope",
                        details={"scopes": list(record.scopes)})  # fmt: skip
    now = now_ms()
    if record.last_used_at is None or now - record.last_used_at >= TOUCH_EVERY_MS:
        backend.touch_api_key(key_id, now)
    return Principal(record.tenant_id, record.username, key_id, tuple(record.scopes))


def require_key(scope: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """View decorator: authenticate with ``scope``; the principal is in ``g.principal``."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            g.principal = authenticate(scope)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def principal() -> Principal:
    return g.principal
