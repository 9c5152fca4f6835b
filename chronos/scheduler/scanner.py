"""One scanner tick, as plain functions of the backend and ``now``.

A tick does three small steps, each of which returns how much work it did:

1. ``fire_due``: every job whose next fire time has come is claimed (atomically, so that
   however many scanners run, one fires each ``(job, instant)``), its trigger queued for the
   runners, and its next fire time planned. An instant older than the catch-up window (the
   scanner was down) is recorded as ``missed`` instead of firing late.
2. ``settle_deadlines``: a fired trigger with no execution started by the end of the job's
   grace is recorded as a ``missed`` execution and withdrawn from the runners' queue.
3. ``expire_running``: a ``running`` execution past its job's max runtime gets the final status
   ``timeout``.

Every decision is an idempotent write (deterministic trigger and execution ids, compare-and-
set on the fire time, running-to-final updates that count once), so a step interrupted by a
crash or an outage is simply done again by the next tick, by this scanner or another. One bad
job never stops the others: its error is logged and the tick goes on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Literal

from chronos import cron
from chronos.backends.base import Backend
from chronos.errors import BackendUnavailable
from chronos.models import Event, Execution, Job, Trigger, replace
from chronos.timeutil import to_iso

log = logging.getLogger(__name__)

Decision = Literal["fire", "missed", "drop"]


@dataclass(frozen=True, slots=True)
class ScanSettings:
    #: A due instant older than this when the scanner sees it is recorded as missed.
    catch_up_ms: int = 5 * 60 * 1000
    #: Grace of jobs that set none: how long after its instant a run may start.
    default_grace_ms: int = 60 * 1000
    #: Most items each step handles per tick; the rest waits for the next tick.
    batch: int = 1000
    #: How long a claim on ``(job, instant)`` holds off other scanners. Claims only spare
    #: racing scanners duplicate work (firing stays exactly-once without them: trigger ids
    #: are deterministic, queueing one twice is a no-op, advancing is compare-and-set), so
    #: they need to outlive one tick, not more: a scanner killed between its claim and the
    #: firing delays that instant by this long, which must stay well inside a job's grace.
    claim_ttl_ms: int = 5 * 1000


@dataclass(slots=True)
class TickReport:
    fired: int = 0
    missed: int = 0
    dropped: int = 0
    settled: int = 0
    timed_out: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"fired": self.fired, "missed": self.missed, "dropped": self.dropped,
                "settled": self.settled, "timedOut": self.timed_out,
                "errors": len(self.errors)}  # fmt: skip


def trigger_id_for(tenant_id: str, job_id: str, instant: int) -> str:
    """The id of the trigger of ``job_id`` at ``instant``: the same for every scanner."""
    digest = hashlib.sha256(f"{tenant_id}\x00{job_id}\x00{instant}".encode()).hexdigest()
    return f"trg_{digest[:24]}"


def decide(job: Job | None, instant: int, now: int, catch_up_ms: int) -> Decision:
    """What to do with a due ``(job, instant)``."""
    if job is None or not job.enabled:
        return "drop"
    if now - instant > catch_up_ms:
        return "missed"
    return "fire"


def grace_ms(job: Job, settings: ScanSettings) -> int:
    if job.grace_seconds is not None:
        return job.grace_seconds * 1000
    return settings.default_grace_ms


def next_after(job: Job, instant: int) -> int | None:
    """The job's next fire time after ``instant``; a job whose schedule cannot be evaluated
    is taken off the schedule (its error is logged) rather than stopping the scanner."""
    try:
        return cron.plan(job, instant)
    except ValueError as exc:
        log.error("job %r of tenant %r cannot be scheduled: %s", job.id, job.tenant_id, exc)
        return None


def missed_execution(tenant_id: str, job: Job | None, job_id: str, trigger_id: str,
                     instant: int, decided_at: int, why: str) -> Execution:  # fmt: skip
    return Execution(
        tenant_id=tenant_id, exec_id=f"missed:{trigger_id}", job_id=job_id, status="missed",
        started_at=instant, finished_at=decided_at, trigger_id=trigger_id,
        job_version=job.version if job else None, error_type="Missed", error_message=why,
        received_at=decided_at,
    )  # fmt: skip


def fire_due(backend: Backend, now: int, owner: str, settings: ScanSettings,
             report: TickReport) -> int:  # fmt: skip
    due = backend.due_fires(now, settings.batch)
    if not due:
        return 0
    won = backend.claim_triggers([(t, j, when) for t, j, when in due], owner,
                                 settings.claim_ttl_ms)  # fmt: skip
    mine = [item for item, ok in zip(due, won) if ok]
    jobs = backend.get_jobs([(t, j) for t, j, _ in mine])
    triggers: list[Trigger] = []
    advances: list[tuple[str, str, int, int | None]] = []
    for (tenant_id, job_id, when), job in zip(mine, jobs):
        try:
            decision = decide(job, when, now, settings.catch_up_ms)
            if decision == "drop":
                report.dropped += 1
                advances.append((tenant_id, job_id, when, None))
                continue
            assert job is not None
            trigger_id = trigger_id_for(tenant_id, job_id, when)
            if decision == "fire":
                triggers.append(Trigger(
                    tenant_id=tenant_id, job_id=job_id, trigger_id=trigger_id,
                    scheduled_for=when, fired_at=now, deadline=when + grace_ms(job, settings),
                ))  # fmt: skip
            else:
                why = (f"Chronos was not running at {to_iso(when)}; the instant is older "
                       f"than the catch-up window of {settings.catch_up_ms // 1000} s")  # fmt: skip
                backend.write_executions(tenant_id, [missed_execution(
                    tenant_id, job, job_id, trigger_id, when, now, why)])  # fmt: skip
                report.missed += 1
            advances.append((tenant_id, job_id, when, next_after(job, when)))
        except BackendUnavailable:
            raise
        except Exception as exc:  # one bad job never stops the tick
            log.exception("scheduling job %r of tenant %r failed", job_id, tenant_id)
            report.errors.append(f"{tenant_id}/{job_id}: {exc}")
    backend.enqueue_triggers(triggers)  # before advancing: a crash in between only refires
    backend.advance_fires(advances)
    report.fired += len(triggers)
    backend.publish_many([
        Event(t.tenant_id, "trigger", {"jobId": t.job_id, "triggerId": t.trigger_id,
                                       "scheduledFor": t.scheduled_for, "status": "scheduled"})
        for t in triggers
    ])  # fmt: skip
    return len(due)


def settle_deadlines(backend: Backend, now: int, settings: ScanSettings,
                     report: TickReport) -> int:  # fmt: skip
    from chronos.models import ExecutionQuery

    due = backend.due_deadlines(now, settings.batch)
    for trigger in due:
        try:
            started = backend.search_executions(
                trigger.tenant_id, ExecutionQuery(trigger_id=trigger.trigger_id, limit=1)
            ).items
            if started:
                backend.settle_trigger(trigger, missed=False)
                report.settled += 1
                continue
            grace_s = (trigger.deadline - trigger.scheduled_for) // 1000
            why = f"no run started within the grace of {grace_s} s"
            job = backend.get_job(trigger.tenant_id, trigger.job_id)
            backend.write_executions(trigger.tenant_id, [missed_execution(
                trigger.tenant_id, job, trigger.job_id, trigger.trigger_id,
                trigger.scheduled_for, now, why)])  # fmt: skip
            backend.settle_trigger(trigger, missed=True)
            report.missed += 1
        except BackendUnavailable:
            raise
        except Exception as exc:
            log.exception("settling trigger %r failed", trigger.trigger_id)
            report.errors.append(f"{trigger.tenant_id}/{trigger.trigger_id}: {exc}")
    return len(due)


def expire_running(backend: Backend, now: int, settings: ScanSettings,
                   report: TickReport) -> int:  # fmt: skip
    due = backend.due_timeouts(now, settings.batch)
    for tenant_id, exec_id, deadline in due:
        try:
            running = backend.get_execution(tenant_id, exec_id)
            if running is None:  # expired a moment ago; due_timeouts drops it next time
                continue
            limit_s = (deadline - running.started_at) // 1000
            final = replace(
                running, status="timeout", finished_at=deadline,
                duration_ms=deadline - running.started_at, error_type="Timeout",
                error_message=f"still running after the job's max runtime of {limit_s} s",
                received_at=now,
            )  # fmt: skip
            outcome = backend.write_executions(tenant_id, [final])[0]
            if outcome == "updated":
                report.timed_out += 1
        except BackendUnavailable:
            raise
        except Exception as exc:
            log.exception("timing out execution %r failed", exec_id)
            report.errors.append(f"{tenant_id}/{exec_id}: {exc}")
    return len(due)


def tick(backend: Backend, now: int, owner: str, settings: ScanSettings) -> TickReport:
    """One pass of the scanner; ``BackendUnavailable`` leaves it for the next tick."""
    report = TickReport()
    fire_due(backend, now, owner, settings, report)
    settle_deadlines(backend, now, settings, report)
    expire_running(backend, now, settings, report)
    return report
