"""API-key authentication and scope checks for the JSON API.

A key comes in ``x-api-key: <key>`` or ``Authorization: Bearer <key>``. It is found by its id
(O(1)), its secret compared in constant time, and its scopes checked: ``ingest`` writes,
``read`` reads, ``admin`` does both. Last use is recorded at most once a minute per key.

Failed authentications are counted per client address and per key id (the visible part of
``chr_<id>_<secret>``), across all workers. Once either has ``CHRONOS_AUTH_FAILURES_PER_MINUTE``
failures this minute, its requests get 429 before the key is even looked up, whether the key
is right or not: a guesser learns nothing more until the minute ends.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import current_app, g, request, session

from chronos.accounts import key_matches, parse_api_key
from chronos.errors import Forbidden, RateLimited, Unauthorized
from chronos.extension import get_backend, get_state
from chronos.models import ApiKey
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


def client_address() -> str:
    """The client's address for rate limits: the peer's, or with ``CHRONOS_TRUST_PROXY`` the
    one the proxy forwarded (``ProxyFix``, see ``chronos.security``, rewrites it)."""
    return request.remote_addr or "unknown"


def rate_wait(limits: list[tuple[str, int, int]], *, count: bool = True) -> int:
    """Milliseconds until every ``(name, limit, window_ms)`` window is under its limit again
    (0: none is over). Counts one hit on each, unless ``count`` is false (a read only)."""
    backend, now = get_backend(), now_ms()
    return max((backend.hit(name, limit, window, now, cost=int(count))
                for name, limit, window in limits), default=0)  # fmt: skip


def _failure_limits(key_id: str | None) -> list[tuple[str, int, int]]:
    per_minute = current_app.config["CHRONOS_AUTH_FAILURES_PER_MINUTE"]
    if per_minute <= 0:
        return []
    limits = [(f"authfail:addr:{client_address()}", per_minute, 60_000)]
    if key_id is not None:
        limits.append((f"authfail:key:{key_id}", per_minute, 60_000))
    return limits


def _refuse(limits: list[tuple[str, int, int]], wait_ms: int) -> RateLimited:
    return RateLimited("too many failed authentications; retry later",
                       retry_after=-(-wait_ms // 1000),
                       details={"limit_per_minute": limits[0][1]})  # fmt: skip


def _failed(limits: list[tuple[str, int, int]]) -> Unauthorized | RateLimited:
    """Count a failed authentication: the error to raise, 429 once over a limit."""
    wait_ms = rate_wait(limits)
    return _refuse(limits, wait_ms) if wait_ms else Unauthorized("invalid API key")


def authenticate(scope: str) -> Principal:
    """The principal of the request's API key, which must carry ``scope`` (or ``admin``)."""
    presented = _presented_key()
    if presented is None:
        raise Unauthorized("missing API key: send it as 'x-api-key' or 'Authorization: Bearer'")
    parsed = parse_api_key(presented)
    limits = _failure_limits(parsed[0] if parsed else None)
    reached = [(name, limit - 1, window) for name, limit, window in limits]  # limit failures
    if reached and (wait_ms := rate_wait(reached, count=False)):
        raise _refuse(limits, wait_ms)
    if parsed is None:
        raise _failed(limits)
    key_id, secret = parsed
    backend = get_backend()
    record = _lookup(key_id)
    if record is None or not record.active or not key_matches(record, secret):
        raise _failed(limits)
    if scope not in record.scopes and "admin" not in record.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope",
                        details={"scopes": list(record.scopes)})  # fmt: skip
    now = now_ms()
    if record.last_used_at is None or now - record.last_used_at >= TOUCH_EVERY_MS:
        backend.touch_api_key(key_id, now)
        record.last_used_at = now  # the cached copy too, so the next request does not touch
    return Principal(record.tenant_id, record.username, key_id, tuple(record.scopes))


def _lookup(key_id: str) -> ApiKey | None:
    """The key record, from this worker's short-lived cache when it is fresh there."""
    state = get_state()
    ttl = current_app.config["CHRONOS_API_KEY_CACHE_SECONDS"]
    cached = state.key_cache.get(key_id)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    record = state.backend().get_api_key(key_id)
    if record is not None and ttl > 0:
        if len(state.key_cache) > 10_000:
            state.key_cache.clear()
        state.key_cache[key_id] = (record, time.monotonic() + ttl)
    return record


def check_rate(p: Principal, kind: str, per_minute: int) -> None:
    """Raise ``RateLimited`` when the tenant is over ``per_minute`` requests of ``kind``."""
    if per_minute <= 0:
        return
    wait_ms = get_backend().hit(f"{kind}:{p.tenant_id}", per_minute, 60_000, now_ms())
    if wait_ms:
        raise RateLimited(
            f"tenant is over its limit of {per_minute} {kind} requests a minute",
            retry_after=-(-wait_ms // 1000),
            details={"limit_per_minute": per_minute},
        )


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


def session_principal() -> Principal | None:
    """The logged-in dashboard user, if the request carries a valid session."""
    username, tenant = session.get("user"), session.get("tenant")
    if not isinstance(username, str) or not isinstance(tenant, str):
        return None
    scopes = ("read", "admin") if session.get("admin") else ("read",)
    return Principal(tenant_id=tenant, username=username, key_id="", scopes=scopes)


def require_reader(view: Callable[P, R]) -> Callable[P, R]:
    """View decorator: a dashboard session or a ``read`` API key; ``g.principal`` is set."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.principal = session_principal() or authenticate("read")
        return view(*args, **kwargs)

    return wrapper
