"""Per-tenant retention: the settings, their bounds, and the rules every backend applies.

A tenant may set its own

- ``execution_days``: execution records are kept this many days after their run started
  (``0``: until the per-job cap removes them);
- ``max_executions_per_job``: each job keeps at most this many records, its newest by
  ``started_at`` (``0``: no cap);
- ``metrics_days``: the hourly and daily metric compactions and the daily duration sketches are
  kept this many days.

A setting the tenant has not set follows the installation's default (``CHRONOS_*``), so
changing a default later moves every tenant that kept it. Plain Python: no Flask, no driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chronos.errors import ValidationError

DAY_MS = 24 * 3600 * 1000
#: The default cap. A job running every minute makes 43,200 runs in 30 days: 10,000 keeps its
#: last week, and the whole retention of anything running every 5 minutes or less often, while
#: a runaway job (a retry loop reporting thousands of runs an hour) cannot fill the store.
DEFAULT_MAX_EXECUTIONS_PER_JOB = 10_000
#: Inclusive bounds of each setting. Metrics keep at least the 8 days that the per-minute
#: series and hourly sketches always cover, so that a range within them answers the same at
#: every resolution. A cap costs about 130 bytes of index per record (see README).
BOUNDS: dict[str, tuple[int, int]] = {
    "execution_days": (0, 3650),
    "max_executions_per_job": (0, 1_000_000),
    "metrics_days": (8, 3650),
}
#: Most records one write removes beyond its job's cap: a lowered cap converges over the next
#: writes and sweeps instead of in one long, blocking step.
TRIM_PER_WRITE = 3
#: A record that arrives after its retention ended is still kept this long (or the retention,
#: if shorter), so that a retried delivery of it is recognised as a duplicate.
LATE_KEEP_MS = DAY_MS


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """A tenant's own settings; ``None`` follows the installation's default."""

    execution_days: int | None = None
    max_executions_per_job: int | None = None
    metrics_days: int | None = None

    def check(self) -> RetentionSettings:
        """Itself, or ``ValidationError`` naming every value out of its bounds."""
        problems: dict[str, list[str]] = {}
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems[name] = [f"must be a whole number from {low} to {high}"]
        if problems:
            raise ValidationError("retention settings out of bounds", details=problems)
        return self

    def changed(self, **changes: Any) -> RetentionSettings:
        """A copy with ``changes`` applied (a ``None`` value returns that one to its default)."""
        return dataclasses.replace(self, **changes)

    def over(self, defaults: RetentionSettings) -> RetentionSettings:
        """Every field filled: this tenant's value, else the default's."""
        return RetentionSettings(**{
            name: default if (own := getattr(self, name)) is None else own
            for name, default in dataclasses.asdict(defaults).items()
        })  # fmt: skip


def defaults_from_config(config: Mapping[str, Any]) -> RetentionSettings:
    """The installation's defaults, from the ``CHRONOS_*`` settings."""
    return RetentionSettings(
        execution_days=int(config["CHRONOS_EXECUTION_RETENTION_DAYS"]),
        max_executions_per_job=int(config["CHRONOS_MAX_EXECUTIONS_PER_JOB"]),
        metrics_days=int(config["CHRONOS_METRICS_RETENTION_DAYS"]),
    )


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What a backend applies to one tenant: its settings over the defaults, in milliseconds."""

    #: How long a record is kept after its run started; ``None`` keeps it.
    execution_ttl_ms: int | None
    #: Records kept per job, newest ``started_at`` first; 0: no cap.
    max_executions_per_job: int
    #: How long hourly/daily metric compactions and daily sketches are kept.
    metrics_retention_ms: int

    def under(self, settings: RetentionSettings) -> RetentionPolicy:
        """This policy (the defaults) with the tenant's own ``settings`` applied."""
        ttl = self.execution_ttl_ms
        if settings.execution_days is not None:
            ttl = settings.execution_days * DAY_MS or None
        cap = settings.max_executions_per_job
        metrics = settings.metrics_days
        return RetentionPolicy(
            execution_ttl_ms=ttl,
            max_executions_per_job=self.max_executions_per_job if cap is None else cap,
            metrics_retention_ms=self.metrics_retention_ms if metrics is None else metrics * DAY_MS,
        )

    def late_keep_ms(self) -> int:
        """How long past its retention a record that arrived late is kept (see ``expires_at``)."""
        return min(self.execution_ttl_ms or 0, LATE_KEEP_MS)

    def expires_at(self, started_at: int, now: int) -> int | None:
        """When a record written at ``now`` expires: ``execution_ttl_ms`` after its run started,
        but no sooner than ``late_keep_ms`` from now (a late record still deduplicates a retried
        delivery) and no later than ``execution_ttl_ms`` from now (a client clock running ahead
        cannot keep it longer). ``None``: it does not expire."""
        ttl = self.execution_ttl_ms
        if ttl is None:
            return None
        return min(max(started_at + ttl, now + self.late_keep_ms()), now + ttl)

    def cutoff(self, now: int) -> int | None:
        """Records whose run started before this are past retention (``None``: none are)."""
        return None if self.execution_ttl_ms is None else now - self.execution_ttl_ms

    def sweep_deletes(self, remaining_ms: int | None) -> bool:
        """Whether the sweep deletes a record past ``cutoff`` that has ``remaining_ms`` left to
        live (``None``: no expiry). One that arrived late keeps its short grace; one written
        under a longer or no retention goes now."""
        return remaining_ms is None or remaining_ms > self.late_keep_ms()
