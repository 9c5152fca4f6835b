"""The retention rules as plain Python, and what only the memory backend can show with its
injected clock: records vanish when their tenant's retention says so, and the sweep drops
metrics older than the tenant's metrics retention."""

from __future__ import annotations

import pytest

from chronos.backends.base import BackendOptions
from chronos.backends.memory import MemoryBackend
from chronos.config import from_environ
from chronos.errors import ConfigError
from chronos.models import Execution
from chronos.retention import (
    DAY_MS,
    LATE_KEEP_MS,
    RetentionPolicy,
    RetentionSettings,
    defaults_from_config,
)

HOUR = 3_600_000
NOW = 1_780_000_000_000
DEFAULTS = RetentionPolicy(execution_ttl_ms=30 * DAY_MS, max_executions_per_job=10_000,
                           metrics_retention_ms=400 * DAY_MS)  # fmt: skip


def test_a_tenants_settings_override_the_defaults_field_by_field() -> None:
    assert DEFAULTS.under(RetentionSettings()) == DEFAULTS
    policy = DEFAULTS.under(RetentionSettings(execution_days=7, metrics_days=90))
    assert policy == RetentionPolicy(7 * DAY_MS, 10_000, 90 * DAY_MS)
    assert DEFAULTS.under(RetentionSettings(execution_days=0)).execution_ttl_ms is None
    assert DEFAULTS.under(RetentionSettings(max_executions_per_job=0)).max_executions_per_job == 0
    own = RetentionSettings(metrics_days=9)
    assert own.over(RetentionSettings(30, 10_000, 400)) == RetentionSettings(30, 10_000, 9)


@pytest.mark.parametrize("started, expected", [
    (NOW - HOUR, NOW - HOUR + 30 * DAY_MS),  # the usual case: after the run started
    (NOW - 40 * DAY_MS, NOW + LATE_KEEP_MS),  # arrived after its retention: a day's grace
    (NOW + 365 * DAY_MS, NOW + 30 * DAY_MS),  # a clock running ahead keeps it no longer
])  # fmt: skip
def test_expiry_follows_the_start_within_bounds(started: int, expected: int) -> None:
    assert DEFAULTS.expires_at(started, NOW) == expected


def test_a_short_retention_shortens_the_late_grace_and_none_keeps_records() -> None:
    hour = RetentionPolicy(HOUR, 0, 400 * DAY_MS)
    assert hour.expires_at(NOW - DAY_MS, NOW) == NOW + HOUR
    assert RetentionPolicy(None, 0, 400 * DAY_MS).expires_at(NOW - DAY_MS, NOW) is None


def test_the_sweep_spares_only_records_in_their_late_grace() -> None:
    assert DEFAULTS.cutoff(NOW) == NOW - 30 * DAY_MS
    assert DEFAULTS.sweep_deletes(None)  # written when records were kept
    assert DEFAULTS.sweep_deletes(LATE_KEEP_MS + 1)  # written under a longer retention
    assert not DEFAULTS.sweep_deletes(LATE_KEEP_MS)
    assert RetentionPolicy(None, 0, DAY_MS).cutoff(NOW) is None


def test_defaults_come_from_the_settings_and_bad_ones_are_refused() -> None:
    config = from_environ({"CHRONOS_EXECUTION_RETENTION_DAYS": "7",
                           "CHRONOS_MAX_EXECUTIONS_PER_JOB": "0"})  # fmt: skip
    assert defaults_from_config({"CHRONOS_METRICS_RETENTION_DAYS": 400, **config}) == (
        RetentionSettings(7, 0, 400)
    )
    for name, value in [("CHRONOS_MAX_EXECUTIONS_PER_JOB", "-1"),
                        ("CHRONOS_METRICS_RETENTION_DAYS", "0"),
                        ("CHRONOS_RETENTION_SWEEP_SECONDS", "-5")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            from_environ({name: value})


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def run(tenant: str, exec_id: str, started: int) -> Execution:
    return Execution(tenant_id=tenant, exec_id=exec_id, job_id="a", status="success",
                     started_at=started, finished_at=started + 1000, duration_ms=1000)  # fmt: skip


def test_memory_records_vanish_by_their_tenants_retention() -> None:
    clock = Clock(NOW)
    backend = MemoryBackend("memory://", BackendOptions(), clock=clock)
    backend.set_retention("short", RetentionSettings(execution_days=1))
    for tenant in ("short", "default"):
        backend.write_executions(tenant, [run(tenant, "e", NOW - HOUR)])
    # a day after it started, but never less than a day after it came (the late grace)
    clock.now = NOW + DAY_MS - 1
    assert backend.get_execution("short", "e") is not None
    clock.now += 1
    assert backend.get_execution("short", "e") is None
    assert backend.get_execution("default", "e") is not None
    clock.now = NOW + 30 * DAY_MS - HOUR
    assert backend.get_execution("default", "e") is None


def test_memory_sweep_drops_metrics_older_than_the_metrics_retention() -> None:
    clock = Clock(NOW)
    backend = MemoryBackend("memory://", BackendOptions(), clock=clock)
    for tenant in ("short", "default"):
        backend.write_executions(tenant, [run(tenant, "old", NOW - 20 * DAY_MS),
                                          run(tenant, "new", NOW - HOUR)])  # fmt: skip
    backend.set_retention("short", RetentionSettings(metrics_days=10))
    backend.sweep_executions("short", NOW, 100)
    edges = [NOW - 30 * DAY_MS, NOW - 2 * DAY_MS, NOW]
    assert [b.runs for b in backend.metric_buckets("short", "a", edges)] == [0, 1]
    assert [b.runs for b in backend.metric_buckets("short", None, edges)] == [0, 1]
    assert [b.runs for b in backend.metric_buckets("default", "a", edges)] == [1, 1]
    assert backend.duration_quantiles("short", "a", edges, [0.5]) == [[None], [1000.0]]
