"""The websockets over real HTTP: live events are tenant-walled and fast; runners get each
trigger once, acknowledge it, and a trigger nobody acknowledges moves to another runner."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from conftest import LiveServer, WSClient
from flask import Flask
from simple_websocket import Client, ConnectionClosed

from chronos.extension import get_state
from chronos.models import Job, Trigger
from chronos.scheduler.scanner import trigger_id_for
from chronos.timeutil import now_ms


def ws_url(live: LiveServer, path: str) -> str:
    return live.url.replace("http://", "ws://") + path


def connect(live: LiveServer, path: str, key: str | None) -> Client:
    headers = {"x-api-key": key} if key else {}
    return WSClient.connect(ws_url(live, path), headers=headers)


def close(ws: Client) -> None:
    # The client's reader thread may have closed the socket already when the server did.
    with contextlib.suppress(ConnectionClosed, OSError):
        ws.close()


def receive_json(ws: Client, timeout: float = 5.0) -> dict[str, Any] | None:
    raw = ws.receive(timeout=timeout)
    return None if raw is None else json.loads(raw)


def next_of(ws: Client, kind: str, timeout: float = 5.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = receive_json(ws, deadline - time.monotonic())
        if message is not None and message.get("type") == kind:
            return message
    return None


def ingest(client, key: str, exec_id: str, job_id: str = "job:a") -> None:
    now = now_ms()
    answer = client.post("/api/ingest/executions", headers={"x-api-key": key}, json={
        "execId": exec_id, "jobId": job_id, "status": "success", "startedAt": now - 5,
        "finishedAt": now})  # fmt: skip
    assert answer.status_code == 200, answer.json


def test_live_events_reach_their_tenant_fast_and_only_it(app: Flask, live, tenants, client):
    a_key, b_key = tenants.key("a", "ingest", "read"), tenants.key("b", "ingest", "read")
    a_ws, b_ws = connect(live, "/ws/live", a_key), connect(live, "/ws/live", b_key)
    try:
        assert next_of(a_ws, "hello") and next_of(b_ws, "hello")
        time.sleep(0.3)  # let the process's subscriber come up
        latencies = []
        for n in range(20):
            sent = time.perf_counter()
            ingest(client, a_key, f"a-{n}")
            event = next_of(a_ws, "execution", timeout=2)
            latencies.append(time.perf_counter() - sent)
            assert event is not None and event["data"]["execId"] == f"a-{n}"
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.1, latencies  # median well within 100 ms
        assert next_of(b_ws, "execution", timeout=0.5) is None  # nothing of tenant a for b
        ingest(client, b_key, "b-1")
        assert next_of(b_ws, "execution", timeout=2)["data"]["execId"] == "b-1"
        assert next_of(a_ws, "execution", timeout=0.5) is None
    finally:
        close(a_ws)
        close(b_ws)


@pytest.mark.parametrize("path", ["/ws/live", "/ws/runner"])
def test_sockets_refuse_bad_keys(live, tenants, path) -> None:
    for key in (None, "chr_000000000000_" + "a" * 43):
        ws = connect(live, path, key)
        try:
            message = receive_json(ws, timeout=5)
            assert message is not None and message["type"] == "error"
        except ConnectionClosed:
            pass
        finally:
            close(ws)


def test_runner_socket_refuses_a_read_only_key(live, tenants) -> None:
    ws = connect(live, "/ws/runner", tenants.key("a", "read"))
    try:
        message = receive_json(ws)
        assert message["type"] == "error" and "ingest" in message["error"]
    finally:
        close(ws)


def hello(ws: Client, jobs: list[str]) -> str:
    ws.send(json.dumps({"type": "hello", "jobs": jobs, "runner": "test"}))
    ready = next_of(ws, "ready")
    assert ready is not None
    return ready["runner"]


def fire(app: Flask, tenant: str, job_id: str, instant: int) -> str:
    backend = get_state(app).backend()
    trigger_id = trigger_id_for(tenant, job_id, instant)
    backend.enqueue_trigger(Trigger(tenant, job_id, trigger_id, instant, instant,
                                    instant + 60_000))  # fmt: skip
    return trigger_id


def test_each_trigger_goes_to_exactly_one_of_three_runners(app: Flask, live, tenants) -> None:
    key = tenants.key("acme", "ingest")
    get_state(app).backend().upsert_jobs("acme", [Job("acme", "job:a")], now_ms())
    runners = [connect(live, "/ws/runner", key) for _ in range(3)]
    try:
        for ws in runners:
            hello(ws, ["job:a"])
        fired = [fire(app, "acme", "job:a", now_ms() + n) for n in range(6)]
        got: dict[str, int] = {}
        deadline = time.monotonic() + 5
        while len(got) < len(fired) and time.monotonic() < deadline:
            for n, ws in enumerate(runners):
                message = receive_json(ws, timeout=0.05)
                if message and message["type"] == "job:trigger":
                    assert message["triggerId"] not in got, "delivered twice"
                    got[message["triggerId"]] = n
                    ws.send(json.dumps({"type": "ack", "triggerId": message["triggerId"]}))
        assert sorted(got) == sorted(fired)
        time.sleep(1.5)  # acknowledged: nothing is redelivered
        for ws in runners:
            assert next_of(ws, "job:trigger", timeout=0.3) is None
        records = get_state(app).backend().list_triggers("acme", "job:a", 10)
        assert {r.status for r in records} == {"delivered"}
    finally:
        for ws in runners:
            close(ws)


def test_unacknowledged_trigger_moves_to_another_runner(app: Flask, live, tenants, monkeypatch):
    from chronos.blueprints import sockets

    monkeypatch.setattr(sockets, "ACK_TIMEOUT_MS", 300)
    monkeypatch.setattr(sockets, "CLAIM_EVERY_S", 0.2)
    key = tenants.key("acme", "ingest")
    first = connect(live, "/ws/runner", key)
    hello(first, ["job:a"])
    trigger_id = fire(app, "acme", "job:a", now_ms())
    message = next_of(first, "job:trigger")
    assert message["triggerId"] == trigger_id and message["delivery"] == 1
    close(first)  # dies before acknowledging
    second = connect(live, "/ws/runner", key)
    try:
        hello(second, ["job:a"])
        again = next_of(second, "job:trigger", timeout=5)
        assert again is not None and again["triggerId"] == trigger_id
        # 2, or more if the dead runner's loop claimed it once more before noticing the close
        assert again["delivery"] >= 2
    finally:
        close(second)


def test_runner_of_another_tenant_never_sees_the_trigger(app: Flask, live, tenants) -> None:
    other = connect(live, "/ws/runner", tenants.key("zeta", "ingest"))
    try:
        hello(other, ["job:a"])
        fire(app, "acme", "job:a", now_ms())
        assert next_of(other, "job:trigger", timeout=1.5) is None
    finally:
        close(other)
