"""A job's health, derived from its definition and last-run state. Plain Python.

=========== =====================================================================
``paused``  the job is disabled
``missed``  its latest run was recorded missed (no run started within the grace,
            or Chronos was down past the catch-up window)
``failing`` its latest run failed or timed out
``late``    it was triggered and no run carrying that trigger has started for
            ``LATE_AFTER_MS`` (its grace has not run out yet: then it is missed)
``running`` a run carrying its latest trigger has started and not finished
``ok``      none of the above
=========== =====================================================================
"""

from __future__ import annotations

from typing import Literal

from chronos.models import Job

Health = Literal["paused", "missed", "failing", "late", "running", "ok"]
HEALTHS: tuple[str, ...] = ("paused", "missed", "failing", "late", "running", "ok")

#: A trigger not picked up by a runner within this time makes its job late.
LATE_AFTER_MS = 10_000


def job_health(job: Job, now: int) -> Health:
    if not job.enabled:
        return "paused"
    state = job.state
    fired = state.last_fired_at
    newest_run = state.last_started_at
    if fired is not None and (newest_run is None or newest_run < fired - LATE_AFTER_MS):
        # the latest trigger is newer than the latest finished run
        if state.last_trigger_started_at is not None:
            return "running"
        if now - fired >= LATE_AFTER_MS:
            return "late"
    if state.last_status == "missed":
        return "missed"
    if state.last_status in ("failed", "timeout"):
        return "failing"
    return "ok"
