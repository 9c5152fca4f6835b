"""The contract of ``MetricsStore.job_totals``: all-time, idempotent per-job counts and the
duration histogram behind the Prometheus counters. Mixed into every backend's contract class
next to :class:`~tests.contract.base.BackendContract`."""

from __future__ import annotations

from chronos.backends.base import Backend
from chronos.models import DURATION_BUCKETS_MS, JobTotals, duration_bucket

from .base import DAY, HOSTILE_IDS, HOSTILE_TENANTS, T0, make_exec, make_job

N_BUCKETS = len(DURATION_BUCKETS_MS) + 1


def histogram(*durations: int) -> list[int]:
    counts = [0] * N_BUCKETS
    for d in durations:
        counts[duration_bucket(d)] += 1
    return counts


class JobTotalsContract:
    def test_duration_bucket_bounds_are_inclusive(self) -> None:
        assert duration_bucket(0) == 0
        assert duration_bucket(100) == 0  # Prometheus buckets count values <= their bound
        assert duration_bucket(101) == 1
        assert duration_bucket(DURATION_BUCKETS_MS[-1]) == len(DURATION_BUCKETS_MS) - 1
        assert duration_bucket(DURATION_BUCKETS_MS[-1] + 1) == len(DURATION_BUCKETS_MS)

    def test_totals_count_statuses_and_durations(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        runs = [("success", 100), ("success", 101), ("failed", 2_000), ("timeout", 10**9),
                ("missed", None), ("cancelled", 0)]  # fmt: skip
        backend.write_executions("acme", [
            make_exec("acme", f"e{i}", "a", status=s, started_at=T0 + i, finished_at=None,
                      duration_ms=d)
            for i, (s, d) in enumerate(runs)
        ])  # fmt: skip
        [totals] = backend.job_totals("acme", ["a"])
        assert totals.runs == 6
        assert totals.statuses == {"success": 2, "failed": 1, "timeout": 1, "missed": 1,
                                   "cancelled": 1}  # fmt: skip
        assert (totals.success, totals.failure) == (2, 3)  # failed, timeout and missed
        assert totals.duration_count == 5
        assert totals.duration_sum_ms == 100 + 101 + 2_000 + 10**9 + 0
        assert totals.buckets == histogram(100, 101, 2_000, 10**9, 0)
        assert totals.buckets[-1] == 1  # over the last bound: the unbounded bucket

    def test_duration_from_start_and_finish(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", "e1", "a")])  # 1 s run
        [totals] = backend.job_totals("acme", ["a"])
        assert (totals.duration_count, totals.duration_sum_ms) == (1, 1000)
        assert totals.buckets == histogram(1000)

    def test_running_is_not_counted_and_its_end_is_counted_once(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", "e1", "a", status="running")])
        assert backend.job_totals("acme", ["a"])[0].runs == 0
        done = make_exec("acme", "e1", "a", status="failed", duration_ms=5)
        backend.write_executions("acme", [done])
        backend.write_executions("acme", [done, make_exec("acme", "e1", "a")])  # retried
        [totals] = backend.job_totals("acme", ["a"])
        assert (totals.runs, totals.statuses, totals.buckets) == (1, {"failed": 1}, histogram(5))

    def test_retried_batch_never_double_counts(self, backend: Backend) -> None:
        batch = [make_exec("acme", f"e{i}", "a", duration_ms=i * 1000) for i in range(5)]
        backend.write_executions("acme", batch)
        backend.write_executions("acme", batch)
        [totals] = backend.job_totals("acme", ["a"])
        assert (totals.runs, totals.duration_count) == (5, 5)
        assert totals.buckets == histogram(0, 1000, 2000, 3000, 4000)

    def test_totals_are_all_time(self, backend: Backend) -> None:
        """Old runs arriving now count (no retention window), and jobs need not exist."""
        old = T0 - 60 * DAY
        backend.write_executions("acme", [make_exec("acme", "e1", "gone", started_at=old),
                                          make_exec("acme", "e2", "gone")])  # fmt: skip
        assert backend.job_totals("acme", ["gone"])[0].runs == 2

    def test_order_unknown_jobs_and_empty(self, backend: Backend) -> None:
        two = [make_exec("acme", "e1", "b"), make_exec("acme", "e2", "b", status="failed")]
        backend.write_executions("acme", two)
        result = backend.job_totals("acme", ["nothing", "b", "nothing"])
        assert [t.runs for t in result] == [0, 2, 0]
        assert result[0] == JobTotals()
        assert backend.job_totals("acme", []) == []

    def test_totals_are_exact_and_tenant_scoped(self, backend: Backend) -> None:
        for n, job_id in enumerate(HOSTILE_IDS):
            backend.write_executions("acme", [
                make_exec("acme", f"e{n}-{k}", job_id) for k in range(n + 1)
            ])  # fmt: skip
        for tenant in HOSTILE_TENANTS:
            backend.write_executions(tenant, [make_exec(tenant, "x", HOSTILE_IDS[0])])
        result = backend.job_totals("acme", HOSTILE_IDS)
        assert [t.runs for t in result] == list(range(1, len(HOSTILE_IDS) + 1))
        for tenant in HOSTILE_TENANTS:
            assert backend.job_totals(tenant, HOSTILE_IDS)[0].runs == 1
            assert [t.runs for t in backend.job_totals(tenant, HOSTILE_IDS[1:])] == [0] * (
                len(HOSTILE_IDS) - 1
            )
        assert backend.job_totals("other", HOSTILE_IDS[:1])[0].runs == 0

    def test_returned_totals_are_copies(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", "e1", "a")])
        first = backend.job_totals("acme", ["a"])[0]
        first.runs = 99
        first.buckets[0] = 99
        again = backend.job_totals("acme", ["a"])[0]
        assert again.runs == 1 and again.buckets[0] == 0
