"""A fake Chronos ingest server on a real loopback socket, for the SDK tests.

``ingest.answer(status, ...)`` scripts the next answers (first in, first out); with no script the
server accepts everything and counts repeated ``execId``s as duplicates. ``ingest.down()`` closes
the listening socket and ``ingest.up()`` reopens it on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None


class FakeIngest:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Answer] = deque()
        self.rule: Callable[[str, Any], Answer | None] | None = None
        self.seen: Counter[tuple[str, str]] = Counter()  # (execId, status) -> times accepted
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join(5)
            self.server = None

    def answer(self, status: int, body: Any = None, **headers: str) -> None:
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        self.script.append(Answer(status, body, named))

    # -- what arrived ------------------------------------------------------------------------

    def batches(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith("/executions/batch")]

    def accepted(self) -> list[dict[str, Any]]:
        """Execution events of every 2xx batch, in arrival order."""
        return [e for r in self.batches() if r.status < 300 for e in r.body["executions"]]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for the fake ingest server")
                self.changed.wait(left)

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        body = json.loads(raw) if raw else None
        with self.lock:
            answer = self.script.popleft() if self.script else None
        if answer is None and self.rule is not None:
            answer = self.rule(path, body)
        if answer is None:
            answer = self._accept(path, body)
        with self.changed:
            self.requests.append(Recorded(path, headers, body, answer.status, time.monotonic()))
            self.changed.notify_all()
        return answer

    def _accept(self, path: str, body: Any) -> Answer:
        if path.endswith("/jobs/register"):
            results = [{"id": j["id"], "created": True} for j in body["jobs"]]
            return Answer(200, {"success": True, "results": results})
        accepted = duplicates = 0
        with self.lock:
            for event in body["executions"]:
                key = (event["execId"], event["status"])
                if self.seen[key]:
                    duplicates += 1
                else:
                    accepted += 1
                self.seen[key] += 1
        return Answer(200, {"success": True, "accepted": accepted, "duplicates": duplicates,
                            "rejected": []})


def _handler(fake: FakeIngest) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = fake.handle(self.path, headers, raw)
            payload = json.dumps(answer.body if answer.body is not None else {}).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (answer.headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def ingest() -> Iterator[FakeIngest]:
    fake = FakeIngest()
    yield fake
    fake.down()


@pytest.fixture
def make_client(ingest: FakeIngest) -> Iterator[Callable[..., Any]]:
    """Build clients against the fake server with fast backoff; all are closed afterwards."""
    from chronos_sdk import ChronosClient

    clients: list[ChronosClient] = []

    def make(**kwargs: Any) -> ChronosClient:
        kwargs.setdefault("endpoint", ingest.url)
        kwargs.setdefault("api_key", "test-key")
        kwargs.setdefault("flush_interval", 0.05)
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("backoff_cap", 0.05)
        kwargs.setdefault("timeout", 2.0)
        client = ChronosClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=1.0)
