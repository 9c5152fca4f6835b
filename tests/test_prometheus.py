"""``GET /metrics`` on the real Redis Stack: who sees what, job figures that match the seeded
executions, server metrics that move, a real websocket in the gauge, the scrape's cost, and
multiprocess mode under a real gunicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import LiveServer, Tenants, WSClient, cleanup_prefix
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from simple_websocket import ConnectionClosed

from chronos import create_app, job_metrics
from chronos.accounts import generate_api_key, hash_password
from chronos.backends.redis_stack import RedisStackBackend
from chronos.embedded import free_port
from chronos.errors import ConfigError
from chronos.extension import get_state
from chronos.models import Execution, Job, User
from chronos.prometheus import UNMATCHED
from chronos.scheduler.service import HEARTBEAT
from chronos.timeutil import now_ms

TOKEN = "operator-token-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = ['a"b', "a\nb", "{x}", "a\\b", 'x} 1\n# HELP', "é ü"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def app(redis_stack_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Flask]:
    """The suite's app with a metrics token (overrides conftest's ``app`` in this module)."""
    app = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": redis_stack_url,
                      "CHRONOS_KEY_PREFIX": key_prefix, "CHRONOS_METRICS_TOKEN": TOKEN,
                      "CHRONOS_DATA_DIR": str(tmp_path / "instance")})  # fmt: skip
    yield app
    get_state(app).close()
    cleanup_prefix(redis_stack_url, key_prefix)


def parse(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus_client's own parser (which raises
    on anything malformed)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(client: FlaskClient, headers: dict[str, str]) -> Samples:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    return parse(answer.get_data(as_text=True))


def register(client: FlaskClient, key: str, *job_ids: str) -> None:
    answer = client.post("/api/ingest/jobs/register", headers={"x-api-key": key},
                         json={"jobs": [{"id": j} for j in job_ids]})  # fmt: skip
    assert answer.status_code == 200, answer.json


def ingest(client: FlaskClient, key: str, *executions: dict[str, object]) -> dict[str, object]:
    answer = client.post("/api/ingest/executions/batch", headers={"x-api-key": key},
                         json={"executions": list(executions)})  # fmt: skip
    assert answer.status_code in (200, 422), answer.json
    return answer.json


def run(job: str, exec_id: str, status: str, started: int, ms: int | None) -> dict[str, object]:
    body: dict[str, object] = {"execId": exec_id, "jobId": job, "status": status,
                               "startedAt": started}  # fmt: skip
    if ms is not None:
        body["durationMs"] = ms
        body["finishedAt"] = started + ms
    return body


# -- who sees what ---------------------------------------------------------------------------------


def test_credentials_are_required(client: FlaskClient, tenants: Tenants) -> None:
    answer = client.get("/metrics")
    assert answer.status_code == 401
    assert answer.json["code"] == "unauthorized" and "metrics token" in answer.json["error"]
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401 and wrong.json["success"] is False
    ingest_only = client.get("/metrics", headers={"x-api-key": tenants.key("acme", "ingest")})
    assert ingest_only.status_code == 403 and "'read' scope" in ingest_only.json["error"]


def test_token_shorter_than_16_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        create_app({"CHRONOS_BACKEND_URL": "memory://", "CHRONOS_METRICS_TOKEN": "short",
                    "CHRONOS_DATA_DIR": str(tmp_path)})  # fmt: skip


def test_read_key_sees_its_tenant_only_hostile_ids_included(client, tenants) -> None:
    acme, evil = tenants.key("acme", "ingest", "read"), tenants.key("evil", "ingest", "read")
    t = now_ms() - 60_000
    register(client, acme, *HOSTILE)
    register(client, evil, *HOSTILE, "evil-only")
    for n, job in enumerate(HOSTILE):  # acme: n + 1 runs of job n; evil: 10 runs of each
        ingest(client, acme, *[run(job, f"{n}-{k}", "success", t, 10) for k in range(n + 1)])
        ingest(client, evil, *[run(job, f"{n}-{k}", "failed", t, 10) for k in range(10)])
    answer = client.get("/metrics", headers={"x-api-key": acme})
    assert answer.status_code == 200
    samples = parse(answer.get_data(as_text=True))  # a hostile id breaking the format raises
    assert {dict(labels)["tenant"] for _, labels in samples} == {"acme"}
    assert {dict(labels)["job"] for _, labels in samples} == set(HOSTILE)
    assert not any(name.startswith(("chronos_http", "chronos_scanner")) for name, _ in samples)
    for n, job in enumerate(HOSTILE):
        assert value(samples, "chronos_job_runs_total", tenant="acme", job=job) == n + 1
        assert value(samples, "chronos_job_failures_total", tenant="acme", job=job) == 0
        assert value(samples, "chronos_job_last_status", tenant="acme", job=job,
                     status="success") == 1  # fmt: skip


def test_token_sees_server_metrics_and_every_tenant(client, tenants) -> None:
    register(client, tenants.key("acme", "ingest"), "a")
    register(client, tenants.key("evil", "ingest"), "{x}")
    samples = scrape(client, OPERATOR)
    jobs = {(dict(ls)["tenant"], dict(ls)["job"])
            for n, ls in samples if n == "chronos_job_enabled"}  # fmt: skip
    assert jobs == {("acme", "a"), ("evil", "{x}")}
    assert value(samples, "chronos_backend_up") == 1
    assert value(samples, "chronos_websocket_clients", socket="live") == 0
    assert value(samples, "chronos_backend_errors_total") == 0
    assert value(samples, "chronos_ingest_items_total", kind="job", outcome="created") == 2
    assert value(samples, "chronos_scanner_up") == 0  # no scanner runs in this test
    endpoints = {dict(ls).get("endpoint") for n, ls in samples if n.startswith("chronos_http")}
    assert "/api/ingest/jobs/register" in endpoints


def test_openmetrics_when_asked(client) -> None:
    answer = client.get("/metrics", headers={**OPERATOR, "Accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.content_type.startswith("application/openmetrics-text")
    assert answer.get_data(as_text=True).endswith("# EOF\n")


# -- job figures -----------------------------------------------------------------------------------


def test_job_metrics_match_the_seeded_executions(app: Flask, client, tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    register(client, key, "job:etl")
    t = now_ms() - 3_600_000
    seeded = [
        run("job:etl", "s1", "success", t, 50), run("job:etl", "s2", "success", t + 1, 300),
        run("job:etl", "s3", "success", t + 2, 4000), run("job:etl", "f1", "failed", t + 3, 70_000),
        run("job:etl", "t1", "timeout", t + 4, 400_000),
        run("job:etl", "c1", "cancelled", t + 6, 0), run("job:etl", "r1", "running", t + 7, None),
    ]  # fmt: skip
    ingest(client, key, *seeded)
    # "missed" is the scanner's verdict, never reported over the API: written as it writes it.
    missed = Execution("acme", "m1", "job:etl", status="missed", started_at=t + 5)
    get_state(app).backend().write_executions("acme", [missed])
    ingest(client, key, *seeded[:3])  # a retried batch: duplicates, never counted again
    s = scrape(client, {"x-api-key": key})
    labels = {"tenant": "acme", "job": "job:etl"}
    assert value(s, "chronos_job_runs_total", **labels) == 7  # running is not finished
    assert value(s, "chronos_job_successes_total", **labels) == 3
    assert value(s, "chronos_job_failures_total", **labels) == 3  # failed, timeout, missed
    # The latest run to start (the cancelled one; the running one does not count yet).
    status = {st: value(s, "chronos_job_last_status", **labels, status=st)
              for st in ("success", "failed", "timeout", "missed", "cancelled")}  # fmt: skip
    assert status == {"success": 0, "failed": 0, "timeout": 0, "missed": 0, "cancelled": 1}
    assert value(s, "chronos_job_last_success_timestamp_seconds", **labels) == (t + 2 + 4000) / 1000
    assert value(s, "chronos_job_last_run_timestamp_seconds", **labels) == (t + 6) / 1000
    bounds = ("0.1", "0.25", "0.5", "5.0", "60.0", "120.0", "600.0", "+Inf")
    buckets = {b: value(s, "chronos_job_duration_seconds_bucket", **labels, le=b) for b in bounds}
    assert buckets == {"0.1": 2, "0.25": 2, "0.5": 3, "5.0": 4, "60.0": 4, "120.0": 5,
                       "600.0": 6, "+Inf": 6}  # fmt: skip
    assert value(s, "chronos_job_duration_seconds_count", **labels) == 6
    assert value(s, "chronos_job_duration_seconds_sum", **labels) == pytest.approx(474.35)
    assert value(s, "chronos_job_health", **labels, health="ok") == 1
    # Counters only grow: the running run finishes, and the next scrape counts it.
    ingest(client, key, run("job:etl", "r1", "failed", t + 7, 20))
    again = scrape(client, {"x-api-key": key})
    assert value(again, "chronos_job_runs_total", **labels) == 8
    assert value(again, "chronos_job_failures_total", **labels) == 4
    assert value(again, "chronos_job_health", **labels, health="failing") == 1
    assert value(again, "chronos_job_duration_seconds_bucket", **labels, le="0.1") == 3


def test_never_run_job_has_zeros_and_no_last_status(client, tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    register(client, key, "fresh")
    s = scrape(client, {"x-api-key": key})
    labels = {"tenant": "acme", "job": "fresh"}
    assert value(s, "chronos_job_runs_total", **labels) == 0
    assert value(s, "chronos_job_duration_seconds_bucket", **labels, le="+Inf") == 0
    assert not any(n == "chronos_job_last_status" for n, _ in s)
    assert value(s, "chronos_job_last_success_timestamp_seconds", **labels) is None


def test_scanner_lag_and_heartbeat(app: Flask, client) -> None:
    backend = get_state(app).backend()
    now = now_ms()
    backend.beat(HEARTBEAT, {"at": now - 2000, "owner": "test", "tookMs": 12.5}, ttl_ms=60_000)
    backend.set_next_fire("acme", "late-job", now - 30_000)
    backend.set_next_fire("acme", "future-job", now + 60_000)
    s = scrape(client, OPERATOR)
    assert value(s, "chronos_scanner_up") == 1
    assert value(s, "chronos_scanner_last_tick_timestamp_seconds") == (now - 2000) / 1000
    assert value(s, "chronos_scanner_tick_duration_seconds") == 0.0125
    assert 30 <= value(s, "chronos_scanner_lag_seconds") < 40
    backend.set_next_fire("acme", "late-job", None)
    assert value(scrape(client, OPERATOR), "chronos_scanner_lag_seconds") == 0


# -- server metrics --------------------------------------------------------------------------------


def test_request_latency_by_url_rule_and_status(client, tenants) -> None:
    key = tenants.key("acme", "ingest", "read")
    register(client, key, "a")
    before = scrape(client, OPERATOR)
    for job in ("a", "a", "missing-1", "missing-2"):
        client.get(f"/api/jobs/{job}", headers={"x-api-key": key})
    client.get("/no/such/path")
    for n in range(3):  # made-up methods all count as OTHER: no series per method
        client.open("/no/such/path", method=f"BREW{n}")
    after = scrape(client, OPERATOR)
    rules = {dict(ls)["endpoint"] for n, ls in after
             if n == "chronos_http_request_duration_seconds_count"}  # fmt: skip
    [rule] = [r for r in rules if r.startswith("/api/jobs/<")]  # the rule, never the raw path

    def count(samples: Samples, endpoint: str, status: str) -> float:
        found = value(samples, "chronos_http_request_duration_seconds_count",
                      endpoint=endpoint, method="GET", status=status)  # fmt: skip
        return found or 0

    assert count(after, rule, "200") - count(before, rule, "200") == 2
    assert count(after, rule, "404") - count(before, rule, "404") == 2
    assert count(after, UNMATCHED, "404") - count(before, UNMATCHED, "404") == 1
    assert not any("missing-1" in str(labels) for _, labels in after)
    assert value(after, "chronos_http_request_duration_seconds_count", endpoint=UNMATCHED,
                 method="OTHER", status="404") == 3  # fmt: skip


def test_ingest_items_counted_by_outcome(client, tenants) -> None:
    key = tenants.key("acme", "ingest")
    t = now_ms() - 60_000
    batch = [run("j", "e1", "success", t, 5), run("j", "e2", "running", t, None), {"jobId": 1}]
    ingest(client, key, *batch)
    ingest(client, key, *batch)  # e1, e2 again: duplicates; the bad item again: rejected
    ingest(client, key, run("j", "e2", "success", t, 9))  # running -> finished: updated
    assert client.post("/api/ingest/executions", headers={"x-api-key": key},
                       json={"jobId": "j"}).status_code == 422  # fmt: skip
    register(client, key, "j")
    register(client, key, "j")
    s = scrape(client, OPERATOR)
    got = {o: value(s, "chronos_ingest_items_total", kind="execution", outcome=o)
           for o in ("created", "updated", "duplicate", "rejected")}  # fmt: skip
    assert got == {"created": 2, "updated": 1, "duplicate": 2, "rejected": 3}
    assert value(s, "chronos_ingest_items_total", kind="job", outcome="created") == 1
    assert value(s, "chronos_ingest_items_total", kind="job", outcome="updated") == 1


def test_websocket_gauge_follows_a_real_live_client(live: LiveServer, tenants) -> None:
    key = tenants.key("acme", "read")

    def gauge() -> float | None:
        request = urllib.request.Request(f"{live.url}/metrics", headers=OPERATOR)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return value(parse(answer.read().decode()), "chronos_websocket_clients", socket="live")

    assert gauge() == 0
    ws = WSClient.connect(live.url.replace("http://", "ws://") + "/ws/live",
                          headers={"x-api-key": key})  # fmt: skip
    try:
        assert ws.receive(timeout=5) is not None  # the hello: the server counts it as open
        assert gauge() == 1
    finally:
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.close()
    deadline = time.monotonic() + 10
    while gauge() != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gauge() == 0


def test_backend_down_token_still_answers_and_counts_it(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": down, "CHRONOS_METRICS_TOKEN": TOKEN,
                      "CHRONOS_DATA_DIR": str(tmp_path)})  # fmt: skip
    client = app.test_client()
    fake_key = "chr_0123456789ab_" + "x" * 43
    answer = client.get("/metrics", headers={"x-api-key": fake_key})
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert answer.json["code"] == "backend_unavailable"
    s = scrape(client, OPERATOR)
    assert value(s, "chronos_backend_up") == 0
    assert value(s, "chronos_backend_errors_total") == 2  # the read key's and this scrape's
    assert not any(name.startswith("chronos_job_") for name, _ in s)
    get_state(app).close()


def test_two_apps_keep_separate_registries(tmp_path: Path) -> None:
    apps = [create_app({"CHRONOS_BACKEND_URL": "memory://", "CHRONOS_METRICS_TOKEN": TOKEN,
                        "CHRONOS_DATA_DIR": str(tmp_path)}) for _ in range(2)]  # fmt: skip
    apps[0].test_client().get("/no/such/path")
    name = "chronos_http_request_duration_seconds_count"
    counts = [value(scrape(a.test_client(), OPERATOR), name, endpoint=UNMATCHED, method="GET",
                    status="404") for a in apps]  # fmt: skip
    assert counts == [1, None]


# -- cost ------------------------------------------------------------------------------------------


def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the commands (or pipelines) sent to Redis: one send is one round trip."""
    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: object, command: object, check_health: bool = True) -> None:
        sent.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


@pytest.mark.slow
def test_scrape_of_500_jobs_costs_three_round_trips(redis_backend: RedisStackBackend, monkeypatch):
    t = now_ms() - 3_600_000
    for tenant, jobs in (("small", 50), ("big", 500)):
        redis_backend.upsert_jobs(tenant, [Job(tenant, f"job-{j}") for j in range(jobs)], t)
        redis_backend.write_executions(tenant, [
            run_record(tenant, f"e{j}-{k}", f"job-{j}", t + k, k * 700)
            for j in range(jobs) for k in range(4)
        ])  # fmt: skip
    sent = round_trips(monkeypatch)
    costs = {}
    for tenant in ("small", "big"):
        sent.clear()
        started = time.perf_counter()
        families = job_metrics.job_families(redis_backend, [tenant], now_ms())
        costs[tenant] = (len(sent), time.perf_counter() - started)
        runs = next(f for f in families if f.name == "chronos_job_runs")
        assert len(runs.samples) == (50 if tenant == "small" else 500)
        assert all(s.value == 4 for s in runs.samples)
    assert costs["small"][0] == costs["big"][0] == 3  # jobs page, their states, their totals
    assert costs["big"][1] < 2.0, costs
    print(f"\nscrape of 500 jobs: {costs['big'][0]} round trips, {costs['big'][1] * 1000:.0f} ms")


def run_record(tenant: str, exec_id: str, job: str, started: int, ms: int) -> Execution:
    return Execution(tenant_id=tenant, exec_id=exec_id, job_id=job, status="success",
                     started_at=started, finished_at=started + ms, duration_ms=ms)  # fmt: skip


# -- multiprocess mode under gunicorn --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited"
        with contextlib.suppress(OSError):
            if _get(f"{base}/api/jobs")[0] == 401:
                return
        time.sleep(0.2)
    raise AssertionError("gunicorn did not start")


@pytest.mark.slow
def test_multiprocess_mode_under_gunicorn(redis_backend: RedisStackBackend, redis_stack_url: str,
                                          key_prefix: str, tmp_path: Path) -> None:  # fmt: skip
    """Counts survive the worker that made them, and a killed worker's open websocket
    leaves the gauge through ``child_exit``."""
    redis_backend.create_user(User("u", "acme", hash_password("password-123")))
    key = generate_api_key("acme", "u", "ws", ("read",), now_ms())
    redis_backend.create_api_key(key.record)
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    conf = tmp_path / "gunicorn_test.conf.py"
    conf.write_text("from chronos.prometheus import child_exit  # noqa: F401\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
           "CHRONOS_BACKEND_URL": redis_stack_url, "CHRONOS_KEY_PREFIX": key_prefix,
           "CHRONOS_METRICS_TOKEN": TOKEN,
           "CHRONOS_DATA_DIR": str(tmp_path / "instance")}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--worker-class", "gthread", "--threads", "4",
         "chronos:create_app()"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ws = None
    try:
        _wait_ready(base, process)
        [first_worker] = _children(process.pid)
        for _ in range(12):
            assert _get(f"{base}/api/jobs")[0] == 401
        ws = WSClient.connect(f"ws://127.0.0.1:{port}/ws/live",
                              headers={"x-api-key": key.plaintext})  # fmt: skip
        assert ws.receive(timeout=5) is not None

        def scrape_http() -> Samples:
            status, text = _get(f"{base}/metrics", OPERATOR)
            assert status == 200, text
            return parse(text)

        labels = {"endpoint": "/api/jobs", "method": "GET", "status": "401"}
        s = scrape_http()
        unauthorized = value(s, "chronos_http_request_duration_seconds_count", **labels)
        assert unauthorized is not None and unauthorized >= 12  # the readiness probes too
        assert value(s, "chronos_websocket_clients", socket="live") == 1
        assert any(p.name.endswith(f"_{first_worker}.db") for p in multiproc.iterdir())

        os.kill(first_worker, signal.SIGKILL)  # its finally blocks never run
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _children(process.pid) in ([], [first_worker]):
            time.sleep(0.1)
        [second_worker] = _children(process.pid)
        assert second_worker != first_worker
        s = scrape_http()  # answered by a process that served none of those requests
        assert value(s, "chronos_http_request_duration_seconds_count", **labels) == unauthorized
        assert value(s, "chronos_websocket_clients", socket="live") == 0
    finally:
        if ws is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                ws.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
