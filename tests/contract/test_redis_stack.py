"""The contract run against the Redis Stack backend on the real server the session started."""

from __future__ import annotations

import pytest

from chronos.backends.redis_stack import RedisStackBackend

from .base import BackendContract
from .retention import RetentionContract
from .totals import JobTotalsContract


class TestRedisStackBackend(BackendContract, JobTotalsContract, RetentionContract):
    @pytest.fixture
    def backend(self, redis_backend: RedisStackBackend) -> RedisStackBackend:
        return redis_backend

    def record_expiry(self, backend: RedisStackBackend, tenant: str, exec_id: str) -> int | None:
        at = backend.client().pexpiretime(backend.keys.execution(tenant, exec_id))
        assert at != -2, "no such record"
        return None if at == -1 else int(at)
