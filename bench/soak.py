"""Soak: half the measured maximum ingest rate for 10 minutes, with live dashboards watching.

    .venv/bin/python bench/soak.py [--minutes 10] [--interval 30] [--clients 5] [--check]

Starts its own Redis Stack (from the pinned wheels, on a free loopback port, persisted like
production: append-only file, ``appendfsync always``; ``--fsync everysec|none``) and the real
server: gunicorn as a subprocess with ``gunicorn.conf.py`` from the repository's top when there
is one (the production settings of ``chronos.gunicorn_config``), else gthread with 2 workers x
8 threads on the command line, and the production defaults of every ``CHRONOS_*`` and
``GUNICORN_*`` setting (the per-tenant rate limit and the 30-day execution expiry included)
but one: workers are not replaced after ``GUNICORN_MAX_REQUESTS`` requests, since that would
reset the very memory growth the soak looks for (``--recycle`` replaces them as production does).
One tenant has ``--jobs`` jobs, an ingest key and a dashboard user; ``--clients`` websocket
clients log in as that user (the login form, then the session cookie on ``/ws/live``) and
count the events they receive. Then:

  phase 1  the maximum: ``--senders`` app instances post batches back to back for
           ``--max-seconds`` (the first fifth not counted); executions/s acknowledged.
  phase 2  the soak: ``--fraction`` (half) of that rate for ``--minutes``, open loop: batch k
           is due at start + k x interval and its latency runs from then, so a server that
           falls behind shows it in p99 instead of slowing the senders (``--pool`` senders).
           Every ``--interval`` seconds a row: achieved rate, request latency p50/p99, errors,
           gunicorn RSS (master + workers, /proc), Redis ``used_memory``, stored executions,
           Redis bytes per execution since phase 2 began, and the share of phase 2's
           executions the slowest dashboard has received so far.

Each run is sent as the SDK sends it: a ``running`` event, then (in the sender's next batch,
``--batch`` items a request) its terminal event with 1 KB of stdout (``--output-bytes``),
~2 % failed with a traceback, labels, versions, host and the handler's source.

The summary checks the targets (issue 6): every acknowledged execution stored with its status
(read back one by one), RSS flat (after ``--warmup`` s, the mean of the last third of the rows
within ``--rss-tolerance`` of the first third's), under ``--bytes-target`` (4 KB) of Redis
memory per execution, p99 under ``--p99-ms``, the achieved rate within 5 % of the target, no
failed requests, and every dashboard sent every phase-2 execution event. It then shows where
Redis' memory went. ``--check`` exits 1 if a target is missed; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_seconds, machine_busy_seconds, wait_healthy  # noqa: E402
from soak_load import (  # noqa: E402
    Sender,
    Tally,
    Workload,
    finish,
    flat_out,
    paced,
    pct,
)
from soak_report import Report, Row  # noqa: E402
from soak_watch import (  # noqa: E402
    EXECUTIONS,
    SLOTS,
    RedisProbe,
    children,
    dashboards,
    load_average,
    login,
    rss_bytes,
)

from chronos.accounts import generate_api_key, hash_password  # noqa: E402
from chronos.backends.base import BackendOptions  # noqa: E402
from chronos.backends.redis_stack import RedisStackBackend  # noqa: E402
from chronos.embedded import RedisStackServer, answers, free_port  # noqa: E402
from chronos.models import Job, User  # noqa: E402
from chronos.timeutil import now_ms  # noqa: E402

TOP = Path(__file__).resolve().parents[1]
TENANT, USER, PASSWORD, PREFIX = "soak", "soak-admin", "soak-password", "bench:"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of phase 2")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between rows")
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds of phase 2 left out of the RSS comparison")  # fmt: skip
    p.add_argument("--max-seconds", type=float, default=45.0, help="length of phase 1")
    p.add_argument("--fraction", type=float, default=0.5, help="phase 2 rate / phase 1 rate")
    p.add_argument("--rate", type=float, help="phase 2 rate (executions/s) instead")
    p.add_argument("--clients", type=int, default=5, help="live dashboards")
    p.add_argument("--jobs", type=int, default=200, help="jobs the runs are spread over")
    p.add_argument("--batch", type=int, default=100, help="events a request (the SDK's size)")
    p.add_argument("--senders", type=int, default=4, help="concurrent senders in phase 1")
    p.add_argument("--pool", type=int, default=8, help="most requests in flight in phase 2")
    p.add_argument("--output-bytes", type=int, default=1024)
    p.add_argument("--error-rate", type=float, default=0.02)
    p.add_argument("--fsync", choices=["always", "everysec", "none"], default="always")
    p.add_argument("--recycle", action="store_true",
                   help="replace workers after GUNICORN_MAX_REQUESTS (production)")  # fmt: skip
    p.add_argument("--workers", type=int, help="gunicorn workers (default: conf, else 2)")
    p.add_argument("--threads", type=int, help="threads a worker (default: conf, else 8)")
    p.add_argument("--p99-ms", type=float, default=500.0)
    p.add_argument("--bytes-target", type=float, default=4096.0)
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def gunicorn_command(args: argparse.Namespace, port: int) -> tuple[list[str], str]:
    """The production server command, and how it was configured (for the report)."""
    command = [sys.executable, "-m", "gunicorn"]
    conf = TOP / "gunicorn.conf.py"
    if conf.exists():
        command += ["--config", str(conf)]
        how = f"--config {conf.name}"
    else:  # what `chronos serve` runs (chronos/cli.py)
        command += ["--worker-class", "gthread", "--timeout", "60", "--graceful-timeout", "20",
                    "--access-logfile", "-"]  # fmt: skip
        how = "gthread on the command line"
    workers = args.workers or (None if conf.exists() else 2)
    threads = args.threads or (None if conf.exists() else 8)
    if workers:
        command += ["--workers", str(workers)]
        how += f", {workers} workers"
    if threads:
        command += ["--threads", str(threads)]
        how += f" x {threads} threads"
    return [*command, "--bind", f"127.0.0.1:{port}", "chronos:create_app()"], how


def provenance() -> str:
    """The commit the code comes from, and whether the tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=TOP, text=True, capture_output=True,
                              check=True).stdout.strip()  # fmt: skip

    try:
        commit, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "-uno")
    except (OSError, subprocess.CalledProcessError):
        return f"{TOP} (not a git checkout)"
    return f"{TOP} at {commit}" + (" with uncommitted changes" if dirty else "")


def set_up(backend: RedisStackBackend, jobs: int) -> str:
    """The tenant, its dashboard user and jobs; returns an ingest key."""
    backend.migrate()
    backend.create_user(User(USER, TENANT, hash_password(PASSWORD)))
    new = generate_api_key(TENANT, USER, "soak ingest", ("ingest",), now_ms())
    backend.create_api_key(new.record)
    backend.upsert_jobs(TENANT, [Job(TENANT, Workload.job_id(n), name=f"orders sync {n}",
                                     tags=["etl"], max_runtime_seconds=600)
                                 for n in range(jobs)], now_ms())  # fmt: skip
    return new.plaintext


def measure_max(args: argparse.Namespace, port: int, key: str,
                workload: Workload) -> tuple[float, Tally]:  # fmt: skip
    senders = [Sender(port, key, workload, "p1", n, args.batch) for n in range(args.senders)]
    tally = Tally()
    driver = threading.Thread(target=flat_out, args=(senders, tally, args.max_seconds), daemon=True)
    driver.start()
    time.sleep(args.max_seconds / 5)  # connections, caches, first series: not counted
    tally.take()
    driver.join()
    window = tally.take()
    seconds = time.monotonic() - window.started
    finish(senders, tally)  # the runs still open end, as an app's would at shutdown
    rate = window.executions / seconds
    print(f"phase 1: {rate:,.0f} executions/s at most ({args.senders} senders back to back, "
          f"{window.requests} requests in {seconds:.1f} s, "
          f"latency p50 {pct(window.latencies, 50):.0f} p99 {pct(window.latencies, 99):.0f} ms, "
          f"{len(tally.errors)} errors)", flush=True)  # fmt: skip
    if tally.errors:
        print(f"  first errors: {tally.errors[:3]}")
    return rate, tally


def soak(args: argparse.Namespace, port: int, key: str, workload: Workload, rate: float,
         probe: RedisProbe, server_pid: int, counts: Any, report: Report) -> Tally:  # fmt: skip
    senders = [Sender(port, key, workload, "p2", n, args.batch) for n in range(args.pool)]
    tally, done = Tally(), threading.Event()
    used0, stored0 = probe.used_memory(), probe.stored()
    report.begin(rate, used0, stored0)
    start = time.monotonic() + 0.2
    tally.window.started = start
    driver = threading.Thread(target=paced, args=(senders, tally, rate, args.minutes * 60,
                                                  start, done), daemon=True)  # fmt: skip
    driver.start()
    next_row = start + args.interval
    while True:
        finished = done.wait(max(0.0, next_row - time.monotonic()))
        if finished and time.monotonic() - tally.window.started < 1.0:
            break  # the schedule ended with the last row
        window = tally.take()
        received = [counts[c * SLOTS + EXECUTIONS] for c in range(args.clients)]
        with tally.lock:
            acked = len(tally.acknowledged)
        workers = tuple(children(server_pid))
        report.add(Row(
            elapsed=time.monotonic() - start, seconds=time.monotonic() - window.started,
            executions=window.executions, latencies=window.latencies, errors=window.errors,
            rss=rss_bytes([server_pid, *workers]), used=probe.used_memory(),
            stored=probe.stored(), acknowledged=acked, received=min(received, default=0),
            workers=workers,
        ))  # fmt: skip
        if finished:
            break
        next_row += args.interval
    driver.join()
    finish(senders, tally)  # the runs still open end; counted in the totals, not in a row
    return tally


def drain(counts: Any, clients: int, expected: int, seconds: float = 15.0) -> None:
    """Wait until every dashboard has the events of every acknowledged execution, or until
    nothing more arrives for 3 s."""
    deadline, last, quiet_since = time.monotonic() + seconds, -1, time.monotonic()
    while time.monotonic() < deadline:
        got = [counts[c * SLOTS + EXECUTIONS] for c in range(clients)]
        if min(got, default=expected) >= expected:
            return
        if sum(got) != last:
            last, quiet_since = sum(got), time.monotonic()
        elif time.monotonic() - quiet_since > 3:
            return
        time.sleep(0.2)


def verify(backend: RedisStackBackend, acknowledged: list[tuple[str, str]]) -> tuple[int, int]:
    """Read every acknowledged execution back: (missing, stored with another status)."""
    missing = wrong = 0
    docs = backend.client().json()
    for start in range(0, len(acknowledged), 1000):
        chunk = acknowledged[start : start + 1000]
        keys = [backend.keys.execution(TENANT, exec_id) for exec_id, _ in chunk]
        for (_, status), found in zip(chunk, docs.mget(keys, "$.status")):
            if not found:
                missing += 1
            elif found[0] != status:
                wrong += 1
    return missing, wrong


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    # SIGTERM (a CI timeout, a ^C from a supervisor) unwinds through the cleanup below, which
    # stops Redis and gunicorn: both run in sessions of their own and would outlive us.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = Path(tempfile.mkdtemp(prefix="chronos-soak-"))
    server = RedisStackServer(root=root / "redis", persistent=args.fsync != "none",
                              fsync="everysec" if args.fsync == "everysec" else "always",
                              port=free_port())  # fmt: skip
    url = server.start()
    gunicorn = clients_proc = None
    log = open(root / "gunicorn.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        backend = RedisStackBackend(url, BackendOptions(key_prefix=PREFIX))
        key = set_up(backend, args.jobs)
        workload = Workload(args.jobs, args.output_bytes, args.error_rate)
        port = free_port()
        command, how = gunicorn_command(args, port)
        # Production defaults for everything, whatever this shell has set, and a secret key
        # of its own as deploy/chronos.env.example sets one.
        env = {n: v for n, v in os.environ.items() if not n.startswith(("CHRONOS_", "GUNICORN_"))}
        env.update(CHRONOS_BACKEND_URL=url, CHRONOS_KEY_PREFIX=PREFIX,
                   CHRONOS_DATA_DIR=str(root / "instance"),
                   CHRONOS_SECRET_KEY=secrets.token_urlsafe(48))  # fmt: skip
        if not args.recycle:
            env["GUNICORN_MAX_REQUESTS"] = "0"
            how += ", workers never recycled"
        gunicorn = subprocess.Popen(command, env=env, cwd=TOP, stdout=log, stderr=log)
        wait_healthy(port)
        cookie = login(port, USER, PASSWORD)
        context = multiprocessing.get_context("fork")
        counts = context.Array("q", SLOTS * args.clients, lock=False)
        pipe, theirs = context.Pipe()
        clients_proc = context.Process(
            target=dashboards,
            args=(f"ws://127.0.0.1:{port}/ws/live", cookie, args.clients, counts, theirs, pipe),
            daemon=True,
        )
        clients_proc.start()
        answer = pipe.recv() if pipe.poll(90) else "no answer in 90 s"
        if answer != "ready":
            raise RuntimeError(f"dashboards: {answer}")
        print(f"setup: Redis Stack fsync {args.fsync}, gunicorn {how}, {args.clients} dashboards "
              f"logged in as {USER}, {args.jobs} jobs, batches of {args.batch} events, "
              f"{args.output_bytes} B of stdout a run, {args.error_rate:.0%} failing; code "
              f"{provenance()}; "
              f"load average {load_average()} ({os.cpu_count()} cores)", flush=True)  # fmt: skip

        maximum, phase1 = measure_max(args, port, key, workload)
        rate = args.rate or maximum * args.fraction
        probe = RedisProbe(backend.client(), backend.keys.index_alias("executions"), PREFIX)
        report = Report(args, load_average())
        pids = {
            "redis": lambda: [server.pid()],
            "gunicorn": lambda: [gunicorn.pid, *children(gunicorn.pid)],
            "dashboards": lambda: [clients_proc.pid],
            "senders": lambda: [os.getpid()],
        }
        cpu0 = {name: cpu_seconds(get()) for name, get in pids.items()}
        busy0, wall0 = machine_busy_seconds(), time.monotonic()
        tally = soak(args, port, key, workload, rate, probe, gunicorn.pid, counts, report)
        wall = time.monotonic() - wall0
        cpu = {name: (cpu_seconds(get()) - cpu0[name]) / wall for name, get in pids.items()}
        cpu["anything else"] = max(0.0, (machine_busy_seconds() - busy0) / wall - sum(cpu.values()))
        drain(counts, args.clients, len(tally.acknowledged))
        pipe.send("stop")
        if pipe.poll(30):
            pipe.recv()
        everything = phase1.acknowledged + tally.acknowledged
        missing, wrong = verify(backend, everything)
        sample = [backend.keys.execution(TENANT, e) for e, _ in tally.acknowledged[::997][:300]]
        report.finish(maximum=maximum, tally=tally, counts=list(counts), cpu=cpu,
                      verified=(len(everything), missing, wrong), where=probe.where(sample),
                      load=load_average(), gunicorn_alive=gunicorn.poll() is None)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(report.figures(), indent=2))
        backend.close()
        return 1 if args.check and not report.all_met() else 0
    except Exception:
        log.flush()
        tail = (root / "gunicorn.log").read_text(errors="replace")[-3000:]
        print(f"--- gunicorn log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if clients_proc is not None and clients_proc.is_alive():
            clients_proc.terminate()
            clients_proc.join(5)
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(30)
        log.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not answers(url)


if __name__ == "__main__":
    sys.exit(main())
