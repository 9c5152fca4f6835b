"""Per-run capture of stdout/stderr, and head-and-tail truncation measured in UTF-8 bytes.

``sys.stdout`` and ``sys.stderr`` are wrapped once in a :class:`StreamProxy` that always writes
through to the real stream and, when the ``ContextVar`` below holds a :class:`Capture` for the
current context, also appends to it. Each thread and each asyncio task has its own context, so
concurrent runs never see each other's output. A worker thread joins a run's capture by running
in a ``contextvars.copy_context()`` taken inside the run. Threads that a handler starts on its
own begin with an empty context, so their output is not captured.
"""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar
from typing import Any, TextIO

MARKER = "\n…[truncated {n} bytes]…\n"
_MARKER_RESERVE = len(MARKER.format(n=10**15).encode())

_current: ContextVar[Capture | None] = ContextVar("chronos_capture", default=None)
# True while a proxy writes; a proxy that wraps another proxy must not capture twice.
_in_write: ContextVar[bool] = ContextVar("chronos_in_write", default=False)
_install_lock = threading.Lock()


class OutputBuffer:
    """Keeps the first and last bytes of a stream, ``max_bytes`` in total, in bounded memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        keep = max(0, self.max_bytes - _MARKER_RESERVE)
        self._head_limit = keep // 2
        self._tail_keep = keep - self._head_limit
        # Until the total passes max_bytes everything may still be needed.
        self._tail_limit = self.max_bytes - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self._lock = threading.Lock()

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        with self._lock:
            self.total += len(data)
            room = self._head_limit - len(self._head)
            if room > 0:
                self._head += data[:room]
                data = data[room:]
            if data:
                self._tail += data
                if len(self._tail) > 2 * self._tail_limit:
                    del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.max_bytes

    def getvalue(self) -> str:
        with self._lock:
            head, tail = bytes(self._head), bytes(self._tail)
        if not self.truncated:
            return (head + tail).decode("utf-8", "replace")
        tail = tail[len(tail) - self._tail_keep :] if self._tail_keep else b""
        head, tail = _trim_end(head), _trim_start(tail)
        omitted = self.total - len(head) - len(tail)
        return head.decode("utf-8", "replace") + MARKER.format(n=omitted) + tail.decode(
            "utf-8", "replace"
        )


def truncate(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, keeping head and tail; and whether cut."""
    buf = OutputBuffer(max_bytes)
    buf.write(text)
    return buf.getvalue(), buf.truncated


def _trim_end(data: bytes) -> bytes:
    """Drop a UTF-8 sequence cut off at the end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _trim_start(data: bytes) -> bytes:
    """Drop continuation bytes whose lead byte was cut off at the start."""
    i = 0
    while i < min(3, len(data)) and 0x80 <= data[i] < 0xC0:
        i += 1
    return data[i:]


class Capture:
    """The stdout and stderr buffers of one run."""

    def __init__(self, max_bytes: int) -> None:
        self.stdout = OutputBuffer(max_bytes)
        self.stderr = OutputBuffer(max_bytes)

    def activate(self) -> Any:
        """Make this the current context's capture; returns a token for :func:`deactivate`."""
        install()
        return _current.set(self)

    @staticmethod
    def deactivate(token: Any) -> None:
        _current.reset(token)


class StreamProxy:
    """Writes through to ``stream`` and into the current run's capture, if any."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._chronos_stream = stream
        self._chronos_name = name

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is not None and not _in_write.get() and isinstance(text, str):
            getattr(capture, self._chronos_name).write(text)
        token = _in_write.set(True)
        try:
            return self._chronos_stream.write(text)
        finally:
            _in_write.reset(token)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chronos_stream, name)


def install() -> None:
    """Wrap ``sys.stdout``/``sys.stderr`` unless already wrapped.

    Checked on every run, because test runners and other tools replace the streams.
    """
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, StreamProxy):
                setattr(sys, name, StreamProxy(stream, name))
