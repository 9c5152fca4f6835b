"""The scanner's decisions, tick by tick, on the real Redis Stack with an injected ``now``."""

from __future__ import annotations

import logging

import pytest

from chronos.backends.redis_stack import RedisStackBackend
from chronos.models import Execution, ExecutionQuery, Job
from chronos.scheduler.planning import first_fire
from chronos.scheduler.scanner import ScanSettings, decide, tick, trigger_id_for
from chronos.timeutil import now_ms

MINUTE = 60_000
SETTINGS = ScanSettings(catch_up_ms=5 * MINUTE, default_grace_ms=MINUTE)


def register(backend: RedisStackBackend, job: Job, now: int) -> None:
    backend.upsert_jobs(job.tenant_id, [job], now)
    backend.set_next_fire(job.tenant_id, job.id, first_fire(job, now))


def fired(backend: RedisStackBackend, tenant: str, job_id: str) -> list[int]:
    return sorted(t.scheduled_for for t in backend.list_triggers(tenant, job_id, 100))


@pytest.fixture
def now() -> int:
    # Whole minutes, a little in the past: recent enough for the metrics' retention.
    return (now_ms() // MINUTE - 30) * MINUTE


def test_decide() -> None:
    job = Job("t", "j")
    assert decide(None, 0, 0, 1) == "drop"
    assert decide(Job("t", "j", enabled=False), 0, 0, 1) == "drop"
    assert decide(job, 1000, 1000 + 5, 10) == "fire"
    assert decide(job, 1000, 1000 + 11, 10) == "missed"


def test_recurring_job_fires_each_instant_once(redis_backend, now) -> None:
    job = Job("acme", "job:every-minute", schedule="* * * * *")
    register(redis_backend, job, now - 1)
    for step in range(3):  # three minutes of ticks, several ticks a minute
        for second in (0, 20, 40):
            tick(redis_backend, now + step * MINUTE + second * 1000, "s1", SETTINGS)
    assert fired(redis_backend, "acme", job.id) == [now, now + MINUTE, now + 2 * MINUTE]
    state = redis_backend.get_job("acme", job.id).state
    assert state.last_fired_at == now + 2 * MINUTE + 40_000 - 40_000 or state.last_fired_at


def test_instant_beyond_catch_up_is_recorded_missed(redis_backend, now) -> None:
    job = Job("acme", "j", schedule="0 * * * *")
    redis_backend.upsert_jobs("acme", [job], now)
    stale = now - 10 * MINUTE
    redis_backend.set_next_fire("acme", "j", stale)  # as if the scanner had been down
    report = tick(redis_backend, now, "s1", SETTINGS)
    assert report.missed == 1 and report.fired == 0
    missed = redis_backend.get_execution("acme", f"missed:{trigger_id_for('acme', 'j', stale)}")
    assert missed is not None and missed.status == "missed" and missed.started_at == stale
    assert "catch-up" in missed.error_message
    assert fired(redis_backend, "acme", "j") == []
    # ... and within the window it fires, late but once
    redis_backend.set_next_fire("acme", "j", now - 2 * MINUTE)
    assert tick(redis_backend, now, "s1", SETTINGS).fired == 1
    assert tick(redis_backend, now, "s2", SETTINGS).fired == 0


def test_once_job_past_run_at_fires_on_start_within_catch_up(redis_backend, now) -> None:
    job = Job("acme", "launch", run_mode="once", run_at=now - MINUTE)
    register(redis_backend, job, now)  # registered after its runAt (Chronos was down)
    assert tick(redis_backend, now, "s1", SETTINGS).fired == 1
    assert fired(redis_backend, "acme", "launch") == [now - MINUTE]
    assert tick(redis_backend, now + 10 * MINUTE, "s1", SETTINGS).fired == 0  # never again


def test_no_run_within_grace_is_missed_and_withdrawn(redis_backend, now) -> None:
    job = Job("acme", "j", schedule="* * * * *", grace_seconds=30)
    register(redis_backend, job, now - 1)
    tick(redis_backend, now, "s1", SETTINGS)
    (trigger,) = redis_backend.list_triggers("acme", "j", 10)
    assert tick(redis_backend, now + 29_000, "s1", SETTINGS).missed == 0
    report = tick(redis_backend, now + 31_000, "s1", SETTINGS)
    assert report.missed == 1
    record = redis_backend.get_execution("acme", f"missed:{trigger.trigger_id}")
    assert record is not None and record.trigger_id == trigger.trigger_id
    assert "grace of 30 s" in record.error_message
    assert redis_backend.list_triggers("acme", "j", 10)[0].status == "missed"
    # withdrawn: a runner connecting later is not handed the stale instant
    assert redis_backend.read_triggers("acme", ["j"], "late-runner", 10, 0) == []
    assert tick(redis_backend, now + 40_000, "s2", SETTINGS).missed == 0  # decided once


def test_started_run_settles_the_trigger(redis_backend, now) -> None:
    job = Job("acme", "j", schedule="* * * * *", grace_seconds=30)
    register(redis_backend, job, now - 1)
    tick(redis_backend, now, "s1", SETTINGS)
    (trigger,) = redis_backend.list_triggers("acme", "j", 10)
    redis_backend.write_executions(
        "acme",
        [
            Execution(
                "acme",
                "run-1",
                "j",
                "running",
                started_at=now + 2000,
                trigger_id=trigger.trigger_id,
            )
        ],
    )
    report = tick(redis_backend, now + 31_000, "s1", SETTINGS)
    assert report.missed == 0 and report.settled == 1
    page = redis_backend.search_executions("acme", ExecutionQuery(job_id="j", statuses=("missed",)))
    assert page.items == []


def test_running_past_max_runtime_times_out_once(redis_backend, now) -> None:
    redis_backend.upsert_jobs("acme", [Job("acme", "slow", max_runtime_seconds=60)], now)
    redis_backend.write_executions("acme", [Execution("acme", "r1", "slow", "running",
                                                      started_at=now)])  # fmt: skip
    assert tick(redis_backend, now + 59_000, "s1", SETTINGS).timed_out == 0
    assert tick(redis_backend, now + 61_000, "s1", SETTINGS).timed_out == 1
    assert tick(redis_backend, now + 62_000, "s2", SETTINGS).timed_out == 0
    record = redis_backend.get_execution("acme", "r1")
    assert record.status == "timeout" and record.finished_at == now + 60_000
    assert record.duration_ms == 60_000 and "max runtime of 60 s" in record.error_message
    # a late success report for it changes nothing: the timeout was decided
    late = Execution("acme", "r1", "slow", "success", started_at=now, finished_at=now + 90_000)
    assert redis_backend.write_executions("acme", [late]) == ["duplicate"]
    edges = [now - MINUTE, now + 5 * MINUTE]
    (bucket,) = redis_backend.metric_buckets("acme", "slow", edges)
    assert bucket.runs == 1 and bucket.failure == 1


def test_a_bad_job_never_stops_the_others(redis_backend, now, caplog) -> None:
    good = Job("acme", "good", schedule="* * * * *")
    bad = Job("acme", "bad", schedule="not a cron")  # stored bypassing validation
    register(redis_backend, good, now - 1)
    redis_backend.upsert_jobs("acme", [bad], now - 1)
    redis_backend.set_next_fire("acme", "bad", now)
    with caplog.at_level(logging.ERROR):
        report = tick(redis_backend, now, "s1", SETTINGS)
    assert fired(redis_backend, "acme", "good") == [now]
    assert report.fired == 2  # the bad one fired its due instant, then left the schedule
    assert "cannot be scheduled" in caplog.text
    assert tick(redis_backend, now + MINUTE, "s1", SETTINGS).fired == 1  # only the good one


def test_disabled_or_deleted_job_leaves_the_schedule(redis_backend, now) -> None:
    register(redis_backend, Job("acme", "off", schedule="* * * * *"), now - 1)
    register(redis_backend, Job("acme", "gone", schedule="* * * * *"), now - 1)
    redis_backend.set_job_enabled("acme", "off", False, now)
    redis_backend.delete_job("acme", "gone")
    report = tick(redis_backend, now, "s1", SETTINGS)
    assert report.fired == 0 and redis_backend.due_fires(now + 10 * MINUTE, 10) == []


def test_tenants_with_the_same_job_id_fire_separately(redis_backend, now) -> None:
    for tenant in ("a|b", "a"):
        register(redis_backend, Job(tenant, "job:daily-report", schedule="* * * * *"), now - 1)
    assert tick(redis_backend, now, "s1", SETTINGS).fired == 2
    assert redis_backend.read_triggers("a", ["job:daily-report"], "r", 10, 0)[0].tenant_id == "a"


def test_re_registering_with_a_new_schedule_replans(app, client, tenants) -> None:
    from chronos.extension import get_state

    key = tenants.key("acme", "ingest")
    backend = get_state(app).backend()

    def register_schedule(schedule: str) -> None:
        answer = client.post("/api/ingest/jobs/register", headers={"x-api-key": key},
                             json={"jobs": [{"id": "j", "schedule": schedule}]})  # fmt: skip
        assert answer.status_code == 200

    register_schedule("0 0 1 1 *")  # yearly
    horizon = now_ms() + 2 * MINUTE
    assert backend.due_fires(horizon, 10) == []
    register_schedule("* * * * *")  # now every minute: due within two minutes
    assert [(t, j) for t, j, _ in backend.due_fires(horizon, 10)] == [("acme", "j")]
    register_schedule("* * * * *")  # unchanged: the pending fire time is kept as it was
    assert len(backend.due_fires(horizon, 10)) == 1
