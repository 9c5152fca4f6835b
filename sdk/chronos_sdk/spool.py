"""An on-disk spool of execution batches that were not delivered yet.

Each batch is one JSON file, written atomically (a temporary file, ``fsync``, then ``os.replace``)
so a crash never leaves a half-written batch behind. File names start with a nanosecond timestamp,
so sorting them by name replays batches in the order they were spooled. A file is deleted only
after the server acknowledged it with a 2xx; a batch resent twice is harmless because the server
deduplicates on ``execId``.

Several processes may share one spool directory (many ``chronos-run`` invocations, say). Each
resends what it finds at start, so a batch may be delivered more than once; never less.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

SUFFIX = ".json"


class Spool:
    """A directory of pending batches. Methods raise ``OSError``; the client catches it."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, events: list[dict[str, Any]]) -> Path:
        """Persist ``events`` as one batch and return its file."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        final = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        data = json.dumps({"version": 1, "executions": events}, default=str).encode()
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def pending(self) -> list[Path]:
        """The spooled batches, oldest first."""
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))

    def read(self, path: Path) -> list[dict[str, Any]] | None:
        """The events of a batch; ``None`` if another process already delivered it.

        A file that cannot be parsed is renamed to ``*.bad`` (kept for inspection, never resent)
        and ``ValueError`` is raised.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            events = json.loads(raw)["executions"]
            if not isinstance(events, list):
                raise TypeError("'executions' is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            os.replace(path, path.with_suffix(".bad"))
            raise ValueError(f"unreadable spool file {path.name}: {exc}") from exc
        return events

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
