"""The SDK and ``chronos-run`` against the real server on the real Redis Stack.

The server runs in a thread (werkzeug's threaded WSGI server) so that the test can stop it and
start it again on the same port, as a deploy or a crash would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chronos_sdk import ChronosClient, ChronosRunner
from conftest import LiveServer
from flask import Flask

from chronos.embedded import free_port
from chronos.extension import get_state
from chronos.models import ExecutionQuery
from chronos.timeutil import now_ms

OUTAGE_SECONDS = 20


def stored(app: Flask, tenant: str, job_id: str | None = None) -> list:
    backend = get_state(app).backend()
    found, cursor = [], None
    while True:
        page = backend.search_executions(
            tenant, ExecutionQuery(job_id=job_id, limit=1000, cursor=cursor)
        )
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            return found


def runs_counted(app: Flask, tenant: str) -> int:
    now = now_ms()
    buckets = get_state(app).backend().metric_buckets(tenant, None, [now - 3_600_000, now + 60_000])
    return buckets[0].runs


def test_runner_records_success_and_failure(app: Flask, live: LiveServer, tenants) -> None:
    key = tenants.key("acme", "ingest")
    runner = ChronosRunner(api_key=key, endpoint=live.url, app_version="9.9.9")

    @runner.job("job:daily-report", schedule="0 6 * * *", timezone="Europe/Paris")
    def report() -> str:
        print("report built")
        return "ok"

    @runner.job("job:fragile")
    def fragile() -> None:
        print("about to fail", file=sys.stderr)
        raise ValueError("no data for today")

    try:
        runner.sync_jobs()
        assert runner.run_now("job:daily-report").status == "success"
        assert runner.run_now("job:fragile").status == "failed"
        assert runner.flush(timeout=10)
    finally:
        runner.close()
    backend = get_state(app).backend()
    job = backend.get_job("acme", "job:daily-report")
    assert job is not None and job.schedule == "0 6 * * *" and job.timezone == "Europe/Paris"
    ok = stored(app, "acme", "job:daily-report")
    assert len(ok) == 1 and ok[0].status == "success" and "report built" in ok[0].stdout
    assert ok[0].app_version == "9.9.9" and ok[0].code_language == "python"
    assert "def report" in ok[0].code_snippet
    bad = stored(app, "acme", "job:fragile")
    assert len(bad) == 1 and bad[0].status == "failed"
    assert bad[0].error_message == "no data for today" and "ValueError" in bad[0].error_type
    assert "about to fail" in bad[0].stderr and "Traceback" in bad[0].error_stack
    assert backend.get_job("acme", "job:fragile").state.last_status == "failed"


@pytest.mark.slow
def test_sdk_delivers_everything_exactly_once_across_a_server_outage(
    app: Flask, live: LiveServer, tenants, tmp_path: Path
) -> None:
    key = tenants.key("acme", "ingest")
    client = ChronosClient(api_key=key, endpoint=live.url, spool_dir=tmp_path / "spool",
                           batch_size=50, flush_interval=0.1, backoff_base=0.2,
                           backoff_cap=2.0)  # fmt: skip
    sent: list[str] = []

    def send(n: int) -> None:
        for _ in range(n):
            now = now_ms()
            exec_id = f"run-{len(sent)}"
            sent.append(exec_id)
            client.send({"execId": exec_id, "jobId": "job:etl", "status": "success",
                         "startedAt": now - 10, "finishedAt": now, "durationMs": 10})  # fmt: skip

    try:
        send(300)
        assert client.flush(timeout=15)
        live.stop()  # the server goes away mid-stream
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < OUTAGE_SECONDS:
            send(25)  # the app keeps running jobs; nothing may block or raise
            time.sleep(1)
        live.start()
        send(200)
        assert client.flush(timeout=60), "the SDK did not deliver after the server came back"
    finally:
        client.close()
    records = stored(app, "acme")
    ids = [r.exec_id for r in records]
    assert len(ids) == len(set(ids)) == len(sent) and set(ids) == set(sent)
    assert runs_counted(app, "acme") == len(sent)
    assert not any((tmp_path / "spool").glob("*.json")), "spool files left after delivery"


def _chronos_run(args: list[str], live: LiveServer, key: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("chronos-run")
    env = dict(os.environ, CHRONOS_ENDPOINT=live.url, CHRONOS_API_KEY=key)
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_chronos_run_reports_a_failing_command(app: Flask, live: LiveServer, tenants) -> None:
    key = tenants.key("acme", "ingest")
    done = _chronos_run(
        ["job:nightly", "--", "sh", "-c", "echo working; echo disk full >&2; exit 3"], live, key
    )
    assert done.returncode == 3
    assert "working" in done.stdout and "disk full" in done.stderr  # passed through
    (record,) = stored(app, "acme", "job:nightly")
    assert record.status == "failed" and record.exit_code == 3
    assert record.stderr.strip().endswith("disk full") and "working" in record.stdout
    assert record.duration_ms is not None and record.finished_at is not None
    assert runs_counted(app, "acme") == 1


def test_chronos_run_never_fails_the_command_when_chronos_is_down(tenants) -> None:
    dead = LiveServer.__new__(LiveServer)
    dead.url = f"http://127.0.0.1:{free_port()}"
    done = _chronos_run(["--flush-timeout", "1", "job:x", "--", "sh", "-c", "echo hi"],
                        dead, tenants.key("acme", "ingest"))  # fmt: skip
    assert done.returncode == 0 and "hi" in done.stdout
