"""What the fault tests assert about the stored data, read straight from Redis and through
the backend: which executions exist, how many runs the metrics counted, what search finds."""

from __future__ import annotations

import time

import redis

from chronos.backends.base import Backend
from chronos.backends.redis_stack.keys import Keys, dec
from chronos.models import ExecutionQuery

MINUTE = 60_000


def stored_exec_ids(url: str, prefix: str, tenant: str) -> set[str]:
    """Every execution document of ``tenant``: the key space is the ground truth."""
    head = Keys(prefix).execution(tenant, "")
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {dec(key[len(head) :]) for key in r.scan_iter(match=head + "*", count=5000)}
    finally:
        r.close()


def runs_counted(backend: Backend, tenant: str, job_id: str | None, since: int,
                 until: int) -> int:  # fmt: skip
    """Terminal runs the metric series counted between ``since`` and ``until`` (epoch ms)."""
    start = since - since % MINUTE - MINUTE
    [bucket] = backend.metric_buckets(tenant, job_id, [start, until + 2 * MINUTE])
    return bucket.runs


def wait_indexed(url: str, prefix: str, timeout: float = 30) -> None:
    """Wait until RediSearch has indexed every document (it re-indexes after a restart)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    name = Keys(prefix).index_alias("executions")
    deadline = time.monotonic() + timeout
    try:
        while True:
            info = r.ft(name).info()
            if str(info.get("indexing")) in ("0", "0.0") and float(info["percent_indexed"]) >= 1:
                return
            assert time.monotonic() < deadline, f"{name} still indexing: {info['percent_indexed']}"
            time.sleep(0.1)
    finally:
        r.close()


def searched_exec_ids(backend: Backend, tenant: str, job_id: str | None = None) -> list[str]:
    """The execution ids the search index answers for ``tenant``, page by page."""
    found: list[str] = []
    cursor = None
    while True:
        page = backend.search_executions(tenant, ExecutionQuery(job_id=job_id, limit=1000,
                                                                cursor=cursor))  # fmt: skip
        found += [e.exec_id for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return found


def missing(url: str, prefix: str, tenant: str, exec_ids: set[str]) -> set[str]:
    """The ids in ``exec_ids`` that have no execution document."""
    keys = Keys(prefix)
    ordered = sorted(exec_ids)
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        pipe = r.pipeline(transaction=False)
        for exec_id in ordered:
            pipe.exists(keys.execution(tenant, exec_id))
        return {e for e, there in zip(ordered, pipe.execute()) if not there}
    finally:
        r.close()
