"""Scheduling end to end on the real Redis Stack: the scanner fires a ``once`` job to
connected SDK runners over the websocket, one of them runs it, and an instant nobody runs is
recorded missed after its grace."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from chronos_sdk import ChronosRunner
from flask import Flask

from chronos.extension import get_state
from chronos.models import ExecutionQuery
from chronos.scheduler.service import ScannerService
from chronos.timeutil import now_ms, to_iso


@pytest.fixture
def scanner(app: Flask) -> Iterator[ScannerService]:
    state = get_state(app)
    service = ScannerService(state.backend, state.scan_settings(), interval_s=0.1)
    service.start_background()
    yield service
    service.stop()


def register_once(client, key: str, job_id: str, run_at: int, grace_seconds: int = 30) -> None:
    answer = client.post("/api/ingest/jobs/register", headers={"x-api-key": key}, json={
        "jobs": [{"id": job_id, "runMode": "once", "runAt": to_iso(run_at),
                  "graceSeconds": grace_seconds}]})  # fmt: skip
    assert answer.status_code == 200, answer.json


def runner_for(live, key: str, job_id: str, ran: list[tuple[int, float]]) -> ChronosRunner:
    runner = ChronosRunner(api_key=key, endpoint=live.url, flush_interval=0.05,
                           reconnect_base=0.1, reconnect_cap=0.5)  # fmt: skip
    lock = threading.Lock()

    def handler() -> None:
        with lock:
            ran.append((id(runner), time.time()))

    runner.register(job_id, handler)
    runner.start()
    return runner


def wait_connected(runners: list[ChronosRunner], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.connected for r in runners):
        assert time.monotonic() < deadline, "runners did not connect"
        time.sleep(0.05)


def executions(app: Flask, tenant: str, job_id: str) -> list:
    query = ExecutionQuery(job_id=job_id, limit=100)
    return get_state(app).backend().search_executions(tenant, query).items


@pytest.mark.slow
def test_once_job_runs_on_exactly_one_of_three_runners_within_2s(app, live, client, tenants,
                                                                  scanner) -> None:  # fmt: skip
    key = tenants.key("acme", "ingest", "read")
    ran: list[tuple[int, float]] = []
    runners = [runner_for(live, key, "job:launch", ran) for _ in range(3)]
    try:
        wait_connected(runners)
        run_at = now_ms() + 3000
        register_once(client, key, "job:launch", run_at)
        deadline = run_at / 1000 + 2.0
        reported = []
        while time.time() < deadline + 1 and not reported:
            reported = [e for e in executions(app, "acme", "job:launch") if e.trigger_id]
            time.sleep(0.05)
        assert reported, "no execution was reported"
        first_report = min(e.received_at for e in reported)
        assert first_report <= run_at + 2000, f"{first_report - run_at} ms after runAt"
        time.sleep(1.5)  # room for any duplicate to show up
        assert len(ran) == 1, ran
        (trigger,) = get_state(app).backend().list_triggers("acme", "job:launch", 10)
        runs = executions(app, "acme", "job:launch")
        assert {e.trigger_id for e in runs} == {trigger.trigger_id} and len(runs) == 1
        assert runs[0].status == "success", runs[0].error_message
        assert trigger.status == "delivered" and trigger.scheduled_for == run_at
    finally:
        for runner in runners:
            runner.close()


@pytest.mark.slow
def test_instant_with_no_runner_is_missed_after_the_grace(app, live, client, tenants,
                                                          scanner) -> None:  # fmt: skip
    key = tenants.key("acme", "ingest", "read")
    run_at = now_ms() + 500
    register_once(client, key, "job:orphan", run_at, grace_seconds=1)
    deadline = time.monotonic() + 10
    missed = []
    while time.monotonic() < deadline and not missed:
        missed = [e for e in executions(app, "acme", "job:orphan") if e.status == "missed"]
        time.sleep(0.1)
    assert missed, "the instant was not recorded missed"
    assert missed[0].started_at == run_at and "grace of 1 s" in missed[0].error_message
    job = client.get("/api/jobs/job:orphan", headers={"x-api-key": key}).json["data"]
    assert job["health"] == "missed"
    # a runner connecting afterwards is not handed the stale instant
    ran: list[tuple[int, float]] = []
    late = runner_for(live, key, "job:orphan", ran)
    try:
        wait_connected([late])
        time.sleep(1.0)
        assert ran == []
    finally:
        late.close()
