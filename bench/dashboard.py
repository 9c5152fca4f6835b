"""Dashboard page times at 10,000 and at 1,000,000 stored executions, measured in one run.

    .venv/bin/python bench/dashboard.py [--executions 1000000] [--baseline 10000] [--where]

Starts its own Redis Stack (from the pinned wheels, on a free loopback port, no persistence),
then twice, for (A) ``--baseline`` and (B) ``--executions`` executions:

  * registers ``--jobs`` jobs (hourly schedules) and writes the executions, spread evenly over
    the last ``--days`` days (every job runs every ``days / (executions / jobs)``; each prints
    ~100 bytes of stdout, ~2 % fail with a "deadlock detected" error message), through
    ``RedisStackBackend.write_executions`` in batches of 500 (not the HTTP API: faster, and the
    same Redis commands). A run is counted in the metrics only if it finished within the raw
    series' retention (8 days) of the time it is written, so the batches are written in
    chronological order with the backend's clock set to each batch's own time: the metrics end
    up as if the runs had been reported live over the 90 days;
  * measures the server time of the dashboard pages: overview ``/``, jobs ``/jobs``, job detail
    ``/jobs/<id>`` (a different job each time, default 7-day range), search
    ``/search?q=deadlock`` and analytics ``/analytics?range=90d&bucket=day``, each
    ``--requests`` times after ``--warmup`` requests, in turns (overview, jobs, ..., overview,
    ...), as the wall time of ``client.get`` with Flask's test client in this process for a
    logged-in user: routing, session, every backend call (real Redis round trips over
    loopback) and template rendering; no HTTP server, no network, no browser.

Redis is flushed between (A) and (B). It prints p50/p95 per page for both, the ratios B/A and
whether the targets are met: every p95 < 100 ms, analytics p95 < 50 ms, each p95 within 1.5x
of its figure at 10,000. It also prints Redis ``used_memory`` per stored execution.
``--where`` adds, per page at (B), the time spent in each backend method (client side, round
trips included) and the Redis commands' own time (``INFO commandstats`` deltas), per request.
``--freeze`` calls ``gc.freeze()`` before measuring: a full collection of this process takes
~27 ms and otherwise lands in the p95 of whichever page it interrupts.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

from chronos import create_app  # noqa: E402
from chronos.accounts import hash_password  # noqa: E402
from chronos.backends.base import BackendOptions  # noqa: E402
from chronos.backends.redis_stack import RedisStackBackend  # noqa: E402
from chronos.embedded import RedisStackServer, answers, free_port  # noqa: E402
from chronos.extension import get_state  # noqa: E402
from chronos.models import Execution, Job, User  # noqa: E402
from chronos.retention import RetentionPolicy  # noqa: E402
from chronos.timeutil import now_ms  # noqa: E402

BATCH = 500
DAY = 86_400_000
TENANT = "bench"
SEARCH_WORD = "deadlock"
FAILURE_RATE = 0.02
TEAMS = ("data", "billing", "growth", "platform", "search")
TARGET_MS = 100.0
ANALYTICS_TARGET_MS = 50.0
MAX_RATIO = 1.5
#: Backend methods the dashboard pages call (timed with --where).
READS = ("list_jobs", "get_job", "search_executions", "metric_buckets", "metric_totals",
         "duration_quantiles", "duration_quantiles_many", "list_triggers")  # fmt: skip


def job_id(n: int) -> str:
    return f"job-{n:03d}"


def pages(jobs: int) -> dict[str, Callable[[int], str]]:
    """The measured pages: the path of the ``i``-th request of each."""
    return {
        "overview": lambda i: "/",
        "jobs": lambda i: "/jobs",
        "job detail": lambda i: f"/jobs/{job_id(i * 37 % jobs)}",
        "search": lambda i: f"/search?q={SEARCH_WORD}",
        "analytics": lambda i: "/analytics?range=90d&bucket=day",
    }


class BackfillBackend(RedisStackBackend):
    """Writes as if at ``self.clock()`` (the simulated time of the batch).

    One adjustment: an hourly duration sketch whose expiry (its hour + 8 days) has already
    passed in real time is not written. Live, it would have expired by now anyway (and is never
    read: buckets older than 8 days read the daily sketches); written here, ``PEXPIREAT`` in
    the past would delete it at once and the ``TDIGEST.ADD`` after it would fail.
    ARGV[13] of ``WRITE_EXECUTION`` is that expiry ('0' = skip), see ``scripts.py``.
    """

    def _write_call(
        self, ex: Execution, now: int, policy: RetentionPolicy
    ) -> tuple[list[str], list[Any]]:
        keys, args = super()._write_call(ex, now, policy)
        if args[12] != "0" and int(args[12]) <= now_ms() + 60_000:
            args[12] = "0"
        return keys, args


def register_jobs(backend: RedisStackBackend, jobs: int, now: int) -> None:
    backend.create_user(User("bench", TENANT, hash_password("bench-password")))
    backend.upsert_jobs(TENANT, [
        Job(TENANT, job_id(j), name=f"orders sync {j:03d}",
            description=f"copies the orders of region {j % 40} into the warehouse",
            schedule=f"{j % 60} * * * *", tags=["etl", TEAMS[j % len(TEAMS)]],
            max_runtime_seconds=3600)
        for j in range(jobs)
    ], now)  # fmt: skip


def batches(total: int, jobs: int, start: int, span: int, seed: int) -> Iterator[list[Execution]]:
    """``total`` executions (``total // jobs`` per job) over ``[start, start + span)``, in
    order of ``started_at``, ``BATCH`` at a time."""
    rng = random.Random(seed)
    per_job = total // jobs
    interval = span / per_job
    base = [400 + (j * 7919) % 45_000 for j in range(jobs)]  # each job its own typical duration
    batch: list[Execution] = []
    for k in range(per_job):
        for j in range(jobs):
            started = int(start + k * interval + j * interval / jobs)
            duration = int(base[j] * rng.uniform(0.7, 1.6))
            failed = rng.random() < FAILURE_RATE
            rows = rng.randrange(1000, 90_000)
            ex = Execution(
                tenant_id=TENANT, exec_id=uuid.uuid4().hex, job_id=job_id(j),
                status="failed" if failed else "success", started_at=started,
                finished_at=started + duration, duration_ms=duration, exit_code=1 if failed else 0,
                stdout=f"run {k}: copied {rows} rows of region {j % 40} into warehouse shard "
                       f"{rows % 16}, checksum verified",
                host=f"worker-{j % 8}", job_version="2.3.1", sdk_version="0.4.0",
                labels={"env": "prod", "team": TEAMS[j % len(TEAMS)]},
                received_at=started + duration,
            )  # fmt: skip
            if failed:
                ex.error_type = "OperationalError"
                ex.error_message = (f"{SEARCH_WORD} detected on orders_{j % 40} after {rows} "
                                    "rows; transaction rolled back")  # fmt: skip
                ex.stderr = f"psycopg.errors.DeadlockDetected: {ex.error_message}"
            batch.append(ex)
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def load(backend: BackfillBackend, total: int, jobs: int, days: int, now: int,
         seed: int) -> float:  # fmt: skip
    """Write the executions in chronological order, each batch at its own simulated time;
    returns executions/s."""
    span = days * DAY - 3_600_000  # the last runs finish about an hour before ``now``
    started = time.perf_counter()
    written = 0
    try:
        for batch in batches(total, jobs, now - days * DAY, span, seed):
            at = max(ex.finished_at or ex.started_at for ex in batch) + 1
            backend.clock = lambda at=at: at
            outcomes = backend.write_executions(TENANT, batch)
            assert outcomes.count("created") == len(batch), collections.Counter(outcomes)
            written += len(batch)
    finally:
        backend.clock = now_ms
    return written / (time.perf_counter() - started)


def logged_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    with client.session_transaction() as session:
        session["user"], session["tenant"], session["admin"] = "bench", TENANT, False
    return client


def get(client: FlaskClient, path: str) -> float:
    """Server time of one request, in ms; fails loudly on anything but a 200."""
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (path, response.status_code, response.data[:300])
    return elapsed


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def measure(client: FlaskClient, paths: dict[str, Callable[[int], str]], requests: int,
            warmup: int, freeze: bool) -> dict[str, tuple[float, float]]:  # fmt: skip
    """``{page: (p50, p95)}`` in ms, the pages requested in turns."""
    gc.collect()  # not the loader's garbage in the first requests' time
    if freeze:
        gc.freeze()  # what is alive now is never traversed by a full collection again
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(warmup + requests):
        for name, path in paths.items():
            elapsed = get(client, path(i))
            if i >= warmup:
                times[name].append(elapsed)
    return {name: (statistics.median(t), p95(t)) for name, t in times.items()}


def where(app: Flask, client: FlaskClient, paths: dict[str, Callable[[int], str]],
          rounds: int) -> None:  # fmt: skip
    """Per page: time in each backend method (client side) and Redis' own command time."""
    backend = get_state(app).backend()
    r = backend.client()
    spent: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
                calls[name] += 1

        return wrapper

    for name in READS:
        setattr(backend, name, timed(name, getattr(backend, name)))
    try:
        for page, path in paths.items():
            get(client, path(0))
            spent.clear()
            calls.clear()
            r.config_resetstat()
            total = sum(get(client, path(i)) for i in range(rounds)) / rounds
            stats = {k.removeprefix("cmdstat_"): v for k, v in r.info("commandstats").items()}
            backend_ms = sum(spent.values()) * 1000 / rounds
            parts = ", ".join(f"{n} {calls[n] / rounds:g}x {s * 1000 / rounds:.1f}"
                              for n, s in spent.most_common())  # fmt: skip
            print(f"  {page}: {total:.1f} ms a request; backend {backend_ms:.1f} ms ({parts})")
            top = sorted(((v["usec"], k, v["calls"]) for k, v in stats.items()
                          if k not in ("config|resetstat", "info")), reverse=True)[:6]  # fmt: skip
            print("    redis: " + ", ".join(f"{name} {n / rounds:g}x {usec / 1000 / rounds:.1f}"
                                          for usec, name, n in top))  # fmt: skip
    finally:
        for name in READS:
            delattr(backend, name)  # back to the class's method


def phase(url: str, root: Path, label: str, total: int, args: argparse.Namespace,
          profile: bool) -> dict[str, tuple[float, float]]:  # fmt: skip
    prefix = f"bench:{label}:"
    writer = BackfillBackend(url, BackendOptions(key_prefix=prefix, execution_ttl_ms=None))
    writer.migrate()
    r = writer.client()
    now = now_ms()
    register_jobs(writer, args.jobs, now)
    before = r.info("memory")["used_memory"]
    rate = load(writer, total, args.jobs, args.days, now, args.seed)
    used = r.info("memory")["used_memory"] - before
    stored = writer.metric_buckets(TENANT, None, [now - args.days * DAY, now_ms() + 60_000])[0]
    print(f"({label}) {total:,} executions, {args.jobs} jobs, {args.days} days: loaded at "
          f"{rate:,.0f}/s; {stored.runs:,} counted in the metrics; Redis used_memory "
          f"+{used / 2**20:,.0f} MiB = {used / total:,.0f} bytes an execution")  # fmt: skip
    assert stored.runs == total, "the simulated clock did not count every run"
    writer.close()

    app = create_app({
        "CHRONOS_BACKEND_URL": url, "CHRONOS_KEY_PREFIX": prefix,
        "CHRONOS_DATA_DIR": str(root / "instance"), "CHRONOS_EXECUTION_RETENTION_DAYS": 0,
    })  # fmt: skip
    client = logged_in(app)
    paths = pages(args.jobs)
    try:
        page = client.get(paths["search"](0)).get_data(as_text=True)
        assert page.count("<mark>") >= 10, "the search found nothing"
        results = measure(client, paths, args.requests, args.warmup, args.freeze)
        if profile:
            print(f"({label}) where the time goes, {args.where_rounds} requests a page, ms a "
                  "request (calls x time; a script's commands count in EVALSHA too):")  # fmt: skip
            where(app, client, paths, args.where_rounds)
    finally:
        gc.unfreeze()
        get_state(app).close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page first")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--where", action="store_true",
                        help="also break each page's time down by backend call at (B)")  # fmt: skip
    parser.add_argument("--where-rounds", type=int, default=10)
    parser.add_argument("--freeze", action="store_true",
                        help="gc.freeze() before measuring, as a server can")  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()

    root = Path(tempfile.mkdtemp(prefix="chronos-bench-"))
    server = RedisStackServer(root=root / "redis", persistent=False, port=free_port())
    url = server.start()
    try:
        a = phase(url, root, "A", args.baseline, args, profile=False)
        flush = redis.Redis.from_url(url)
        flush.flushall()
        flush.close()
        b = phase(url, root, "B", args.executions, args, profile=args.where)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not answers(url)

    print(f"\nserver time, ms (Flask test client in-process, {args.requests} requests a page "
          f"after {args.warmup} warm-up{', gc frozen' if args.freeze else ''})")  # fmt: skip
    print(f"{'page':<11} {'A p50':>7} {'A p95':>7} {'B p50':>7} {'B p95':>7} {'B/A p50':>8} "
          f"{'B/A p95':>8}  target (B p95, B/A p95)")  # fmt: skip
    met = True
    for name in a:
        (a50, a95), (b50, b95) = a[name], b[name]
        limit = ANALYTICS_TARGET_MS if name == "analytics" else TARGET_MS
        ok = b95 < limit and b95 <= MAX_RATIO * a95
        met &= ok
        print(f"{name:<11} {a50:7.1f} {a95:7.1f} {b50:7.1f} {b95:7.1f} {b50 / a50:8.2f} "
              f"{b95 / a95:8.2f}  < {limit:.0f} ms: {'met' if b95 < limit else 'MISSED'}, "
              f"<= {MAX_RATIO}: {'met' if b95 <= MAX_RATIO * a95 else 'MISSED'}")  # fmt: skip
    print(f"A = {args.baseline:,} executions, B = {args.executions:,}; targets "
          f"{'met' if met else 'MISSED'}; total {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
