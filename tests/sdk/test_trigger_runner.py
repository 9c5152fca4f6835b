"""ChronosRunner.start(): the runner protocol (docs/runner-protocol.md) against a fake server, and
the stdlib websocket client under it.

The fake server is written here with the standard library: a threaded TCP server that does the
server side of the RFC 6455 handshake and framing (server frames unmasked, client frames masked),
checks ``x-api-key``, answers ``hello`` with ``ready`` and records everything the client sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chronos_sdk import ChronosClient, ChronosRunner, MockTransport, Request, Response, triggers
from chronos_sdk.triggers import SeenTriggers
from chronos_sdk.websocket import WebSocket, WebSocketClosed, WebSocketError, ws_url

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "test-key"


# -- the fake server ---------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A server frame (unmasked unless ``mask`` is given, to test that the client refuses it)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    flag = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, flag | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, flag | 126, n)
    else:
        head = struct.pack("!BBQ", first, flag | 127, n)
    return head + (mask + _xor(payload, mask) if mask else payload)


class Conn:
    """One websocket connection, server side. A reader thread records what the client sends."""

    def __init__(self, server: FakeServer, sock: socket.socket, headers: dict[str, str],
                 path: str) -> None:
        self.server = server
        self.sock = sock
        self.headers = headers
        self.path = path
        self.refused = False
        self.messages: list[Any] = []  # client messages: parsed JSON, else str / bytes
        self.lengths: list[tuple[int, int]] = []  # (payload length, bits of its length field)
        self.pongs: list[bytes] = []
        self.client_close: int | None = None  # the code of the client's close frame
        self.errors: list[str] = []  # protocol violations by the client
        self.ended = False
        self.close_sent = False
        self.echo_close = server.echo_close
        self._send_lock = threading.Lock()

    # what the test does
    def send_raw(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.send_raw(frame(opcode, payload, fin))

    def send_json(self, message: dict[str, Any]) -> None:
        self.send_frame(0x1, json.dumps(message).encode())

    def trigger(self, job_id: str, trigger_id: str, delivery: int = 1) -> None:
        self.send_json({"type": "job:trigger", "jobId": job_id, "triggerId": trigger_id,
                        "scheduledFor": "2026-11-28T12:00:00.000Z", "delivery": delivery})

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_sent = True
        self.send_frame(0x8, struct.pack("!H", code) + reason.encode())

    def drop(self) -> None:
        """End the TCP connection without a close frame."""
        with _quiet():
            self.sock.shutdown(socket.SHUT_RDWR)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and m.get("type") == kind]

    def acks(self) -> list[str]:
        return [m["triggerId"] for m in self.of_type("ack")]

    def wait(self, predicate: Callable[[], Any], timeout: float = 3.0) -> None:
        self.server.wait(predicate, timeout)

    def wait_json(self, kind: str, count: int = 1) -> dict[str, Any]:
        self.wait(lambda: len(self.of_type(kind)) >= count)
        return self.of_type(kind)[count - 1]

    # the reader thread
    def read_loop(self) -> None:
        parts: list[bytes] = []
        try:
            while (head := _recv_exact(self.sock, 2)) is not None:
                fin, opcode = head[0] & 0x80, head[0] & 0x0F
                masked, n, bits = head[1] & 0x80, head[1] & 0x7F, 7
                if n == 126:
                    n, bits = struct.unpack("!H", _recv_exact(self.sock, 2) or b"\0\0")[0], 16
                elif n == 127:
                    n, bits = struct.unpack("!Q", _recv_exact(self.sock, 8) or b"\0" * 8)[0], 64
                if not masked:
                    self.errors.append("unmasked client frame")
                key = (_recv_exact(self.sock, 4) or b"") if masked else b"\0\0\0\0"
                payload = _xor(_recv_exact(self.sock, n) or b"", key)
                with self.server.cond:
                    self.lengths.append((n, bits))
                if opcode == 0x9:
                    self.send_frame(0xA, payload)
                elif opcode == 0xA:
                    self._record(self.pongs, payload)
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self._record(None, code)
                    if not self.close_sent and self.echo_close:
                        self.close(code)
                    if self.echo_close:
                        break
                else:
                    parts.append(payload)
                    if fin:
                        self._on_message(b"".join(parts), opcode if len(parts) == 1 else None)
                        parts = []
        except OSError:
            pass
        finally:
            with _quiet():
                self.sock.close()
            self._record(None, None, ended=True)

    def _on_message(self, data: bytes, opcode: int | None) -> None:
        try:
            message: Any = json.loads(data)
        except ValueError:
            message = data.decode() if opcode != 0x2 else data
        self._record(self.messages, message)
        if isinstance(message, dict) and message.get("type") == "hello" and self.server.auto_ready:
            self.send_json({"type": "ready", "runner": "fake-runner-1"})

    def _record(self, into: list[Any] | None, item: Any, ended: bool = False) -> None:
        with self.server.cond:
            if into is not None:
                into.append(item)
            elif ended:
                self.ended = True
            else:
                self.client_close = item
            self.server.cond.notify_all()


class FakeServer:
    def __init__(self, key: str = KEY, ssl_context: ssl.SSLContext | None = None) -> None:
        self.key = key
        self.ssl_context = ssl_context
        self.auto_ready = True
        self.echo_close = True
        self.answer: bytes | None = None  # a canned handshake answer instead of the real one
        self.silent = False  # accept TCP connections but never answer the handshake
        self.conns: list[Conn] = []
        self.cond = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.02)
        self.port = self.listener.getsockname()[1]
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._spawn(self._accept_loop)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return ws_url(self.url, "/ws/runner")

    def accepted(self) -> list[Conn]:
        with self.cond:
            return [c for c in self.conns if not c.refused]

    def refused(self) -> list[Conn]:
        with self.cond:
            return [c for c in self.conns if c.refused]

    def wait(self, predicate: Callable[[], Any], timeout: float = 3.0) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError("timed out waiting for the fake websocket server")

    def conn(self, n: int = 1) -> Conn:
        """The n-th accepted connection, once it exists."""
        self.wait(lambda: len(self.accepted()) >= n)
        return self.accepted()[n - 1]

    def close(self) -> None:
        self._stopping = True
        with self.cond:
            socks = list(self._socks)
        for sock in socks:
            with _quiet():
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)
        self.listener.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            with self.cond:
                self._socks.append(sock)
            self._spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
                with self.cond:
                    self._socks.append(sock)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise OSError("closed during the handshake")
                data += chunk
        except OSError:
            sock.close()
            return
        if self.silent:
            sock.recv(1)  # until the client gives up
            sock.close()
            return
        request_line, *lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.answer is not None:
            sock.sendall(self.answer)
            sock.close()
            return
        accept = base64.b64encode(
            hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        conn = Conn(self, sock, headers, request_line.split(" ")[1])
        conn.refused = headers.get("x-api-key") != self.key
        with self.cond:
            self.conns.append(conn)
            self.cond.notify_all()
        if conn.refused:  # as the protocol says: an `error` message, then close 4401
            with _quiet():
                conn.send_json({"type": "error", "error": "invalid API key"})
                conn.close(4401, "unauthorized")
        conn.read_loop()


class _quiet:
    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, OSError)


# -- fixtures ----------------------------------------------------------------------------------


class Recorder:
    """A runner connected to the fake server; its events go to an in-memory transport."""

    def __init__(self, server: FakeServer, api_key: str = KEY, **kwargs: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        client = ChronosClient(api_key, server.url, transport=MockTransport(self.handle),
                               flush_interval=0.01)
        kwargs.setdefault("app_version", "1.0")
        kwargs.setdefault("reconnect_base", 0.01)
        kwargs.setdefault("reconnect_cap", 0.05)
        self.runner = ChronosRunner(client=client, **kwargs)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.sent.extend(request.json()["executions"])
        return Response(200, body=b'{"success": true}')

    def events(self, trigger_id: str | None = None) -> list[dict[str, Any]]:
        assert self.runner.flush(5)
        with self.lock:
            return [e for e in self.sent if trigger_id is None or e.get("triggerId") == trigger_id]

    def wait_events(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        deadline = time.monotonic() + 3
        while not predicate(self.events()):
            assert time.monotonic() < deadline, self.events()
            time.sleep(0.01)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()
    assert not any(c.errors for c in fake.conns), [c.errors for c in fake.conns]


@pytest.fixture
def make_rec(server: FakeServer) -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(**kwargs: Any) -> Recorder:
        made.append(Recorder(server, **kwargs))
        return made[-1]

    yield make
    for rec in made:
        rec.runner.close(2)
        assert rec.runner.listener._thread is None


def until(predicate: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def started(rec: Recorder, server: FakeServer, n: int = 1) -> Conn:
    """Start the runner (if not yet) and return its n-th connection once it is ready."""
    rec.runner.start()
    conn = server.conn(n)
    until(lambda: rec.runner.listener.connections >= n and rec.runner.connected)
    return conn


# -- the runner protocol -----------------------------------------------------------------------


def test_hello_lists_the_registered_jobs_after_an_authenticated_handshake(server, make_rec):
    rec = make_rec(runner_name="worker-1")
    rec.runner.register("b-job", lambda: None)
    rec.runner.register("a-job", lambda: None)
    assert not rec.runner.connected

    conn = started(rec, server)

    assert conn.path == "/ws/runner"
    assert conn.headers["x-api-key"] == KEY and conn.headers["sec-websocket-version"] == "13"
    assert conn.headers["user-agent"].startswith("chronos-sdk-python/")
    assert conn.messages[0] == {"type": "hello", "jobs": ["a-job", "b-job"], "runner": "worker-1"}
    assert rec.runner.listener.server_name == "fake-runner-1"


def test_job_ids_the_server_would_refuse_are_left_out_of_hello(server, make_rec, caplog):
    rec = make_rec()
    rec.runner.register("ok", lambda: None)
    rec.runner.register("x" * 257, lambda: None)
    assert started(rec, server).messages[0]["jobs"] == ["ok"]
    assert any("longer than 256" in r.message for r in caplog.records)


@pytest.mark.parametrize("env", [None, "from-env"])
def test_runner_name_comes_from_the_environment_or_is_left_out(server, make_rec, monkeypatch,
                                                               env):
    if env:
        monkeypatch.setenv("CHRONOS_RUNNER_NAME", env)
    else:
        monkeypatch.delenv("CHRONOS_RUNNER_NAME", raising=False)
    rec = make_rec()
    hello = started(rec, server).messages[0]
    assert hello.get("runner") == env and hello["jobs"] == []


def test_a_trigger_is_acked_and_run_once_with_its_trigger_id_and_attempt(server, make_rec):
    ran: list[str] = []
    rec = make_rec()
    rec.runner.register("report", lambda: ran.append(threading.current_thread().name))
    conn = started(rec, server)

    conn.trigger("report", "trig-1", delivery=2)

    conn.wait(lambda: conn.acks() == ["trig-1"])
    rec.wait_events(lambda events: len(events) == 2)
    running, done = rec.events("trig-1")
    assert (running["status"], done["status"]) == ("running", "success")
    assert running["execId"] == done["execId"] and done["attempt"] == 2
    assert ran and ran[0].startswith("chronos-runner-worker")  # not the socket thread
    assert rec.runner.triggers_received == 1


def test_an_async_handler_runs_from_a_trigger(server, make_rec):
    rec = make_rec()

    @rec.runner.job("async-job", register=False)
    async def handler() -> str:
        return "done"

    conn = started(rec, server)
    conn.trigger("async-job", "trig-a")
    rec.wait_events(lambda events: [e["status"] for e in events] == ["running", "success"])
    assert all(e["triggerId"] == "trig-a" and e["attempt"] == 1 for e in rec.events())


def test_a_duplicate_trigger_is_acked_again_but_runs_once(server, make_rec):
    rec = make_rec()
    rec.runner.register("report", lambda: None)
    conn = started(rec, server)

    conn.trigger("report", "trig-1")
    conn.trigger("report", "trig-1", delivery=2)  # the server did not get the first ack in time
    conn.trigger("report", "trig-2")

    conn.wait(lambda: conn.acks() == ["trig-1", "trig-1", "trig-2"])
    rec.wait_events(lambda events: len(events) == 4)
    assert [e["status"] for e in rec.events("trig-1")] == ["running", "success"]
    assert rec.events("trig-1")[0]["attempt"] == 1
    assert rec.runner.triggers_received == 3


def test_a_trigger_for_an_unknown_job_is_ignored_not_acked(server, make_rec, caplog):
    rec = make_rec()
    rec.runner.register("mine", lambda: None)
    conn = started(rec, server)

    conn.trigger("someone-elses", "trig-x")
    conn.trigger("someone-elses", "trig-y")
    conn.trigger("mine", "trig-1")

    conn.wait(lambda: conn.acks() == ["trig-1"])
    rec.wait_events(lambda events: len(events) == 2)
    assert {e["triggerId"] for e in rec.events()} == {"trig-1"}
    assert rec.runner.triggers_received == 3
    warned = [r for r in caplog.records if "someone-elses" in r.getMessage()]
    assert len(warned) == 1  # once per job id


def test_unknown_and_malformed_messages_are_ignored(server, make_rec):
    rec = make_rec()
    rec.runner.register("mine", lambda: None)
    conn = started(rec, server)

    conn.send_json({"type": "from-the-future", "x": 1})
    conn.send_frame(0x1, b"not json")
    conn.send_json({"type": "job:trigger", "jobId": "mine"})  # no triggerId
    conn.send_frame(0x1, b"[1, 2]")
    conn.trigger("mine", "trig-1")

    conn.wait(lambda: conn.acks() == ["trig-1"])
    assert rec.runner.listener.connections == 1 and rec.runner.connected


def test_ping_is_answered_with_pong_even_while_handlers_run(server, make_rec):
    release = threading.Event()
    rec = make_rec(max_concurrent_runs=1)
    rec.runner.register("slow", lambda: release.wait(5))
    conn = started(rec, server)

    conn.trigger("slow", "trig-1")
    conn.trigger("slow", "trig-2")  # waits for the only worker, but is acked at once
    conn.send_json({"type": "ping"})
    conn.send_frame(0x9, b"frame-ping")  # a websocket-level ping too

    conn.wait(lambda: conn.of_type("pong") and conn.pongs == [b"frame-ping"])
    conn.wait(lambda: conn.acks() == ["trig-1", "trig-2"])
    assert conn.of_type("pong") == [{"type": "pong"}]
    release.set()
    rec.wait_events(lambda events: len(events) == 4)


def test_overlap_skip_applies_to_triggered_runs(server, make_rec):
    release = threading.Event()
    rec = make_rec()
    rec.runner.register("exclusive", lambda: release.wait(5), overlap="skip")
    conn = started(rec, server)

    conn.trigger("exclusive", "trig-1")
    rec.wait_events(lambda events: len(events) == 1)  # trig-1 is running
    conn.trigger("exclusive", "trig-2")
    rec.wait_events(lambda events: len(events) == 2)
    release.set()
    rec.wait_events(lambda events: len(events) == 3)
    assert rec.events("trig-2")[0]["status"] == "cancelled"
    assert rec.events("trig-1")[-1]["status"] == "success"


@pytest.mark.parametrize("how", ["close frame", "dropped"])
def test_the_runner_reconnects_and_says_hello_again(server, make_rec, caplog, how):
    rec = make_rec()
    rec.runner.register("report", lambda: None)
    first = started(rec, server)

    if how == "close frame":
        first.close(1012, "restarting")
    else:
        first.drop()

    second = started(rec, server, 2)
    assert second.messages[0] == {"type": "hello", "jobs": ["report"]}
    assert rec.runner.listener.connections == 2
    second.trigger("report", "trig-after")
    second.wait(lambda: second.acks() == ["trig-after"])
    if how == "close frame":
        assert first.client_close == 1012  # the client echoed the close frame
        assert any("1012" in r.getMessage() for r in caplog.records)


class _Jitter:
    """Stands in for ``random`` in chronos_sdk.triggers: records each backoff ceiling and waits
    not at all."""

    def __init__(self) -> None:
        self.ceilings: list[float] = []

    def uniform(self, low: float, high: float) -> float:
        self.ceilings.append(high)
        return 0.0


def test_try_again_later_backs_off_although_the_session_was_ready(server, make_rec,
                                                                  monkeypatch):  # fmt: skip
    """A server whose storage is down says ``ready``, then closes with 1013 at once. Its
    runners back off as after failed attempts instead of returning at the base delay."""
    jitter = _Jitter()
    monkeypatch.setattr(triggers, "random", jitter)
    rec = make_rec(reconnect_base=0.01, reconnect_cap=10)
    rec.runner.register("report", lambda: None)
    for n, code in enumerate([1013, 1013, 1013, 1012], start=1):
        started(rec, server, n).close(code, "try again later" if code == 1013 else "restart")
        until(lambda n=n: len(jitter.ceilings) == n)
    # growing after each 1013; an ordinary close after `ready` starts over
    assert jitter.ceilings == pytest.approx([0.01, 0.02, 0.04, 0.01])


def test_a_silent_connection_is_treated_as_dead(server, make_rec):
    rec = make_rec()
    rec.runner.listener.idle_timeout = 0.2
    started(rec, server)
    started(rec, server, 2)  # nothing came for 0.2 s: reconnected


def test_websocket_pings_count_as_traffic(server, make_rec):
    rec = make_rec()
    rec.runner.listener.idle_timeout = 0.2
    conn = started(rec, server)
    for _ in range(8):  # 0.4 s, twice the idle timeout, with only protocol-level pings
        conn.send_frame(0x9, b"")
        time.sleep(0.05)
    assert rec.runner.listener.connections == 1 and len(server.conns) == 1


def test_a_wrong_key_is_retried_with_backoff_and_never_raises(server, make_rec, caplog):
    caplog.set_level(logging.DEBUG, "chronos_sdk")
    rec = make_rec(api_key="wrong-key")
    rec.runner.register("report", lambda: None)
    rec.runner.start()

    server.wait(lambda: len(server.refused()) >= 3)
    assert not rec.runner.connected and not server.accepted()
    assert all(c.headers["x-api-key"] == "wrong-key" for c in server.refused())
    chronos = [r for r in caplog.records if r.name == "chronos_sdk" and "refused" in r.message]
    warnings = [r for r in chronos if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "4401" in warnings[0].message
    assert "invalid API key" in warnings[0].message
    assert len(chronos) >= 2  # the next attempts log at debug level


def test_start_is_idempotent_and_stop_joins_quickly(server, make_rec):
    rec = make_rec()
    started(rec, server)
    rec.runner.start()
    rec.runner.start()
    time.sleep(0.05)
    assert len(server.conns) == 1
    conn = server.conn(1)

    t0 = time.monotonic()
    rec.runner.stop()
    assert time.monotonic() - t0 < 1.0
    assert not rec.runner.connected and rec.runner.listener._thread is None
    conn.wait(lambda: conn.client_close == 1000 and conn.ended)
    assert not [t for t in threading.enumerate() if t.name.startswith("chronos-runner")]

    rec.runner.stop()  # stopping again is harmless
    started(rec, server, 2)  # and it can start again


def test_stop_does_not_wait_for_a_server_that_never_answers_the_close(server, make_rec):
    server.echo_close = False
    rec = make_rec()
    started(rec, server)
    t0 = time.monotonic()
    rec.runner.stop(timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    assert rec.runner.listener._thread is None


def test_stop_lets_a_started_run_finish_and_close_stops_the_runner(server, make_rec):
    release = threading.Event()
    rec = make_rec()
    rec.runner.register("slow", lambda: release.wait(5))
    conn = started(rec, server)
    conn.trigger("slow", "trig-1")
    rec.wait_events(lambda events: len(events) == 1)
    threading.Timer(0.1, release.set).start()

    rec.runner.close(3)  # stops the listener (waiting for the run), then flushes the client
    assert [e["status"] for e in rec.sent] == ["running", "success"]
    assert rec.runner.listener._thread is None


def test_start_never_raises_with_a_bad_endpoint(caplog):
    runner = ChronosRunner("k", "ftp://nowhere")
    runner.start()
    assert runner.listener._thread is None and not runner.connected
    runner.close(1)


def test_an_unreachable_server_is_retried_quietly(make_rec, caplog):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    client = ChronosClient(KEY, f"http://127.0.0.1:{port}",
                           transport=MockTransport(lambda r: Response(200)))
    runner = ChronosRunner(client=client, reconnect_base=0.01, reconnect_cap=0.02)
    caplog.set_level(logging.DEBUG, "chronos_sdk")
    runner.start()
    until(lambda: sum("runner connection" in r.message for r in caplog.records) >= 3)
    runner.close(1)
    levels = [r.levelno for r in caplog.records if "runner connection" in r.message]
    assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.DEBUG}


def test_seen_triggers_forget_the_least_recently_seen_first():
    seen = SeenTriggers(3)
    assert all(seen.add(t) for t in "abc")
    assert not seen.add("a")  # a is now the most recent
    assert seen.add("d")  # evicts b
    assert "b" not in seen and "a" in seen and len(seen) == 3
    assert SeenTriggers().size == 10_000


# -- the websocket client ----------------------------------------------------------------------


@pytest.fixture
def ws(server: FakeServer) -> Iterator[WebSocket]:
    sock = WebSocket.connect(server.ws, {"x-api-key": KEY}, timeout=2)
    yield sock
    sock.close(timeout=1)


def test_ws_url_follows_the_http_endpoint():
    assert ws_url("http://h:5000", "/ws/runner") == "ws://h:5000/ws/runner"
    assert ws_url("https://h/chronos/", "/ws/runner") == "wss://h/chronos/ws/runner"
    with pytest.raises(ValueError):
        ws_url("ftp://h", "/ws/runner")


def test_a_fragmented_message_is_reassembled_around_a_ping(server, ws):
    conn = server.conn()
    conn.send_frame(0x1, b"hel", fin=False)
    conn.send_frame(0x9, b"in-between")
    conn.send_frame(0x0, "lo w\u00f6".encode()[:-1], fin=False)  # splits the UTF-8 of ö
    conn.send_frame(0x0, "\u00f6rld".encode()[1:])
    assert ws.recv(2) == "hello w\u00f6rld"
    conn.wait(lambda: conn.pongs == [b"in-between"])


@pytest.mark.parametrize(("size", "bits"), [
    (0, 7), (125, 7), (126, 16), (200, 16), (65535, 16), (65536, 64), (70 * 1024, 64),
])
def test_payload_lengths_in_both_directions(server, ws, size, bits):
    conn = server.conn()
    text = ("0123456789abcdef" * (size // 16 + 1))[:size]
    conn.send_frame(0x1, text.encode())
    assert ws.recv(2) == text
    ws.send(text)
    conn.wait(lambda: conn.messages)
    assert conn.messages == [text] if size else conn.messages == [""]
    assert conn.lengths == [(size, bits)]


def test_binary_messages_are_bytes(server, ws):
    conn = server.conn()
    conn.send_frame(0x2, b"\x00\xff")
    assert ws.recv(2) == b"\x00\xff"
    ws.send(b"\x01\x02")
    conn.wait(lambda: conn.messages == [b"\x01\x02"])


def test_recv_times_out_with_none_and_keeps_a_partial_frame(server, ws):
    conn = server.conn()
    data = frame(0x1, b"x" * 300)
    t0 = time.monotonic()
    assert ws.recv(0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 1
    conn.send_raw(data[:150])
    assert ws.recv(0.05) is None
    conn.send_raw(data[150:])
    assert ws.recv(2) == "x" * 300


def test_a_close_from_the_server_is_echoed_and_raised(server, ws):
    conn = server.conn()
    conn.close(4403, "forbidden")
    with pytest.raises(WebSocketClosed) as info:
        ws.recv(2)
    assert (info.value.code, info.value.reason) == (4403, "forbidden")
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, OSError)
    conn.wait(lambda: conn.client_close == 4403)
    assert ws.closed
    with pytest.raises(WebSocketError):
        ws.send("too late")


def test_a_dropped_connection_raises(server, ws):
    server.conn().drop()
    with pytest.raises(WebSocketClosed) as info:
        ws.recv(2)
    assert info.value.code == 1006


def test_a_masked_server_frame_is_a_protocol_error(server, ws):
    conn = server.conn()
    conn.send_raw(frame(0x1, b"hi", mask=b"abcd"))
    with pytest.raises(WebSocketError, match="masked"):
        ws.recv(2)
    conn.wait(lambda: conn.client_close == 1002)


def test_close_waits_for_the_server_close_frame(server, ws):
    conn = server.conn()
    ws.close(1000, "bye")
    assert ws.closed
    conn.wait(lambda: conn.client_close == 1000 and conn.ended)
    ws.close()  # again: nothing happens


@pytest.mark.parametrize(("answer", "match"), [
    (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", "401"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n", "Sec-WebSocket-Accept"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "did not upgrade"),
])
def test_a_bad_handshake_answer_is_refused(server, answer, match):
    server.answer = answer
    with pytest.raises(WebSocketError, match=match):
        WebSocket.connect(server.ws, timeout=2)


def test_the_handshake_times_out(server):
    server.silent = True
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        WebSocket.connect(server.ws, timeout=0.1)
    assert time.monotonic() - t0 < 1


def test_header_injection_is_refused(server):
    with pytest.raises(ValueError):
        WebSocket.connect(server.ws, {"x-api-key": "k\r\nevil: 1"}, timeout=1)


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_wss_for_an_https_endpoint(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = FakeServer(ssl_context=server_ctx)
    rec = Recorder(server, ssl_context=ssl.create_default_context(cafile=str(cert)))
    try:
        rec.runner.register("secure", lambda: None)
        assert server.ws.startswith("wss://")
        conn = started(rec, server)
        assert conn.messages[0]["jobs"] == ["secure"]
        big = "z" * (70 * 1024)
        conn.send_frame(0x1, big.encode())  # ignored (not JSON), but read through TLS
        conn.trigger("secure", "trig-tls")
        conn.wait(lambda: conn.acks() == ["trig-tls"])
    finally:
        rec.runner.close(2)
        server.close()


def test_the_sdk_still_imports_nothing_heavy():
    code = ("import chronos_sdk, chronos_sdk.websocket, chronos_sdk.triggers, sys; "
            "bad = {'flask', 'redis', 'apscheduler', 'marshmallow', 'werkzeug', 'websocket', "
            "'websockets', 'simple_websocket', 'wsproto', 'flask_sock'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
