"""Ingest throughput: the raw Redis ceiling against the HTTP API, measured in one run.

    .venv/bin/python bench/ingest.py [--executions 60000] [--seconds 10] [--workers 2]

Starts its own Redis Stack (from the pinned wheels, on a free loopback port, no persistence
unless --fsync says otherwise) and measures, against that one server:

  (a) ceiling  executions/s written by ``RedisStackBackend.write_executions`` from one process,
               pipelined 500 at a time: the very Redis commands the API issues per execution
               (one atomic script: document, 10 series samples, 4 sketches, job state, event)
               with no HTTP, validation or auth;
  (b) batch    executions/s through ``POST /api/ingest/executions/batch`` (batches of 500)
               served by gunicorn with threaded workers;
  (c) single   requests/s through ``POST /api/ingest/executions``, one execution a request,
               driven by ``wrk`` when installed (``apt-get install wrk``), else by Python
               threads (which compete for the same 2 cores and so read lower).

It prints each figure and the ratio b/a. Targets (issue #3): b/a >= 0.5, c >= 2000 req/s.
Every execution has a unique id, so nothing is a cheap duplicate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import wait_healthy  # noqa: E402

from chronos.accounts import generate_api_key, hash_password  # noqa: E402
from chronos.backends.base import BackendOptions  # noqa: E402
from chronos.backends.redis_stack import RedisStackBackend  # noqa: E402
from chronos.embedded import RedisStackServer, answers, free_port  # noqa: E402
from chronos.models import Execution, Job, User  # noqa: E402
from chronos.timeutil import now_ms, to_iso  # noqa: E402

BATCH = 500
OUTPUT = "x" * 200  # a little output, like a real job


def event(i: int, job: str, now: int) -> dict:
    return {
        "execId": uuid.uuid4().hex, "jobId": job,
        "status": "success" if i % 10 else "failed",
        "startedAt": to_iso(now - 1500), "finishedAt": to_iso(now), "durationMs": 1500 + i % 97,
        "exitCode": 0 if i % 10 else 1, "stdout": OUTPUT, "host": "bench-host",
        "jobVersion": "1.0.0", "labels": {"env": "bench"},
    }  # fmt: skip


def measure_ceiling(backend: RedisStackBackend, tenant: str, total: int) -> float:
    now = now_ms()
    items = [
        Execution(tenant_id=tenant, exec_id=uuid.uuid4().hex, job_id=f"job-{i % 20}",
                  status="success" if i % 10 else "failed", started_at=now - 1500,
                  finished_at=now, duration_ms=1500 + i % 97, exit_code=0, stdout=OUTPUT,
                  host="bench-host", job_version="1.0.0", labels={"env": "bench"},
                  received_at=now)
        for i in range(total)
    ]  # fmt: skip
    started = time.perf_counter()
    for start in range(0, total, BATCH):
        outcomes = backend.write_executions(tenant, items[start : start + BATCH])
        assert outcomes.count("created") == len(outcomes)
    return total / (time.perf_counter() - started)


def measure_batches(port: int, key: str, total: int, threads: int) -> float:
    now = now_ms()
    bodies = [
        json.dumps({"executions": [event(i, f"job-{i % 20}", now)
                                   for i in range(b * BATCH, (b + 1) * BATCH)]}).encode()
        for b in range(total // BATCH)
    ]  # fmt: skip
    headers = {"x-api-key": key, "Content-Type": "application/json"}
    lock = threading.Lock()
    accepted = [0]

    def worker(mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in mine:
            conn.request("POST", "/api/ingest/executions/batch", body, headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200, answer
            with lock:
                accepted[0] += answer["accepted"]
        conn.close()

    workers = [threading.Thread(target=worker, args=(bodies[n::threads],)) for n in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    assert accepted[0] == len(bodies) * BATCH, accepted
    return accepted[0] / elapsed


WRK_SCRIPT = """
counter = 0
local thread_id = tostring(math.random(1, 1e9))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "%(key)s"
request = function()
  counter = counter + 1
  local body = '{"execId":"' .. thread_id .. '-' .. counter .. '","jobId":"job-' ..
    (counter %% 20) .. '","status":"success","startedAt":%(started)d,"finishedAt":%(now)d,' ..
    '"durationMs":1500,"exitCode":0,"stdout":"%(output)s","host":"bench-host"}'
  return wrk.format(nil, "/api/ingest/executions", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("WRK %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    summary.errors.status, latency:percentile(99)))
end
"""


def measure_single_wrk(port: int, key: str, seconds: int, connections: int) -> tuple[float, str]:
    now = now_ms()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"key": key, "now": now, "started": now - 1500,
                                   "output": OUTPUT})  # fmt: skip
    try:
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", script.name,
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    requests, duration_us, bad, p99_us = (int(v) for v in line.split()[1:])
    assert bad == 0, f"{bad} non-2xx answers"
    how = f"wrk, {connections} connections, p99 {p99_us / 1000:.1f} ms"
    return requests / (duration_us / 1e6), how


def measure_single_python(port: int, key: str, seconds: int, threads: int) -> tuple[float, str]:
    headers = {"x-api-key": key, "Content-Type": "application/json"}
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        now = now_ms()
        i = 0
        while time.perf_counter() < stop:
            i += 1
            conn.request("POST", "/api/ingest/executions",
                         json.dumps(event(i, f"job-{i % 20}", now)).encode(), headers)  # fmt: skip
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            counts[n] += 1
        conn.close()

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started), f"python client, {threads} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=60_000)
    parser.add_argument("--seconds", type=int, default=10, help="duration of measurement (c)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients for (c)")
    parser.add_argument("--fsync", choices=["none", "everysec", "always"], default="none")
    args = parser.parse_args()
    total = args.executions - args.executions % BATCH

    root = Path(tempfile.mkdtemp(prefix="chronos-bench-"))
    server = RedisStackServer(root=root / "redis", persistent=args.fsync != "none",
                              fsync="always" if args.fsync == "none" else args.fsync,
                              port=free_port())  # fmt: skip
    url = server.start()
    gunicorn = None
    try:
        prefix = "bench:"
        backend = RedisStackBackend(url, BackendOptions(key_prefix=prefix))
        backend.migrate()
        backend.create_user(User("bench", "bench", hash_password("bench-password")))
        new = generate_api_key("bench", "bench", "bench", ("ingest",), now_ms())
        backend.create_api_key(new.record)
        for tenant in ("ceiling", "bench"):
            backend.upsert_jobs(tenant, [Job(tenant, f"job-{i}") for i in range(20)], now_ms())

        ceiling = measure_ceiling(backend, "ceiling", total)
        print(f"(a) ceiling: {ceiling:>9,.0f} executions/s  (write_executions, batches of {BATCH})")

        port = free_port()
        env = dict(
            os.environ, CHRONOS_BACKEND_URL=url, CHRONOS_KEY_PREFIX=prefix,
            CHRONOS_DATA_DIR=str(root / "instance"), CHRONOS_INGEST_RATE_PER_MINUTE="0",
        )  # fmt: skip
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(args.workers),
             "--threads", str(args.threads), "-b", f"127.0.0.1:{port}", "--log-level",
             "warning", "chronos:create_app()"], env=env,
        )  # fmt: skip
        wait_healthy(port, 30)
        batch = measure_batches(port, new.plaintext, total, threads=args.workers)
        print(f"(b) batch:   {batch:>9,.0f} executions/s  (HTTP, batches of {BATCH}, "
              f"gunicorn {args.workers}x{args.threads} gthread)")  # fmt: skip
        if shutil.which("wrk"):
            single, how = measure_single_wrk(port, new.plaintext, args.seconds, args.connections)
        else:
            single, how = measure_single_python(port, new.plaintext, args.seconds, 4)
        print(f"(c) single:  {single:>9,.0f} requests/s    (HTTP, one execution a request, {how})")
        print(f"b/a = {batch / ceiling:.2f}   (target >= 0.5)")
        print(f"c   = {single:,.0f} req/s (target >= 2000)")
        stored = backend.metric_buckets("bench", None, [now_ms() - 3_600_000, now_ms() + 60_000])
        print(f"check: {stored[0].runs:,} runs counted through HTTP")
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(30)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not answers(url)


if __name__ == "__main__":
    main()
