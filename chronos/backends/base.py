"""The storage seam: abstract role interfaces whose docstrings are the contract.

A backend is one object implementing all of the roles below (``Backend``). Every method that
touches tenant data takes the tenant id first and never reads or writes another tenant's data;
ids are kept and compared exactly as given (no case folding, no normalisation), so ``job-1`` and
``job1`` are different jobs, and an id such as ``a|b``, ``*`` or ``{x}`` matches only itself.

Every method may raise :class:`chronos.errors.BackendUnavailable` when the store cannot be
reached; the HTTP layer turns that into a 503 with ``Retry-After``. Methods raise no driver
exceptions. Timestamps are integer epoch milliseconds (UTC). The test suite in
``tests/contract/`` is run against every implementation and is the executable form of this text.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chronos.models import (
    VERSION_KINDS,
    ApiKey,
    Delivery,
    Event,
    Execution,
    ExecutionQuery,
    Job,
    JobQuery,
    JobTotals,
    MetricBucket,
    Page,
    Trigger,
    User,
    VersionStats,
    WriteOutcome,
)
from chronos.retention import DEFAULT_MAX_EXECUTIONS_PER_JOB, RetentionPolicy, RetentionSettings

#: The counts ``MetricsStore.metric_totals`` can be asked for.
TOTAL_COUNTS: tuple[str, ...] = ("runs", "success", "failure", "duration")


def check_version_kind(by: str) -> None:
    """``ValueError`` unless ``by`` is one of ``VERSION_KINDS``."""
    if by not in VERSION_KINDS:
        raise ValueError(f"by must be one of {', '.join(VERSION_KINDS)}, not {by!r}")


def sort_versions(stats: list[VersionStats]) -> list[VersionStats]:
    """``version_stats``'s order: newest first start first, then by version."""
    return sorted(stats, key=lambda v: (-v.first_started_at, v.version or ""))


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings every backend understands; built by the app factory from its config."""

    key_prefix: str = "chronos:"
    #: How long execution records are kept; ``None`` keeps them until deleted.
    execution_ttl_ms: int | None = 30 * 24 * 3600 * 1000
    #: How long hourly/daily metric compactions and daily duration sketches are kept.
    metrics_retention_ms: int = 400 * 24 * 3600 * 1000
    #: Execution records kept per job (newest ``started_at``); 0: no cap.
    max_executions_per_job: int = DEFAULT_MAX_EXECUTIONS_PER_JOB
    connect_timeout_s: float = 5.0
    #: Longest wait for a reply: a stalled server fails requests (503) after this. Chronos's
    #: slowest commands take milliseconds, its blocking reads one second.
    socket_timeout_s: float = 5.0

    @property
    def default_retention(self) -> RetentionPolicy:
        """The retention of tenants that set none of their own."""
        return RetentionPolicy(self.execution_ttl_ms, self.max_executions_per_job,
                               self.metrics_retention_ms)  # fmt: skip


class AccountStore(abc.ABC):
    """Users, the tenants they belong to, and API keys."""

    @abc.abstractmethod
    def create_user(self, user: User) -> User:
        """Store a new user; its tenant comes into existence with its first user.

        Usernames are unique across the installation. Raises ``Conflict`` if the username is
        taken. Returns the stored user.
        """

    @abc.abstractmethod
    def get_user(self, username: str) -> User | None:
        """The user with exactly this username, or ``None``."""

    @abc.abstractmethod
    def list_users(self, tenant_id: str) -> list[User]:
        """The users of one tenant, ordered by username."""

    @abc.abstractmethod
    def list_tenants(self) -> list[str]:
        """Every tenant id that has at least one user, sorted. For operators and the scheduler."""

    @abc.abstractmethod
    def create_api_key(self, key: ApiKey) -> ApiKey:
        """Store a new API key record. Raises ``Conflict`` if ``key_id`` exists already."""

    @abc.abstractmethod
    def get_api_key(self, key_id: str) -> ApiKey | None:
        """The key record with this id (revoked ones included), in O(1), or ``None``.

        Key ids are global (they are how an incoming key is found before its tenant is known).
        """

    @abc.abstractmethod
    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's keys, revoked ones included, newest first."""

    @abc.abstractmethod
    def revoke_api_key(self, tenant_id: str, key_id: str, now: int) -> bool:
        """Mark the key revoked at ``now``. False if the tenant has no such active key."""

    @abc.abstractmethod
    def touch_api_key(self, key_id: str, now: int) -> None:
        """Record that the key was used at ``now``. Never fails for a missing key."""


class JobStore(abc.ABC):
    """Job definitions, one namespace per tenant."""

    @abc.abstractmethod
    def upsert_jobs(self, tenant_id: str, jobs: Sequence[Job], now: int) -> list[WriteOutcome]:
        """Create or replace job definitions of one tenant; one outcome per job, in order.

        Every job's ``tenant_id`` must equal ``tenant_id`` (``ValueError`` otherwise). The
        definition fields are replaced by the given ones; ``created_at``, ``seq`` and ``state``
        of an existing job are kept. A new job gets ``created_at = now`` and the next ``seq`` of
        its tenant. ``updated_at`` becomes ``now``. Outcomes are ``"created"`` or ``"updated"``.
        """

    @abc.abstractmethod
    def get_job(self, tenant_id: str, job_id: str) -> Job | None:
        """The job with exactly this id in this tenant, or ``None``."""

    def get_jobs(self, refs: Sequence[tuple[str, str]]) -> list[Job | None]:
        """``get_job`` for each ``(tenant_id, job_id)``, in one go where the backend can batch.
        For the scheduler, which works across tenants; each job still comes from its own."""
        return [self.get_job(tenant_id, job_id) for tenant_id, job_id in refs]

    def list_job_ids(self, tenant_id: str) -> list[str]:
        """The ids of all the tenant's jobs, in registration order: what paging through
        ``list_jobs`` gives, without reading the jobs where the backend can avoid it (a table
        of 500 jobs sorted by their counts needs the ids of all and the jobs of a page)."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = self.list_jobs(tenant_id, JobQuery(limit=1000, cursor=cursor))
            ids += [job.id for job in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return ids

    @abc.abstractmethod
    def list_jobs(self, tenant_id: str, query: JobQuery) -> Page[Job]:
        """The tenant's jobs matching ``query``, in registration order (``seq`` ascending).

        ``enabled`` and ``tag`` filter exactly; ``text`` matches words of the name or
        description, literally (characters with a meaning in any query language are inert).
        ``limit`` is 1..1000. Pass the returned ``next_cursor`` to get the next page; a cursor
        that was not produced by this method raises ``ValidationError``.
        """

    @abc.abstractmethod
    def set_job_enabled(self, tenant_id: str, job_id: str, enabled: bool, now: int) -> Job:
        """Enable or disable a job and return it. Raises ``NotFound``."""

    @abc.abstractmethod
    def delete_job(self, tenant_id: str, job_id: str) -> bool:
        """Delete the definition and its schedule entry. False if there was none.

        Executions and metrics of the job are kept until retention removes them.
        """


class ExecutionStore(abc.ABC):
    """Execution records: idempotent writes, lookups and search."""

    @abc.abstractmethod
    def write_executions(
        self, tenant_id: str, executions: Sequence[Execution]
    ) -> list[WriteOutcome]:
        """Store executions of one tenant idempotently; one outcome per item, in order.

        Keyed on ``(tenant_id, exec_id)``:

        - no stored record: store it, outcome ``"created"``;
        - stored ``running`` and the new status terminal: replace it, outcome ``"updated"``;
        - otherwise (same exec id again, or anything after a terminal status): store nothing,
          outcome ``"duplicate"``.

        A record's first terminal status is counted once in the metrics (at ``finished_at``,
        else ``started_at``) and in the job's totals (see ``job_totals``), its duration added
        to the percentile sketches, and the job's
        ``state`` (last finished run) advanced if the job exists and this run started no
        earlier than the recorded last run; ``last_success_at``/``last_failure_at`` only move
        forward, whatever order runs arrive in; ``running`` records leave ``state`` alone.
        Every created or updated record is published as an ``execution`` event of its tenant.
        All of one item's effects happen together or not at all; a retried batch never double
        counts. Every ``tenant_id`` must equal ``tenant_id`` (``ValueError`` otherwise).
        """

    @abc.abstractmethod
    def get_execution(self, tenant_id: str, exec_id: str) -> Execution | None:
        """The execution with exactly this id in this tenant, or ``None``."""

    @abc.abstractmethod
    def search_executions(self, tenant_id: str, query: ExecutionQuery) -> Page[Execution]:
        """The tenant's executions matching every given filter, newest ``started_at`` first.

        ``job_id``, ``status``, ``job_version``, ``host`` and ``trigger_id`` match exactly;
        ``since``/``until`` bound ``started_at`` as ``[since, until)``; ``text`` matches records
        containing every word (run of letters and digits) of it in the error type, message,
        stack, stdout or stderr, literally; a ``text`` without any word matches nothing.
        ``limit`` is 1..1000.
        Pages follow ``next_cursor``; a bad cursor raises ``ValidationError``.
        """

    @abc.abstractmethod
    def version_stats(
        self, tenant_id: str, job_id: str, by: str, since: int, until: int
    ) -> list[VersionStats]:
        """The job's stored terminal runs that started in ``[since, until)``, grouped by
        ``job_version`` (``by="job"``) or ``app_version`` (``by="app"``); runs without one (or
        with an empty one) form the group of version ``None``. Per group: runs, successes,
        failures (failed, timed out, missed), average and p95 of the reported durations
        (``None`` without any; the p95 may be approximate), first and last start. Newest
        first: by first start, descending, then by version. Records only: what retention
        removed is not counted.
        """


class MetricsStore(abc.ABC):
    """Counts and duration percentiles, bucketed by time, at a cost independent of how many
    executions are stored."""

    @abc.abstractmethod
    def metric_buckets(
        self, tenant_id: str, job_id: str | None, edges: Sequence[int]
    ) -> list[MetricBucket]:
        """Counts of terminal executions per bucket ``[edges[i], edges[i+1])``.

        ``job_id=None`` means the whole tenant. ``edges`` is strictly increasing with at least
        two items; buckets may have different lengths (months, days across DST changes).
        Buckets with nothing in them come back with zeros. Resolution is one minute.
        """

    @abc.abstractmethod
    def duration_quantiles(
        self,
        tenant_id: str,
        job_id: str | None,
        edges: Sequence[int],
        quantiles: Sequence[float],
    ) -> list[list[float | None]]:
        """Duration percentiles (ms) of terminal executions per bucket, from sketches.

        One list per bucket, one value per quantile (each in ``[0, 1]``), ``None`` where the
        bucket had no durations. Values are estimates (t-digest or exact); sketches are kept
        per hour for recent data and per day for older data, so buckets that do not start and
        end on whole hours (or, for old data, whole UTC days) are widened to them.
        """

    def metric_totals(
        self,
        tenant_id: str,
        job_ids: Sequence[str],
        start: int,
        end: int,
        counts: Sequence[str] = TOTAL_COUNTS,
    ) -> list[MetricBucket]:
        """For each job of ``job_ids``, in order, its counts over ``[start, end)``: equal to
        ``metric_buckets(tenant_id, job_id, [start, end])[0]``, in one go where the backend
        can batch (a jobs table must not cost a round trip per job). Jobs without metrics get
        zeros. ``counts`` names those the caller needs, of ``TOTAL_COUNTS`` (``duration``:
        the duration sum and count); a backend may leave the others at zero, to read less.
        ``ValueError`` unless ``start < end``."""
        if end <= start:
            raise ValueError("end must be after start")
        return [self.metric_buckets(tenant_id, job_id, [start, end])[0] for job_id in job_ids]

    @abc.abstractmethod
    def job_totals(self, tenant_id: str, job_ids: Sequence[str]) -> list[JobTotals]:
        """For each job of ``job_ids``, in order, the all-time totals of its terminal
        executions: runs, runs per status, duration sum and count, and the duration histogram
        over ``models.DURATION_BUCKETS_MS``. In one go (a scrape of a tenant's jobs must not
        cost a round trip per job).

        ``write_executions`` counts each record's first terminal status here once, with the
        same idempotency as the metrics, however long ago it ran (no retention window applies)
        and whether or not the job is registered. Totals never decrease, except that a backend
        may forget those of a job that recorded no run for ``metrics_retention_ms`` (they start
        again from zero). Jobs without runs get zeros.
        """

    def duration_quantiles_many(
        self,
        tenant_id: str,
        job_ids: Sequence[str],
        start: int,
        end: int,
        quantiles: Sequence[float],
    ) -> list[list[float | None]]:
        """For each job of ``job_ids``, in order, its duration percentiles over
        ``[start, end)``: equal to ``duration_quantiles(tenant_id, job_id, [start, end],
        quantiles)[0]``, in one go where the backend can batch. ``ValueError`` as there."""
        if end <= start:
            raise ValueError("end must be after start")
        return [
            self.duration_quantiles(tenant_id, job_id, [start, end], quantiles)[0]
            for job_id in job_ids
        ]


class Subscription(abc.ABC):
    """A live feed of events of every tenant; the realtime layer filters by tenant."""

    @abc.abstractmethod
    def get(self, timeout: float) -> Event | None:
        """The next event, waiting up to ``timeout`` seconds; ``None`` if none came."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving. Idempotent."""

    def ping(self) -> None:  # noqa: B027 - optional: in-process subscriptions have no link
        """Check the link to the store; raises ``BackendUnavailable`` if it is gone."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get(timeout=1.0)
            if event is not None:
                yield event


class EventBus(abc.ABC):
    """Publish/subscribe of live events."""

    @abc.abstractmethod
    def publish(self, event: Event) -> None:
        """Deliver the event to every current subscription (at most once each, in order)."""

    def publish_many(self, events: Sequence[Event]) -> None:
        """``publish`` each, in order, in one go where the backend can batch."""
        for event in events:
            self.publish(event)

    @abc.abstractmethod
    def subscribe(self) -> Subscription:
        """A subscription that sees every event published after this call returns."""


class SchedulerStore(abc.ABC):
    """What the cron scanner needs: a due-time index over all tenants and atomic claims."""

    @abc.abstractmethod
    def beat(self, name: str, data: dict[str, Any], ttl_ms: int) -> None:
        """Record a heartbeat (JSON-able ``data``) of a background service; it lapses after
        ``ttl_ms`` unless beaten again."""

    @abc.abstractmethod
    def last_beat(self, name: str) -> dict[str, Any] | None:
        """The latest heartbeat of ``name`` that has not lapsed, or ``None``."""

    @abc.abstractmethod
    def set_next_fire(self, tenant_id: str, job_id: str, when: int | None) -> None:
        """Record when the job next fires, or remove it from the index with ``None``."""

    @abc.abstractmethod
    def due_fires(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        """Up to ``limit`` ``(tenant_id, job_id, when)`` with ``when <= now``, earliest first.

        Costs O(log n + limit) for n indexed jobs.
        """

    def claim_triggers(
        self, items: Sequence[tuple[str, str, int]], owner: str, ttl_ms: int
    ) -> list[bool]:
        """``claim_trigger`` for each ``(tenant_id, job_id, instant)``, in one go where the
        backend can batch."""
        return [self.claim_trigger(t, j, i, owner, ttl_ms) for t, j, i in items]

    @abc.abstractmethod
    def claim_trigger(
        self, tenant_id: str, job_id: str, instant: int, owner: str, ttl_ms: int
    ) -> bool:
        """Atomically claim firing ``job_id`` at the scheduled ``instant``.

        True for exactly one caller per ``(tenant_id, job_id, instant)`` while the claim lives
        (``ttl_ms``), however many threads, processes or hosts race; False for the others.
        """


class TriggerStore(abc.ABC):
    """Trigger delivery to runners, and the deadlines the scanner enforces.

    Triggers of a ``(tenant, job)`` form a queue with consumer-group semantics: each trigger
    is handed to exactly one runner at a time, stays pending until acknowledged, and can be
    claimed by another runner once it has waited unacknowledged for a while.
    """

    @abc.abstractmethod
    def advance_fire(self, tenant_id: str, job_id: str, expected: int, new: int | None) -> bool:
        """Move the job's next fire time from ``expected`` to ``new`` (``None`` removes it),
        only if it is still ``expected``; True if this call moved it. Atomic."""

    def advance_fires(self, items: Sequence[tuple[str, str, int, int | None]]) -> list[bool]:
        """``advance_fire`` for each ``(tenant_id, job_id, expected, new)``, in one go where the
        backend can batch."""
        return [self.advance_fire(*item) for item in items]

    def enqueue_triggers(self, triggers: Sequence[Trigger]) -> None:
        """``enqueue_trigger`` for each, in one go where the backend can batch."""
        for trigger in triggers:
            self.enqueue_trigger(trigger)

    @abc.abstractmethod
    def enqueue_trigger(self, trigger: Trigger) -> None:
        """Queue a fired trigger for the job's runners, record it (see ``list_triggers``),
        note it in the job's state (``last_trigger_id``, ``last_fired_at``) if the job exists,
        and register its grace deadline (see ``due_deadlines``). Idempotent on
        ``(tenant_id, trigger_id)``: a second call changes nothing."""

    @abc.abstractmethod
    def read_triggers(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, count: int, block_ms: int
    ) -> list[Delivery]:
        """Triggers of those jobs never handed to any runner, now handed to ``runner``: up to
        ``count`` of each job, each job's oldest first (a backend may also cap the total at
        ``count``). Waits up to ``block_ms`` (0: do not wait) for one."""

    @abc.abstractmethod
    def claim_stale_triggers(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, min_idle_ms: int, count: int
    ) -> list[Delivery]:
        """Triggers of those jobs handed out at least ``min_idle_ms`` ago and not acknowledged,
        now handed to ``runner`` (their ``deliveries`` grows by one)."""

    @abc.abstractmethod
    def ack_trigger(self, delivery: Delivery, runner: str, now: int) -> bool:
        """Acknowledge a delivery: it is never handed out again, and the trigger's record
        becomes ``delivered`` (by ``runner`` at ``now``). False if it was not pending."""

    @abc.abstractmethod
    def due_deadlines(self, now: int, limit: int) -> list[Trigger]:
        """Up to ``limit`` triggers whose grace deadline is ``<= now`` and not yet settled,
        earliest first."""

    @abc.abstractmethod
    def settle_trigger(self, trigger: Trigger, missed: bool) -> None:
        """Take the trigger off the deadline list. With ``missed``, also mark its record
        ``missed`` and withdraw it from the runners' queue so that it never runs late."""

    @abc.abstractmethod
    def list_triggers(self, tenant_id: str, job_id: str, limit: int) -> list[Trigger]:
        """The job's most recent triggers, newest ``scheduled_for`` first (at most the last
        100 are kept per job)."""

    @abc.abstractmethod
    def due_timeouts(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        """Up to ``limit`` ``(tenant_id, exec_id, deadline)`` of ``running`` executions whose
        job's ``max_runtime_seconds`` has run out by ``now``, earliest first. A running
        execution is registered here when it is written and its job has a max runtime; it
        leaves when a terminal status for it is written, or when its record has expired."""


class RetentionStore(abc.ABC):
    """Per-tenant retention settings (see ``chronos.retention``) and their enforcement.

    Settings a tenant has not set follow ``BackendOptions`` (``execution_ttl_ms``,
    ``max_executions_per_job``, ``metrics_retention_ms``). ``write_executions`` applies them
    to each record it stores: the record expires at ``RetentionPolicy.expires_at``, and of the
    job's oldest ``started_at`` beyond the cap the write removes up to
    ``chronos.retention.TRIM_PER_WRITE``, except the record written itself. Removing a record
    removes it from every lookup and search; it never changes metrics.
    """

    @abc.abstractmethod
    def get_retention(self, tenant_id: str) -> RetentionSettings:
        """The tenant's own settings (all ``None`` if it has set none)."""

    @abc.abstractmethod
    def set_retention(self, tenant_id: str, settings: RetentionSettings) -> None:
        """Replace the tenant's own settings (``None`` fields follow the defaults).

        ``ValidationError`` if a value is out of ``chronos.retention.BOUNDS``. Writes in every
        process apply them within a few seconds (in this process at once). A changed metrics
        retention applies at once to the tenant's existing hourly/daily series and daily
        sketches; records over a lowered execution retention or cap go with
        ``sweep_executions``.
        """

    @abc.abstractmethod
    def sweep_executions(self, tenant_id: str, now: int, limit: int) -> int:
        """Remove the tenant's execution records that are over its retention at ``now``: each
        job's oldest ``started_at`` beyond its cap, and those that started before
        ``RetentionPolicy.cutoff(now)`` unless ``RetentionPolicy.sweep_deletes`` spares them
        (a late record in its grace), and forget records that have expired already. Also
        drops metrics older than the metrics retention where they are not expired by the
        store itself.

        Does a bounded amount of work: at most ``limit`` removals (``limit >= 1``); a call
        goes on where the last one stopped. Returns how many it removed: fewer than ``limit``
        means nothing is left over. Never scans other tenants' data.
        """


class RateLimiter(abc.ABC):
    """Fixed-window counters shared by every process of the installation."""

    @abc.abstractmethod
    def hit(self, name: str, limit: int, window_ms: int, now: int, cost: int = 1) -> int:
        """Count ``cost`` hits on ``name`` in the window of ``window_ms`` that contains ``now``.

        Returns 0 while the window has seen at most ``limit`` hits (these included), else
        the milliseconds until the window ends (always at least 1). Atomic across processes.
        ``cost=0`` counts nothing: it only tells whether the window is already over the limit.
        """


class Backend(
    AccountStore,
    JobStore,
    ExecutionStore,
    MetricsStore,
    EventBus,
    SchedulerStore,
    TriggerStore,
    RetentionStore,
    RateLimiter,
):
    """A complete storage backend. Implementations register under the ``chronos.backends``
    entry-point group, one entry per URL scheme they serve."""

    #: Short name shown in ``/healthz`` and errors.
    name: str = "backend"

    @abc.abstractmethod
    def __init__(self, url: str, options: BackendOptions) -> None:
        """Remember the settings. Must not open connections (the app is built before gunicorn
        forks); connect lazily on first use."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """A JSON-able report with at least ``{"status": "ok" | "degraded", "backend": name}``.

        Raises ``BackendUnavailable`` when the store cannot be reached.
        """

    @abc.abstractmethod
    def migrate(self) -> list[str]:
        """Bring the storage schema (indices, series) up to date; return the names of the
        migrations applied now. Safe to run concurrently and repeatedly (a no-op when current).
        """

    @abc.abstractmethod
    def schema_status(self) -> list[dict[str, Any]]:
        """Every known migration as ``{"name", "description", "applied_at" (ms or None)}``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads. The backend may not be used afterwards."""
