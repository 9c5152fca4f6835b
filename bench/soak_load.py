"""The ingest side of ``bench/soak.py``: realistic executions and the senders that post them.

Each run is reported the way the SDK reports it: a ``running`` event when it starts and its
terminal event (1 KB of stdout, ~2 % failed with a traceback, labels, versions, host, the
handler's source) when it ends, both through ``POST /api/ingest/executions/batch``. A
``Sender`` is one app instance with its own keep-alive connection: each of its batches carries
the terminal events of the runs it started in its previous batch and the ``running`` events of
as many new runs, so a run lasts one of its sender's batch intervals and nothing arrives
before the event it follows.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from chronos.timeutil import to_iso

TEAMS = ("data", "billing", "growth", "platform", "search")
HOSTS = 8
ERROR_TYPE = "psycopg2.errors.DeadlockDetected"
SNIPPET = '''@runner.job("{job}", schedule="*/5 * * * *", timeout=600)
def sync_orders_{n}():
    """Copy new orders of region {n} into the warehouse."""
    with warehouse.connect() as conn:
        rows = source.fetch_since(conn.watermark("orders_{n}"))
        conn.upsert("orders", rows)
        print(f"upserted {{len(rows)}} rows")
'''
STACK = """Traceback (most recent call last):
  File "/srv/app/jobs/orders.py", line 41, in sync_orders_{n}
    conn.upsert("orders", rows)
  File "/srv/app/warehouse.py", line 212, in upsert
    cursor.execute(UPSERT_SQL, batch)
  File "/srv/app/.venv/lib/python3.11/site-packages/psycopg2/extras.py", line 146, in execute
    return super().execute(query, vars)
psycopg2.errors.DeadlockDetected: deadlock detected on orders_{n}
DETAIL:  Process {pid} waits for ShareLock on transaction {tx}; blocked by process {other}.
"""


class Workload:
    """Builds the events of runs of ``jobs`` jobs: ``job-000`` ... (registered beforehand)."""

    def __init__(self, jobs: int, output_bytes: int, error_rate: float, seed: int = 7) -> None:
        self.jobs = jobs
        self.output_bytes = output_bytes
        self.error_rate = error_rate
        self.seed = seed
        self.snippets = [SNIPPET.format(job=self.job_id(n), n=n) for n in range(jobs)]

    @staticmethod
    def job_id(n: int) -> str:
        return f"job-{n:03d}"

    def output(self, rng: random.Random, n: int, run: str, started: int) -> str:
        """``output_bytes`` of log lines: mostly the same words, numbers and an id that vary."""
        lines, size, at = [], 0, started
        while size < self.output_bytes:
            at += rng.randrange(5, 400)
            stamp = to_iso(at)
            line = rng.choice((
                f"{stamp} INFO  fetched {rng.randrange(10_000)} rows from orders_{n} "
                f"page {rng.randrange(1, 60)} (run {run[-12:]})",
                f"{stamp} INFO  upserted {rng.randrange(10_000)} rows into warehouse.orders "
                f"in {rng.randrange(5, 900)} ms",
                f"{stamp} DEBUG watermark orders_{n} advanced to {at - rng.randrange(10**6)}",
                f"{stamp} WARN  slow query on replica-{rng.randrange(4)}: "
                f"{rng.randrange(500, 5_000)} ms",
            ))  # fmt: skip
            lines.append(line)
            size += len(line) + 1
        return "\n".join(lines)[: self.output_bytes]

    def running(self, rng: random.Random, phase: str, started: int) -> dict[str, Any]:
        n = rng.randrange(self.jobs)
        return {
            "execId": f"{phase}-{uuid.uuid4().hex}", "jobId": self.job_id(n), "status": "running",
            "startedAt": to_iso(started), "attempt": 1, "host": f"worker-{n % HOSTS}",
            "appVersion": "2.14.3", "jobVersion": f"v{n % 3 + 1}", "sdkVersion": "0.1.0",
            "labels": {"env": "prod", "team": TEAMS[n % len(TEAMS)], "region": f"r{n % 40}"},
        }  # fmt: skip

    def terminal(self, rng: random.Random, run: dict[str, Any], finished: int) -> dict[str, Any]:
        n = int(run["jobId"].rsplit("-", 1)[1])
        started = int(run["_started"])
        event = {k: v for k, v in run.items() if not k.startswith("_")}
        failed = rng.random() < self.error_rate
        event.update(
            status="failed" if failed else "success", finishedAt=to_iso(finished),
            durationMs=finished - started, exitCode=1 if failed else 0,
            stdout=self.output(rng, n, event["execId"], started),
            codeSnippet=self.snippets[n], codeLanguage="python",
        )  # fmt: skip
        if failed:
            event.update(
                errorType=ERROR_TYPE, errorMessage=f"deadlock detected on orders_{n}",
                errorStack=STACK.format(n=n, pid=rng.randrange(10**5), tx=rng.randrange(10**7),
                                        other=rng.randrange(10**5)),
            )  # fmt: skip
        return event


@dataclass
class Window:
    """What the senders did since the last row (swapped out by ``Tally.take``)."""

    started: float = field(default_factory=time.monotonic)
    executions: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


class Tally:
    """Thread-safe totals of a phase, and the current row's window."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window = Window()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.requests = 0
        #: (execId, status) of every terminal event the server acknowledged.
        self.acknowledged: list[tuple[str, str]] = []

    def record(self, latency_ms: float, acked: list[tuple[str, str]], error: str | None) -> None:
        with self.lock:
            self.requests += 1
            self.window.requests += 1
            self.latencies.append(latency_ms)
            self.window.latencies.append(latency_ms)
            self.acknowledged += acked
            self.window.executions += len(acked)
            if error is not None:
                self.errors.append(error)
                self.window.errors += 1

    def take(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
        return window


class Sender:
    """One app instance: a keep-alive connection, its runs in flight, its own random stream."""

    def __init__(self, port: int, key: str, workload: Workload, phase: str, n: int,
                 batch: int) -> None:  # fmt: skip
        self.port = port
        self.headers = {"x-api-key": key, "Content-Type": "application/json"}
        self.workload = workload
        self.phase = phase
        self.new_runs = max(1, batch // 2)
        self.rng = random.Random(f"{workload.seed}-{phase}-{n}")
        self.in_flight: list[dict[str, Any]] = []
        self.conn: http.client.HTTPConnection | None = None

    def send(self, tally: Tally, since: float, start_new: bool = True) -> None:
        """Post one batch and record its latency from ``since`` (``time.monotonic()``): the
        scheduled send time when paced, so a late send counts against the server."""
        now = time.time_ns() // 1_000_000
        items = [self.workload.terminal(self.rng, run, now) for run in self.in_flight]
        started = []
        if start_new:
            started = [dict(self.workload.running(self.rng, self.phase, now), _started=now)
                       for _ in range(self.new_runs)]  # fmt: skip
        body = json.dumps({"executions": items + [self._wire(r) for r in started]})
        acked, error = [], None
        try:
            status, answer = self._post(body)
            if status != 200:
                error = f"HTTP {status}: {answer.get('error', answer)}"
            else:
                outcomes = {r["execId"]: r["outcome"] for r in answer["results"]}
                acked = [(e["execId"], e["status"]) for e in items
                         if outcomes.get(e["execId"]) in ("created", "updated")]  # fmt: skip
                if answer.get("rejected"):
                    error = f"rejected: {answer['rejected'][:2]}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.close()
        tally.record((time.monotonic() - since) * 1000, acked, error)
        self.in_flight = started  # a run whose running event failed still ends and is sent

    @staticmethod
    def _wire(run: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in run.items() if not k.startswith("_")}

    def _post(self, body: str) -> tuple[int, dict[str, Any]]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.conn.request("POST", "/api/ingest/executions/batch", body, self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"error": raw[:200].decode(errors="replace")}
        return response.status, answer

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def flat_out(senders: list[Sender], tally: Tally, seconds: float) -> float:
    """Closed loop: each sender posts its next batch as soon as the last one is answered, for
    ``seconds``. Returns the seconds from the first send to the last answer."""
    start = time.monotonic()
    stop = start + seconds

    def loop(sender: Sender) -> None:
        while time.monotonic() < stop:
            sender.send(tally, time.monotonic())

    _run_threads([threading.Thread(target=loop, args=(s,), daemon=True) for s in senders])
    return time.monotonic() - start


def paced(senders: list[Sender], tally: Tally, rate: float, seconds: float, start: float,
          done: threading.Event) -> None:  # fmt: skip
    """Open loop: batch k is due at ``start + k * interval`` (``rate`` executions/s); whichever
    sender is free takes the next due batch. With every sender busy a batch goes out late, and
    its latency, measured from when it was due, shows it (no coordinated omission)."""
    interval = senders[0].new_runs / rate
    total = int(seconds / interval)
    due_batches = itertools.count()
    lock = threading.Lock()

    def loop(sender: Sender) -> None:
        while True:
            with lock:
                k = next(due_batches)
            if k >= total:
                return
            due = start + k * interval
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sender.send(tally, due)

    _run_threads([threading.Thread(target=loop, args=(s,), daemon=True) for s in senders])
    done.set()


def finish(senders: list[Sender], tally: Tally) -> None:
    """Send the terminal events of the runs still in flight (an app flushing on shutdown)."""
    _run_threads([threading.Thread(target=s.send, args=(tally, time.monotonic(), False),
                                   daemon=True)
                  for s in senders if s.in_flight])  # fmt: skip
    for sender in senders:
        sender.close()


def _run_threads(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]
