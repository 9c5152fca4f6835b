"""Job health and the trigger lifecycle, through the API, driven by real scanner ticks."""

from __future__ import annotations

from flask import Flask

from chronos.extension import get_state
from chronos.health import LATE_AFTER_MS, job_health
from chronos.models import Execution, Job, JobState
from chronos.scheduler.scanner import ScanSettings, tick
from chronos.timeutil import now_ms

MINUTE = 60_000


def test_job_health_rules() -> None:
    now = 10_000_000
    assert job_health(Job("t", "j", enabled=False), now) == "paused"
    assert job_health(Job("t", "j"), now) == "ok"
    fired = JobState(last_trigger_id="x", last_fired_at=now - LATE_AFTER_MS)
    assert job_health(Job("t", "j", state=fired), now) == "late"
    assert job_health(Job("t", "j", state=fired), now - LATE_AFTER_MS + 1) == "ok"
    started = JobState(last_trigger_id="x", last_fired_at=now - MINUTE,
                       last_trigger_started_at=now - MINUTE + 100)  # fmt: skip
    assert job_health(Job("t", "j", state=started), now) == "running"
    assert job_health(Job("t", "j", state=JobState(last_status="failed")), now) == "failing"
    assert job_health(Job("t", "j", state=JobState(last_status="timeout")), now) == "failing"
    assert job_health(Job("t", "j", state=JobState(last_status="missed")), now) == "missed"
    done = JobState(last_status="success", last_started_at=now - MINUTE, last_fired_at=now - MINUTE)
    assert job_health(Job("t", "j", state=done), now) == "ok"


def test_health_and_lifecycle_through_the_api(app: Flask, client, tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    headers = {"x-api-key": key}
    backend = get_state(app).backend()
    now = (now_ms() // MINUTE - 10) * MINUTE
    register = client.post("/api/ingest/jobs/register", headers=headers, json={"jobs": [
        {"id": "job:ok", "schedule": "* * * * *", "graceSeconds": 30},
        {"id": "job:lazy", "schedule": "* * * * *", "graceSeconds": 30}]})  # fmt: skip
    assert register.status_code == 200
    for job_id in ("job:ok", "job:lazy"):  # as if registered just before ``now``
        backend.set_next_fire("acme", job_id, now)
    settings = ScanSettings(catch_up_ms=60 * MINUTE)
    assert tick(backend, now, "s", settings).fired == 2
    (trigger,) = backend.list_triggers("acme", "job:ok", 5)
    run = Execution("acme", "run-1", "job:ok", "running", started_at=now + 500,
                    trigger_id=trigger.trigger_id)  # fmt: skip
    backend.write_executions("acme", [run])

    def health(job_id: str) -> str:
        return client.get(f"/api/jobs/{job_id}", headers=headers).json["data"]["health"]

    assert health("job:ok") == "running" and health("job:lazy") == "late"
    lazy = client.get("/api/jobs?health=late", headers=headers).json
    assert [j["id"] for j in lazy["data"]] == ["job:lazy"] and lazy["nextCursor"] is None

    backend.write_executions("acme", [Execution(
        "acme", "run-1", "job:ok", "success", started_at=now + 500, finished_at=now + 900,
        trigger_id=trigger.trigger_id)])  # fmt: skip
    tick(backend, now + 31_000, "s", settings)  # the lazy job's grace runs out
    assert health("job:ok") == "ok" and health("job:lazy") == "missed"

    ok = client.get("/api/jobs/job:ok/triggers", headers=headers).json["data"]
    assert ok[0]["lifecycle"] == "finished" and ok[0]["execId"] == "run-1"
    assert ok[0]["startedAt"] and ok[0]["finishedAt"]
    missed = client.get("/api/jobs/job:lazy/triggers", headers=headers).json["data"]
    assert missed[0]["lifecycle"] == "missed" and missed[0]["status"] == "missed"
    assert missed[0]["scheduledFor"].endswith("Z")
    other = tenants.key("zeta", "read")
    assert client.get("/api/jobs/job:lazy/triggers", headers={"x-api-key": other}).json[
        "data"] == []  # fmt: skip
