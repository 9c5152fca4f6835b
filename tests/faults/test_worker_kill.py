"""A gunicorn worker SIGKILLed mid-request, several times, while SDK clients ingest.

The master starts a new worker each time; the clients retry what the dead worker never
answered; afterwards every acknowledged execution is stored once and counted once.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from chronos.extension import get_state
from chronos.timeutil import now_ms

from .checks import runs_counted, searched_exec_ids, stored_exec_ids, wait_indexed
from .load import IngestLoad
from .servers import Gunicorn, kill_hard, wait_for

KILLS = 4


def _victims(server: Gunicorn, load: IngestLoad) -> list[int]:
    """A worker holding a client connection, found through ``/proc``. Each look reads the
    whole TCP table, which thousands of closed connections (TIME_WAIT) make slow (~20 ms on a
    loaded machine) next to a request (a few ms), so it can keep missing them: after 10 s,
    every worker, at a moment a client has a request in flight."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = server.busy_workers()
        if busy:
            return [random.choice(sorted(busy))]
    wait_for(lambda: load.ledger.in_flight > 0, 30, "a request in flight", every=0.0005)
    return sorted(server.worker_pids())


@pytest.mark.slow
def test_killed_workers_lose_nothing_acknowledged_and_count_nothing_twice(
    app, tenants, redis_stack_url, key_prefix, shared_prefix_cleanup, server_env, gunicorns,
    tmp_path: Path,
) -> None:  # fmt: skip
    key = tenants.key("acme", "ingest", "read")
    server = Gunicorn(server_env(redis_stack_url, key_prefix), tmp_path / "gunicorn")
    gunicorns.append(server)
    server.start()
    load = IngestLoad(server.url, key, tmp_path / "spool", clients=4)
    load.register_jobs()
    since = now_ms()
    killed: list[int] = []
    try:
        load.start()
        for _ in range(KILLS):
            load.wait_sent(load.total_sent() + 500)
            victims = _victims(server, load)
            for victim in victims:
                kill_hard(victim)
            killed += victims
            wait_for(lambda: len(server.worker_pids() - set(killed)) == server.workers, 30,
                     "gunicorn to replace the killed worker")  # fmt: skip
        load.wait_sent(load.total_sent() + 500)
        load.stop()
        load.drain(timeout=60)
    finally:
        load.close()
    assert server.master_pid()  # the master itself lived through it
    ledger, sent = load.ledger, load.sent_ids()
    print("worker kills:", load.summary())
    assert sum(ledger.network_errors.values()) > 0, "no kill cut a request"
    assert 500 not in ledger.statuses and 500 not in server.access_statuses()
    assert not ledger.bad_answers, ledger.bad_answers[:5]
    assert load.dropped() == 0
    assert ledger.acked == sent
    assert stored_exec_ids(redis_stack_url, key_prefix, "acme") == sent
    backend, until = get_state(app).backend(), now_ms()
    for job, ids in zip(load.jobs, load.sent):
        assert runs_counted(backend, "acme", job, since, until) == len(ids), job
    assert runs_counted(backend, "acme", None, since, until) == len(sent)
    wait_indexed(redis_stack_url, key_prefix)
    found = searched_exec_ids(backend, "acme")
    assert len(found) == len(sent) and set(found) == sent
