"""The watching side of ``bench/soak.py``: live dashboards and the server's vital signs.

``dashboards`` runs in a process of its own (so its threads do not compete with the senders
for one interpreter): ``n`` websocket clients on ``/ws/live``, each with a logged-in user's
session cookie, like browser tabs on the dashboard. Each counts, in shared memory the main
process reads at every row, the ``execution`` events it receives by phase and kind and the
events the server reports having dropped for it (``lagging``).

The probes read the gunicorn processes' RSS and CPU from ``/proc`` (Linux), and Redis'
``used_memory``, stored documents and, at the end, where the memory went.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis
import simple_websocket

#: Counters per dashboard, in this order, in one shared array of ``SLOTS * clients``.
SLOTS = 5
WARMUP_EVENTS, EXECUTIONS, RUNNING, DROPPED, CLOSED = range(SLOTS)


def login(port: int, username: str, password: str) -> str:
    """Log in through the dashboard's form like a browser; return the ``Cookie`` header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookie = _session_cookie(response)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if cookie is None or token is None:
        raise RuntimeError(f"/login answered {response.status} without a session or CSRF token")
    form = urllib.parse.urlencode({"csrf_token": token.group(1), "username": username,
                                   "password": password, "next": "/"})  # fmt: skip
    conn.request(
        "POST",
        "/login",
        form,
        {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    response.read()
    logged_in = _session_cookie(response)
    conn.close()
    if response.status != 303 or logged_in is None:
        raise RuntimeError(f"logging in as {username} answered {response.status}")
    return logged_in


def _session_cookie(response: http.client.HTTPResponse) -> str | None:
    for name, value in response.getheaders():
        if name.lower() == "set-cookie":
            return value.split(";", 1)[0]
    return None


class LiveSocket(simple_websocket.Client):
    """Reads what came with the 101 answer (simple-websocket 1.1.0 leaves it unread until the
    next bytes arrive; see ``tests/conftest.py``'s ``WSClient``)."""

    def handshake(self) -> None:
        super().handshake()
        self.connected = self._handle_events()


class Dashboard:
    """One ``/ws/live`` client: a thread that counts what arrives in ``counts[base:base+SLOTS]``."""

    def __init__(self, url: str, cookie: str, counts: Any, slot: int) -> None:
        self.counts = counts
        self.base = slot * SLOTS
        self.ws = LiveSocket.connect(url, headers={"Cookie": cookie})
        hello = self.ws.receive(timeout=30)
        if hello is None or json.loads(hello).get("type") != "hello":
            raise RuntimeError(f"dashboard {slot} got {hello!r} instead of the hello")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        counts, base = self.counts, self.base
        try:
            while not self.stop.is_set():
                raw = self.ws.receive(timeout=0.5)
                if raw is None:
                    continue
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "execution":
                    data = message["data"]
                    if not data["execId"].startswith("p2-"):
                        counts[base + WARMUP_EVENTS] += 1
                    elif data["status"] == "running":
                        counts[base + RUNNING] += 1
                    else:
                        counts[base + EXECUTIONS] += 1
                elif kind == "lagging":
                    counts[base + DROPPED] = int(message["dropped"])
        except simple_websocket.ConnectionClosed:
            if not self.stop.is_set():
                counts[base + CLOSED] = 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.ws.close()


def dashboards(url: str, cookie: str, n: int, counts: Any, pipe: Connection,
               parents_end: Connection) -> None:  # fmt: skip
    """Connect ``n`` dashboards, say "ready" (or why not), count until told to stop or until
    the parent is gone."""
    parents_end.close()  # so that the parent's death reads as EOF here
    try:
        clients = [Dashboard(url, cookie, counts, slot) for slot in range(n)]
    except Exception as exc:  # reported to the parent, which stops the run
        pipe.send(f"could not connect the dashboards: {exc!r}")
        return
    pipe.send("ready")
    with contextlib.suppress(EOFError):
        pipe.recv()
    for client in clients:
        client.close()
    pipe.send("closed")


# --- probes ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_bytes(pids: list[int]) -> int:
    """Sum of ``VmRSS`` of ``pids`` (shared pages count once per process, as ``ps`` shows)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found.group(1)) * 1024 if found else 0
    return total


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class RedisProbe:
    """Figures of the Redis Stack server under the bench's key prefix."""

    client: redis.Redis
    index: str
    prefix: str

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stored(self) -> int:
        return int(self.index_info()["num_docs"])

    def index_info(self) -> dict[str, Any]:
        return _pairs(self.client.execute_command("FT.INFO", self.index))

    def where(self, sample: list[str]) -> dict[str, float]:
        """Redis memory per stored execution by kind (bytes): the documents (``MEMORY USAGE``
        of ``sample``'s keys), the search index (``FT.INFO`` sizes), the metric series
        (``TS.INFO`` memory), the duration sketches and the keyspace's own tables."""
        docs = self.stored()
        info = self.index_info()
        mib = 1024 * 1024
        out: dict[str, float] = {}
        used = [self.client.memory_usage(k, samples=0) or 0 for k in sample]
        # RedisJSON shares equal strings between documents (the handler's source, host,
        # versions) and MEMORY USAGE counts them in full in each: an upper bound.
        out["document (MEMORY USAGE of a sample; counts shared strings in full)"] = sum(used) / max(
            1, len(used)
        )
        for name in ("inverted_sz_mb", "offset_vectors_sz_mb", "doc_table_size_mb",
                     "sortable_values_size_mb", "key_table_size_mb", "tag_overhead_sz_mb",
                     "text_overhead_sz_mb"):  # fmt: skip
            if name in info:
                out[f"index {name}"] = float(info[name]) * mib / docs
        series = 0
        for key in self.client.scan_iter(match=f"{self.prefix}ts:*", count=5000):
            series += int(_pairs(self.client.execute_command("TS.INFO", key))["memoryUsage"])
        out["metric series (TS.INFO memoryUsage)"] = series / docs
        for pattern, name in (("td:*", "duration sketches"),
                              ("jobexecs:*", "per-job record sets (retention cap)")):  # fmt: skip
            size = sum(
                self.client.memory_usage(key, samples=0) or 0
                for key in self.client.scan_iter(match=self.prefix + pattern, count=5000)
            )
            out[f"{name} (MEMORY USAGE)"] = size / docs
        stats = self.client.memory_stats()
        db = stats.get("db.0") or {}
        keys = max(1, int(stats.get("keys.count", 1)))
        for name in ("overhead.hashtable.main", "overhead.hashtable.expires"):
            if name in db:
                out[f"keyspace {name.rsplit('.', 1)[1]} table (per key)"] = int(db[name]) / keys
        return out


def _pairs(reply: Any) -> dict[str, Any]:
    """A module's INFO reply as a dict: RESP3 answers a map, RESP2 a flat list of pairs."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    return {_text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
