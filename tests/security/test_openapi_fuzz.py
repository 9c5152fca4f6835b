"""A property-based run of the API from its own OpenAPI document (schemathesis, in process).

Every operation of ``/api/openapi.json`` is called with generated input, valid and invalid,
by a tenant holding an all-scope key and some data; each answer must be no server error, have
a documented status and content type, and match the documented schema. The run is
derandomized and bounded for CI; ``CHRONOS_FUZZ_EXAMPLES=2000 .venv/bin/pytest
tests/security/test_openapi_fuzz.py`` fuzzes longer. The tests after it pin what earlier
runs found.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chronos.backends import cursor
from chronos.openapi import build_spec
from chronos.timeutil import now_ms

#: Examples per operation; CI keeps the whole run within seconds.
EXAMPLES = int(os.environ.get("CHRONOS_FUZZ_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_dict(build_spec())


@pytest.fixture
def fuzz_key(client: FlaskClient, tenants: Tenants) -> str:
    """An all-scope key of a tenant with a job, runs (one with every field) and settings."""
    key = tenants.key("fuzz", "ingest", "read", "admin")
    headers, now = Tenants.headers(key), now_ms()
    job = {
        "id": "0",
        "name": "n",
        "schedule": "*/5 * * * *",
        "tags": ["t"],
        "version": "1",
        "metadata": {"a": [1, {"b": None}]},
    }
    assert (
        client.post("/api/ingest/jobs/register", json={"jobs": [job]}, headers=headers).status_code
        == 200
    )
    runs = [
        {
            "execId": str(n),
            "jobId": "0",
            "status": status,
            "startedAt": now - 60_000 * n,
            "finishedAt": now - 60_000 * n + 5,
            "stdout": "x" * 70_000,
            "errorType": "E",
            "exitCode": 1,
            "labels": {"k": "v"},
            "host": "h",
            "jobVersion": "1",
        }
        for n, status in enumerate(("success", "failed", "timeout"))
    ]
    runs.append({"execId": "r", "jobId": "0", "status": "running", "startedAt": now})
    assert (
        client.post(
            "/api/ingest/executions/batch", json={"executions": runs}, headers=headers
        ).status_code
        == 200
    )
    return key


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, app: Flask, fuzz_key: str
) -> None:
    case.call_and_validate(app=app, headers=Tenants.headers(fuzz_key), checks=CHECKS)


def test_the_fuzzed_document_is_the_served_one(client: FlaskClient) -> None:
    assert client.get("/api/openapi.json").get_json() == build_spec()


# -- what the fuzzer found -----------------------------------------------------------------------


def _error(answer, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["success"] is False and body["error"] and body["code"], body
    return body


def test_a_batch_with_every_item_rejected_has_the_documented_shape(
    client: FlaskClient, fuzz_key: str
) -> None:
    headers = Tenants.headers(fuzz_key)
    for path, key, documented in (
        ("/api/ingest/jobs/register", "jobs", "RegisterRejected"),
        ("/api/ingest/executions/batch", "executions", "BatchRejected"),
    ):
        body = _error(client.post(path, json={key: [{"timezone": ""}]}, headers=headers), 422)
        assert body["code"] == "validation_error" and body["rejected"][0]["index"] == 0
        spec = build_spec()
        answer = spec["paths"][path]["post"]["responses"]["422"]["content"]["application/json"]
        assert answer["schema"]["$ref"].endswith(documented)
        assert set(body) <= set(spec["components"]["schemas"][documented]["properties"])


@pytest.mark.parametrize("name", ["version", "host", "jobId"])
def test_empty_filters_are_refused_not_a_server_error(
    client: FlaskClient, fuzz_key: str, name: str
) -> None:
    for path in ("/api/executions", "/api/jobs/0/executions"):
        body = _error(
            client.get(path, query_string={name: ""}, headers=Tenants.headers(fuzz_key)), 422
        )
        assert name in body["details"]


def test_an_id_no_route_can_hold_is_a_documented_404(client: FlaskClient, fuzz_key: str) -> None:
    for path in (
        "/api/jobs/a%0Ab/triggers",
        "/api/jobs/a%0Ab/executions",
        "/api/jobs/a%0Ab",
        "/api/executions/a%0Ab",
    ):
        _error(client.get(path, headers=Tenants.headers(fuzz_key)), 404)
        template = path.replace("a%0Ab", "{jobId}" if "/jobs/" in path else "{execId}")
        assert "404" in build_spec()["paths"][template]["get"]["responses"]


@pytest.mark.parametrize(
    "tampered",
    [
        cursor.encode("executions", ts=0, skip=-1),
        cursor.encode("executions", ts=0, skip=10**12),
        cursor.encode("executions", ts=10**400, skip=0),
        cursor.encode("executions", ts=-(2**60), skip=0),
        cursor.encode("jobs", seq=10**40),
        cursor.encode("jobs", seq=-(2**60)),
    ],
)
def test_tampered_cursors_are_refused_not_a_server_error(
    client: FlaskClient, fuzz_key: str, tampered: str
) -> None:
    path = "/api/jobs" if "am9icy" in tampered else "/api/executions"
    body = _error(
        client.get(path, query_string={"cursor": tampered}, headers=Tenants.headers(fuzz_key)), 422
    )
    assert "cursor" in body["details"]


def test_a_real_cursor_still_pages(client: FlaskClient, fuzz_key: str) -> None:
    headers, seen, query = Tenants.headers(fuzz_key), [], {"limit": 1}
    while True:
        body = client.get("/api/executions", query_string=query, headers=headers).get_json()
        seen += [run["execId"] for run in body["data"]]
        if body["nextCursor"] is None:
            break
        query["cursor"] = body["nextCursor"]
    assert seen == ["r", "0", "1", "2"]
