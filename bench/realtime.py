"""Live events: ingest-to-websocket latency with many dashboard clients, measured in one run.

    .venv/bin/python bench/realtime.py [--clients 50] [--rate 1000] [--seconds 15]

Starts its own Redis Stack (from the pinned wheels, on a free loopback port, no persistence)
and gunicorn (``-k gthread``, 2 workers, 64 threads each) on it, then:

  * connects ``--clients`` websocket clients to ``/ws/live`` with read-scoped keys of
    ``--tenants`` tenants (an equal share each), in ``--client-procs`` processes of their own,
    one receiving thread a client;
  * sends ``--rate`` executions/s for ``--seconds`` seconds (after ``--warmup`` seconds at the
    same rate that are not counted) through ``POST /api/ingest/executions/batch``, in batches
    of ``--batch`` on a fixed schedule, the tenants in turn, over keep-alive connections (one
    sender thread a tenant). Each execution's ``execId`` carries its tenant and the time its
    request was sent (``time.time()``, the same clock the clients read);
  * each client records when each ``execution`` event arrives; latency = arrival - send time.
    A plain Redis subscriber to every tenant's channel does the same, which splits the
    latency into the ingest request (until the event leaves Redis) and the fan-out.

It prints the events delivered (each tenant's events times its clients), the latency
percentiles, the achieved ingest rate and the HTTP response times, the CPU each part used
(and the rest of the machine: these machines are shared), and counts every event a client
received from another tenant (must be 0). Target: p99 < 50 ms at 1,000 events/s with 50
clients.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis
import simple_websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_seconds, machine_busy_seconds, wait_healthy  # noqa: E402

from chronos.accounts import generate_api_key, hash_password  # noqa: E402
from chronos.backends.base import BackendOptions  # noqa: E402
from chronos.backends.redis_stack import RedisStackBackend  # noqa: E402
from chronos.embedded import RedisStackServer, answers, free_port  # noqa: E402
from chronos.models import Job, User  # noqa: E402
from chronos.timeutil import now_ms  # noqa: E402

JOBS = 20


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# --- the clients, in their own process(es) -------------------------------------------------


class LiveClient(simple_websocket.Client):
    """``simple_websocket.Client`` that does not sit on what came with the 101 answer.

    simple-websocket 1.1.0 reads the handshake answer and takes only its first event; bytes
    that arrived in the same read (``/ws/live`` sends its hello right after the 101, and
    the two often share a TCP segment) stay parsed-but-unread in wsproto until more bytes
    arrive, here the server's ping 20 s later. Reading them at the end of the handshake,
    before the receiving thread starts, delivers the hello at once.
    """

    def handshake(self) -> None:
        super().handshake()
        self.connected = self._handle_events()


class Listener:
    """One ``/ws/live`` client: a thread that timestamps every message as it arrives."""

    def __init__(self, url: str, tenant: str, key: str) -> None:
        self.tenant = tenant
        started = time.monotonic()
        self.ws = LiveClient.connect(url, headers={"x-api-key": key})
        hello = self.ws.receive(timeout=30)
        self.connect_s = time.monotonic() - started
        if hello is None or json.loads(hello).get("type") != "hello":
            raise RuntimeError(f"a {tenant} client got {hello!r} instead of a hello after "
                               f"{self.connect_s:.1f} s")  # fmt: skip
        self.received: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        append = self.received.append
        while not self.stop.is_set():
            try:
                message = self.ws.receive(timeout=0.2)
            except simple_websocket.ConnectionClosed:
                return
            if message is not None:
                append((time.time(), message))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            self.ws.close()

    def results(self) -> dict[str, Any]:
        return summarise(self.tenant, self.received) | {"connect_s": self.connect_s}


class Tap:
    """A plain Redis subscriber to every tenant's channel: when each event left Redis."""

    def __init__(self, redis_url: str, pattern: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(pattern)
        self.received: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None:
                self.received.append((time.time(), message["data"].decode()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()

    def results(self) -> dict[str, Any]:
        return summarise(None, self.received)


def summarise(tenant: str | None, received: list[tuple[float, str]]) -> dict[str, Any]:
    """Latencies (ms) of this run's events, and everything that should not be there."""
    latencies: list[float] = []
    seen: set[str] = set()
    foreign: list[str] = []
    other: Counter[str] = Counter()
    duplicates = warm = 0
    for arrival, raw in received:
        message = json.loads(raw)
        if message.get("type") != "execution":
            other[str(message.get("type"))] += 1
            continue
        exec_id = message["data"]["execId"]
        phase, owner, _, _, sent_ns = exec_id.split(".")
        if tenant is not None and owner != tenant:
            foreign.append(exec_id)
            continue
        if exec_id in seen:
            duplicates += 1
            continue
        seen.add(exec_id)
        if phase == "w":
            warm += 1
            continue
        latencies.append((arrival - int(sent_ns) / 1e9) * 1000)
    return {"tenant": tenant, "latencies": latencies, "foreign": foreign,
            "other": dict(other), "duplicates": duplicates, "warm": warm}  # fmt: skip


def client_process(url: str, clients: list[tuple[str, str]], tap: tuple[str, str] | None,
                   pipe: Connection) -> None:  # fmt: skip
    """Connect ``clients`` ((tenant, read key) each) and the ``tap`` ((Redis URL, channel
    pattern), if any), say ready, listen until told to stop, then send back each one's
    results (the tap's last)."""
    listeners: list[Listener | Tap] = [Listener(url, tenant, key) for tenant, key in clients]
    if tap is not None:
        listeners.append(Tap(*tap))
    pipe.send("ready")
    pipe.recv()  # "stop"
    for listener in listeners:
        listener.close()
    pipe.send([listener.results() for listener in listeners])
    pipe.close()


# --- the ingest driver -----------------------------------------------------------------------


def execution(phase: str, tenant: str, batch: int, i: int, sent_ns: int, now: int) -> dict:
    return {
        "execId": f"{phase}.{tenant}.{batch}.{i}.{sent_ns}", "jobId": f"job-{i % JOBS}",
        "status": "success" if i % 10 else "failed", "startedAt": now - 1500,
        "finishedAt": now, "durationMs": 1500, "exitCode": 0 if i % 10 else 1,
        "host": "bench-host",
    }  # fmt: skip


def drive(port: int, keys: dict[str, str], phase: str, rate: int, seconds: float,
          batch: int) -> tuple[dict[str, int], float, list[float], int]:  # fmt: skip
    """Send ``rate`` executions/s for ``seconds`` in batches of ``batch`` on a fixed schedule,
    the tenants in turn (batch k belongs to tenant k mod tenants and its sender thread).

    Returns (executions accepted by tenant, seconds from the first send to the last answer, each
    request's response time in ms, how many batches were sent more than one interval late).
    """
    tenants = list(keys)
    every = batch / rate
    total = round(rate * seconds / batch)
    accepted = [0] * len(tenants)
    took: list[list[float]] = [[] for _ in tenants]
    behind = [0] * len(tenants)
    ended = [0.0] * len(tenants)
    failed: list[BaseException] = []
    start = time.time() + 0.2

    def sender(n: int) -> None:
        try:
            send(n)
        except BaseException as exc:  # re-raised by drive() once every sender has stopped
            failed.append(exc)

    def send(n: int) -> None:
        tenant = tenants[n]
        headers = {"x-api-key": keys[tenant], "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for k in range(n, total, len(tenants)):
            due = start + k * every
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            elif wait < -every:
                behind[n] += 1
            sent = time.time()
            sent_ns, now = int(sent * 1e9), int(sent * 1000)
            body = json.dumps({"executions": [execution(phase, tenant, k, i, sent_ns, now)
                                              for i in range(batch)]})  # fmt: skip
            conn.request("POST", "/api/ingest/executions/batch", body, headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            done = time.time()
            assert response.status == 200, answer
            accepted[n] += answer["accepted"]
            took[n].append((done - sent) * 1000)
        ended[n] = time.time()
        conn.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(len(tenants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]
    return (
        dict(zip(tenants, accepted)),
        max(ended) - start,
        [x for xs in took for x in xs],
        sum(behind),
    )


# --- the run -------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000, help="executions per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=20, help="executions per request")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=64, help="threads per gunicorn worker")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="processes the websocket clients are spread over")  # fmt: skip
    args = parser.parse_args()
    tenants = [f"tenant-{n}" for n in range(args.tenants)]

    root = Path(tempfile.mkdtemp(prefix="chronos-bench-"))
    server = RedisStackServer(root=root / "redis", persistent=False, port=free_port())
    url = server.start()
    gunicorn = None
    procs: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        prefix = "bench:"
        backend = RedisStackBackend(url, BackendOptions(key_prefix=prefix))
        backend.migrate()
        ingest_keys: dict[str, str] = {}
        read_keys: dict[str, str] = {}
        for tenant in tenants:
            user = f"{tenant}-user"
            backend.create_user(User(user, tenant, hash_password("bench-password")))
            for scope, into in (("ingest", ingest_keys), ("read", read_keys)):
                new = generate_api_key(tenant, user, f"bench {scope}", (scope,), now_ms())
                backend.create_api_key(new.record)
                into[tenant] = new.plaintext
            backend.upsert_jobs(tenant, [Job(tenant, f"job-{i}") for i in range(JOBS)], now_ms())

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

        clients = [(tenants[c % len(tenants)], read_keys[tenants[c % len(tenants)]])
                   for c in range(args.clients)]  # fmt: skip
        context = multiprocessing.get_context("fork")
        ws_url = f"ws://127.0.0.1:{port}/ws/live"
        for n in range(args.client_procs):
            ours, theirs = context.Pipe()
            mine = clients[n :: args.client_procs]
            tap = (url, backend.keys.events_pattern()) if n == 0 else None
            proc = context.Process(target=client_process, args=(ws_url, mine, tap, theirs))
            proc.start()
            procs.append((proc, ours))
        for proc, pipe in procs:
            if not (pipe.poll(90) and pipe.recv() == "ready"):
                raise RuntimeError(f"client process {proc.pid} did not connect its clients")

        if args.warmup > 0:  # first requests, subscriptions confirmed: not counted
            drive(port, ingest_keys, "w", args.rate, args.warmup, args.batch)
            time.sleep(0.5)
        watched = {"redis-server": [server.pid()], "gunicorn workers": children(gunicorn.pid),
                   "ws clients": [proc.pid for proc, _ in procs],
                   "ingest driver": [os.getpid()]}  # fmt: skip
        cpu_before = {name: cpu_seconds(pids) for name, pids in watched.items()}
        machine_before = machine_busy_seconds()
        by_tenant, elapsed, took, behind = drive(port, ingest_keys, "m", args.rate, args.seconds,
                                            args.batch)  # fmt: skip
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in watched.items()}
        # The rest of the machine: other processes on these noisy shared machines.
        cpu["anything else"] = max(0.0, machine_busy_seconds() - machine_before - sum(cpu.values()))
        time.sleep(2.0)  # stragglers
        results: list[dict[str, Any]] = []
        for _, pipe in procs:
            pipe.send("stop")
        for proc, pipe in procs:
            assert pipe.poll(60)
            results += pipe.recv()
            proc.join(10)

        sent = sum(by_tenant.values())
        listening = Counter(r["tenant"] for r in results)
        expected = sum(listening[t] * by_tenant[t] for t in tenants)
        tapped = next(r for r in results if r["tenant"] is None)
        results.remove(tapped)
        latencies = [x for r in results for x in r["latencies"]]
        foreign = [x for r in results for x in r["foreign"]]
        other: Counter[str] = Counter()
        for r in results:
            other.update(r["other"])
        duplicates = sum(r["duplicates"] for r in results)
        connects = [r["connect_s"] * 1000 for r in results]
        print(f"setup: gunicorn -k gthread -w {args.workers} --threads {args.threads}; "
              f"{args.clients} clients over {args.tenants} tenants in {args.client_procs} "
              f"process(es), connected in {sum(connects) / 1000:.1f} s (connect to hello: "
              f"median {statistics.median(connects):.0f} ms, max {max(connects):.0f} ms); "
              f"{args.batch} executions a request")  # fmt: skip
        print(f"ingest:    {sent:,} executions in {elapsed:.2f} s = {sent / elapsed:,.0f}/s "
              f"(target rate {args.rate:,}/s; {behind} of {len(took)} requests sent more than "
              f"one interval late)")  # fmt: skip
        print(f"           HTTP response p50 {pct(took, 50):.1f}  p99 {pct(took, 99):.1f}  "
              f"max {max(took):.1f} ms")  # fmt: skip
        print(f"delivered: {len(latencies):,} of {expected:,} expected "
              f"({sent:,} events x {args.clients // args.tenants} clients a tenant); "
              f"duplicates {duplicates}; other messages {dict(other) or 'none'}")  # fmt: skip
        print(f"foreign:   {len(foreign)} events delivered to another tenant's client"
              + (f", e.g. {foreign[:3]}" if foreign else ""))  # fmt: skip
        shares = ", ".join(f"{name} {100 * spent / elapsed:.0f}%" for name, spent in cpu.items())
        print(f"cpu:       {shares} of one core during the {elapsed:.0f} s "
              f"({os.cpu_count()} cores in all)")  # fmt: skip
        if latencies:
            print(f"latency:   p50 {pct(latencies, 50):.1f}  p90 {pct(latencies, 90):.1f}  "
                  f"p99 {pct(latencies, 99):.1f}  max {max(latencies):.1f} ms  "
                  f"(mean {statistics.fmean(latencies):.1f}; target p99 < 50 ms)")  # fmt: skip
        seen = tapped["latencies"]
        if seen:
            print(f"  of which send -> out of Redis (a plain subscriber, {len(seen):,} events): "
                  f"p50 {pct(seen, 50):.1f}  p90 {pct(seen, 90):.1f}  p99 {pct(seen, 99):.1f}  "
                  f"max {max(seen):.1f} ms")  # fmt: skip
        backend.close()
    finally:
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(30)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not answers(url)


if __name__ == "__main__":
    main()
