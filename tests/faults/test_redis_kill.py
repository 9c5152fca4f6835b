"""Redis Stack SIGKILLed while several SDK clients ingest through gunicorn, then restarted.

Meanwhile the API answers 503 with ``Retry-After`` and a JSON body, quickly; afterwards every
execution the server acknowledged is stored, each exactly once, and counted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chronos.backends.base import BackendOptions
from chronos.extension import get_state
from chronos.timeutil import now_ms

from .checks import missing, runs_counted, searched_exec_ids, stored_exec_ids, wait_indexed
from .load import IngestLoad
from .servers import Gunicorn, get_json, post_json, wait_for

#: How long a request may take while Redis is down: connect refused, two quick retries.
FAST_503_S = 3.0

Answer = tuple[int, dict[str, str], Any]


def assert_503s(url: str, key: str, within_s: float) -> None:
    """Direct requests of each kind (at once) answer 503 + Retry-After + a JSON error within
    ``within_s`` seconds each."""
    now = now_ms()
    batch = {"executions": [{"execId": f"probe-{now}", "jobId": "job:probe", "status": "success",
                             "startedAt": now - 5, "finishedAt": now}]}  # fmt: skip
    head, wait = {"x-api-key": key}, 60  # a hang is measured, not cut short by the client
    probes = [
        lambda: post_json(url + "/api/ingest/executions/batch", batch, head, timeout=wait),
        lambda: get_json(url + "/api/executions?limit=5", head, timeout=wait),
        lambda: get_json(url + "/api/jobs", head, timeout=wait),
        lambda: get_json(url + "/healthz", timeout=wait),
    ]

    def timed(probe: Callable[[], Answer]) -> tuple[Answer, float]:
        started = time.monotonic()
        return probe(), time.monotonic() - started

    with ThreadPoolExecutor(len(probes)) as pool:
        answers = list(pool.map(timed, probes))
    for (status, headers, body), took in answers:
        assert status == 503, (status, body)
        assert int(headers["retry-after"]) > 0
        assert body["success"] is False and "Redis" in body["error"], body
        assert took < within_s, f"a request hung {took:.1f} s with Redis down"


@pytest.mark.slow
def test_redis_sigkill_during_ingest_loses_nothing_and_counts_each_run_once(
    private_redis, private_app, private_tenants, server_env, gunicorns, tmp_path: Path
) -> None:
    key = private_tenants.key("acme", "ingest", "read")
    server = Gunicorn(server_env(private_redis.url, "fault:"), tmp_path / "gunicorn")
    gunicorns.append(server)
    server.start()
    load = IngestLoad(server.url, key, tmp_path / "spool", clients=4)
    load.register_jobs()
    since = now_ms()
    try:
        load.start()
        load.wait_sent(1500)
        private_redis.kill()  # mid-stream: batches are in flight
        sent_at_kill = load.total_sent()
        assert_503s(server.url, key, FAST_503_S)
        load.wait_sent(sent_at_kill + 600)  # the apps keep producing through the outage
        wait_for(lambda: load.ledger.statuses[503] >= len(load.clients), 20,
                 "the clients to meet the outage")  # fmt: skip
        private_redis.start()
        load.wait_sent(load.total_sent() + 600)
        load.stop()
        load.drain(timeout=60)
    finally:
        load.close()
    ledger, sent = load.ledger, load.sent_ids()
    print("redis kill:", load.summary())
    assert 500 not in ledger.statuses and 500 not in server.access_statuses()
    assert not ledger.bad_answers, ledger.bad_answers[:5]
    assert load.dropped() == 0
    assert ledger.acked == sent  # the SDK retried every batch until acknowledged
    assert not missing(private_redis.url, "fault:", "acme", ledger.acked)
    assert stored_exec_ids(private_redis.url, "fault:", "acme") == sent
    backend, until = get_state(private_app).backend(), now_ms()
    for job, ids in zip(load.jobs, load.sent):
        assert runs_counted(backend, "acme", job, since, until) == len(ids), job
    assert runs_counted(backend, "acme", None, since, until) == len(sent)
    wait_indexed(private_redis.url, "fault:")
    found = searched_exec_ids(backend, "acme")
    assert len(found) == len(sent) and set(found) == sent


@pytest.mark.slow
def test_a_frozen_redis_answers_503_within_the_socket_timeout(
    private_redis, private_tenants, server_env, gunicorns, tmp_path: Path
) -> None:
    """SIGSTOP: Redis keeps its connections open and answers nothing (as a stalled host or a
    network partition does). Requests wait for the socket timeout once, not once per retry."""
    key = private_tenants.key("acme", "ingest", "read")
    server = Gunicorn(server_env(private_redis.url, "fault:"), tmp_path / "gunicorn", workers=1,
                      threads=8)  # fmt: skip
    gunicorns.append(server)
    server.start()
    assert get_json(server.url + "/api/jobs", {"x-api-key": key})[0] == 200
    private_redis.freeze()
    try:
        assert_503s(server.url, key, BackendOptions().socket_timeout_s + 3)
    finally:
        private_redis.thaw()
    assert get_json(server.url + "/api/jobs", {"x-api-key": key})[0] == 200
    assert 500 not in server.access_statuses()
