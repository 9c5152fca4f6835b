"""When a job's next fire time must be (re)set, after it was registered or changed."""

from __future__ import annotations

from chronos import cron
from chronos.models import Job

_SCHEDULE_FIELDS = ("schedule", "timezone", "run_mode", "run_at", "enabled")


def needs_plan(existing: Job | None, job: Job) -> bool:
    """True for a new job, or when anything that decides its fire times changed."""
    if existing is None:
        return True
    return any(getattr(existing, f) != getattr(job, f) for f in _SCHEDULE_FIELDS)


def first_fire(job: Job, now: int) -> int | None:
    """The fire time to index for a job just (re)registered at ``now``.

    A ``once`` job whose ``runAt`` has passed without ever firing is indexed at ``runAt``, so
    the scanner fires it now if that is within the catch-up window, or records it missed.
    """
    if not job.enabled:
        return None
    if (job.run_mode == "once" and job.run_at is not None and job.run_at <= now
            and job.state.last_fired_at is None):  # fmt: skip
        return job.run_at
    return cron.plan(job, now)
