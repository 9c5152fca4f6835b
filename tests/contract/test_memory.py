"""The contract run against the in-memory backend, plus what only it can show (its clock)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from chronos.backends import load_backend
from chronos.backends.base import BackendOptions
from chronos.backends.memory import MemoryBackend
from chronos.backends.memory_events import MemoryHub
from chronos.models import Event, ExecutionQuery

from .base import HOUR, T0, BackendContract, make_exec
from .retention import RetentionContract
from .totals import JobTotalsContract


class TestMemoryBackend(BackendContract, JobTotalsContract, RetentionContract):
    @pytest.fixture
    def backend(self) -> Iterator[MemoryBackend]:
        backend = MemoryBackend("memory://", BackendOptions(key_prefix=f"t{uuid.uuid4().hex}:"))
        yield backend
        backend.close()

    def record_expiry(self, backend: MemoryBackend, tenant: str, exec_id: str) -> int | None:
        return backend._executions[tenant][exec_id].expires_at


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def backend(clock: FakeClock) -> Iterator[MemoryBackend]:
    backend = MemoryBackend("memory://", BackendOptions(execution_ttl_ms=HOUR), clock=clock)
    yield backend
    backend.close()


def test_memory_scheme_loads_memory_backend() -> None:
    backend = load_backend("memory://", BackendOptions())
    assert isinstance(backend, MemoryBackend) and backend.name == "memory"


def test_executions_expire_after_ttl(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.write_executions("acme", [make_exec("acme", "e1", "a")])
    clock.now = T0 + HOUR - 1
    assert backend.get_execution("acme", "e1") is not None
    clock.now = T0 + HOUR
    assert backend.get_execution("acme", "e1") is None
    assert backend.search_executions("acme", ExecutionQuery()).items == []
    # metrics outlive the record; writing it again counts as a new record
    assert backend.write_executions("acme", [make_exec("acme", "e1", "a")]) == ["created"]


def test_update_renews_ttl(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.write_executions("acme", [make_exec("acme", "e1", "a", status="running")])
    clock.now = T0 + HOUR - 1
    backend.write_executions("acme", [make_exec("acme", "e1", "a")])
    clock.now = T0 + 2 * HOUR - 2
    assert backend.get_execution("acme", "e1").status == "success"


def test_no_ttl_keeps_executions() -> None:
    clock = FakeClock(T0)
    backend = MemoryBackend("memory://", BackendOptions(execution_ttl_ms=None), clock=clock)
    backend.write_executions("acme", [make_exec("acme", "e1", "a")])
    clock.now = T0 + 10_000 * HOUR
    assert backend.get_execution("acme", "e1") is not None


def test_claim_expires_with_ttl(backend: MemoryBackend, clock: FakeClock) -> None:
    assert backend.claim_trigger("acme", "a", T0, "w1", 1000) is True
    clock.now = T0 + 999
    assert backend.claim_trigger("acme", "a", T0, "w2", 1000) is False
    clock.now = T0 + 1000
    assert backend.claim_trigger("acme", "a", T0, "w2", 1000) is True


def test_full_subscription_drops_oldest() -> None:
    hub = MemoryHub(maxsize=3)
    sub = hub.subscribe()
    for n in range(5):
        hub.publish(Event("acme", "custom", {"n": n}))
    assert [sub.get(timeout=0.1).data["n"] for _ in range(3)] == [2, 3, 4]
    assert sub.get(timeout=0.01) is None


def test_close_ends_subscriptions(backend: MemoryBackend) -> None:
    sub = backend.subscribe()
    backend.close()
    backend.publish(Event("acme", "custom", {}))
    assert sub.get(timeout=0.01) is None
