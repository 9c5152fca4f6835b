"""The Redis client of the backend, built lazily, and the translation of driver errors.

The client is created on first use, never in ``__init__``: the app is built in gunicorn's
master before it forks, and a connection must not be shared across processes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack.url import check_url
from chronos.errors import BackendUnavailable, ChronosError

P = ParamSpec("P")
R = TypeVar("R")

#: Server replies that mean "not now" rather than "wrong": answered with 503 + Retry-After.
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN",
                      "CLUSTERDOWN", "NOREPLICAS")  # fmt: skip


def translate(exc: redis.RedisError) -> ChronosError:
    """The Chronos error for a driver error."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return BackendUnavailable("Redis is unreachable", retry_after=5, cause=str(exc))
    message = str(exc)
    if message.upper().startswith(_TRANSIENT_REPLIES) or isinstance(exc, redis.BusyLoadingError):
        word = message.split(" ", 1)[0].upper()
        reply = word if word in _TRANSIENT_REPLIES else "LOADING"  # else: BusyLoadingError
        return BackendUnavailable(f"Redis cannot serve this now ({reply})", retry_after=5,
                                  cause=message)  # fmt: skip
    if "no such index" in message.lower() or "unknown index" in message.lower():
        return ChronosError(
            f"a search index is missing ({message}); run `flask chronos create-indices`"
        )
    return ChronosError(f"Redis answered with an error: {message}")


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Decorate a backend method so that driver errors leave it as Chronos errors."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise translate(exc) from exc

    return wrapper


class LazyClient:
    """Builds the ``redis.Redis`` client on first use, once, thread-safely."""

    def __init__(self, url: str, options: BackendOptions) -> None:
        check_url(url)  # a wrong option is a ConfigError now, not a TypeError at first use
        self._url = url
        self._options = options
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def get(self) -> redis.Redis:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
                client = self._client
        return client

    def _build(self) -> redis.Redis:
        opts = self._options
        kwargs: dict[str, Any] = dict(
            protocol=3,
            decode_responses=True,
            socket_connect_timeout=opts.connect_timeout_s,
            socket_timeout=opts.socket_timeout_s,
            health_check_interval=30,
            # A refused or dropped connection (Redis restarting) is retried twice, briefly, so
            # a dead Redis turns into a 503 within a second. A timeout is not: the server is
            # there but stalled (frozen, partitioned, blocked), and redis-py nests its retries
            # (connect, then the handshake's health check, then the command), so retrying
            # timeouts would hold a request for up to 3 x 3 x 3 socket timeouts instead of one.
            retry=Retry(
                ExponentialBackoff(cap=0.5, base=0.05),
                retries=2,
                supported_errors=(redis.ConnectionError,),
            ),
            # Runner websockets each hold a connection while they wait for triggers.
            max_connections=1024,
        )
        if not self._url.startswith("unix://"):
            kwargs["socket_keepalive"] = True
        return redis.Redis.from_url(self._url, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client.connection_pool.disconnect()
                self._client = None
