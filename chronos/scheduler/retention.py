"""The retention sweep: the scanner's periodic step that removes execution records over their
tenant's retention (beyond a lowered per-job cap, or started before a shortened retention
period), and the index entries of records that expired by themselves.

Writes already expire each record and trim its job a few records at a time; the sweep makes a
lowered setting converge without waiting for writes, a bounded amount of work per tenant per
pass so that one tenant's backlog never holds up the others (``chronos retention-sweep`` runs
it to the end at once). Of several scanners, one sweeps per interval: the first to count a hit
in the interval's window (a shared, atomic counter) wins it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chronos.backends.base import Backend
from chronos.errors import BackendUnavailable

log = logging.getLogger(__name__)

#: The shared counter that elects the sweeping scanner of an interval.
ELECTION = "retention-sweep"
#: Records one ``sweep_executions`` call removes at most (a few hundred milliseconds of work).
STEP = 5_000


@dataclass(slots=True)
class SweepReport:
    removed: int = 0
    tenants: int = 0
    #: Tenants with more left over than one pass removes; the next pass goes on.
    unfinished: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"removed": self.removed, "tenants": self.tenants,
                "unfinished": len(self.unfinished), "errors": len(self.errors)}  # fmt: skip


def elected(backend: Backend, now: int, interval_ms: int) -> bool:
    """Whether this caller is the one to sweep in the interval holding ``now``."""
    return backend.hit(ELECTION, 1, interval_ms, now) == 0


def sweep_tenant(
    backend: Backend, tenant_id: str, now: int, budget: int | None
) -> tuple[int, bool]:
    """Sweep one tenant in steps, up to ``budget`` removals (``None``: to the end); how many
    it removed, and whether it got to the end."""
    removed = 0
    while budget is None or removed < budget:
        step = STEP if budget is None else min(STEP, budget - removed)
        done = backend.sweep_executions(tenant_id, now, step)
        removed += done
        if done < step:
            return removed, True
    return removed, False


def sweep_retention(backend: Backend, now: int, per_tenant: int | None = 50_000) -> SweepReport:
    """One pass over every tenant; a tenant's error is logged and the pass goes on."""
    report = SweepReport()
    for tenant_id in backend.list_tenants():
        try:
            removed, finished = sweep_tenant(backend, tenant_id, now, per_tenant)
        except BackendUnavailable:
            raise
        except Exception as exc:  # one bad tenant never stops the others
            log.exception("retention sweep of tenant %r failed", tenant_id)
            report.errors.append(f"{tenant_id}: {exc}")
            continue
        report.tenants += 1
        report.removed += removed
        if not finished:
            report.unfinished.append(tenant_id)
    return report
