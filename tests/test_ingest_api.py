"""The ingest API over HTTP, on the real Redis Stack: validation per item, idempotency,
metrics, field round trips, truncation, job registration, and every error status."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from chronos import create_app
from chronos.embedded import RedisStackServer, free_port
from chronos.extension import get_state
from chronos.ingest import TRUNCATION_MARKER
from chronos.models import ExecutionQuery
from chronos.schemas import ExecutionEventSchema
from chronos.timeutil import now_ms, to_iso

BATCH = "/api/ingest/executions/batch"
ONE = "/api/ingest/executions"
REGISTER = "/api/ingest/jobs/register"
PLUS_2 = timezone(timedelta(hours=2))
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: Well-formed (``chr_<12 hex>_<43 url-safe>``) but never issued.
UNKNOWN_KEY = "chr_0123456789ab_" + "A" * 43


def post_batch(client: FlaskClient, key: str, executions: list[Any]) -> TestResponse:
    return client.post(BATCH, json={"executions": executions}, headers=Tenants.headers(key))


def post_one(client: FlaskClient, key: str, execution: dict[str, Any]) -> TestResponse:
    return client.post(ONE, json=execution, headers=Tenants.headers(key))


def register(client: FlaskClient, key: str, jobs: list[Any]) -> TestResponse:
    return client.post(REGISTER, json={"jobs": jobs}, headers=Tenants.headers(key))


def get(client: FlaskClient, key: str, path: str) -> TestResponse:
    return client.get(path, headers=Tenants.headers(key))


def run(exec_id: str | None, job_id: str = "job-1", status: str = "success",
        started: int | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """One execution event in wire form; ``started`` defaults to half an hour ago."""
    started = started if started is not None else now_ms() - 30 * 60_000
    event: dict[str, Any] = {"jobId": job_id, "status": status, "startedAt": started}
    if status != "running":
        event["finishedAt"] = started + 1500
        event["durationMs"] = 1500
    if exec_id is not None:
        event["execId"] = exec_id
    event.update(extra)
    return event


def totals(app: Flask, tenant: str, job_id: str | None) -> tuple[int, int, int]:
    """``(runs, success, failure)`` counted over the last two hours (and a little ahead)."""
    now, backend = now_ms(), get_state(app).backend()
    buckets = backend.metric_buckets(tenant, job_id, [now - 2 * 3600_000 + 7, now + 120_000])
    return (sum(b.runs for b in buckets), sum(b.success for b in buckets),
            sum(b.failure for b in buckets))  # fmt: skip


def stored(app: Flask, tenant: str) -> list[str]:
    page = get_state(app).backend().search_executions(tenant, ExecutionQuery(limit=1000))
    assert page.next_cursor is None
    return sorted(e.exec_id for e in page.items)


def assert_json_error(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    return body


def assert_retry_after(response: TestResponse) -> None:
    """``Retry-After`` is there, in whole seconds, at least one."""
    value = response.headers.get("Retry-After", "")
    assert value.isdigit() and int(value) >= 1, value


@pytest.fixture
def make_app(app: Flask, redis_stack_url: str, key_prefix: str,
             tmp_path: Path) -> Iterator[Callable[..., Flask]]:  # fmt: skip
    """More apps on this test's Redis and key prefix (cleaned up by ``app``), with settings."""
    built: list[Flask] = []

    def make(**config: Any) -> Flask:
        other = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": redis_stack_url,
                            "CHRONOS_KEY_PREFIX": key_prefix,
                            "CHRONOS_DATA_DIR": str(tmp_path / "instance"), **config})  # fmt: skip
        built.append(other)
        return other

    yield make
    for other in built:
        get_state(other).close()


# a big batch with bad items ----------------------------------------------------------------

INVALID: dict[int, tuple[Callable[[dict[str, Any]], Any], str]] = {
    7: (lambda e: {**e, "status": "exploded"}, "status"),
    42: (lambda e: {k: v for k, v in e.items() if k != "jobId"}, "jobId"),
    100: (lambda e: {**e, "startedAt": "last tuesday"}, "startedAt"),
    222: (lambda e: {**e, "finishedAt": e["startedAt"] - 1}, "finishedAt"),
    333: (lambda e: "not an object", "_schema"),
    404: (lambda e: {**e, "durationMs": -5}, "durationMs"),
    500: (lambda e: {**e, "labels": {"team": 7}}, "labels"),
    612: (lambda e: {**e, "exitCode": 2**40}, "exitCode"),
    777: (lambda e: {k: v for k, v in e.items() if k != "status"}, "status"),
    999: (lambda e: {**e, "jobId": ""}, "jobId"),
}


def big_batch() -> tuple[list[Any], list[dict[str, Any]]]:
    """1,000 items (two jobs, a third failed) and the 990 valid ones among them."""
    base = now_ms() - 40 * 60_000
    items: list[Any] = []
    valid = []
    for i in range(1000):
        status = "failed" if i % 3 == 0 else "success"
        event = run(f"ex-{i:04d}", job_id=f"job-{i % 2}", status=status, started=base + i * 1000)
        if i in INVALID:
            items.append(INVALID[i][0](event))
        else:
            items.append(event)
            valid.append(event)
    return items, valid


def test_a_batch_keeps_its_good_items_and_names_the_bad_ones(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest")
    items, valid = big_batch()
    response = post_batch(client, key, items)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is True
    assert body["accepted"] == body["ingested"] == 990
    assert body["duplicates"] == 0
    assert [r["index"] for r in body["rejected"]] == sorted(INVALID)
    for rejected in body["rejected"]:
        field = INVALID[rejected["index"]][1]
        assert rejected["errors"].get(field), rejected
    assert [r["outcome"] for r in body["results"]] == ["created"] * 990
    assert {r["index"] for r in body["results"]} == set(range(1000)) - set(INVALID)
    assert stored(app, "acme") == sorted(e["execId"] for e in valid)
    backend = get_state(app).backend()
    assert all(backend.get_execution("acme", f"ex-{i:04d}") is None for i in INVALID)

    failures = {job: sum(1 for e in valid if e["jobId"] == job and e["status"] == "failed")
                for job in ("job-0", "job-1")}  # fmt: skip
    runs = {job: sum(1 for e in valid if e["jobId"] == job) for job in ("job-0", "job-1")}
    expected_tenant = (990, 990 - sum(failures.values()), sum(failures.values()))
    assert totals(app, "acme", None) == expected_tenant
    for job in ("job-0", "job-1"):
        assert totals(app, "acme", job) == (runs[job], runs[job] - failures[job], failures[job])

    again = post_batch(client, key, items)
    assert again.status_code == 200
    body = again.get_json()
    assert (body["accepted"], body["ingested"], body["duplicates"]) == (0, 0, 990)
    assert [r["outcome"] for r in body["results"]] == ["duplicate"] * 990
    assert len(body["rejected"]) == 10
    assert totals(app, "acme", None) == expected_tenant
    assert stored(app, "acme") == sorted(e["execId"] for e in valid)


def test_running_then_success_updates_and_counts_once(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    started = now_ms() - 10 * 60_000
    first = post_one(client, key, run("r-1", status="running", started=started))
    assert first.get_json()["outcome"] == "created"
    assert totals(app, "acme", None) == (0, 0, 0)
    second = post_one(client, key, run("r-1", status="success", started=started))
    assert second.status_code == 200
    assert second.get_json() == {"success": True, "index": 0, "execId": "r-1",
                                 "outcome": "updated"}  # fmt: skip
    data = get(client, key, "/api/executions/r-1").get_json()["data"]
    assert data["status"] == "success"
    assert data["finishedAt"] == to_iso(started + 1500)
    assert totals(app, "acme", None) == (1, 1, 0)
    assert totals(app, "acme", "job-1") == (1, 1, 0)


def test_running_after_success_is_a_duplicate(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    started = now_ms() - 10 * 60_000
    assert post_one(client, key, run("r-2", started=started)).get_json()["outcome"] == "created"
    late = post_one(client, key, run("r-2", status="running", started=started))
    assert late.get_json()["outcome"] == "duplicate"
    assert get(client, key, "/api/executions/r-2").get_json()["data"]["status"] == "success"
    assert totals(app, "acme", None) == (1, 1, 0)


# what is stored comes back ------------------------------------------------------------------


def test_every_field_is_stored_and_answered(client: FlaskClient, tenants: Tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    started = now_ms() - 5 * 60_000
    event = {
        "execId": "ex-ünïcødé-1",
        "jobId": "job:nightly-ëxport",
        "status": "failed",
        "startedAt": to_iso(started),
        "finishedAt": to_iso(started + 2345),
        "durationMs": 2345,
        "exitCode": -9,
        "stdout": "héllo wörld 🌍\nline two",
        "stderr": "warn: 注意",
        "errorType": "ValueError",
        "errorMessage": "bad value «x»",
        "errorStack": 'Traceback (most recent call last):\n  File "job.py", line 3',
        "codeSnippet": "def main():\n    raise ValueError('x')",
        "codeLanguage": "python",
        "attempt": 3,
        "triggerId": "trig-42",
        "host": "worker-07.example",
        "appVersion": "2.4.1",
        "jobVersion": "v17",
        "sdkVersion": "chronos-sdk 0.3",
        "labels": {"team": "data", "région": "eu-west"},
        "metadata": {"rows": 1234, "nested": {"ok": False, "list": [1, "two", None]}},
    }
    response = post_one(client, key, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = get(client, key, "/api/executions/ex-ünïcødé-1")
    assert answer.status_code == 200
    data = answer.get_json()["data"]
    wire_names = {f.data_key or name for name, f in ExecutionEventSchema().fields.items()}
    assert set(event) == wire_names  # the test sends every field there is
    for name, value in event.items():
        assert data[name] == value, name
    assert ISO_MS_Z.fullmatch(data["startedAt"]) and ISO_MS_Z.fullmatch(data["receivedAt"])
    assert data["truncated"] == []
    assert abs(datetime.fromisoformat(data["receivedAt"]).timestamp() * 1000 - now_ms()) < 60_000


def test_iso_with_offset_z_and_epoch_ms_all_answer_the_same_utc_form(
    client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    instant = (now_ms() - 3600_000) // 1000 * 1000 + 123
    moment = datetime.fromtimestamp(instant / 1000, tz=UTC)
    forms = {
        "offset": moment.astimezone(PLUS_2).isoformat(timespec="milliseconds"),
        "zulu": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "epoch": instant,
    }
    assert forms["offset"].endswith("+02:00") and forms["zulu"].endswith(".123Z")
    for name, value in forms.items():
        event = run(f"ts-{name}", started=instant, startedAt=value, finishedAt=value)
        assert post_one(client, key, event).status_code == 200
    for name in forms:
        data = get(client, key, f"/api/executions/ts-{name}").get_json()["data"]
        assert data["startedAt"] == data["finishedAt"] == to_iso(instant)
        assert data["startedAt"] == moment.strftime("%Y-%m-%dT%H:%M:%S.123Z")


def test_an_absent_exec_id_is_generated_and_returned(client: FlaskClient, tenants: Tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    one = post_one(client, key, run(None)).get_json()
    assert one["outcome"] == "created" and one["execId"]
    batch = post_batch(client, key, [run(None), run(None)]).get_json()
    ids = [r["execId"] for r in batch["results"]]
    assert len(set(ids + [one["execId"]])) == 3
    for exec_id in ids + [one["execId"]]:
        data = get(client, key, f"/api/executions/{exec_id}").get_json()["data"]
        assert data["execId"] == exec_id


def test_big_outputs_keep_head_and_tail(app: Flask, client: FlaskClient, tenants: Tenants) -> None:
    app.config["CHRONOS_MAX_OUTPUT_BYTES"] = 200
    key = tenants.key("acme", "ingest", "read")
    big = {name: f"{name}-HEAD " + "é" * 500 + f" {name}-TAIL"
           for name in ("stdout", "stderr", "errorStack")}  # fmt: skip
    post_one(client, key, run("big", **big))
    small = {"stdout": "x" * 200, "stderr": "short", "errorStack": "é" * 100}  # 200 bytes each
    post_one(client, key, run("small", **small))

    data = get(client, key, "/api/executions/big").get_json()["data"]
    assert sorted(data["truncated"]) == ["errorStack", "stderr", "stdout"]
    for name in big:
        text = data[name]
        assert text.startswith(f"{name}-HEAD ") and text.endswith(f" {name}-TAIL")
        assert "…[truncated " in text
        marker = TRUNCATION_MARKER.split("{")[0]
        assert len(text.replace(marker, "").encode()) < 200 + 60
    data = get(client, key, "/api/executions/small").get_json()["data"]
    assert data["truncated"] == []
    assert {name: data[name] for name in small} == small


# job registration ---------------------------------------------------------------------------


def test_register_creates_then_updates_and_keeps_ids_exactly(
    client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    jobs = [{"id": "job:daily-report", "schedule": "0 3 * * *", "timezone": "Europe/Paris"},
            {"id": "Job:Daily-Report"}]  # fmt: skip
    first = register(client, key, jobs).get_json()
    assert first["results"] == [
        {"index": 0, "id": "job:daily-report", "outcome": "created"},
        {"index": 1, "id": "Job:Daily-Report", "outcome": "created"},
    ]
    second = register(client, key, jobs[:1]).get_json()
    assert second["results"] == [{"index": 0, "id": "job:daily-report", "outcome": "updated"}]
    data = get(client, key, "/api/jobs/job:daily-report").get_json()["data"]
    expected = {"id": "job:daily-report", "name": "job:daily-report", "schedule": "0 3 * * *",
                "timezone": "Europe/Paris", "runMode": "recurring", "enabled": True}  # fmt: skip
    assert {name: data[name] for name in expected} == expected
    assert get(client, key, "/api/jobs/Job:Daily-Report").get_json()["data"]["schedule"] == ""


def test_register_rejects_bad_cron_and_time_zones_by_name(
    client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    response = register(client, key, [
        {"id": "ok", "schedule": "*/15 * * * * *"},  # six fields: seconds first
        {"id": "bad-minute", "schedule": "61 * * * *"},
        {"id": "too-short", "schedule": "* * *"},
        {"id": "martian", "schedule": "0 * * * *", "timezone": "Mars/Olympus"},
    ])  # fmt: skip
    assert response.status_code == 200
    body = response.get_json()
    assert body["results"] == [{"index": 0, "id": "ok", "outcome": "created"}]
    errors = {r["index"]: r["errors"] for r in body["rejected"]}
    assert list(errors) == [1, 2, 3]
    assert "61 * * * *" in errors[1]["schedule"][0]
    assert "5 fields" in errors[2]["schedule"][0] and "has 3" in errors[2]["schedule"][0]
    assert "Mars/Olympus" in errors[3]["timezone"][0]
    assert "time zone" in errors[3]["timezone"][0]
    assert get(client, key, "/api/jobs/ok").get_json()["data"]["schedule"] == "*/15 * * * * *"
    for missing in ("bad-minute", "too-short", "martian"):
        assert get(client, key, f"/api/jobs/{missing}").status_code == 404


def test_run_at_as_iso_or_epoch_ms_makes_a_one_off_job(
    client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    at = (now_ms() + 86_400_000) // 1000 * 1000
    register(client, key, [{"id": "iso", "runAt": to_iso(at)}, {"id": "epoch", "runAt": at}])
    for job_id in ("iso", "epoch"):
        data = get(client, key, f"/api/jobs/{job_id}").get_json()["data"]
        assert (data["runAt"], data["runMode"]) == (to_iso(at), "once")


def test_re_registering_keeps_the_fields_not_sent(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    key = tenants.key("acme", "ingest", "read")
    register(client, key, [{"id": "job:keep", "description": "nightly export", "tags": ["etl"],
                            "schedule": "0 2 * * *", "graceSeconds": 120}])  # fmt: skip
    get_state(app).backend().set_job_enabled("acme", "job:keep", False, now_ms())
    again = register(client, key, [{"id": "job:keep", "schedule": "0 4 * * *"}]).get_json()
    assert again["results"][0]["outcome"] == "updated"
    data = get(client, key, "/api/jobs/job:keep").get_json()["data"]
    kept = {"description": "nightly export", "tags": ["etl"], "graceSeconds": 120,
            "schedule": "0 4 * * *", "enabled": False}  # fmt: skip
    assert {name: data[name] for name in kept} == kept


# errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BATCH, ONE, REGISTER])
def test_malformed_json_is_a_400_with_a_json_body(
    client: FlaskClient, tenants: Tenants, path: str
) -> None:
    key = tenants.key("acme", "ingest")
    response = client.post(path, data='{"executions": [', content_type="application/json",
                           headers=Tenants.headers(key))  # fmt: skip
    assert assert_json_error(response, 400)["code"] == "bad_request"


@pytest.mark.parametrize(
    ("path", "body"),
    [(BATCH, {"executions": {}}), (BATCH, []), (BATCH, {"jobs": []}), (REGISTER, {"jobs": "x"}),
     (REGISTER, {"executions": []}), (ONE, []), (ONE, "text")],
)  # fmt: skip
def test_a_wrong_top_level_shape_is_a_400(
    client: FlaskClient, tenants: Tenants, path: str, body: Any
) -> None:
    key = tenants.key("acme", "ingest")
    response = client.post(path, json=body, headers=Tenants.headers(key))
    assert_json_error(response, 400)


def test_missing_garbage_unknown_and_revoked_keys_are_401(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    app.config["CHRONOS_API_KEY_CACHE_SECONDS"] = 0
    good = tenants.key("acme", "ingest")
    ok = [run("k-1")]
    assert client.post(BATCH, json={"executions": ok}).status_code == 401
    wrong_secret = good[:-1] + ("B" if good[-1] != "B" else "C")
    for bad in ("garbage", "chr_short_x", UNKNOWN_KEY, wrong_secret):
        assert_json_error(post_batch(client, bad, ok), 401)
    assert client.post(BATCH, json={"executions": ok},
                       headers={"Authorization": f"Bearer {good}"}).status_code == 200  # fmt: skip
    assert client.post(BATCH, json={"executions": ok},
                       headers={"Authorization": f"Basic {good}"}).status_code == 401  # fmt: skip
    key_id = good.split("_")[1]
    assert get_state(app).backend().revoke_api_key("acme", key_id, now_ms())
    assert_json_error(post_batch(client, good, ok), 401)


def test_scopes_decide_between_ingest_and_read(client: FlaskClient, tenants: Tenants) -> None:
    reader = tenants.key("acme", "read")
    writer = tenants.key("acme", "ingest")
    admin = tenants.key("acme", "admin")
    body = assert_json_error(post_batch(client, reader, [run("s-1")]), 403)
    assert body["details"] == {"scopes": ["read"]}
    assert_json_error(register(client, reader, [{"id": "j"}]), 403)
    for path in ("/api/jobs", "/api/executions", "/api/jobs/j", "/api/executions/s-1"):
        assert_json_error(get(client, writer, path), 403)
    assert post_batch(client, writer, [run("s-1")]).status_code == 200
    assert post_batch(client, admin, [run("s-2")]).status_code == 200
    assert get(client, admin, "/api/executions/s-1").status_code == 200
    assert get(client, reader, "/api/executions/s-2").status_code == 200


def test_a_body_over_the_limit_is_413_naming_it(make_app: Callable[..., Flask]) -> None:
    small = make_app(CHRONOS_MAX_BODY_BYTES=4096)
    client = small.test_client()
    key = Tenants(small).key("acme", "ingest")
    fits = post_batch(client, key, [run("b-1", stdout="x" * 1000)])
    assert fits.status_code == 200
    response = post_batch(client, key, [run("b-2", stdout="x" * 5000)])
    body = assert_json_error(response, 413)
    assert "4096" in body["error"]
    assert body["details"] == {"limit_bytes": 4096}


def test_more_items_than_the_batch_limit_is_413(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    app.config["CHRONOS_MAX_BATCH_ITEMS"] = 5
    key = tenants.key("acme", "ingest")
    assert post_batch(client, key, [run(f"m-{i}") for i in range(5)]).status_code == 200
    body = assert_json_error(post_batch(client, key, [run(f"n-{i}") for i in range(6)]), 413)
    assert "at most 5 executions" in body["error"]
    assert_json_error(register(client, key, [{"id": f"j{i}"} for i in range(6)]), 413)
    assert get_state(app).backend().get_execution("acme", "n-0") is None


def test_every_item_invalid_is_422_with_rejected(client: FlaskClient, tenants: Tenants) -> None:
    key = tenants.key("acme", "ingest")
    body = assert_json_error(post_batch(client, key, [{"jobId": "j"}, 5]), 422)
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert body["accepted"] == 0
    body = assert_json_error(register(client, key, [{"schedule": "* * * * *"}]), 422)
    assert "id" in body["rejected"][0]["errors"]
    body = assert_json_error(post_one(client, key, {"jobId": "j", "status": "nope"}), 422)
    assert set(body["details"]) == {"status", "startedAt"}


def wait_for_a_fresh_minute(margin_ms: int = 3000) -> None:
    """Sleep past the next minute edge when it is near: the rate window is a fixed minute."""
    left = 60_000 - now_ms() % 60_000
    if left < margin_ms:
        time.sleep(left / 1000 + 0.05)


def test_a_tenant_over_its_rate_gets_429_and_others_do_not(
    app: Flask, client: FlaskClient, tenants: Tenants
) -> None:
    app.config["CHRONOS_INGEST_RATE_PER_MINUTE"] = 3
    acme, globex = tenants.key("acme", "ingest"), tenants.key("globex", "ingest")
    acme_again = tenants.key("acme", "ingest", username="acme-other")
    wait_for_a_fresh_minute()
    assert post_batch(client, acme, [run("q-1")]).status_code == 200
    assert post_one(client, acme, run("q-2")).status_code == 200
    assert register(client, acme, [{"id": "q"}]).status_code == 200
    response = post_batch(client, acme_again, [run("q-3")])  # same tenant, another user
    body = assert_json_error(response, 429)
    assert body["code"] == "rate_limited"
    assert_retry_after(response)
    assert int(response.headers["Retry-After"]) <= 60
    assert_json_error(post_one(client, acme, run("q-4")), 429)
    assert post_batch(client, globex, [run("q-1")]).status_code == 200
    assert get_state(app).backend().get_execution("acme", "q-3") is None


def test_redis_unreachable_is_503_never_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    down = create_app({
        "TESTING": True, "CHRONOS_BACKEND_URL": f"redis://127.0.0.1:{port}/0",
        "CHRONOS_AUTO_MIGRATE": False, "CHRONOS_DATA_DIR": str(tmp_path / "instance"),
    })  # fmt: skip
    client = down.test_client()
    try:
        for response in (
            post_batch(client, UNKNOWN_KEY, [run("d-1")]),
            post_one(client, UNKNOWN_KEY, run("d-1")),
            register(client, UNKNOWN_KEY, [{"id": "d"}]),
            get(client, UNKNOWN_KEY, "/api/jobs"),
        ):
            body = assert_json_error(response, 503)
            assert body["code"] == "backend_unavailable"
            assert body["error"] == "Redis is unreachable"
            assert str(port) not in response.get_data(as_text=True)  # no internal address
            assert_retry_after(response)
        # The operator learns where: once in the log for the four failures, with the address.
        outages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(outages) == 1 and str(port) in outages[0], outages
        assert client.get("/api/openapi.json").status_code == 200
        assert_json_error(client.post(BATCH, json={"executions": []}), 401)  # no key: no I/O
    finally:
        get_state(down).close()


@pytest.mark.slow
def test_the_app_recovers_when_redis_comes_back(tmp_path: Path) -> None:
    root, port = tmp_path / "r", free_port()
    server = RedisStackServer(root=root, persistent=True, port=port)
    url = server.start()
    app = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": url,
                      "CHRONOS_DATA_DIR": str(tmp_path / "instance")})  # fmt: skip
    client = app.test_client()
    try:
        key = Tenants(app).key("acme", "ingest", "read")
        assert post_one(client, key, run("before")).status_code == 200
        server.stop()
        for response in (post_one(client, key, run("during")), get(client, key, "/api/jobs")):
            assert_json_error(response, 503)
            assert_retry_after(response)
        server = RedisStackServer(root=root, persistent=True, port=port)
        assert server.start() == url
        assert post_one(client, key, run("after")).get_json()["outcome"] == "created"
        found = get(client, key, "/api/executions?jobId=job-1").get_json()["data"]
        assert sorted(e["execId"] for e in found) == ["after", "before"]
    finally:
        get_state(app).close()
        server.stop()
