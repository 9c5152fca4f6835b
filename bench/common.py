"""What several benchmark scripts share: waiting for a server, and reading CPU time (Linux)."""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterable
from pathlib import Path


def wait_healthy(port: int, seconds: float = 60) -> None:
    """Wait until ``GET /healthz`` on ``port`` answers 200; ``RuntimeError`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server on port {port} did not become healthy")
        time.sleep(0.2)


def cpu_seconds(pids: Iterable[int | None]) -> float:
    """User + system CPU seconds ``pids`` used so far (0 for those gone or unreadable)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (0 where unreadable)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
