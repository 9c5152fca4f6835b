"""Scanner cost and trigger lateness with 100,000 registered jobs, measured in one run.

    .venv/bin/python bench/scheduler.py [--jobs 100000] [--due 1000] [--rounds 5] [--profile]

Starts its own Redis Stack (from the pinned wheels, on a free loopback port, no persistence),
registers ``--jobs`` jobs over ``--tenants`` tenants (``--due`` of them ``* * * * *``, the
rest yearly, months away) and measures, against that one server:

  (a) busy tick   one ``scanner.tick`` at an instant when exactly ``--due`` jobs are due: they
                  are claimed, read, queued for the runners, announced and advanced to their
                  next fire time (``report.fired`` is checked), at ``--rounds`` successive
                  minutes, then once more timed call by call;
  (b) idle tick   one ``scanner.tick`` when nothing is due, with every job registered;
  (c) steady      with the default grace (60 s, a minutely job's period), the tick that fires
                  the ``--due`` jobs also reaches their previous triggers' deadlines: timed
                  when every previous trigger has a run (settled) and when none has (missed);
  (d) lateness    a real ``ScannerService`` (interval 0.5 s, the default) in a background
                  thread while ``--late-jobs`` ``once`` jobs come due over ``--late-seconds``
                  seconds and ``--burst`` more at one instant mid-way: each trigger's
                  ``fired_at`` minus its instant, and the time its stream entry was queued
                  (the server's clock, in the entry id) minus its instant; (d') the same for
                  100 jobs due while the scanner records ``--stale`` triggers missed.

Targets: a busy tick < 100 ms, trigger lateness p99 < 1 s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_seconds, machine_busy_seconds  # noqa: E402

from chronos.backends.base import BackendOptions  # noqa: E402
from chronos.backends.redis_stack import RedisStackBackend  # noqa: E402
from chronos.embedded import RedisStackServer, answers, free_port  # noqa: E402
from chronos.models import Execution, Job, Trigger  # noqa: E402
from chronos.scheduler.planning import first_fire  # noqa: E402
from chronos.scheduler.scanner import (  # noqa: E402
    ScanSettings,
    TickReport,
    tick,
    trigger_id_for,
)
from chronos.scheduler.service import ScannerService  # noqa: E402
from chronos.timeutil import now_ms  # noqa: E402

MINUTE = 60_000
OWNER = "bench-scanner"
#: Grace long enough that no trigger of the busy rounds reaches its deadline while they run:
#: (a) measures firing, not the settling of a previous round's 1,000 deadlines.
BUSY = ScanSettings(default_grace_ms=3600 * 1000)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def far_schedule(now: int) -> str:
    """A yearly schedule whose next fire is about six months after ``now``."""
    month = datetime.fromtimestamp(now / 1000, tz=UTC).month
    return f"0 0 1 {(month + 5) % 12 + 1} *"


def register(backend: RedisStackBackend, tenants: list[str], jobs: int, due: int,
             now: int) -> tuple[int, list[tuple[str, str]], float, float]:  # fmt: skip
    """Register the jobs and index their next fire times; return T, the (tenant, job id) of
    the minutely jobs, and the seconds the upserts and the indexing took.

    ``due`` jobs are ``* * * * *`` (next fire T, the next minute), spread evenly over the
    tenants; the rest are yearly, about six months away.
    """
    far = far_schedule(now)
    every = max(1, jobs // due)
    by_tenant: dict[str, list[Job]] = defaultdict(list)
    refs: list[tuple[str, str]] = []
    for i in range(jobs):
        tenant = tenants[i % len(tenants)]
        minutely = i % every == 0 and i // every < due
        if minutely:
            refs.append((tenant, f"job-{i:06d}"))
        by_tenant[tenant].append(Job(tenant, f"job-{i:06d}", schedule="* * * * *" if minutely
                                     else far, tags=["bench"]))  # fmt: skip
    started = time.perf_counter()
    for tenant, mine in by_tenant.items():
        for start in range(0, len(mine), 1000):
            outcomes = backend.upsert_jobs(tenant, mine[start : start + 1000], now)
            assert outcomes.count("created") == len(outcomes), "the bench prefix was not empty"
    upserted = time.perf_counter() - started
    # Each schedule's first fire is the same for every job that has it: plan once per schedule.
    planned: dict[str, int | None] = {}
    started = time.perf_counter()
    for tenant, mine in by_tenant.items():
        for job in mine:
            if job.schedule not in planned:
                planned[job.schedule] = first_fire(job, now)
            backend.set_next_fire(tenant, job.id, planned[job.schedule])
    indexed = time.perf_counter() - started
    t = planned["* * * * *"]
    assert t is not None and planned[far] is not None and planned[far] > t + 60 * MINUTE
    return t, refs, upserted, indexed


class Timed:
    """The backend, with the wall time of each method call added up by name."""

    def __init__(self, backend: RedisStackBackend) -> None:
        self._backend = backend
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._backend, name)
        if not callable(target):
            return target

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return target(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        return timed


def command_stats(backend: RedisStackBackend) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as {command: (calls, microseconds)}."""
    info = backend.client().info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in info.items()}


def busy_ticks(backend: RedisStackBackend, t: int, due: int, rounds: int) -> list[float]:
    """``rounds`` ticks at T, T+1 min, ...: each must fire exactly the ``due`` minutely jobs
    (so each round also checks that the previous one advanced them by one minute)."""
    took = []
    for k in range(rounds):
        started = time.perf_counter()
        report = tick(backend, t + k * MINUTE, OWNER, BUSY)
        took.append((time.perf_counter() - started) * 1000)
        assert report.fired == due and not report.errors, report
        assert report.missed == report.dropped == report.settled == 0, report
    return took


def timed_tick(backend: RedisStackBackend, at: int, settings: ScanSettings,
               servers: bool = False) -> tuple[TickReport, float]:  # fmt: skip
    """One tick through ``Timed``: print where its time goes; return its report and ms."""
    timed = Timed(backend)
    backend.client().config_resetstat()
    started = time.perf_counter()
    report = tick(timed, at, OWNER, settings)  # type: ignore[arg-type]
    total = (time.perf_counter() - started) * 1000
    server = command_stats(backend)
    print(f"    where its {total:.1f} ms go (wall time of the backend calls, summed by method):")
    in_calls = 0.0
    for name, seconds in sorted(timed.seconds.items(), key=lambda kv: -kv[1]):
        in_calls += seconds * 1000
        if seconds >= 0.0005:
            print(f"      {name:<20} {seconds * 1000:7.1f} ms  {timed.calls[name]:>5} call(s)")
    print(f"      {'(Python in scanner)':<20} {total - in_calls:7.1f} ms  (decide, trigger ids, "
          f"cron.plan of each next fire)")  # fmt: skip
    if servers:
        busy = sorted(((usec, name, calls) for name, (calls, usec) in server.items()
                       if name not in ("config|resetstat", "info")), reverse=True)  # fmt: skip
        print("    Redis server time by command (INFO commandstats; evalsha includes the "
              "commands its scripts call, which are also listed on their own):")  # fmt: skip
        for usec, name, calls in busy[:8]:
            print(f"      {name:<20} {usec / 1000:7.1f} ms  {calls:>5} call(s)")
    return report, total


def deadline_ticks(backend: RedisStackBackend, refs: list[tuple[str, str]], at: int) -> None:
    """(c) The default grace (60 s) equals a minutely job's period, so in steady state the
    tick that fires the minutely jobs also reaches the deadlines of their previous triggers.
    Tick at ``at`` (fire), report runs started for those triggers, tick at +1 min (fire and
    settle: runs found), tick at +2 min (fire and settle: no runs, so each is missed)."""
    plain = ScanSettings()
    first = tick(backend, at, OWNER, plain)
    assert first.fired == len(refs) and not first.errors, first
    runs: dict[str, list[Execution]] = defaultdict(list)
    for tenant, job_id in refs:
        trigger = trigger_id_for(tenant, job_id, at)
        runs[tenant].append(Execution(
            tenant, f"run-{trigger}", job_id, "success", started_at=at + 200,
            finished_at=at + 1200, trigger_id=trigger, received_at=at + 1200,
        ))  # fmt: skip
    for tenant, items in runs.items():
        backend.write_executions(tenant, items)
    print(f"(c) steady state with the default grace of 60 s: {len(refs):,} due, and the "
          f"{len(refs):,} deadlines of their previous triggers")  # fmt: skip
    print("    runs started for every previous trigger (settled):")
    report, _ = timed_tick(backend, at + MINUTE, plain)
    assert report.fired == report.settled == len(refs) and not report.errors, report
    print("    no run started for any previous trigger (each recorded missed):")
    report, _ = timed_tick(backend, at + 2 * MINUTE, plain)
    assert report.fired == report.missed == len(refs) and not report.errors, report


def profile(backend: RedisStackBackend, at: int, due: int) -> None:
    """One more busy tick under cProfile: the functions it spends most time in."""
    profiler = cProfile.Profile()
    profiler.enable()
    report = tick(backend, at, OWNER, BUSY)
    profiler.disable()
    assert report.fired == due and not report.errors, report
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


def idle_ticks(backend: RedisStackBackend, at: int, count: int) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        report = tick(backend, at, OWNER, BUSY)
        took.append((time.perf_counter() - started) * 1000)
        assert report.fired == 0 and not report.errors, report
    return took


@dataclass
class Late:
    """What (d) saw: per group, (instant, fired_at - instant, queued - instant) of each
    trigger and how many jobs never fired; and the scanner's ticks (ms, report)."""

    triggers: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    never: dict[str, int] = field(default_factory=dict)
    ticks: list[tuple[float, dict[str, object]]] = field(default_factory=list)


def lateness(backend: RedisStackBackend, tenants: list[str], name: str, jobs: int,
             seconds: float, burst: int, stale: list[tuple[str, str]]) -> Late:  # fmt: skip
    """Fire ``jobs`` ``once`` jobs at instants spread over ``seconds`` seconds, and ``burst``
    more all at the window's midpoint, with a real scanner ticking every 0.5 s in a
    background thread. Before it starts, plant one fired trigger for each job of ``stale``
    whose grace ends when the window opens, with no run: the scanner records them missed
    then, as in a minute when the runners of that many jobs are down."""
    now = now_ms()
    start, span = now + 2000, int(seconds * 1000)
    late = Late()
    groups: dict[str, list[Job]] = defaultdict(list)
    for i in range(jobs):
        groups["spread"].append(Job(tenants[i % len(tenants)], f"{name}-{i:04d}", run_mode="once",
                                    run_at=start + i * span // jobs))  # fmt: skip
    for i in range(burst):
        groups["burst"].append(Job(tenants[i % len(tenants)], f"{name}-burst-{i:04d}",
                                   run_mode="once", run_at=start + span // 2))  # fmt: skip
    for mine in groups.values():
        for tenant in tenants:
            theirs = [job for job in mine if job.tenant_id == tenant]
            backend.upsert_jobs(tenant, theirs, now)
            for job in theirs:
                backend.set_next_fire(tenant, job.id, first_fire(job, now))
    if stale:
        deadline = start
        backend.enqueue_triggers([
            Trigger(tenant, job_id, trigger_id_for(tenant, job_id, deadline - MINUTE),
                    scheduled_for=deadline - MINUTE, fired_at=deadline - MINUTE,
                    deadline=deadline)
            for tenant, job_id in stale
        ])  # fmt: skip
    service = ScannerService(lambda: backend, ScanSettings(), interval_s=0.5)
    plain_tick = service.tick_once

    def logged_tick() -> TickReport | None:
        started = time.perf_counter()
        report = plain_tick()
        took = (time.perf_counter() - started) * 1000
        late.ticks.append((took, report.as_dict() if report else {"failed": 1}))
        return report

    service.tick_once = logged_tick  # type: ignore[method-assign]
    service.start_background()
    try:
        time.sleep(max(0.0, (start + span - now_ms()) / 1000 + 1.5))
    finally:
        service.stop()
    r = backend.client()
    for group, mine in groups.items():
        late.triggers[group], late.never[group] = [], 0
        for job in mine:
            triggers = backend.list_triggers(job.tenant_id, job.id, 1)
            if not triggers:
                late.never[group] += 1
                continue
            trigger = triggers[0]
            assert trigger.scheduled_for == job.run_at
            # The stream entry id is "<server ms>-<seq>": when runners could first read it.
            key = backend.keys.trigger(job.tenant_id, trigger.trigger_id)
            queued = int(r.json().get(key, "$.ref")[0].split("-")[0])
            late.triggers[group].append((trigger.scheduled_for,
                                         trigger.fired_at - trigger.scheduled_for,
                                         queued - trigger.scheduled_for))  # fmt: skip
    return late


def print_lateness(late: Late, spread_what: str, burst_what: str) -> list[int]:
    """Print one run of (d); return every trigger's queued - instant."""
    every: list[int] = []
    for group, found in late.triggers.items():
        fired = [f for _, f, _ in found]
        queued = [q for _, _, q in found]
        every += queued
        what = spread_what if group == "spread" else burst_what
        print(f"    {group} ({what}; {len(found)} fired, {late.never[group]} never):")
        print(f"      fired_at - instant: p50 {pct(fired, 50):5.0f}  p99 "
              f"{pct(fired, 99):5.0f}  max {max(fired):5.0f} ms")  # fmt: skip
        print(f"      queued   - instant: p50 {pct(queued, 50):5.0f}  p99 "
              f"{pct(queued, 99):5.0f}  max {max(queued):5.0f} ms")  # fmt: skip
    took = [ms for ms, _ in late.ticks]
    slowest = max(late.ticks, key=lambda t: t[0])
    busy = {k: v for k, v in slowest[1].items() if v}
    print(f"    scanner ticks: {len(took)}, median {statistics.median(took):.1f} ms, "
          f"{sum(1 for ms in took if ms > 500)} longer than the 0.5 s interval; slowest "
          f"{slowest[0]:.0f} ms {busy}")  # fmt: skip
    return every


class Others:
    """How busy the rest of the machine was (other processes on these shared machines):
    CPU seconds of all cores minus this process's and the Redis server's (Linux)."""

    def __init__(self, server_pid: int | None) -> None:
        self.pids = [os.getpid(), server_pid]
        self.started = time.monotonic()
        self.base = machine_busy_seconds() - cpu_seconds(self.pids)

    def percent(self) -> float:
        """Percent of one core the rest of the machine used since this was made."""
        spent = machine_busy_seconds() - cpu_seconds(self.pids) - self.base
        return max(0.0, 100 * spent / max(1e-9, time.monotonic() - self.started))


def spread(values: list[float]) -> str:
    return (f"min {min(values):6.1f}  median {statistics.median(values):6.1f}  "
            f"max {max(values):6.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1000, help="jobs due at the busy instant")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="busy ticks measured")
    parser.add_argument("--idle", type=int, default=20, help="idle ticks measured")
    parser.add_argument("--late-jobs", type=int, default=500)
    parser.add_argument("--late-seconds", type=float, default=20.0)
    parser.add_argument(
        "--burst",
        type=int,
        default=1000,
        help="once jobs due together mid-way through (d); 0 for none",
    )
    parser.add_argument(
        "--stale",
        type=int,
        default=1000,
        help="fired triggers with no run whose grace ends as (d') starts; 0 skips (d')",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run one busy tick under cProfile and print its top functions",
    )
    args = parser.parse_args()
    tenants = [f"tenant-{n}" for n in range(args.tenants)]

    root = Path(tempfile.mkdtemp(prefix="chronos-bench-"))
    server = RedisStackServer(root=root / "redis", persistent=False, port=free_port())
    url = server.start()
    try:
        backend = RedisStackBackend(url, BackendOptions(key_prefix="bench:"))
        backend.migrate()
        now = now_ms()
        t, refs, upserted, indexed = register(backend, tenants, args.jobs, args.due, now)
        print(f"setup: {args.jobs:,} jobs over {args.tenants} tenants registered in "
              f"{upserted:.1f} s (upsert_jobs, 1,000 a call), next fires indexed in "
              f"{indexed:.1f} s (set_next_fire, one call a job)")  # fmt: skip
        assert backend.client().zcard(backend.keys.schedule()) == args.jobs

        whole_run = Others(server.pid())
        idle_before = idle_ticks(backend, t - 1, args.idle)
        during_a = Others(server.pid())
        busy = busy_ticks(backend, t, args.due, args.rounds)
        others_a = during_a.percent()
        at = t + args.rounds * MINUTE
        print(f"(a) busy tick, {args.due:,} due of {args.jobs:,}: {spread(busy)}  "
              f"({args.rounds} rounds: {', '.join(f'{x:.1f}' for x in busy)}; other "
              f"processes used {others_a:.0f}% of a core meanwhile)")  # fmt: skip
        print("    one more busy tick, timed call by call:")
        report, _ = timed_tick(backend, at, BUSY, servers=True)
        assert report.fired == args.due and not report.errors, report
        at += MINUTE
        if args.profile:
            profile(backend, at, args.due)
            at += MINUTE
        idle = idle_ticks(backend, at - 1, args.idle)
        print(f"(b) idle tick, {args.jobs:,} registered: {spread(idle_before + idle)}  "
              f"({2 * args.idle} ticks)")  # fmt: skip
        deadline_ticks(backend, refs, at)

        # Take the minutely jobs off the schedule so only the lateness jobs fire in (d).
        for tenant, job_id in refs:
            backend.set_next_fire(tenant, job_id, None)
        print(f"(d) lateness, real scanner ticking every 0.5 s, {args.jobs - args.due:,} other "
              f"jobs registered:")  # fmt: skip
        late = lateness(backend, tenants, "once", args.late_jobs, args.late_seconds,
                        args.burst, [])  # fmt: skip
        every_queued = print_lateness(
            late, f"{args.late_jobs} once jobs due over {args.late_seconds:.0f} s",
            f"{args.burst} once jobs due together mid-way")  # fmt: skip
        if args.stale:
            print(f"(d') the same while {args.stale:,} fired triggers reach their deadline with "
                  f"no run (runners down): the scanner records each missed")  # fmt: skip
            down = lateness(backend, tenants, "down", 100, 4.0, 0, refs[: args.stale])
            down_queued = print_lateness(down, "100 once jobs due over 4 s from that deadline",
                                         "")  # fmt: skip
        print(f"busy tick median {statistics.median(busy):.1f} ms, max {max(busy):.1f} ms "
              f"(target < 100 ms)")  # fmt: skip
        print(
            f"lateness p99 over all {len(every_queued)} triggers of (d): "
            f"{pct(every_queued, 99):.0f} ms from instant to queued (target < 1000 ms)"
        )
        if args.stale:
            print(f"lateness p99 in (d'): {pct(down_queued, 99):.0f} ms, max "
                  f"{max(down_queued):.0f} ms")  # fmt: skip
        print(f"other processes on the machine used {whole_run.percent():.0f}% of one core "
              f"during the run ({os.cpu_count()} cores in all)")  # fmt: skip
        backend.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not answers(url)


if __name__ == "__main__":
    main()
