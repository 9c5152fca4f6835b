"""The trigger role of :class:`~chronos.backends.memory.MemoryBackend`, and its data.

The memory twin of the Redis Stack layout: each ``(tenant, job)`` has a queue of fired
triggers with consumer-group semantics (fresh entries are handed to one runner, then stay
pending until acknowledged or claimed by another runner), each trigger has a lifecycle record,
and the deadlines are sorted indices over every tenant. ``TriggerQueues`` does not lock: the
:class:`MemoryTriggers` methods call it holding the backend's lock and pass the clock's time in.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chronos.backends.base import BackendOptions, TriggerStore
from chronos.models import Delivery, Job, Trigger

#: A job's most recent triggers kept for ``list_triggers``.
RECENT_PER_JOB = 100
#: Fresh (never handed out) triggers kept per job; the oldest go first beyond this.
QUEUE_LIMIT = 10_000
#: Trigger records are kept as long as executions, and at least a week.
MIN_RECORD_TTL_MS = 7 * 24 * 3600 * 1000

Pair = tuple[str, str]


class SortedIndex:
    """Scores of ``(tenant, id)`` members kept in score order: a sorted set over all tenants."""

    def __init__(self) -> None:
        self._scores: dict[Pair, int] = {}
        self._order: list[tuple[int, str, str]] = []

    def set(self, tenant_id: str, item_id: str, score: int) -> None:
        self.remove(tenant_id, item_id)
        self._scores[(tenant_id, item_id)] = score
        bisect.insort(self._order, (score, tenant_id, item_id))

    def remove(self, tenant_id: str, item_id: str) -> bool:
        score = self._scores.pop((tenant_id, item_id), None)
        if score is None:
            return False
        del self._order[bisect.bisect_left(self._order, (score, tenant_id, item_id))]
        return True

    def due(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        """Up to ``limit`` ``(tenant_id, id, score)`` with ``score <= now``, lowest first."""
        found: list[tuple[str, str, int]] = []
        for score, tenant_id, item_id in self._order:
            if score > now or len(found) >= limit:
                break
            found.append((tenant_id, item_id, score))
        return found


@dataclass(slots=True)
class _Entry:
    """One trigger in a job's queue; ``seq`` orders entries and is the delivery's ``ref``."""

    seq: int
    trigger_id: str
    scheduled_for: int


@dataclass(slots=True)
class _Pending:
    entry: _Entry
    runner: str
    handed_at: int
    deliveries: int


@dataclass(slots=True)
class _Record:
    trigger: Trigger
    expires_at: int


class TriggerQueues:
    """Every tenant's trigger queues, records and grace deadlines."""

    def __init__(self) -> None:
        self._records: dict[Pair, _Record] = {}
        self._fresh: dict[Pair, dict[int, _Entry]] = {}
        self._pending: dict[Pair, dict[int, _Pending]] = {}
        self._recent: dict[Pair, list[tuple[int, str]]] = {}
        self._deadlines = SortedIndex()
        self._seq = 0
        self._sweep_at = 10_000

    # records -------------------------------------------------------------------------------
    def _record(self, tenant_id: str, trigger_id: str, now: int) -> _Record | None:
        record = self._records.get((tenant_id, trigger_id))
        if record is not None and record.expires_at <= now:
            del self._records[(tenant_id, trigger_id)]
            return None
        return record

    def _sweep(self, now: int) -> None:
        """Forget expired records once in a while (amortised O(1) per enqueue)."""
        if len(self._records) < self._sweep_at:
            return
        self._records = {k: r for k, r in self._records.items() if r.expires_at > now}
        self._sweep_at = max(10_000, 2 * len(self._records))

    # queueing ------------------------------------------------------------------------------
    def enqueue(self, trigger: Trigger, now: int, ttl_ms: int) -> bool:
        """Queue, record and index a new trigger; False (and nothing changes) if known."""
        tenant_id, job_id = trigger.tenant_id, trigger.job_id
        if self._record(tenant_id, trigger.trigger_id, now) is not None:
            return False
        self._sweep(now)
        self._records[(tenant_id, trigger.trigger_id)] = _Record(
            copy.deepcopy(trigger), now + max(ttl_ms, MIN_RECORD_TTL_MS)
        )
        self._seq += 1
        fresh = self._fresh.setdefault((tenant_id, job_id), {})
        fresh[self._seq] = _Entry(self._seq, trigger.trigger_id, trigger.scheduled_for)
        if len(fresh) > QUEUE_LIMIT:
            del fresh[next(iter(fresh))]
        recent = self._recent.setdefault((tenant_id, job_id), [])
        bisect.insort(recent, (trigger.scheduled_for, trigger.trigger_id))
        del recent[:-RECENT_PER_JOB]
        self._deadlines.set(tenant_id, trigger.trigger_id, trigger.deadline)
        return True

    def has_fresh(self, tenant_id: str, job_ids: Sequence[str]) -> bool:
        return any(self._fresh.get((tenant_id, job_id)) for job_id in job_ids)

    def read(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, count: int, now: int
    ) -> list[Delivery]:
        """Hand up to ``count`` fresh triggers of those jobs, oldest first, to ``runner``."""
        candidates: list[tuple[str, _Entry]] = []
        for job_id in job_ids:
            fresh = self._fresh.get((tenant_id, job_id), {})
            for n, entry in enumerate(fresh.values()):
                if n >= count:
                    break
                candidates.append((job_id, entry))
        candidates.sort(key=lambda c: c[1].seq)
        found: list[Delivery] = []
        for job_id, entry in candidates[: max(0, count)]:
            del self._fresh[(tenant_id, job_id)][entry.seq]
            pending = self._pending.setdefault((tenant_id, job_id), {})
            pending[entry.seq] = _Pending(entry, runner, now, 1)
            found.append(_delivery(tenant_id, job_id, entry, 1))
        return found

    def claim_stale(
        self,
        tenant_id: str,
        job_ids: Sequence[str],
        runner: str,
        min_idle_ms: int,
        count: int,
        now: int,
    ) -> list[Delivery]:
        """Hand pending triggers idle for ``min_idle_ms`` or more to ``runner``, oldest first."""
        stale = [
            (job_id, p)
            for job_id in job_ids
            for p in self._pending.get((tenant_id, job_id), {}).values()
            if now - p.handed_at >= min_idle_ms
        ]
        stale.sort(key=lambda s: s[1].entry.seq)
        found: list[Delivery] = []
        for job_id, p in stale[: max(0, count)]:
            p.runner, p.handed_at, p.deliveries = runner, now, p.deliveries + 1
            found.append(_delivery(tenant_id, job_id, p.entry, p.deliveries))
        return found

    def ack(self, delivery: Delivery, runner: str, now: int, clock_now: int) -> bool:
        pending = self._pending.get((delivery.tenant_id, delivery.job_id), {})
        try:
            seq = int(delivery.ref)
        except (TypeError, ValueError):
            return False
        entry = pending.get(seq)
        if entry is None or entry.entry.trigger_id != delivery.trigger_id:
            return False
        del pending[seq]
        record = self._record(delivery.tenant_id, delivery.trigger_id, clock_now)
        if record is not None:
            record.trigger.status = "delivered"
            record.trigger.runner = runner
            record.trigger.delivered_at = now
            record.trigger.deliveries = delivery.deliveries
        return True

    # deadlines -----------------------------------------------------------------------------
    def due_deadlines(self, now: int, limit: int, clock_now: int) -> list[Trigger]:
        found: list[Trigger] = []
        for tenant_id, trigger_id, _ in self._deadlines.due(now, max(0, limit)):
            record = self._record(tenant_id, trigger_id, clock_now)
            if record is None:  # expired record: nothing left to decide
                self._deadlines.remove(tenant_id, trigger_id)
            else:
                found.append(copy.deepcopy(record.trigger))
        return found

    def settle(self, trigger: Trigger, missed: bool, clock_now: int) -> None:
        tenant_id = trigger.tenant_id
        self._deadlines.remove(tenant_id, trigger.trigger_id)
        if not missed:
            return
        record = self._record(tenant_id, trigger.trigger_id, clock_now)
        if record is not None:
            record.trigger.status = "missed"
        # withdraw it, handed out or not, so that no runner ever gets it late
        key = (tenant_id, trigger.job_id)
        for queue in (self._fresh.get(key, {}), self._pending.get(key, {})):
            for seq in [s for s, e in queue.items() if _trigger_id(e) == trigger.trigger_id]:
                del queue[seq]

    def recent(self, tenant_id: str, job_id: str, limit: int, now: int) -> list[Trigger]:
        ids = [tid for _, tid in reversed(self._recent.get((tenant_id, job_id), []))]
        found: list[Trigger] = []
        for trigger_id in ids[: max(0, limit)]:
            record = self._record(tenant_id, trigger_id, now)
            if record is not None:
                found.append(copy.deepcopy(record.trigger))
        return found


class MemoryTriggers(TriggerStore):
    """Trigger delivery and deadlines, mixed into the memory backend (which sets these up)."""

    options: BackendOptions
    clock: Callable[[], int]
    _lock: threading.RLock
    #: Notified (under ``_lock``) whenever a trigger is queued; blocking reads wait on it.
    _trigger_queued: threading.Condition
    _jobs: dict[str, dict[str, Job]]
    _triggers: TriggerQueues
    #: ``(tenant_id, exec_id)`` of running executions by max-runtime deadline; the backend's
    #: execution writes maintain it.
    _timeouts: SortedIndex
    _live_execution: Callable[[str, str], object | None]

    def enqueue_trigger(self, trigger: Trigger) -> None:
        with self._lock:
            ttl = self.options.execution_ttl_ms or 0
            if not self._triggers.enqueue(trigger, self.clock(), ttl):
                return
            job = self._jobs.get(trigger.tenant_id, {}).get(trigger.job_id)
            if job is not None:
                job.state.last_trigger_id = trigger.trigger_id
                job.state.last_fired_at = trigger.fired_at
                job.state.last_trigger_started_at = None
            self._trigger_queued.notify_all()

    def read_triggers(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, count: int, block_ms: int
    ) -> list[Delivery]:
        jobs = list(dict.fromkeys(job_ids))
        if not jobs:
            return []
        give_up = time.monotonic() + max(0, block_ms) / 1000
        with self._trigger_queued:
            while True:
                found = self._triggers.read(tenant_id, jobs, runner, count, self.clock())
                left = give_up - time.monotonic()
                if found or left <= 0:
                    return found
                self._trigger_queued.wait(left)

    def claim_stale_triggers(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, min_idle_ms: int, count: int
    ) -> list[Delivery]:
        jobs = list(dict.fromkeys(job_ids))
        with self._lock:
            return self._triggers.claim_stale(
                tenant_id, jobs, runner, min_idle_ms, count, self.clock()
            )

    def ack_trigger(self, delivery: Delivery, runner: str, now: int) -> bool:
        with self._lock:
            return self._triggers.ack(delivery, runner, now, self.clock())

    def due_deadlines(self, now: int, limit: int) -> list[Trigger]:
        with self._lock:
            return self._triggers.due_deadlines(now, limit, self.clock())

    def settle_trigger(self, trigger: Trigger, missed: bool) -> None:
        with self._lock:
            self._triggers.settle(trigger, missed, self.clock())

    def list_triggers(self, tenant_id: str, job_id: str, limit: int) -> list[Trigger]:
        with self._lock:
            return self._triggers.recent(tenant_id, job_id, limit, self.clock())

    def due_timeouts(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        with self._lock:
            due = self._timeouts.due(now, max(0, limit))
            # an expired record leaves the index on the way (see ``_live_execution``)
            return [d for d in due if self._live_execution(d[0], d[1]) is not None]


def _trigger_id(item: _Entry | _Pending) -> str:
    return item.trigger_id if isinstance(item, _Entry) else item.entry.trigger_id


def _delivery(tenant_id: str, job_id: str, entry: _Entry, deliveries: int) -> Delivery:
    return Delivery(
        tenant_id=tenant_id,
        job_id=job_id,
        trigger_id=entry.trigger_id,
        scheduled_for=entry.scheduled_for,
        deliveries=deliveries,
        ref=str(entry.seq),
    )
