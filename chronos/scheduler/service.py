"""Running the scanner: APScheduler ticks it on an interval, in its own process
(``chronos scheduler``) or in a background thread.

Several scanners may run at once (more processes, more hosts): claims make each
``(job, instant)`` fire once, so extra scanners only add redundancy. Each tick leaves a
heartbeat in the backend that ``/healthz`` reports. With a ``sweep_interval_s``, one of the
scanners also sweeps retention once per interval (``chronos.scheduler.retention``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from chronos.backends.base import Backend
from chronos.errors import BackendUnavailable
from chronos.scheduler.retention import SweepReport, elected, sweep_retention
from chronos.scheduler.scanner import ScanSettings, TickReport, tick
from chronos.timeutil import now_ms

log = logging.getLogger(__name__)

HEARTBEAT = "scanner"


class ScannerService:
    """Ticks the scanner every ``interval_s`` seconds; never lets an error stop it."""

    def __init__(self, backend: Callable[[], Backend], settings: ScanSettings,
                 interval_s: float = 0.5, clock: Callable[[], int] = now_ms,
                 sweep_interval_s: float = 0) -> None:  # fmt: skip
        self._backend = backend
        self.settings = settings
        self.interval_s = interval_s
        #: How often a retention sweep runs (by one of the scanners); 0: never.
        self.sweep_interval_s = sweep_interval_s
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.outage_since: float | None = None
        self._scheduler: BaseScheduler | None = None

    def tick_once(self) -> TickReport | None:
        started = time.perf_counter()
        now = self.clock()
        try:
            backend = self._backend()
            report = tick(backend, now, self.owner, self.settings)
            took_ms = round((time.perf_counter() - started) * 1000, 2)
            backend.beat(HEARTBEAT, {"at": now, "owner": self.owner, "tookMs": took_ms,
                                     **report.as_dict()}, ttl_ms=60_000)  # fmt: skip
        except BackendUnavailable as exc:
            if self.outage_since is None:
                self.outage_since = time.monotonic()
                log.warning("scanner: backend unavailable (%s); retrying every tick", exc)
            return None
        except Exception:
            log.exception("scanner tick failed; the next tick retries")
            return None
        if self.outage_since is not None:
            log.warning("scanner: backend back after %.1f s", time.monotonic() - self.outage_since)
            self.outage_since = None
        if report.fired or report.missed or report.timed_out or report.errors:
            log.info("scanner tick: %s", report.as_dict())
        return report

    def sweep_once(self) -> SweepReport | None:
        """Sweep retention if this scanner wins the current interval; ``None`` if it did not
        (or the backend was down: the next interval retries)."""
        now = self.clock()
        try:
            backend = self._backend()
            if not elected(backend, now, int(self.sweep_interval_s * 1000)):
                return None
            report = sweep_retention(backend, now)
        except BackendUnavailable as exc:
            log.warning("retention sweep: backend unavailable (%s); next interval retries", exc)
            return None
        except Exception:
            log.exception("retention sweep failed; the next interval retries")
            return None
        if report.removed or report.errors:
            log.info("retention sweep: %s", report.as_dict())
        return report

    def _schedule(self, scheduler: BaseScheduler) -> BaseScheduler:
        # APScheduler logs every run at INFO, and a skipped overlapping tick (by design:
        # max_instances=1) as a warning; the scanner logs what matters itself.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        scheduler.add_job(self.tick_once, IntervalTrigger(seconds=self.interval_s),
                          id="chronos-scan", max_instances=1, coalesce=True,
                          misfire_grace_time=None)  # fmt: skip
        if self.sweep_interval_s > 0:
            scheduler.add_job(self.sweep_once, IntervalTrigger(seconds=self.sweep_interval_s),
                              id="chronos-retention", max_instances=1, coalesce=True,
                              misfire_grace_time=None)  # fmt: skip
        return scheduler

    def run_forever(self) -> None:
        """Block, ticking, until interrupted (``chronos scheduler``)."""
        log.info("scanner %s ticking every %.2f s", self.owner, self.interval_s)
        self._scheduler = self._schedule(BlockingScheduler(timezone="UTC"))
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            self._scheduler.start()

    def start_background(self) -> None:
        self._scheduler = self._schedule(BackgroundScheduler(timezone="UTC", daemon=True))
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
