"""The read API over HTTP, on the real Redis Stack: filters, cursor pagination, the wall
between tenants (with ids and queries that mean something to Redis), and the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from chronos.backends import cursor
from chronos.extension import get_state
from chronos.models import MetricBucket
from chronos.schemas import ExecutionEventSchema
from chronos.timeutil import now_ms, to_iso


def post_batch(client: FlaskClient, key: str, executions: list[Any]) -> dict[str, Any]:
    response = client.post("/api/ingest/executions/batch", json={"executions": executions},
                           headers=Tenants.headers(key))  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)
    assert not response.get_json()["rejected"]
    return response.get_json()


def register(client: FlaskClient, key: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/api/ingest/jobs/register", json={"jobs": jobs},
                           headers=Tenants.headers(key))  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)
    assert not response.get_json()["rejected"]
    return response.get_json()


def get(client: FlaskClient, key: str, path: str, **query: Any) -> TestResponse:
    response = client.get(path, query_string=query, headers=Tenants.headers(key))
    assert response.status_code != 500, response.get_data(as_text=True)
    return response


def data(client: FlaskClient, key: str, path: str, **query: Any) -> Any:
    response = get(client, key, path, **query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["data"]


def ids(client: FlaskClient, key: str, path: str, **query: Any) -> list[str]:
    """The ids on one page: ``execId`` of executions, ``id`` of jobs."""
    return [item.get("execId", item.get("id")) for item in data(client, key, path, **query)]


def all_pages(client: FlaskClient, key: str, path: str, **query: Any) -> list[list[str]]:
    """Every page of a listing, following ``nextCursor`` until it is null."""
    pages, next_cursor = [], None
    while True:
        page_query = {**query, **({"cursor": next_cursor} if next_cursor else {})}
        body = get(client, key, path, **page_query).get_json()
        pages.append([item.get("execId", item.get("id")) for item in body["data"]])
        next_cursor = body["nextCursor"]
        if next_cursor is None:
            return pages
        assert len(pages) < 50


def run(exec_id: str, job_id: str, started: int, status: str = "success",
        **extra: Any) -> dict[str, Any]:  # fmt: skip
    event = {"execId": exec_id, "jobId": job_id, "status": status, "startedAt": started}
    if status != "running":
        event.update(finishedAt=started + 500, durationMs=500)
    return {**event, **extra}


def url_id(value: str) -> str:
    return quote(value, safe="")


def assert_json_error(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False and body["error"]
    return body


# jobs ---------------------------------------------------------------------------------------


def test_jobs_filter_by_enabled_tag_and_text(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    register(client, key, [
        {"id": "etl-load", "tags": ["etl", "nightly"], "description": "load rows into warehouse"},
        {"id": "etl-clean", "tags": ["etl"], "description": "clean up staging"},
        {"id": "report", "name": "Weekly revenue report", "tags": ["reports"]},
    ])  # fmt: skip
    get_state(app).backend().set_job_enabled("acme", "etl-clean", False, now_ms())
    assert ids(client, key, "/api/jobs") == ["etl-load", "etl-clean", "report"]
    assert ids(client, key, "/api/jobs", enabled="false") == ["etl-clean"]
    assert ids(client, key, "/api/jobs", enabled="true") == ["etl-load", "report"]
    assert ids(client, key, "/api/jobs", tag="etl") == ["etl-load", "etl-clean"]
    assert ids(client, key, "/api/jobs", tag="et") == []
    assert ids(client, key, "/api/jobs", tag="etl", enabled="true") == ["etl-load"]
    assert ids(client, key, "/api/jobs", q="warehouse") == ["etl-load"]
    assert ids(client, key, "/api/jobs", q="weekly") == ["report"]
    assert ids(client, key, "/api/jobs", q="*") == []
    assert_json_error(get(client, key, "/api/jobs", enabled="maybe"), 422)


def test_jobs_paginate_by_cursor(client: FlaskClient, tenants: Tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    job_ids = [f"job-{i:02d}" for i in range(25)]
    register(client, key, [{"id": job_id} for job_id in job_ids])
    pages = all_pages(client, key, "/api/jobs", limit=10)
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [job_id for page in pages for job_id in page] == job_ids


def test_an_unknown_job_or_execution_is_a_json_404(client: FlaskClient, tenants: Tenants) -> None:
    key = tenants.key("acme", "read")
    assert assert_json_error(get(client, key, "/api/jobs/nope"), 404)["code"] == "not_found"
    assert_json_error(get(client, key, "/api/executions/nope"), 404)


# executions ---------------------------------------------------------------------------------


@pytest.fixture
def four_runs(client: FlaskClient, tenants: Tenants) -> tuple[str, int]:
    """A key of tenant acme and the start of its four runs, one a minute: e1..e4."""
    key = tenants.key("acme", "ingest", "read")
    base = (now_ms() - 3600_000) // 1000 * 1000
    register(client, key, [{"id": "etl"}, {"id": "report"}])
    post_batch(client, key, [
        run("e1", "etl", base, host="h1", jobVersion="v1", stdout="loaded 10 rows"),
        run("e2", "etl", base + 60_000, "failed", host="h2", jobVersion="v2",
            errorType="ConnectionError", errorMessage="connection refused by db"),
        run("e3", "report", base + 120_000, host="h1", jobVersion="v1", stdout="report sent"),
        run("e4", "report", base + 180_000, "running", host="h2"),
    ])  # fmt: skip
    return key, base


def test_executions_filter_on_every_field(client: FlaskClient, four_runs: tuple[str, int]) -> None:
    key, base = four_runs
    listing = "/api/executions"
    assert ids(client, key, listing) == ["e4", "e3", "e2", "e1"]
    assert ids(client, key, listing, jobId="etl") == ["e2", "e1"]
    assert ids(client, key, listing, status="failed") == ["e2"]
    assert ids(client, key, listing, status="running") == ["e4"]
    assert ids(client, key, listing, q="refused") == ["e2"]
    assert ids(client, key, listing, q="ConnectionError") == ["e2"]
    assert ids(client, key, listing, q="rows") == ["e1"]
    assert ids(client, key, listing, q="report sent") == ["e3"]
    assert ids(client, key, listing, version="v1") == ["e3", "e1"]
    assert ids(client, key, listing, host="h1") == ["e3", "e1"]
    assert ids(client, key, listing, jobId="etl", host="h1") == ["e1"]
    assert ids(client, key, listing, jobId="etl", host="h1", status="failed") == []
    assert ids(client, key, listing, jobId="et") == []


def test_from_and_to_bound_started_at_as_iso_or_epoch_ms(
    client: FlaskClient, four_runs: tuple[str, int]
) -> None:
    key, base = four_runs
    start, end = base + 60_000, base + 180_000  # [start, end): e2 and e3
    assert ids(client, key, "/api/executions", **{"from": start, "to": end}) == ["e3", "e2"]
    iso = {"from": to_iso(start), "to": to_iso(end)}
    assert ids(client, key, "/api/executions", **iso) == ["e3", "e2"]
    offset = to_iso(start).replace("Z", "+00:00")
    assert ids(client, key, "/api/executions", **{"from": offset}) == ["e4", "e3", "e2"]
    assert_json_error(get(client, key, "/api/executions", **{"from": "yesterday"}), 422)


def test_a_jobs_executions_are_listed_under_it(
    client: FlaskClient, four_runs: tuple[str, int]
) -> None:
    key, _ = four_runs
    assert ids(client, key, "/api/jobs/report/executions") == ["e4", "e3"]
    assert ids(client, key, "/api/jobs/report/executions", status="success") == ["e3"]
    assert ids(client, key, "/api/jobs/nope/executions") == []


def test_executions_with_equal_start_times_paginate_without_gaps(
    client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    same = now_ms() - 600_000
    tied = [run(f"tie-{i:02d}", "etl", same) for i in range(25)]
    later = [run(f"late-{i}", "etl", same + 1000 * (i + 1)) for i in range(3)]
    post_batch(client, key, tied + later)
    pages = all_pages(client, key, "/api/executions", limit=10)
    assert [len(page) for page in pages] == [10, 10, 8]
    flat = [exec_id for page in pages for exec_id in page]
    assert flat[:3] == ["late-2", "late-1", "late-0"]
    assert sorted(flat[3:]) == [e["execId"] for e in tied]
    pages = all_pages(client, key, "/api/jobs/etl/executions", limit=7)
    assert sorted(e for page in pages for e in page) == sorted(flat)


def test_bad_cursors_and_limits_are_422(client: FlaskClient, four_runs: tuple[str, int]) -> None:
    key, _ = four_runs
    jobs_cursor = cursor.encode("jobs", seq=1)
    for bad in ("not a cursor", "!!!", jobs_cursor, cursor.encode("executions", ts="x", skip=0)):
        body = assert_json_error(get(client, key, "/api/executions", cursor=bad), 422)
        assert body["code"] == "validation_error"
    assert_json_error(get(client, key, "/api/jobs", cursor=cursor.encode("executions")), 422)
    assert_json_error(get(client, key, "/api/jobs/etl/executions", cursor="%%%"), 422)
    for path in ("/api/jobs", "/api/executions"):
        for limit in ("0", "5000", "-1", "ten"):
            body = assert_json_error(get(client, key, path, limit=limit), 422)
            assert "limit" in body["details"]
    assert len(ids(client, key, "/api/executions", limit=1000)) == 4


# the wall between tenants -------------------------------------------------------------------

HOSTILE = ["a|b", "*", "{x}", "\\", "a:b", "job-1", "job1", "job:daily-report", "x/y", "%2F", "é"]
#: The ids tenant B uses as well, for its own jobs and executions.
SHARED = HOSTILE[::2]


@dataclass
class Wall:
    """Two tenants' keys and what tenant A looked like before tenant B wrote anything."""

    app: Flask
    a: str
    b: str
    edges: list[int]
    a_jobs: dict[str, Any] = field(default_factory=dict)
    a_runs: dict[str, Any] = field(default_factory=dict)
    a_metrics: list[list[MetricBucket]] = field(default_factory=list)

    def metrics_of_a(self) -> list[list[MetricBucket]]:
        """A's buckets for the whole tenant, then for each hostile job id."""
        backend = get_state(self.app).backend()
        return [backend.metric_buckets("tenant-a", j, self.edges) for j in (None, *HOSTILE)]


@pytest.fixture
def wall(app: Flask, client: FlaskClient, tenants: Tenants) -> Wall:
    """Tenant A with a job and a run for every hostile id; tenant B with some of the same ids."""
    started = now_ms() - 1800_000
    wall = Wall(app, tenants.key("tenant-a", "ingest", "read"),
                tenants.key("tenant-b", "ingest", "read"),
                edges=[started - 3600_000 + 1, now_ms() + 120_000])  # fmt: skip
    a, b = wall.a, wall.b
    register(client, a, [{"id": i, "description": "alpha owned", "tags": ["alpha"]}
                         for i in HOSTILE])  # fmt: skip
    post_batch(client, a, [run(i, i, started + n, stdout=f"alphasecret zulu{n}", host="alpha")
                           for n, i in enumerate(HOSTILE)])  # fmt: skip
    wall.a_jobs = {i: data(client, a, f"/api/jobs/{url_id(i)}") for i in HOSTILE}
    wall.a_runs = {i: data(client, a, f"/api/executions/{url_id(i)}") for i in HOSTILE}
    wall.a_metrics = wall.metrics_of_a()

    outcomes = register(client, b, [{"id": i, "description": "bravo owned"} for i in SHARED])
    assert [r["outcome"] for r in outcomes["results"]] == ["created"] * len(SHARED)
    post_batch(client, b, [run(i, i, started + 50 + n, "failed", stdout="bravo words", host="b")
                           for n, i in enumerate(SHARED)])  # fmt: skip
    post_batch(client, b, [run("b-only", "job-1", started + 99, stdout="bravo words")])
    return wall


def test_b_reads_its_own_job_or_404_never_as(client: FlaskClient, wall: Wall) -> None:
    b = wall.b
    for job_id in HOSTILE:
        response = get(client, b, f"/api/jobs/{url_id(job_id)}")
        if job_id in SHARED:
            assert response.status_code == 200, job_id
            job = response.get_json()["data"]
            assert (job["id"], job["description"]) == (job_id, "bravo owned")
            assert job["tags"] == []
        else:
            assert_json_error(response, 404)
    assert ids(client, b, "/api/jobs", limit=100) == SHARED
    assert ids(client, b, "/api/jobs", tag="alpha") == []


def test_b_lists_only_its_own_executions(client: FlaskClient, wall: Wall) -> None:
    b = wall.b
    for job_id in HOSTILE:
        mine = [job_id] if job_id in SHARED else []
        if job_id == "job-1":
            mine = ["b-only"]
        by_query = data(client, b, "/api/executions", jobId=job_id)
        nested = data(client, b, f"/api/jobs/{url_id(job_id)}/executions")
        for listing in (by_query, nested):
            assert [e["execId"] for e in listing] == mine, job_id
            assert all(e["stdout"] == "bravo words" for e in listing)
    everything = data(client, b, "/api/executions", limit=1000)
    assert sorted(e["execId"] for e in everything) == sorted([*SHARED, "b-only"])
    assert ids(client, b, "/api/executions", host="alpha") == []


def test_b_gets_its_own_execution_by_id_or_404(client: FlaskClient, wall: Wall) -> None:
    b = wall.b
    for exec_id in HOSTILE:
        response = get(client, b, f"/api/executions/{url_id(exec_id)}")
        if exec_id in SHARED:
            record = response.get_json()["data"]
            assert (record["execId"], record["status"], record["stdout"]) == (
                exec_id, "failed", "bravo words")  # fmt: skip
        else:
            assert_json_error(response, 404)


def test_text_search_never_crosses_tenants(client: FlaskClient, wall: Wall) -> None:
    a, b = wall.a, wall.b
    assert len(ids(client, a, "/api/executions", q="alphasecret")) == len(HOSTILE)
    assert ids(client, b, "/api/executions", q="alphasecret") == []
    assert ids(client, b, "/api/executions", q="zulu3") == []
    assert ids(client, b, "/api/jobs", q="alpha") == []
    assert ids(client, a, "/api/jobs", q="bravo") == []


@pytest.mark.parametrize(
    "query",
    [{"q": "@stdout:{x} | *"}, {"q": '"'}, {"q": "-"}, {"q": "*"}, {"q": "alphasecret | bravo"},
     {"q": "@tenant:{tenant\\-a}"}, {"jobId": "*"}, {"jobId": "a|b"}, {"host": "*"},
     {"version": "{x}"}, {"status": "success|failed"}, {"status": "*"}],
)  # fmt: skip
def test_query_syntax_in_parameters_is_inert(
    client: FlaskClient, wall: Wall, query: dict[str, str]
) -> None:
    b = wall.b
    for path in ("/api/executions", "/api/jobs/job1/executions"):
        response = get(client, b, path, **query)
        if "status" in query:
            assert_json_error(response, 422)
            continue
        assert response.status_code == 200
        for record in response.get_json()["data"]:
            assert record["stdout"] == "bravo words"
    jobs = get(client, b, "/api/jobs", q=query.get("q", "x"))
    assert jobs.status_code == 200
    assert all(job["description"] == "bravo owned" for job in jobs.get_json()["data"])


def test_bs_writes_never_touch_as_jobs_runs_or_metrics(client: FlaskClient, wall: Wall) -> None:
    a = wall.a
    for job_id in HOSTILE:
        assert data(client, a, f"/api/jobs/{url_id(job_id)}") == wall.a_jobs[job_id]
        assert data(client, a, f"/api/executions/{url_id(job_id)}") == wall.a_runs[job_id]
        assert ids(client, a, "/api/executions", jobId=job_id) == [job_id]
    assert wall.metrics_of_a() == wall.a_metrics
    assert wall.a_metrics[0][0].runs == len(HOSTILE)
    assert wall.a_metrics[0][0].failure == 0


# the OpenAPI document -----------------------------------------------------------------------

PATHS = {
    "/api/ingest/jobs/register": "post",
    "/api/ingest/executions/batch": "post",
    "/api/ingest/executions": "post",
    "/api/jobs": "get",
    "/api/jobs/{jobId}": "get",
    "/api/jobs/{jobId}/executions": "get",
    "/api/executions": "get",
    "/api/executions/{execId}": "get",
}


def test_the_openapi_document_describes_the_api(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")  # public: no key
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    for path, method in PATHS.items():
        assert set(spec["paths"][path]) - {"parameters"} == {method}, path
    assert {"JobDef", "ExecutionEvent", "Execution", "Job", "BatchResponse", "Error"} <= set(
        spec["components"]["schemas"]
    )
    schemas = spec["components"]["schemas"]
    properties = schemas["ExecutionEvent"]["properties"]
    wire = {f.data_key or name for name, f in ExecutionEventSchema().fields.items()}
    assert wire <= set(properties)
    assert {"execId", "jobId", "startedAt", "durationMs", "errorStack"} <= set(properties)
    started = properties["startedAt"]
    types = {alternative.get("type") for alternative in started.get("oneOf", [started])}
    assert {"string", "integer"} <= types
    assert {"jobId", "status", "startedAt"} <= set(schemas["ExecutionEvent"]["required"])
    assert {"truncated", "receivedAt"} <= set(schemas["Execution"]["properties"])
