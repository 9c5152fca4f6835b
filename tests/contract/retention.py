"""The contract of ``RetentionStore``: per-tenant settings, the per-job cap, expiry by start
time and the sweep. Mixed into every backend's contract class next to
:class:`~tests.contract.base.BackendContract`; a subclass also says when a stored record
expires (``record_expiry``), the one thing the public API cannot show without waiting.
"""

from __future__ import annotations

import pytest

from chronos.backends.base import Backend
from chronos.errors import ValidationError
from chronos.models import ExecutionQuery
from chronos.retention import DAY_MS, TRIM_PER_WRITE, RetentionSettings
from chronos.timeutil import now_ms

from .base import ALL_TENANTS, DAY, HOSTILE_IDS, HOUR, MINUTE, T0, exec_ids, make_exec

SWEEP_LIMIT = 1000


def stored(backend: Backend, tenant: str, job: str | None = None) -> list[str]:
    """The tenant's (or job's) execution ids, newest start first."""
    query = ExecutionQuery(job_id=job, limit=1000)
    return exec_ids(backend.search_executions(tenant, query).items)


def sweep_all(backend: Backend, tenant: str, now: int, limit: int = SWEEP_LIMIT) -> int:
    """Sweep until nothing is left over; the total removed."""
    total = 0
    for _ in range(1000):
        removed = backend.sweep_executions(tenant, now, limit)
        assert removed >= 0
        if removed == 0:
            return total
        total += removed
    raise AssertionError("the sweep never converged")


def write_runs(backend: Backend, tenant: str, job: str, starts: list[int], **kw: object) -> None:
    """One write per run (the cap trims per write), ids ``<job>-<start index>``."""
    for i, start in enumerate(starts):
        backend.write_executions(tenant, [make_exec(tenant, f"{job}-{i}", job,
                                                    started_at=start, **kw)])  # fmt: skip


class RetentionContract:
    def record_expiry(self, backend: Backend, tenant: str, exec_id: str) -> int | None:
        """When the stored record expires (epoch ms), ``None`` if never; subclasses answer."""
        raise NotImplementedError

    # settings ----------------------------------------------------------------------------
    def test_settings_default_to_none(self, backend: Backend) -> None:
        assert backend.get_retention("acme") == RetentionSettings()

    def test_settings_round_trip(self, backend: Backend) -> None:
        settings = RetentionSettings(execution_days=7, max_executions_per_job=100,
                                     metrics_days=30)  # fmt: skip
        backend.set_retention("acme", settings)
        assert backend.get_retention("acme") == settings
        backend.set_retention("acme", settings.changed(execution_days=None, metrics_days=3650))
        assert backend.get_retention("acme") == RetentionSettings(None, 100, 3650)
        backend.set_retention("acme", RetentionSettings(execution_days=0, max_executions_per_job=0))
        assert backend.get_retention("acme") == RetentionSettings(0, 0, None)
        backend.set_retention("acme", RetentionSettings())
        assert backend.get_retention("acme") == RetentionSettings()

    @pytest.mark.parametrize("bad", [
        {"execution_days": -1}, {"execution_days": 3651}, {"max_executions_per_job": -1},
        {"max_executions_per_job": 1_000_001}, {"metrics_days": 7}, {"metrics_days": 0},
        {"execution_days": True}, {"metrics_days": 30.5},
    ])  # fmt: skip
    def test_settings_out_of_bounds_are_refused(self, backend: Backend, bad: dict) -> None:
        backend.set_retention("acme", RetentionSettings(execution_days=9))
        with pytest.raises(ValidationError) as caught:
            backend.set_retention("acme", RetentionSettings(**bad))
        assert set(caught.value.details) == set(bad)
        assert backend.get_retention("acme") == RetentionSettings(execution_days=9)

    def test_settings_are_per_tenant_with_hostile_ids(self, backend: Backend) -> None:
        for n, tenant in enumerate(ALL_TENANTS):
            backend.set_retention(tenant, RetentionSettings(execution_days=n + 1))
        for n, tenant in enumerate(ALL_TENANTS):
            assert backend.get_retention(tenant) == RetentionSettings(execution_days=n + 1)
        assert backend.get_retention("t*x") == RetentionSettings()

    # the cap -----------------------------------------------------------------------------
    @pytest.mark.parametrize("job", ["a", *HOSTILE_IDS[:6]])
    def test_cap_keeps_the_newest_records(self, backend: Backend, job: str) -> None:
        backend.set_retention("acme", RetentionSettings(max_executions_per_job=3))
        # arriving out of order: the newest by start time stay, whatever order they came in
        starts = [T0 + 5 * MINUTE, T0, T0 + 2 * MINUTE, T0 + 6 * MINUTE, T0 + MINUTE,
                  T0 + 4 * MINUTE]  # fmt: skip
        write_runs(backend, "acme", job, starts)
        assert stored(backend, "acme", job) == [f"{job}-3", f"{job}-0", f"{job}-5"]
        assert backend.get_execution("acme", f"{job}-1") is None
        assert sweep_all(backend, "acme", now_ms()) == 0

    def test_cap_is_per_job(self, backend: Backend) -> None:
        backend.set_retention("acme", RetentionSettings(max_executions_per_job=2))
        for job in ("a", "b"):
            write_runs(backend, "acme", job, [T0 + i * MINUTE for i in range(4)])
        assert stored(backend, "acme", "a") == ["a-3", "a-2"]
        assert stored(backend, "acme", "b") == ["b-3", "b-2"]

    def test_the_record_written_is_never_the_one_trimmed(self, backend: Backend) -> None:
        backend.set_retention("acme", RetentionSettings(max_executions_per_job=2))
        write_runs(backend, "acme", "a", [T0 + HOUR, T0 + 2 * HOUR])
        late = make_exec("acme", "old", "a", started_at=T0)  # older than both
        assert backend.write_executions("acme", [late]) == ["created"]
        assert backend.get_execution("acme", "old") is not None
        assert backend.write_executions("acme", [late]) == ["duplicate"]
        assert sweep_all(backend, "acme", now_ms()) == 1
        assert stored(backend, "acme") == ["a-1", "a-0"]

    def test_lowered_cap_converges_by_writes_and_sweep(self, backend: Backend) -> None:
        write_runs(backend, "acme", "a", [T0 + i * MINUTE for i in range(12)])
        backend.set_retention("acme", RetentionSettings(max_executions_per_job=2))
        backend.write_executions("acme", [make_exec("acme", "new", "a", started_at=T0 + HOUR)])
        # one write trims a bounded few of the 11 over the cap...
        assert len(stored(backend, "acme", "a")) == 13 - TRIM_PER_WRITE
        # ...and the sweep, in steps of its limit, the rest: the oldest first
        assert backend.sweep_executions("acme", now_ms(), 4) == 4
        assert stored(backend, "acme", "a")[-1] == "a-7"
        assert sweep_all(backend, "acme", now_ms(), limit=3) == 13 - TRIM_PER_WRITE - 4 - 2
        assert stored(backend, "acme", "a") == ["new", "a-11"]

    def test_no_cap_keeps_everything(self, backend: Backend) -> None:
        backend.set_retention("acme", RetentionSettings(max_executions_per_job=0))
        write_runs(backend, "acme", "a", [T0 + i for i in range(30)])
        assert len(stored(backend, "acme", "a")) == 30

    def test_cap_and_sweep_leave_other_tenants_alone(self, backend: Backend) -> None:
        for tenant in ALL_TENANTS:
            write_runs(backend, tenant, "a", [T0 + i * MINUTE for i in range(4)])
        backend.set_retention("t:1", RetentionSettings(max_executions_per_job=1))
        assert sweep_all(backend, "t:1", now_ms()) == 3
        for tenant in ALL_TENANTS:
            assert len(stored(backend, tenant)) == (1 if tenant == "t:1" else 4)
        extra = make_exec("t", "extra", "a", started_at=T0 + HOUR)
        backend.write_executions("t", [extra])  # the cap of "t:1" is not that of "t"
        assert len(stored(backend, "t")) == 5

    # expiry by start time ----------------------------------------------------------------
    def test_records_expire_their_tenants_retention_after_they_started(
        self, backend: Backend
    ) -> None:
        started = now_ms() - HOUR
        backend.set_retention("short", RetentionSettings(execution_days=2))
        backend.set_retention("keep", RetentionSettings(execution_days=0))
        for tenant in ("short", "default", "keep"):
            backend.write_executions(tenant, [make_exec(tenant, "e", "a", started_at=started)])
        assert self.record_expiry(backend, "short", "e") == started + 2 * DAY
        assert self.record_expiry(backend, "default", "e") == started + 30 * DAY
        assert self.record_expiry(backend, "keep", "e") is None

    def test_a_late_record_is_kept_a_day_to_stay_deduplicated(self, backend: Backend) -> None:
        backend.set_retention("acme", RetentionSettings(execution_days=1))
        before = now_ms()
        late = make_exec("acme", "late", "a", started_at=before - 5 * DAY)
        assert backend.write_executions("acme", [late]) == ["created"]
        expiry = self.record_expiry(backend, "acme", "late")
        assert expiry is not None and before + DAY_MS <= expiry <= now_ms() + DAY_MS
        assert sweep_all(backend, "acme", now_ms()) == 1  # its index entry, not the record
        assert backend.write_executions("acme", [late]) == ["duplicate"]

    def test_lowered_retention_is_swept_by_start_time(self, backend: Backend) -> None:
        now = now_ms()
        starts = [now - 20 * DAY, now - 6 * DAY, now - 4 * DAY, now - HOUR]
        for tenant in ("acme", "other"):
            write_runs(backend, tenant, "a", starts)
            write_runs(backend, tenant, "b", starts[:2])
        backend.set_retention("acme", RetentionSettings(execution_days=5))
        assert sweep_all(backend, "acme", now_ms()) == 4
        assert stored(backend, "acme") == ["a-3", "a-2"]
        assert len(stored(backend, "other")) == 6
        backend.set_retention("acme", RetentionSettings(execution_days=0))
        assert sweep_all(backend, "acme", now_ms() + 100 * DAY) == 0

    def test_metrics_of_the_retained_range_stay_the_same(self, backend: Backend) -> None:
        edges = [T0 + h * HOUR for h in range(0, 25)]
        day = [T0, T0 + DAY]
        runs = [make_exec("acme", f"e{i}", "a", started_at=T0 + i * 7 * MINUTE,
                          finished_at=T0 + i * 7 * MINUTE + 1000 + 37 * i,
                          status="failed" if i % 5 == 0 else "success")
                for i in range(120)]  # fmt: skip
        for run in runs:
            backend.write_executions("acme", [run])

        def figures() -> tuple:
            return (
                [(b.runs, b.success, b.failure, b.duration_sum_ms, b.duration_count)
                 for b in backend.metric_buckets("acme", "a", edges)],
                backend.metric_buckets("acme", None, day),
                backend.duration_quantiles("acme", "a", edges, [0.5, 0.95]),
                backend.duration_quantiles("acme", None, day, [0.5, 0.95, 0.99]),
            )  # fmt: skip

        before = figures()
        backend.set_retention("acme", RetentionSettings(execution_days=1,
                                                        max_executions_per_job=5))  # fmt: skip
        assert sweep_all(backend, "acme", now_ms()) == 120
        assert stored(backend, "acme") == []
        assert figures() == before
