"""The scanner as real processes: 4 scanners fire each (job, instant) exactly once, and a
scanner rides out a Redis restart, catching up without duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import RedisStackBackend
from chronos.backends.redis_stack.keys import Keys
from chronos.embedded import RedisStackServer, free_port
from chronos.models import Job
from chronos.scheduler.planning import first_fire
from chronos.scheduler.scanner import ScanSettings
from chronos.scheduler.service import ScannerService
from chronos.timeutil import now_ms

EVERY_2S = "*/2 * * * * *"  # seconds first


def register(backend: RedisStackBackend, tenants: list[str], jobs: int) -> list[tuple[str, str]]:
    now = now_ms()
    refs = []
    for tenant in tenants:
        batch = [Job(tenant, f"job-{n}", schedule=EVERY_2S) for n in range(jobs)]
        backend.upsert_jobs(tenant, batch, now)
        for job in batch:
            backend.set_next_fire(tenant, job.id, first_fire(job, now))
            refs.append((tenant, job.id))
    return refs


def check_exactly_once(backend: RedisStackBackend, url: str, prefix: str,
                       refs: list[tuple[str, str]], at_least: int) -> None:  # fmt: skip
    r = redis.Redis.from_url(url, decode_responses=True)
    keys = Keys(prefix)
    try:
        for tenant, job_id in refs:
            records = backend.list_triggers(tenant, job_id, 100)
            instants = sorted(t.scheduled_for for t in records)
            assert len(instants) >= at_least, (tenant, job_id, instants)
            assert len(set(instants)) == len(instants)
            # every 2 s instant between the first and the last fired, none skipped
            assert instants == list(range(instants[0], instants[-1] + 1, 2000)), instants
            # and queued once each: the runners' stream holds one entry per instant
            assert r.xlen(keys.trigger_stream(tenant, job_id)) == len(instants)
    finally:
        r.close()


@pytest.mark.slow
def test_four_scanner_processes_fire_each_instant_once(
    redis_stack_url, redis_backend, key_prefix, tmp_path: Path
) -> None:
    refs = register(redis_backend, ["acme", "a|b"], 10)
    env = dict(os.environ, CHRONOS_BACKEND_URL=redis_stack_url, CHRONOS_KEY_PREFIX=key_prefix,
               CHRONOS_DATA_DIR=str(tmp_path), CHRONOS_SCAN_INTERVAL_MS="100")  # fmt: skip
    scanners = [subprocess.Popen([sys.executable, "-m", "chronos.cli", "scheduler"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(4)]  # fmt: skip
    try:
        time.sleep(9)
    finally:
        for process in scanners:
            process.terminate()
        errors = [p.communicate(timeout=20)[1].decode() for p in scanners]
    assert all(p.returncode is not None for p in scanners)
    assert not any("Traceback" in e for e in errors), errors
    check_exactly_once(redis_backend, redis_stack_url, key_prefix, refs, at_least=3)


@pytest.mark.slow
def test_scanner_survives_a_redis_restart_and_catches_up(tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "redis"
    server = RedisStackServer(root=root, persistent=True, fsync="always", port=port)
    url = server.start()
    prefix = "restart:"
    backend = RedisStackBackend(url, BackendOptions(key_prefix=prefix))
    service = None
    try:
        backend.migrate()
        refs = register(backend, ["acme"], 5)
        service = ScannerService(lambda: backend, ScanSettings(), interval_s=0.2)
        service.start_background()
        time.sleep(3)
        server.stop()  # Redis goes away; the scanner keeps ticking into errors
        time.sleep(3)
        server = RedisStackServer(root=root, persistent=True, fsync="always", port=port)
        server.start()
        time.sleep(4)
        service.stop()
        service = None
        # the instants of the outage were fired on recovery (within the catch-up window)
        check_exactly_once(backend, url, prefix, refs, at_least=4)
        beat = backend.last_beat("scanner")
        assert beat is not None and beat["owner"]
    finally:
        if service is not None:
            service.stop()
        backend.close()
        server.stop()
