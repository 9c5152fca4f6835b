"""The client's outbox: queued events, batches in flight, and batches waiting in the spool.

Thread-safe and free of HTTP: the application threads ``put`` events, the client's delivery
thread ``take``s a batch, sends it however it likes, and ``finish``es it. Batches leave in the
order they were formed: spooled files first (they are older), then the queue. While a batch is
in flight nothing else is taken, so events of one run (``running``, then its terminal status)
reach the server in order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chronos_sdk.spool import Spool

Event = dict[str, Any]


class Batch:
    """Events on their way out. ``events`` is ``None`` until a spooled file is loaded."""

    __slots__ = ("events", "path")

    def __init__(self, events: list[Event] | None, path: Path | None = None) -> None:
        self.events = events
        self.path = path


class Outbox:
    """A bounded queue of events plus the batches formed from it.

    When the queue is full the oldest events move to the spool, or without one are dropped;
    ``on_drop(n, why)`` is told about every event given up.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        flush_interval: float,
        max_queue: int,
        spool: Spool | None,
        on_drop: Callable[[int, str], None],
        on_error: Callable[[str], None],
    ) -> None:
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.spool = spool
        self.on_drop = on_drop
        self.on_error = on_error
        self.reset()
        if spool is not None:
            try:
                self.spooled.extend(spool.pending())
            except OSError as exc:
                on_error(f"cannot list the spool: {type(exc).__name__}: {exc}")

    def reset(self) -> None:
        """Start empty, with fresh (unheld) locks; also used in a forked child."""
        self.cond = threading.Condition()
        self.queue: deque[Event] = deque()
        self.first_queued_at: float | None = None
        self.inflight: list[Batch] = []
        self.spooled: deque[Path] = deque()
        self.flush_waiters = 0
        self.stopping = False

    # -- producers ---------------------------------------------------------------------------

    def put(self, event: Event) -> None:
        """Queue an event, making room first if the queue is full. Never blocks for long."""
        overflow: list[Event] = []
        with self.cond:
            if len(self.queue) >= self.max_queue:
                if self.spool is not None:
                    n = min(self.batch_size, len(self.queue))
                    overflow = [self.queue.popleft() for _ in range(n)]
                else:
                    self.queue.popleft()
                    self.on_drop(1, f"queue full (max_queue={self.max_queue}), dropping the oldest")
            self.queue.append(event)
            # Wake the delivery thread when it has something new to do: start the flush_interval
            # clock of a queue that was empty (it waits without a timeout then), send a full
            # batch, or serve a flush that is waiting.
            first = self.first_queued_at is None
            if first:
                self.first_queued_at = time.monotonic()
            if first or len(self.queue) >= self.batch_size or self.flush_waiters:
                self.cond.notify_all()
        if overflow:
            self.to_spool(overflow)

    def to_spool(self, events: list[Event]) -> None:
        """Write events to the spool and line the file up for delivery."""
        try:
            assert self.spool is not None
            path = self.spool.write(events)
        except Exception as exc:
            self.on_drop(len(events), f"spool write failed ({type(exc).__name__}: {exc})")
            return
        with self.cond:
            self.spooled.append(path)
            self.cond.notify_all()

    def spill(self) -> None:
        """Move every queued event to the spool (the server is down: let a crash keep them)."""
        if self.spool is None:
            return
        with self.cond:
            events = list(self.queue)
            self.queue.clear()
            self.first_queued_at = None
        for i in range(0, len(events), self.batch_size):
            self.to_spool(events[i : i + self.batch_size])

    def pending(self) -> bool:
        with self.cond:
            return bool(self.queue or self.inflight or self.spooled)

    def wait_empty(self, timeout: float | None) -> bool:
        """Ask for immediate sending and wait until nothing is pending; ``False`` on timeout."""
        with self.cond:
            self.flush_waiters += 1
            self.cond.notify_all()
            try:
                return self.cond.wait_for(lambda: not self.pending(), timeout)
            finally:
                self.flush_waiters -= 1

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def save_leftovers(self) -> None:
        """After stop: spool what was not delivered, or report it dropped."""
        with self.cond:
            unspooled = [b for b in self.inflight if b.path is None and b.events]
            queued = list(self.queue)
            self.queue.clear()
            self.first_queued_at = None
        size = self.batch_size
        chunks = [b.events or [] for b in unspooled]
        chunks += [queued[i : i + size] for i in range(0, len(queued), size)]
        lost = 0
        for i, events in enumerate(chunks):
            try:
                if self.spool is None:
                    raise OSError("no spool_dir")
                path = self.spool.write(events)
                if i < len(unspooled):
                    unspooled[i].path = path
            except OSError:
                lost += len(events)
        if lost:
            self.on_drop(lost, "not delivered before close")

    # -- the delivery thread -----------------------------------------------------------------

    def take(self) -> Batch | None:
        """Wait until a batch is due and return it, now in flight; ``None`` once stopped.

        A batch is due when the queue holds ``batch_size`` events, when its oldest event has
        waited ``flush_interval``, or when someone flushes.
        """
        with self.cond:
            while True:
                if self.stopping:
                    return None
                if self.inflight:
                    return self.inflight[0]
                if self.spooled:
                    self.inflight.append(Batch(None, self.spooled.popleft()))
                    continue
                if not self.queue:
                    self.cond.wait()
                    continue
                now = time.monotonic()
                due = (self.first_queued_at or now) + self.flush_interval
                if len(self.queue) >= self.batch_size or self.flush_waiters or now >= due:
                    n = min(self.batch_size, len(self.queue))
                    self.inflight.append(Batch([self.queue.popleft() for _ in range(n)]))
                    if not self.queue:
                        self.first_queued_at = None
                    continue
                self.cond.wait(due - now)

    def load(self, batch: Batch) -> bool:
        """Read a spooled batch's events; ``False`` if it is gone or unreadable."""
        try:
            assert self.spool is not None and batch.path is not None
            batch.events = self.spool.read(batch.path)
        except Exception as exc:
            self.on_error(f"{type(exc).__name__}: {exc}")
            return False
        return batch.events is not None

    def keep(self, batch: Batch) -> None:
        """Make sure a batch that failed once is on disk (when there is a spool)."""
        if self.spool is None or batch.path is not None or self.stopping:
            return
        try:
            batch.path = self.spool.write(batch.events or [])
        except OSError as exc:
            self.on_error(f"spool write failed: {type(exc).__name__}: {exc}")

    def split(self, batch: Batch) -> None:
        """Replace an in-flight batch by its two halves (spooled too if it was)."""
        events = batch.events or []
        mid = len(events) // 2
        halves = [Batch(events[:mid]), Batch(events[mid:])]
        if batch.path is not None:
            for half in halves:
                self.keep(half)
        self.finish(batch, halves)

    def finish(self, batch: Batch, replace: list[Batch] | None = None) -> None:
        """Take a batch out of flight; its file goes first, so a flush that returns sees it gone."""
        path = batch.path
        if path is not None and self.spool is not None:
            try:
                self.spool.remove(path)
            except OSError as exc:
                self.on_error(f"could not delete spool file: {type(exc).__name__}: {exc}")
        with self.cond:
            self.inflight.remove(batch)
            self.inflight[0:0] = replace or []
            self.cond.notify_all()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped meanwhile; ``True`` if stopped."""
        with self.cond:
            return self.cond.wait_for(lambda: self.stopping, seconds)
