"""``GET``/``PUT /api/settings/retention``, the retention CLI commands and the scanner's sweep,
on the app over a real Redis Stack."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient

from chronos.extension import get_state
from chronos.models import Execution, ExecutionQuery
from chronos.retention import DAY_MS, RetentionSettings
from chronos.scheduler.retention import sweep_retention
from chronos.scheduler.scanner import ScanSettings
from chronos.scheduler.service import ScannerService
from chronos.timeutil import now_ms

pytestmark = pytest.mark.redis

URL = "/api/settings/retention"
DEFAULTS = {"executionDays": 30, "maxExecutionsPerJob": 10_000, "metricsDays": 400}
NONE = {"executionDays": None, "maxExecutionsPerJob": None, "metricsDays": None}


def put(client: FlaskClient, key: str, body: Any) -> Any:
    return client.put(URL, json=body, headers=Tenants.headers(key))


def write_runs(app: Flask, tenant: str, job: str, starts: list[int]) -> None:
    backend = get_state(app).backend()
    for i, start in enumerate(starts):
        backend.write_executions(tenant, [Execution(
            tenant_id=tenant, exec_id=f"{job}-{i}", job_id=job, status="success",
            started_at=start, finished_at=start + 1000)])  # fmt: skip


def stored(app: Flask, tenant: str) -> list[str]:
    page = get_state(app).backend().search_executions(tenant, ExecutionQuery(limit=1000))
    return [e.exec_id for e in page.items]


def test_get_shows_defaults_then_put_changes_only_what_it_names(
    client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "admin")
    answer = client.get(URL, headers=Tenants.headers(key))
    assert answer.status_code == 200
    assert answer.get_json() == {"success": True, "data": {
        **DEFAULTS, "defaults": DEFAULTS, "overrides": NONE}}  # fmt: skip

    changed = put(client, key, {"executionDays": 7, "maxExecutionsPerJob": 0})
    assert changed.status_code == 200, changed.get_json()
    data = changed.get_json()["data"]
    assert data["executionDays"] == 7 and data["maxExecutionsPerJob"] == 0
    assert data["metricsDays"] == 400
    assert data["overrides"] == {**NONE, "executionDays": 7, "maxExecutionsPerJob": 0}

    again = put(client, key, {"metricsDays": 90, "executionDays": None})
    assert again.get_json()["data"] == {
        "executionDays": 30, "maxExecutionsPerJob": 0, "metricsDays": 90, "defaults": DEFAULTS,
        "overrides": {"executionDays": None, "maxExecutionsPerJob": 0, "metricsDays": 90},
    }  # fmt: skip
    shown = client.get(URL, headers=Tenants.headers(key)).get_json()["data"]
    assert shown == again.get_json()["data"]


@pytest.mark.parametrize("body, field", [
    ({"executionDays": -1}, "executionDays"),
    ({"executionDays": 3651}, "executionDays"),
    ({"maxExecutionsPerJob": 1_000_001}, "maxExecutionsPerJob"),
    ({"metricsDays": 7}, "metricsDays"),
    ({"metricsDays": "90"}, "metricsDays"),
    ({"metricsDays": 90.5}, "metricsDays"),
    ({"executionDays": True}, "executionDays"),
    ({"executionsDays": 5}, "executionsDays"),
    ({}, "_schema"),
])  # fmt: skip
def test_put_refuses_bad_values_with_422(
    client: FlaskClient, tenants: Tenants, body: dict, field: str
) -> None:
    key = tenants.key("acme", "admin")
    answer = put(client, key, body)
    assert answer.status_code == 422
    error = answer.get_json()
    assert error["success"] is False and error["code"] == "validation_error"
    assert field in error["details"]
    assert client.get(URL, headers=Tenants.headers(key)).get_json()["data"]["overrides"] == NONE


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "7"])
def test_put_refuses_a_body_that_is_not_an_object_with_400(
    client: FlaskClient, tenants: Tenants, body: str
) -> None:
    key = tenants.key("acme", "admin")
    answer = client.put(URL, data=body, content_type="application/json",
                        headers=Tenants.headers(key))  # fmt: skip
    assert answer.status_code == 400
    assert answer.get_json()["code"] == "bad_request"


def test_only_admin_keys_of_the_tenant(client: FlaskClient, tenants: Tenants) -> None:
    assert client.get(URL).status_code == 401
    reader = tenants.key("acme", "read", "ingest")
    for answer in (client.get(URL, headers=Tenants.headers(reader)),
                   put(client, reader, {"executionDays": 1})):  # fmt: skip
        assert answer.status_code == 403
        assert "admin" in answer.get_json()["error"]
    put(client, tenants.key("t|other", "admin"), {"executionDays": 3})
    mine = client.get(URL, headers=Tenants.headers(tenants.key("acme", "admin"))).get_json()
    assert mine["data"]["overrides"] == NONE


def test_backend_down_is_503(app: Flask, tenants: Tenants, client: FlaskClient) -> None:
    key = tenants.key("acme", "admin")
    assert client.get(URL, headers=Tenants.headers(key)).status_code == 200  # key now cached
    backend = get_state(app).backend()
    backend.close()
    backend._client._url = "redis://127.0.0.1:1"  # nothing listens there
    answer = client.get(URL, headers=Tenants.headers(key))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]


def test_openapi_documents_the_settings(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    operations = spec["paths"]["/api/settings/retention"]
    assert set(operations) == {"get", "put"}
    assert "422" in operations["put"]["responses"]
    update = spec["components"]["schemas"]["RetentionUpdate"]
    assert update["properties"]["metricsDays"]["minimum"] == 8
    assert update["additionalProperties"] is False


# the CLI ---------------------------------------------------------------------------------
def test_cli_shows_and_changes_a_tenants_retention(app: Flask, tenants: Tenants) -> None:
    tenants.key("t:1", "read")
    runner = app.test_cli_runner()
    shown = runner.invoke(args=["chronos", "tenant-retention", "t:1"])
    assert shown.exit_code == 0, shown.output
    assert "30 days after they started" in shown.output and "(tenant setting)" not in shown.output

    changed = runner.invoke(args=["chronos", "tenant-retention", "t:1", "--executions-days", "7",
                                  "--max-per-job", "0", "--metrics-days", "90"])  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert "7 days after they started" in changed.output and "no cap" in changed.output
    assert changed.output.count("(tenant setting)") == 3
    backend = get_state(app).backend()
    assert backend.get_retention("t:1") == RetentionSettings(7, 0, 90)

    reset = runner.invoke(args=["chronos", "tenant-retention", "t:1", "--max-per-job", "default"])
    assert reset.exit_code == 0, reset.output
    assert backend.get_retention("t:1") == RetentionSettings(7, None, 90)
    assert "10000 a job (the newest)" in reset.output


@pytest.mark.parametrize("args, message", [
    (["nobody"], "no tenant 'nobody'"),
    (["acme", "--metrics-days", "3"], "from 8 to 3650"),
    (["acme", "--max-per-job", "lots"], "nor 'default'"),
])  # fmt: skip
def test_cli_refuses_unknown_tenants_and_bad_values(
    app: Flask, tenants: Tenants, args: list[str], message: str
) -> None:
    tenants.key("acme", "read")
    result = app.test_cli_runner().invoke(args=["chronos", "tenant-retention", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert get_state(app).backend().get_retention("acme") == RetentionSettings()


def test_cli_sweep_removes_everything_over_retention_at_once(app: Flask, tenants: Tenants) -> None:
    for tenant in ("acme", "zeta"):
        tenants.key(tenant, "read")
        write_runs(app, tenant, "a", [now_ms() - DAY_MS - i * 60_000 for i in range(12)])
    get_state(app).backend().set_retention("acme", RetentionSettings(max_executions_per_job=2))
    result = app.test_cli_runner().invoke(args=["chronos", "retention-sweep"])
    assert result.exit_code == 0, result.output
    assert "acme: removed 10" in result.output and "zeta: removed 0" in result.output
    assert stored(app, "acme") == ["a-0", "a-1"]
    assert len(stored(app, "zeta")) == 12
    unknown = app.test_cli_runner().invoke(args=["chronos", "retention-sweep", "nobody"])
    assert unknown.exit_code != 0 and "no tenant 'nobody'" in unknown.output


# the scanner's sweep ---------------------------------------------------------------------
def test_scanner_step_sweeps_every_tenant_within_a_budget(app: Flask, tenants: Tenants) -> None:
    backend = get_state(app).backend()
    for tenant in ("acme", "zeta"):
        tenants.key(tenant, "read")
        write_runs(app, tenant, "a", [now_ms() - DAY_MS - i * 60_000 for i in range(8)])
        backend.set_retention(tenant, RetentionSettings(max_executions_per_job=1))
    first = sweep_retention(backend, now_ms(), per_tenant=4)
    assert (first.removed, first.tenants, sorted(first.unfinished)) == (8, 2, ["acme", "zeta"])
    second = sweep_retention(backend, now_ms(), per_tenant=4)
    assert (second.removed, second.unfinished) == (6, [])
    assert sweep_retention(backend, now_ms()).removed == 0
    assert stored(app, "acme") == stored(app, "zeta") == ["a-0"]


def test_one_scanner_sweeps_per_interval(app: Flask, tenants: Tenants) -> None:
    tenants.key("acme", "read")
    state = get_state(app)
    write_runs(app, "acme", "a", [now_ms() - i * 60_000 for i in range(3)])
    state.backend().set_retention("acme", RetentionSettings(max_executions_per_job=1))
    clock = now_ms() // 3_600_000 * 3_600_000 + 1000  # well inside one hour-long interval
    scanners = [ScannerService(state.backend, ScanSettings(), clock=lambda: clock,
                               sweep_interval_s=3600) for _ in range(3)]  # fmt: skip
    reports = [s.sweep_once() for s in scanners]
    assert [r is not None for r in reports] == [True, False, False]
    assert reports[0] is not None and reports[0].removed == 2
    assert stored(app, "acme") == ["a-0"]


def test_analytics_of_the_retained_range_do_not_change_when_records_go(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    """Metrics come from series and sketches, never from records: trimming every record and
    sweeping a shortened retention leaves the summary, trends and jobs table as they were."""
    ingest = Tenants.headers(tenants.key("acme", "ingest", "read", "admin"))
    now = now_ms()
    runs = [{"execId": f"e{i}", "jobId": f"job-{i % 3}", "status": "failed" if i % 4 else "success",
             "startedAt": now - DAY_MS * (i % 6) - 60_000 * i, "durationMs": 250 + 97 * i}
            for i in range(60)]  # fmt: skip
    jobs = {"jobs": [{"id": f"job-{j}", "name": f"job {j}"} for j in range(3)]}
    assert client.post("/api/ingest/jobs/register", json=jobs, headers=ingest).status_code == 200
    for i in range(0, 60, 20):
        answer = client.post("/api/ingest/executions/batch", json={"executions": runs[i:i + 20]},
                             headers=ingest)  # fmt: skip
        assert answer.status_code == 200 and answer.get_json()["accepted"] == 20
    hour = 3_600_000
    end = now // hour * hour + hour  # fixed ranges: the answers must not move with the clock
    week = f"range=custom&start={end - 7 * DAY_MS}&end={end}"
    reads = [f"/api/analytics/trends?{week}&bucket=day&tz=Europe/Paris",
             f"/api/analytics/trends?{week}&bucket=hour&jobId=job-1",
             f"/api/analytics/jobs?{week}"]  # fmt: skip

    def figures() -> list[Any]:
        summary = client.get("/api/analytics/summary", headers=ingest).get_json()["data"]
        counts = {k: v for k, v in summary["last24h"].items() if k not in ("start", "end")}
        return [counts, *(client.get(url, headers=ingest).get_json()["data"] for url in reads)]

    before = figures()
    assert before[0]["runs"] == 10
    assert [row["runs"] for row in before[3]["jobs"]] == [20, 20, 20]
    assert put(client, tenants.key("acme", "admin"),
               {"executionDays": 1, "maxExecutionsPerJob": 1}).status_code == 200  # fmt: skip
    backend = get_state(app).backend()
    assert sweep_retention(backend, now_ms()).removed > 50
    assert len(stored(app, "acme")) <= 3
    assert figures() == before
