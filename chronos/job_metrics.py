"""Job and scanner metrics for ``/metrics``, computed from the backend at scrape time.

Nothing here reads executions: a job's figures come from its last-run state (stored with the
job) and its all-time totals (``MetricsStore.job_totals``), so a scrape of a tenant costs
three round trips per 1000 jobs (the jobs page, their states, their totals) whatever number of
executions they have. Every job metric carries ``tenant`` and ``job`` labels;
prometheus_client escapes their values, so no id can break the exposition.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from chronos.backends.base import Backend
from chronos.health import HEALTHS, job_health
from chronos.models import DURATION_BUCKETS_MS, TERMINAL_STATUSES, Job, JobQuery, JobTotals
from chronos.scheduler.service import HEARTBEAT

#: Jobs read per page (the backend's largest page).
PAGE = 1000
LABELS = ["tenant", "job"]
STATUSES = sorted(TERMINAL_STATUSES)
#: ``le`` labels of the duration histogram, in seconds.
BUCKET_LABELS = [floatToGoString(ms / 1000) for ms in DURATION_BUCKETS_MS] + ["+Inf"]


class JobFamilies:
    """The job metric families, filled one job at a time."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.enabled = g("chronos_job_enabled", "1 if the job is enabled, else 0.", labels=LABELS)
        self.health = g("chronos_job_health", "1 for the job's current health (ok, running, "
                        "late, failing, missed, paused), 0 for the others.",
                        labels=[*LABELS, "health"])  # fmt: skip
        self.last_status = g("chronos_job_last_status", "1 for the final status of the job's "
                             "latest run, 0 for the other statuses; absent before a first run.",
                             labels=[*LABELS, "status"])  # fmt: skip
        self.last_run = g("chronos_job_last_run_timestamp_seconds",
                          "When the job's latest run finished (else started), Unix time.",
                          labels=LABELS)  # fmt: skip
        self.last_success = g("chronos_job_last_success_timestamp_seconds",
                              "When the job last succeeded, Unix time.", labels=LABELS)  # fmt: skip
        self.last_failure = g("chronos_job_last_failure_timestamp_seconds",
                              "When the job last failed, timed out or was missed, Unix time.",
                              labels=LABELS)  # fmt: skip
        self.last_duration = g("chronos_job_last_duration_seconds",
                               "How long the job's latest run took.", labels=LABELS)  # fmt: skip
        self.runs = c("chronos_job_runs", "Finished runs of the job, all time.", labels=LABELS)
        self.successes = c("chronos_job_successes", "Successful runs, all time.", labels=LABELS)
        self.failures = c("chronos_job_failures", "Runs that failed, timed out or were missed, "
                          "all time.", labels=LABELS)  # fmt: skip
        self.duration = HistogramMetricFamily("chronos_job_duration_seconds",
                                              "Durations of the job's finished runs, all time.",
                                              labels=LABELS)  # fmt: skip

    def add(self, job: Job, totals: JobTotals, now: int) -> None:
        labels = [job.tenant_id, job.id]
        state = job.state
        self.enabled.add_metric(labels, 1 if job.enabled else 0)
        current = job_health(job, now)
        for health in HEALTHS:
            self.health.add_metric([*labels, health], 1 if health == current else 0)
        if state.last_status is not None:
            for status in STATUSES:
                self.last_status.add_metric([*labels, status], 1 if status == state.last_status
                                            else 0)  # fmt: skip
        optional = (
            (self.last_run, state.last_finished_at or state.last_started_at),
            (self.last_success, state.last_success_at),
            (self.last_failure, state.last_failure_at),
            (self.last_duration, state.last_duration_ms),
        )
        for family, ms in optional:
            if ms is not None:
                family.add_metric(labels, ms / 1000)
        self.runs.add_metric(labels, totals.runs)
        self.successes.add_metric(labels, totals.success)
        self.failures.add_metric(labels, totals.failure)
        cumulative, running = [], 0
        for le, count in zip(BUCKET_LABELS, totals.buckets):
            running += count
            cumulative.append((le, running))
        self.duration.add_metric(labels, cumulative, totals.duration_sum_ms / 1000)

    def families(self) -> list[Metric]:
        return [self.enabled, self.health, self.last_status, self.last_run, self.last_success,
                self.last_failure, self.last_duration, self.runs, self.successes, self.failures,
                self.duration]  # fmt: skip


def _pages(backend: Backend, tenant: str) -> Iterator[tuple[list[Job], list[JobTotals]]]:
    cursor = None
    while True:
        page = backend.list_jobs(tenant, JobQuery(limit=PAGE, cursor=cursor))
        yield page.items, backend.job_totals(tenant, [job.id for job in page.items])
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def job_families(backend: Backend, tenants: Sequence[str], now: int) -> list[Metric]:
    """The metrics of every job of ``tenants``, as of ``now`` (epoch ms)."""
    families = JobFamilies()
    for tenant in tenants:
        for jobs, totals in _pages(backend, tenant):
            for job, job_totals in zip(jobs, totals, strict=True):
                families.add(job, job_totals, now)
    return families.families()


def scanner_families(backend: Backend, now: int) -> list[Metric]:
    """Whether the scanner ticks, and how far behind the schedule it is: ``lag`` is the age
    of the oldest scheduled instant that is due and not yet fired (0 when none is)."""
    g = GaugeMetricFamily
    beat = backend.last_beat(HEARTBEAT)
    due = backend.due_fires(now, 1)
    found: list[Metric] = [
        g("chronos_scanner_up", "1 if a scanner ticked within the last minute.",
          value=1 if beat else 0),
        g("chronos_scanner_lag_seconds", "Age of the oldest due scheduled instant not yet "
          "fired (0 when none is due).", value=max(0, now - due[0][2]) / 1000 if due else 0),
    ]  # fmt: skip
    if beat and isinstance(beat.get("at"), int | float):
        found.append(g("chronos_scanner_last_tick_timestamp_seconds",
                       "When a scanner last ticked, Unix time.",
                       value=beat["at"] / 1000))  # fmt: skip
        found.append(g("chronos_scanner_tick_duration_seconds",
                       "How long the scanner's last tick took.",
                       value=float(beat.get("tookMs", 0)) / 1000))  # fmt: skip
    return found


def backend_up(up: bool) -> list[Metric]:
    return [GaugeMetricFamily("chronos_backend_up", "1 if this scrape could read the storage "
                              "backend, else 0.", value=1 if up else 0)]  # fmt: skip
