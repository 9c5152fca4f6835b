"""The Redis Stack backend (``redis://``, ``rediss://``, ``unix://``)."""

from chronos.backends.redis_stack.backend import REQUIRED_MODULES, RedisStackBackend

__all__ = ["REQUIRED_MODULES", "RedisStackBackend"]
