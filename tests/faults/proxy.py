"""A TCP proxy in front of Redis that can lose answers: the ambiguous failure, on demand.

``lose_answers(b"EVALSHA", times=n)``: the next ``n`` connections that send an ``EVALSHA``
get their commands through to Redis, which runs them, and then, once Redis has answered every
command sent so far, the connection is cut instead of passing the answers on. The client sees
a dropped connection for work that was done: exactly what a crash between the write and the
reply looks like, without depending on the timing of a kill.

The proxy reads the RESP framing of both directions (it counts commands and replies) and
leaves the bytes untouched otherwise.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

from chronos.embedded import free_port


def frame_end(buf: bytes, pos: int) -> int | None:
    """The end of the RESP2/RESP3 value that starts at ``pos``; ``None`` if incomplete."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind, head = buf[pos : pos + 1], buf[pos + 1 : line_end]
    after = line_end + 2
    if kind in b"$!=":  # bulk string, bulk error, verbatim string
        size = int(head)
        if size < 0:
            return after
        return after + size + 2 if len(buf) >= after + size + 2 else None
    if kind in b"*~>%|":  # array, set, push, map, attribute
        count = int(head)
        count = max(count, 0) * (2 if kind in b"%|" else 1)
        for _ in range(count):
            found = frame_end(buf, after)
            if found is None:
                return None
            after = found
        return after
    return after  # simple string, error, integer, null, boolean, double, big number


def command_name(buf: bytes, start: int) -> bytes:
    """The name of the command (an array of bulk strings) framed at ``start``."""
    first = buf.find(b"\r\n", start) + 2
    size_end = buf.find(b"\r\n", first)
    size = int(buf[first + 1 : size_end])
    return buf[size_end + 2 : size_end + 2 + size].upper()


class Link:
    """One client connection and its connection to Redis."""

    def __init__(self, proxy: RedisProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client, self.server = client, server
        self.sent = 0  # complete commands passed to Redis
        self.answered = 0  # complete replies Redis sent back
        self.doomed_at: int | None = None  # cut once this many replies came back
        self.lock = threading.Lock()

    def pump_commands(self) -> None:
        pending = b""
        while chunk := _recv(self.client):
            pending += chunk
            pos = 0
            while (end := frame_end(pending, pos)) is not None:
                with self.lock:
                    self.sent += 1
                    if self.doomed_at is None and self.proxy.take_loss(command_name(pending, pos)):
                        self.doomed_at = -1  # set to the count once this chunk is counted
                pos = end
            pending = pending[pos:]
            with self.lock:
                if self.doomed_at == -1:
                    self.doomed_at = self.sent
            if not _send(self.server, chunk):
                break
        self.close()

    def pump_replies(self) -> None:
        pending = b""
        while chunk := _recv(self.server):
            pending += chunk
            pos = 0
            while (end := frame_end(pending, pos)) is not None:
                self.answered += 1
                pos = end
            pending = pending[pos:]
            with self.lock:
                doomed = self.doomed_at is not None and self.doomed_at >= 0
                if doomed and self.answered >= self.doomed_at:
                    self.proxy.losses += 1
                    break  # Redis did the work; its answer is lost with the connection
            if not doomed and not _send(self.client, chunk):
                break
        self.close()

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class RedisProxy:
    """Listens on a free loopback port and forwards to the Redis at ``target`` (a URL)."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.losses = 0  # answers lost so far
        self._to_lose: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._links: list[Link] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def lose_answers(self, command: bytes, times: int = 1) -> None:
        """Cut the next ``times`` connections that send ``command``, after Redis answered."""
        with self._lock:
            self._to_lose[command.upper()] = times

    def take_loss(self, command: bytes) -> bool:
        with self._lock:
            left = self._to_lose.get(command, 0)
            if left:
                self._to_lose[command] = left - 1
            return left > 0

    def _connect(self) -> socket.socket:
        if self.target.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.target.path)
            return sock
        return socket.create_connection((self.target.hostname, self.target.port or 6379))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = self._connect()
            except OSError:
                client.close()
                continue
            link = Link(self, client, server)
            self._links.append(link)
            for pump in (link.pump_commands, link.pump_replies):
                threading.Thread(target=pump, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for link in self._links:
            link.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True
