"""The records that cross the backend seam.

Plain dataclasses, no Flask, no driver. Every timestamp is an ``int`` of milliseconds since the
Unix epoch, UTC. How a backend stores these is its own business; the HTTP layer converts them
to and from the wire format with marshmallow schemas.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

RunMode = Literal["recurring", "once"]
ExecutionStatus = Literal["running", "success", "failed", "timeout", "cancelled", "missed"]

#: Statuses that end an execution. Metrics count these and nothing else.
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"success", "failed", "timeout", "cancelled", "missed"}
)
#: Terminal statuses that count as a failure in success-rate figures.
FAILURE_STATUSES: frozenset[str] = frozenset({"failed", "timeout", "missed"})
ALL_STATUSES: frozenset[str] = TERMINAL_STATUSES | {"running"}

#: The scopes an API key can carry.
SCOPES: frozenset[str] = frozenset({"ingest", "read", "admin"})

T = TypeVar("T")


@dataclass(slots=True)
class User:
    username: str
    tenant_id: str
    password_hash: str
    is_admin: bool = False
    created_at: int = 0


@dataclass(slots=True)
class ApiKey:
    """A stored API key. The secret itself is never stored, only ``secret_hash``."""

    key_id: str
    tenant_id: str
    username: str
    secret_hash: str
    name: str = ""
    scopes: tuple[str, ...] = ("ingest",)
    created_at: int = 0
    last_used_at: int | None = None
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(slots=True)
class JobState:
    """What the latest executions of a job did; maintained by the backend on each write."""

    last_exec_id: str | None = None
    last_status: str | None = None
    last_started_at: int | None = None
    last_finished_at: int | None = None
    last_duration_ms: int | None = None
    last_success_at: int | None = None
    last_failure_at: int | None = None
    #: The scanner's most recent trigger of the job, and when a run carrying it started.
    last_trigger_id: str | None = None
    last_fired_at: int | None = None
    last_trigger_started_at: int | None = None


@dataclass(slots=True)
class Job:
    tenant_id: str
    id: str
    name: str = ""
    description: str = ""
    schedule: str = ""
    run_mode: RunMode = "recurring"
    run_at: int | None = None
    timezone: str = "UTC"
    enabled: bool = True
    tags: list[str] = field(default_factory=list)
    version: str | None = None
    grace_seconds: int | None = None
    max_runtime_seconds: int | None = None
    org_id: str | None = None
    app_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    #: Position in the tenant's registration order; assigned by the backend on first upsert.
    seq: int = 0
    state: JobState = field(default_factory=JobState)


@dataclass(slots=True)
class Execution:
    tenant_id: str
    exec_id: str
    job_id: str
    status: str
    started_at: int
    finished_at: int | None = None
    duration_ms: int | None = None
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_stack: str | None = None
    code_snippet: str | None = None
    code_language: str | None = None
    attempt: int | None = None
    trigger_id: str | None = None
    host: str | None = None
    app_version: str | None = None
    job_version: str | None = None
    sdk_version: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Fields that were cut to the size limit (``stdout``, ``stderr``, ``error_stack``).
    truncated: list[str] = field(default_factory=list)
    received_at: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def effective_duration_ms(self) -> int | None:
        """The reported duration, or finished minus started when only those are known."""
        if self.duration_ms is not None:
            return self.duration_ms
        if self.finished_at is not None and self.finished_at >= self.started_at:
            return self.finished_at - self.started_at
        return None


#: Upper bounds (ms) of the all-time duration histogram of each job (``JobTotals.buckets``);
#: one more, unbounded bucket follows. Counts are stored per bound, so changing this list
#: leaves counts already stored under a bound that is gone out of the histogram.
DURATION_BUCKETS_MS: tuple[int, ...] = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000, 3_600_000, 10_800_000, 21_600_000,
)  # fmt: skip


def duration_bucket(duration_ms: float) -> int:
    """The index of the histogram bucket holding ``duration_ms``: the first bound it does not
    exceed, or ``len(DURATION_BUCKETS_MS)`` for the unbounded last bucket."""
    return bisect.bisect_left(DURATION_BUCKETS_MS, duration_ms)


@dataclass(slots=True)
class JobTotals:
    """All-time counts of one job's terminal executions: never windowed, so they only grow
    (which is what a Prometheus counter needs)."""

    runs: int = 0
    #: Runs per terminal status.
    statuses: dict[str, int] = field(default_factory=dict)
    duration_sum_ms: float = 0.0
    duration_count: int = 0
    #: Runs per duration bucket (not cumulative): ``buckets[i]`` counts durations up to
    #: ``DURATION_BUCKETS_MS[i]`` and above the bound before it; the last one, the rest.
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))

    @property
    def success(self) -> int:
        return self.statuses.get("success", 0)

    @property
    def failure(self) -> int:
        return sum(self.statuses.get(status, 0) for status in FAILURE_STATUSES)

    def add(self, status: str, duration_ms: float | None) -> None:
        """Count one terminal run; a missing or negative duration counts in no bucket."""
        self.runs += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if duration_ms is not None and duration_ms >= 0:
            self.duration_sum_ms += duration_ms
            self.duration_count += 1
            self.buckets[duration_bucket(duration_ms)] += 1


WriteOutcome = Literal["created", "updated", "duplicate"]


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a listing. ``next_cursor`` is ``None`` on the last page."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(slots=True)
class JobQuery:
    enabled: bool | None = None
    tag: str | None = None
    #: Free text matched against name and description (literally: query syntax is inert).
    text: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(slots=True)
class ExecutionQuery:
    job_id: str | None = None
    #: Any of these statuses (none: any status).
    statuses: tuple[str, ...] = ()
    #: Free text over error type/message/stack and stdout/stderr (literally: syntax is inert).
    text: str | None = None
    #: Inclusive lower and exclusive upper bound on ``started_at``.
    since: int | None = None
    until: int | None = None
    job_version: str | None = None
    host: str | None = None
    trigger_id: str | None = None
    limit: int = 50
    cursor: str | None = None


#: What ``ExecutionStore.version_stats`` groups by: the job's version or the app's.
VERSION_KINDS: tuple[str, ...] = ("job", "app")


@dataclass(slots=True)
class VersionStats:
    """A job's terminal runs of one version (``None``: runs that reported none) in a window."""

    version: str | None
    runs: int = 0
    success: int = 0
    failure: int = 0
    duration_avg_ms: float | None = None
    duration_p95_ms: float | None = None
    first_started_at: int = 0
    last_started_at: int = 0


@dataclass(slots=True)
class MetricBucket:
    """Counts of terminal executions whose ``finished_at`` fell in ``[start, end)``."""

    start: int
    end: int
    runs: int = 0
    success: int = 0
    failure: int = 0
    duration_sum_ms: float = 0.0
    duration_count: int = 0

    @property
    def duration_avg_ms(self) -> float | None:
        return self.duration_sum_ms / self.duration_count if self.duration_count else None


TriggerStatus = Literal["scheduled", "delivered", "missed"]


@dataclass(slots=True)
class Trigger:
    """One scheduled instant of a job, fired by the scanner.

    ``status`` is ``scheduled`` when fired, ``delivered`` once a runner acknowledged it, and
    ``missed`` when no execution carrying ``trigger_id`` started within the job's grace.
    Whether it started and finished is read from the executions that carry its id.
    """

    tenant_id: str
    job_id: str
    trigger_id: str
    scheduled_for: int
    fired_at: int
    #: When the grace ends: with no execution started by then, the instant is missed.
    deadline: int
    status: str = "scheduled"
    runner: str | None = None
    delivered_at: int | None = None
    deliveries: int = 0


@dataclass(slots=True)
class Delivery:
    """A trigger handed to one runner; ``ref`` identifies it for the acknowledgement."""

    tenant_id: str
    job_id: str
    trigger_id: str
    scheduled_for: int
    deliveries: int
    ref: str


@dataclass(slots=True)
class Event:
    """A live event, always belonging to one tenant."""

    tenant_id: str
    type: str
    data: dict[str, Any]


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` with a name that reads well at call sites."""
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
