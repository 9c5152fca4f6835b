"""Turning validated wire data into model records: defaults, merging, output truncation.

Plain Python: the views call these between loading a schema and calling the backend.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from chronos.models import Execution, Job, replace

TRUNCATION_MARKER = "\n…[truncated {n} bytes]…\n"
_TRUNCATABLE = ("stdout", "stderr", "error_stack")


def truncate(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to about ``max_bytes`` UTF-8 bytes, keeping its head and its tail."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text, False
    keep = max(max_bytes // 2, 1)
    head = raw[:keep].decode(errors="ignore")
    tail = raw[-keep:].decode(errors="ignore")
    dropped = len(raw) - len(head.encode()) - len(tail.encode())
    return head + TRUNCATION_MARKER.format(n=dropped) + tail, True


def build_execution(tenant_id: str, data: dict[str, Any], now: int, max_output: int) -> Execution:
    """An execution record from loaded event data; big outputs cut head-and-tail."""
    data = dict(data)
    data.setdefault("exec_id", uuid.uuid4().hex)
    truncated = []
    for name in _TRUNCATABLE:
        value = data.get(name)
        if isinstance(value, str):
            data[name], cut = truncate(value, max_output)
            if cut:
                truncated.append(name)
    return Execution(tenant_id=tenant_id, truncated=truncated, received_at=now, **data)


_JOB_FIELDS = {f.name for f in dataclasses.fields(Job)}


def merge_job(tenant_id: str, data: dict[str, Any], existing: Job | None) -> Job:
    """The job after a registration: the fields sent replace the stored ones, the others stay.

    A new job defaults to its id as name, UTC, enabled, and ``runMode`` ``once`` when it has
    a ``runAt`` and no schedule, else ``recurring``.
    """
    given = {k: v for k, v in data.items() if k in _JOB_FIELDS}
    if "schedule" in given and given["schedule"] is None:
        given["schedule"] = ""
    if existing is not None:
        return replace(existing, **given)
    job = Job(tenant_id=tenant_id, **given)
    if "name" not in given:
        job.name = job.id
    if "run_mode" not in given:
        job.run_mode = "once" if job.run_at is not None and not job.schedule else "recurring"
    return job
