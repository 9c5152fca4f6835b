"""The scanner (``chronos scheduler``) SIGKILLed and restarted, two at a time too.

Every due instant in the window is handled exactly once: fired (a trigger record and one
stream entry), or, when it is older than ``CHRONOS_CATCH_UP_SECONDS`` by the time a scanner
sees it, recorded as a ``missed`` execution instead, never both, never twice, none skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from chronos.backends.base import Backend
from chronos.backends.redis_stack.keys import Keys
from chronos.extension import get_state
from chronos.models import ExecutionQuery, Job
from chronos.scheduler.planning import first_fire
from chronos.scheduler.scanner import ScanSettings
from chronos.timeutil import now_ms

from .servers import Scanner, wait_for

EVERY_SECOND = "* * * * * *"  # seconds first
JOBS = [f"job:tick-{n}" for n in range(4)]


def register(backend: Backend, tenant: str) -> None:
    """Register the every-second jobs (once a scanner ticks, so that their first instant is
    not handled late because the scanner was still starting)."""
    now = now_ms()
    jobs = [Job(tenant, job_id, schedule=EVERY_SECOND) for job_id in JOBS]
    backend.upsert_jobs(tenant, jobs, now)
    for job in jobs:
        backend.set_next_fire(tenant, job.id, first_fire(job, now))


def fired(backend: Backend, tenant: str, job_id: str) -> dict[int, int]:
    """``{instant: fired_at}`` of the job's trigger records."""
    records = backend.list_triggers(tenant, job_id, 100)
    assert len({t.scheduled_for for t in records}) == len(records), "an instant fired twice"
    return {t.scheduled_for: t.fired_at for t in records}


def missed(backend: Backend, tenant: str, job_id: str) -> dict[int, int]:
    """``{instant: decided_at}`` of the job's ``missed`` executions."""
    page = backend.search_executions(tenant, ExecutionQuery(job_id=job_id, statuses=("missed",),
                                                            limit=100))  # fmt: skip
    return {e.started_at: e.finished_at for e in page.items}


def fired_through(backend: Backend, tenant: str, instant: int) -> bool:
    """Whether every job has an instant at or after ``instant`` handled."""
    return all(max([*fired(backend, tenant, j), *missed(backend, tenant, j), 0]) >= instant
               for j in JOBS)  # fmt: skip


def stream_lengths(url: str, prefix: str, tenant: str, jobs: list[str]) -> dict[str, int]:
    """How many triggers each job's runner stream received."""
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {j: r.xlen(Keys(prefix).trigger_stream(tenant, j)) for j in jobs}
    finally:
        r.close()


def assert_each_instant_once(backend: Backend, url: str, prefix: str, tenant: str,
                             catch_up_ms: int) -> tuple[int, int]:  # fmt: skip
    """Every second from each job's first instant to its last is handled exactly once, by
    the documented rule; returns how many instants were fired and recorded missed."""
    lengths = stream_lengths(url, prefix, tenant, JOBS)
    total_fired = total_missed = 0
    for job_id in JOBS:
        fires, misses = fired(backend, tenant, job_id), missed(backend, tenant, job_id)
        assert not set(fires) & set(misses), "an instant was both fired and missed"
        instants = sorted([*fires, *misses])
        assert instants == list(range(instants[0], instants[-1] + 1, 1000)), (job_id, instants)
        assert lengths[job_id] == len(fires)  # queued for the runners once each
        for instant, fired_at in fires.items():
            assert fired_at - instant <= catch_up_ms, "fired outside the catch-up window"
        for instant, decided_at in misses.items():
            assert decided_at - instant > catch_up_ms, "recorded missed within the window"
        total_fired += len(fires)
        total_missed += len(misses)
    return total_fired, total_missed


@pytest.fixture
def scanners(tmp_path: Path):
    started: list[Scanner] = []
    yield started
    for scanner in started:
        scanner.stop()


def scanner_env(server_env, url: str, prefix: str, **settings: str) -> dict[str, str]:
    env = server_env(url, prefix)
    env.update(CHRONOS_SCAN_INTERVAL_MS="100", **settings)
    return env


def ticking(scanner: Scanner, backend: Backend) -> None:
    """Wait until ``scanner`` has ticked (its heartbeat names its process)."""
    assert scanner.process is not None
    pid = scanner.process.pid

    def beat() -> bool:
        found = backend.last_beat("scanner")
        return bool(found) and str(found["owner"]).endswith(f":{pid}")

    wait_for(beat, 30, "the scanner's first tick", every=0.02)


@pytest.mark.slow
def test_killed_scanners_fire_every_instant_once_catching_up_what_they_missed(
    app, redis_stack_url, key_prefix, shared_prefix_cleanup, server_env, scanners,
    tmp_path: Path,
) -> None:  # fmt: skip
    backend = get_state(app).backend()
    env = scanner_env(server_env, redis_stack_url, key_prefix)
    first = Scanner(env, tmp_path / "scanner-1.log").start()
    scanners.append(first)
    ticking(first, backend)
    register(backend, "acme")
    until = now_ms() + 1000
    wait_for(lambda: fired_through(backend, "acme", until), 30, "the first fires")

    first.kill()
    down_at = now_ms()
    time.sleep(2.5)  # instants come due while no scanner runs
    second = Scanner(env, tmp_path / "scanner-2.log").start()  # two at once: claims decide
    third = Scanner(env, tmp_path / "scanner-3.log").start()
    scanners += [second, third]
    until = now_ms() - 500
    wait_for(lambda: fired_through(backend, "acme", until), 30, "the catch-up")
    up_at = now_ms()
    second.kill()  # one of the pair dies mid-stream; the other carries on
    until = now_ms() + 1500
    wait_for(lambda: fired_through(backend, "acme", until), 30, "the survivor's fires")
    third.stop()

    total_fired, total_missed = assert_each_instant_once(
        backend, redis_stack_url, key_prefix, "acme", ScanSettings().catch_up_ms
    )
    assert total_missed == 0  # all within CHRONOS_CATCH_UP_SECONDS (300 s): fired late
    for job_id in JOBS:
        fires = fired(backend, "acme", job_id)
        assert min(fires) < down_at and max(fires) > up_at + 1000
        late = [i for i in fires if down_at + 1000 <= i <= down_at + 2000]
        assert late and all(fires[i] - i > 400 for i in late), "not caught up after the restart"
    for scanner in scanners:
        assert "Traceback" not in scanner.output(), scanner.output()[-2000:]
    print("scanner kills:", total_fired, "instants fired once each")


@pytest.mark.slow
def test_instants_older_than_the_catch_up_window_are_recorded_missed_once(
    app, redis_stack_url, key_prefix, shared_prefix_cleanup, server_env, scanners,
    tmp_path: Path,
) -> None:  # fmt: skip
    backend = get_state(app).backend()
    env = scanner_env(server_env, redis_stack_url, key_prefix, CHRONOS_CATCH_UP_SECONDS="1")
    first = Scanner(env, tmp_path / "scanner-1.log").start()
    scanners.append(first)
    ticking(first, backend)
    register(backend, "acme")
    until = now_ms() + 1000
    wait_for(lambda: fired_through(backend, "acme", until), 30, "the first fires")

    first.kill()
    down_at = now_ms()
    time.sleep(3)  # longer than the 1 s window: the first instants of the outage expire
    second = Scanner(env, tmp_path / "scanner-2.log").start()
    scanners.append(second)
    until = now_ms() + 1500
    wait_for(lambda: fired_through(backend, "acme", until), 30, "the fires after")
    second.stop()

    _, total_missed = assert_each_instant_once(backend, redis_stack_url, key_prefix, "acme",
                                               catch_up_ms=1000)  # fmt: skip
    for job_id in JOBS:  # the instants due early in the outage expired before the restart
        assert any(i > down_at for i in missed(backend, "acme", job_id)), job_id
    assert total_missed >= len(JOBS)
    for scanner in scanners:
        assert "Traceback" not in scanner.output(), scanner.output()[-2000:]


@pytest.mark.slow
def test_an_instant_claimed_by_a_scanner_that_died_is_fired_by_the_next_one(
    app, redis_stack_url, key_prefix, shared_prefix_cleanup, server_env, scanners,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A scanner SIGKILLed between its claim and the firing leaves a claim nobody holds.
    The next scanner fires the instant once the claim lapses, well within the default grace
    of 60 s (a claim as long as the grace would have had it recorded missed at once)."""
    backend = get_state(app).backend()
    run_at = (now_ms() // 1000 + 2) * 1000
    job = Job("acme", "job:once", run_mode="once", run_at=run_at)
    backend.upsert_jobs("acme", [job], now_ms())
    backend.set_next_fire("acme", job.id, first_fire(job, now_ms()))
    settings = ScanSettings()
    [won] = backend.claim_triggers([("acme", job.id, run_at)], "host:4242", settings.claim_ttl_ms)
    assert won  # the dead scanner's claim

    scanner = Scanner(scanner_env(server_env, redis_stack_url, key_prefix),
                      tmp_path / "scanner.log").start()  # fmt: skip
    scanners.append(scanner)
    records = wait_for(lambda: backend.list_triggers("acme", job.id, 10), 30,
                       "the claimed instant to fire", every=0.1)  # fmt: skip
    [trigger] = records
    assert trigger.scheduled_for == run_at
    assert trigger.fired_at - run_at <= settings.claim_ttl_ms + 10_000 < settings.default_grace_ms
    assert stream_lengths(redis_stack_url, key_prefix, "acme", [job.id]) == {job.id: 1}
