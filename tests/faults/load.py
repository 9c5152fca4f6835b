"""Sustained ingest from several SDK clients, with a ledger of what the server acknowledged.

Each client is a real ``ChronosClient`` (batching, retries, spool) whose transport is the SDK's
own ``UrllibTransport``, wrapped to write down, for every request, the HTTP status and, for a
2xx, the ``execId`` of every item the server answered ``created`` or ``duplicate``: exactly
the executions the server acknowledged, counted on the client side.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chronos_sdk import ChronosClient
from chronos_sdk.transport import Response, UrllibTransport

from chronos.timeutil import now_ms


@dataclass
class Ledger:
    """What the clients saw, shared by all of them (thread-safe)."""

    acked: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    network_errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    bad_answers: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: bytes, resp: Response, took_s: float) -> None:
        answer = resp.json()
        with self.lock:
            self.statuses[resp.status] += 1
            self.slowest_s = max(self.slowest_s, took_s)
            if 200 <= resp.status < 300 and not isinstance(answer, dict):
                self.bad_answers.append(f"{resp.status}: {resp.body[:200]!r}")
            elif 200 <= resp.status < 300:
                for item in answer.get("results", []):
                    self.outcomes[item["outcome"]] += 1
                    self.acked.add(item["execId"])
            elif not isinstance(answer, dict) or "error" not in answer:
                self.bad_answers.append(f"{resp.status}: {resp.body[:200]!r}")
            elif resp.status in (429, 503) and "retry-after" not in resp.headers:
                self.bad_answers.append(f"{resp.status} without Retry-After")

    def failed(self, exc: BaseException, took_s: float) -> None:
        with self.lock:
            self.network_errors[type(exc).__name__] += 1
            self.slowest_s = max(self.slowest_s, took_s)


class LedgerTransport(UrllibTransport):
    """The SDK's transport, reporting every answer (or network failure) to a ledger."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def post(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Response:
        started = time.monotonic()
        with self.ledger.lock:
            self.ledger.in_flight += 1
        try:
            resp = super().post(url, headers, body, timeout)
        except BaseException as exc:
            self.ledger.failed(exc, time.monotonic() - started)
            raise
        finally:
            with self.ledger.lock:
                self.ledger.in_flight -= 1
        if url.endswith("/executions/batch"):
            self.ledger.record(body, resp, time.monotonic() - started)
        return resp


class IngestLoad:
    """``clients`` SDK clients in threads, each sending executions with unique ids to its own
    job as fast as ``pause_s`` lets it, until ``stop()``."""

    def __init__(self, endpoint: str, api_key: str, spool: Path, clients: int = 4,
                 pause_s: float = 0.004) -> None:  # fmt: skip
        self.ledger = Ledger()
        self.pause_s = pause_s
        self.sent: list[list[str]] = [[] for _ in range(clients)]
        self.jobs = [f"job:load-{n}" for n in range(clients)]
        self.clients = [
            ChronosClient(
                api_key=api_key,
                endpoint=endpoint,
                spool_dir=spool / str(n),
                transport=LedgerTransport(self.ledger),
                batch_size=50,
                flush_interval=0.05,
                backoff_base=0.1,
                backoff_cap=1.0,
                timeout=15,
            )  # fmt: skip
            for n in range(clients)
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def register_jobs(self) -> None:
        answer = self.clients[0].register_jobs([{"id": job} for job in self.jobs])
        assert answer is not None and answer["success"], answer

    def start(self) -> None:
        for n in range(len(self.clients)):
            thread = threading.Thread(target=self._send, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _send(self, n: int) -> None:
        client, sent, job = self.clients[n], self.sent[n], self.jobs[n]
        while not self._stop.is_set():
            exec_id = f"c{n}-{len(sent)}"
            now = now_ms()
            client.send({"execId": exec_id, "jobId": job, "startedAt": now - 40,
                         "finishedAt": now, "durationMs": 40,
                         "status": "failed" if len(sent) % 7 == 0 else "success"})  # fmt: skip
            sent.append(exec_id)
            time.sleep(self.pause_s)

    def total_sent(self) -> int:
        return sum(len(s) for s in self.sent)

    def wait_sent(self, at_least: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.total_sent() < at_least:
            assert time.monotonic() < deadline, f"only {self.total_sent()} sent"
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop producing (what is queued is still delivered)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def drain(self, timeout: float) -> None:
        """Wait until every client delivered everything it queued or spooled."""
        deadline = time.monotonic() + timeout
        for client in self.clients:
            left = max(0.1, deadline - time.monotonic())
            assert client.flush(timeout=left), f"a client did not drain in {timeout:g} s"

    def close(self) -> None:
        self._stop.set()
        for client in self.clients:
            client.close(timeout=1)

    def sent_ids(self) -> set[str]:
        return {exec_id for ids in self.sent for exec_id in ids}

    def dropped(self) -> int:
        return sum(c.dropped + c.rejected for c in self.clients)

    def summary(self) -> dict[str, Any]:
        ledger = self.ledger
        return {
            "sent": self.total_sent(),
            "statuses": dict(ledger.statuses),
            "network_errors": dict(ledger.network_errors),
            "outcomes": dict(ledger.outcomes),
            "slowest_s": round(ledger.slowest_s, 2),
        }
