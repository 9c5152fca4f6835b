"""The contract run against the Redis Stack backend on the real server the session started."""

from __future__ import annotations

import pytest

from chronos.backends.redis_stack import RedisStackBackend

from .base import BackendContract
from .totals import JobTotalsContract


class TestRedisStackBackend(BackendContract, JobTotalsContract):
    @pytest.fixture
    def backend(self, redis_backend: RedisStackBackend) -> RedisStackBackend:
        return redis_backend
