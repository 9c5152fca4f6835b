"""A minimal RFC 6455 websocket client on ``socket`` and ``ssl``, for the runner connection.

Just what the runner protocol needs: the opening handshake (with extra headers such as
``x-api-key``), masked client frames, text and binary messages (fragmented or not), automatic
answers to pings, and the closing handshake. No extensions, subprotocols or HTTP proxies.

Errors are :class:`WebSocketError` (a ``ConnectionError``, so an ``OSError``); a close frame
from the server ends :meth:`WebSocket.recv` with :class:`WebSocketClosed`, which carries the
close code and reason. One thread may call :meth:`~WebSocket.recv` while others call
:meth:`~WebSocket.send` or :meth:`~WebSocket.close`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HANDSHAKE = 64 * 1024


class WebSocketError(ConnectionError):
    """The handshake failed, the server broke the protocol, or the connection is gone."""


class WebSocketClosed(WebSocketError):
    """The connection was closed; ``code`` is the close code (1006 when no close frame came)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


def ws_url(endpoint: str, path: str) -> str:
    """``http(s)://host[:port][/prefix]`` + ``path`` as the ``ws(s)://`` URL of the same place."""
    parts = urllib.parse.urlsplit(endpoint.rstrip("/"))
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"not an http(s) or ws(s) URL: {endpoint!r}")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path + path, "", ""))


class WebSocket:
    """An open client connection; build it with :meth:`connect`."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"", *, timeout: float = 10.0,
                 max_message: int = 16 * 1024 * 1024) -> None:
        self.sock = sock
        self.timeout = timeout  # for sends, and for each blocking step of the handshake
        self.max_message = max_message
        self._buf = bytearray(buffered)  # received bytes not yet parsed into frames
        self._parts: list[bytes] = []  # fragments of the message being reassembled
        self._opcode = 0  # TEXT or BINARY while reassembling, else 0
        self._size = 0
        self._read_lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._reader: int | None = None  # the thread inside recv()
        self._close_sent = False
        self._closed = threading.Event()  # set once the socket is closed
        self.last_received = time.monotonic()  # when bytes last came in (pings count)

    @classmethod
    def connect(cls, url: str, headers: dict[str, str] | None = None, *, timeout: float = 10.0,
                ssl_context: ssl.SSLContext | None = None,
                max_message: int = 16 * 1024 * 1024) -> WebSocket:
        """Open ``ws://`` or ``wss://`` ``url``; ``timeout`` bounds connecting and each read."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws(s) URL: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        try:
            if secure:
                import ssl  # only wss:// needs it

                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=parts.hostname)
            key = base64.b64encode(os.urandom(16)).decode()
            host = parts.netloc.rpartition("@")[2]  # never send userinfo
            lines = [f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                     f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
                     f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
            for name, value in (headers or {}).items():
                if any(c in f"{name}{value}" for c in "\r\n\0") or ":" in name:
                    raise ValueError(f"invalid header {name!r}")
                lines.append(f"{name}: {value}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head, rest = _read_head(sock)
            _check_answer(head, key)
            return cls(sock, rest, timeout=timeout, max_message=max_message)
        except BaseException:
            sock.close()
            raise

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Send one text message (``str``) or binary message (``bytes``)."""
        if isinstance(message, str):
            self._send_frame(TEXT, message.encode("utf-8"))
        else:
            self._send_frame(BINARY, bytes(message))

    def ping(self, payload: bytes = b"") -> None:
        self._send_frame(PING, payload)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        # Client frames are always masked (section 5.3) with a fresh random key.
        if self._closed.is_set() or (self._close_sent and opcode != CLOSE):
            raise WebSocketClosed(1006, "the connection is closed")
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        key = os.urandom(4)
        with self._send_lock:
            if self._reader in (None, threading.get_ident()):
                self.sock.settimeout(self.timeout)  # never shorten a recv() in another thread
            self.sock.sendall(head + key + _mask(key, payload))

    # -- receiving ---------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> str | bytes | None:
        """The next message: ``str`` for text, ``bytes`` for binary; ``None`` after ``timeout``
        seconds without one (``None``: wait forever). Pings are answered on the way."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            self._reader = threading.get_ident()
            try:
                while True:
                    frame = self._parse_frame()
                    if frame is None:
                        if not self._fill(deadline):
                            return None
                    elif (message := self._on_frame(*frame)) is not None:
                        return message
            finally:
                self._reader = None

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes into the buffer; ``False`` when the deadline passed first."""
        if self._closed.is_set():
            raise WebSocketClosed(1006, "the connection is closed")
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        try:
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
        except TimeoutError:  # a partial frame stays buffered for the next call
            return False
        except OSError as exc:
            self.abort()
            raise WebSocketClosed(1006, str(exc)) from exc
        if not data:
            self.abort()
            raise WebSocketClosed(1006, "connection closed without a close frame")
        self._buf += data
        self.last_received = time.monotonic()
        return True

    def _parse_frame(self) -> tuple[bool, int, bytes] | None:
        """Take one whole frame off the buffer: (fin, opcode, payload), or None if incomplete."""
        buf = self._buf
        if len(buf) < 2:
            return None
        fin, rsv, opcode = buf[0] & 0x80, buf[0] & 0x70, buf[0] & 0x0F
        masked, n, at = buf[1] & 0x80, buf[1] & 0x7F, 2
        if rsv or masked:  # no extension was negotiated; servers must not mask (5.1)
            self._fail("reserved bits set" if rsv else "masked frame from the server")
        if n == 126:  # 16-bit extended length
            if len(buf) < 4:
                return None
            n, at = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:  # 64-bit extended length
            if len(buf) < 10:
                return None
            n, at = struct.unpack_from("!Q", buf, 2)[0], 10
        if opcode >= CLOSE and (not fin or n > 125):
            self._fail("fragmented or oversized control frame")
        if n > self.max_message:
            self._fail(f"frame of {n} bytes exceeds the limit", 1009)
        if len(buf) < at + n:
            return None
        payload = bytes(buf[at:at + n])
        del buf[:at + n]
        return bool(fin), opcode, payload

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> str | bytes | None:
        """Handle one frame; a whole message when this frame completes one."""
        if opcode == PING:
            with contextlib.suppress(OSError):
                self._send_frame(PONG, payload)
            return None
        if opcode == PONG:
            return None
        if opcode == CLOSE:
            self._on_close(payload)
        if opcode not in (CONT, TEXT, BINARY):
            self._fail(f"unknown opcode {opcode:#x}")
        if (opcode == CONT) != bool(self._opcode):  # continuation iff a message is open
            self._fail("unexpected continuation frame" if opcode == CONT
                       else "new message inside a fragmented one")
        self._opcode = self._opcode or opcode
        self._size += len(payload)
        if self._size > self.max_message:
            self._fail(f"message larger than {self.max_message} bytes", 1009)
        self._parts.append(payload)
        if not fin:
            return None
        data, kind = b"".join(self._parts), self._opcode
        self._parts, self._opcode, self._size = [], 0, 0
        if kind == BINARY:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("invalid UTF-8 in a text message", 1007)
            raise  # unreachable: _fail raises

    def _on_close(self, payload: bytes) -> None:
        code, reason = 1005, ""  # 1005: the close frame carried no code
        if len(payload) == 1:
            self._fail("malformed close frame")
        if len(payload) >= 2:
            code = struct.unpack_from("!H", payload)[0]
            reason = payload[2:].decode("utf-8", "replace")
        if not self._close_sent:  # echo it (section 5.5.1), then the TCP connection can go
            with contextlib.suppress(OSError):
                self._close_sent = True
                self._send_frame(CLOSE, payload[:2])
        self.abort()
        raise WebSocketClosed(code, reason)

    def _fail(self, why: str, code: int = 1002) -> None:
        """Protocol error: send a close frame with ``code``, drop the connection, raise."""
        with contextlib.suppress(OSError):
            if not self._close_sent:
                self._close_sent = True
                self._send_frame(CLOSE, struct.pack("!H", code))
        self.abort()
        raise WebSocketError(f"websocket protocol error: {why}")

    # -- closing -----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "", timeout: float = 2.0) -> None:
        """Closing handshake: send a close frame, wait up to ``timeout`` for the server's, then
        drop the connection. Safe to call from any thread, and more than once."""
        if self._closed.is_set():
            return
        if not self._close_sent:
            self._close_sent = True
            with contextlib.suppress(OSError):
                self._send_frame(CLOSE, struct.pack("!H", code) + _clip(reason, 123))
        if self._read_lock.acquire(blocking=False):
            try:  # nobody is reading: read (and drop) until the server's close frame
                deadline = time.monotonic() + timeout
                with contextlib.suppress(WebSocketError):
                    while self.recv(max(0.0, deadline - time.monotonic())) is not None:
                        pass
            finally:
                self._read_lock.release()
        else:  # the thread in recv() sees the server's close frame and closes the socket
            self._closed.wait(timeout)
        self.abort()

    def abort(self) -> None:
        """Drop the connection without a closing handshake; wakes a thread blocked in recv()."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _mask(key: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated, as one big-integer operation."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def _clip(text: str, limit: int) -> bytes:
    return text.encode()[:limit].decode("utf-8", "ignore").encode()


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read the HTTP answer's head; returns it and any bytes that came after it (frames)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HANDSHAKE:
            raise WebSocketError("handshake answer too large")
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketError("connection closed during the websocket handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _check_answer(head: bytes, key: str) -> None:
    """The server must switch protocols and prove it read our key (section 4.2.2)."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or fields[1] != "101":
        raise WebSocketError(f"websocket handshake refused: {status_line.strip()!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()  # noqa: S324
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in tokens:
        raise WebSocketError("websocket handshake: the server did not upgrade the connection")
    if headers.get("sec-websocket-accept") != expected:
        raise WebSocketError("websocket handshake: wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
        raise WebSocketError("websocket handshake: the server chose an extension or subprotocol")
