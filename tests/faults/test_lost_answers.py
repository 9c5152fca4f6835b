"""The ambiguous failure, made on purpose: Redis runs a batch's writes and the answer is lost.

A proxy between the app and Redis lets the commands through and cuts the connection once
Redis has answered them (see ``proxy.py``). redis-py then sends the whole pipeline again on a
new connection, and when that is lost too, the API answers 503 and the client sends the batch
again. Either way the write script runs a second time for executions already stored; being
idempotent on ``execId`` it must store and count each of them once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Tenants
from flask import Flask

from chronos.extension import get_state
from chronos.timeutil import now_ms

from .checks import runs_counted, stored_exec_ids
from .conftest import app_on
from .proxy import RedisProxy

BATCH = 20


@pytest.fixture
def proxy(redis_stack_url: str) -> Iterator[RedisProxy]:
    proxy = RedisProxy(redis_stack_url)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_app(proxy: RedisProxy, key_prefix: str, shared_prefix_cleanup: None,
                tmp_path: Path) -> Iterator[Flask]:  # fmt: skip
    """The app, talking to the session's Redis Stack through the proxy."""
    app = app_on(proxy.url, key_prefix, tmp_path / "instance")
    yield app
    get_state(app).close()


def batch(prefix: str, job_id: str) -> dict[str, list[dict[str, object]]]:
    now = now_ms()
    return {"executions": [
        {"execId": f"{prefix}-{n}", "jobId": job_id, "status": "success" if n % 4 else "failed",
         "startedAt": now - 100, "finishedAt": now, "durationMs": 100} for n in range(BATCH)
    ]}  # fmt: skip


def assert_stored_once(app: Flask, url: str, prefix: str, job_id: str, since: int,
                       exec_ids: set[str]) -> None:  # fmt: skip
    backend = get_state(app).backend()
    assert {e for e in stored_exec_ids(url, prefix, "acme") if e.startswith(job_id)} == exec_ids
    assert runs_counted(backend, "acme", job_id, since, now_ms()) == len(exec_ids)
    job = backend.get_job("acme", job_id)
    assert job is not None and job.state.last_exec_id in exec_ids


def test_a_pipeline_resent_by_the_driver_after_its_answer_was_lost_counts_once(
    proxied_app: Flask, proxy: RedisProxy, redis_stack_url: str, key_prefix: str
) -> None:
    key = Tenants(proxied_app).key("acme", "ingest")
    client = proxied_app.test_client()
    since = now_ms()
    assert client.post("/api/ingest/jobs/register", headers={"x-api-key": key},
                       json={"jobs": [{"id": "driver"}]}).status_code == 200  # fmt: skip
    proxy.lose_answers(b"EVALSHA", times=1)
    answer = client.post("/api/ingest/executions/batch", headers={"x-api-key": key},
                         json=batch("driver", "driver"))  # fmt: skip
    assert proxy.losses == 1
    assert answer.status_code == 200, answer.json
    # the first attempt's writes happened: the resent scripts found them
    assert answer.json["duplicates"] >= 1
    assert answer.json["accepted"] + answer.json["duplicates"] == BATCH
    assert_stored_once(proxied_app, redis_stack_url, key_prefix, "driver", since,
                       {f"driver-{n}" for n in range(BATCH)})  # fmt: skip


def test_a_batch_sent_again_after_a_503_whose_writes_happened_counts_once(
    proxied_app: Flask, proxy: RedisProxy, redis_stack_url: str, key_prefix: str
) -> None:
    key = Tenants(proxied_app).key("acme", "ingest")
    client = proxied_app.test_client()
    since = now_ms()
    assert client.post("/api/ingest/jobs/register", headers={"x-api-key": key},
                       json={"jobs": [{"id": "client"}]}).status_code == 200  # fmt: skip
    body = batch("client", "client")
    proxy.lose_answers(b"EVALSHA", times=3)  # the first try and both of redis-py's retries
    lost = client.post("/api/ingest/executions/batch", headers={"x-api-key": key}, json=body)
    assert proxy.losses == 3
    assert lost.status_code == 503 and lost.headers["Retry-After"], lost.json
    assert lost.json["code"] == "backend_unavailable"
    again = client.post("/api/ingest/executions/batch", headers={"x-api-key": key}, json=body)
    assert again.status_code == 200, again.json
    assert again.json["duplicates"] >= 1  # stored by the attempts whose answers were lost
    assert again.json["accepted"] + again.json["duplicates"] == BATCH
    assert_stored_once(proxied_app, redis_stack_url, key_prefix, "client", since,
                       {f"client-{n}" for n in range(BATCH)})  # fmt: skip
