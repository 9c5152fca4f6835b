"""Backend plugins, picked by the scheme of the configured backend URL.

Backends register under the ``chronos.backends`` entry-point group, one entry per URL scheme
(``redis = chronos.backends.redis_stack:RedisStackBackend``). The built-in ones are also known
without installation metadata, so a source checkout works the same as an installed package.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from chronos.backends.base import Backend, BackendOptions
from chronos.errors import ConfigError

ENTRY_POINT_GROUP = "chronos.backends"

_BUILTIN = {
    "redis": "chronos.backends.redis_stack:RedisStackBackend",
    "rediss": "chronos.backends.redis_stack:RedisStackBackend",
    "unix": "chronos.backends.redis_stack:RedisStackBackend",
    "memory": "chronos.backends.memory:MemoryBackend",
}

__all__ = ["Backend", "BackendOptions", "available_schemes", "load_backend"]


def _registry() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def available_schemes() -> list[str]:
    """The URL schemes some installed backend serves, sorted."""
    return sorted(_registry())


def backend_class(url: str) -> type[Backend]:
    """The backend class serving ``url``'s scheme; ``ConfigError`` naming the choices if none."""
    scheme = urlsplit(url).scheme.lower()
    target = _registry().get(scheme)
    if target is None:
        raise ConfigError(
            f"no backend serves the URL scheme {scheme!r} of CHRONOS_BACKEND_URL; "
            f"installed backends serve: {', '.join(available_schemes())}"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"entry point {scheme!r} ({target}) is not a chronos Backend")
    return cls


def load_backend(url: str, options: BackendOptions) -> Backend:
    """Build (without connecting) the backend for ``url``."""
    return backend_class(url)(url, options)
