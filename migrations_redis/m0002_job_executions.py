"""Build each job's execution sorted set (``Keys.job_executions``) for records written before
the retention settings existed, from the executions index.

The write script keeps these sets from now on; records written earlier are found through the
index (an aggregate read through a cursor, in batches), never by scanning the keyspace. Adding
a member that is there already changes nothing, so the migration can run again or alongside
writes; a record deleted meanwhile leaves a member that the sweep drops.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chronos.backends.redis_stack.keys import dec
from migrations_redis.runner import Migration, MigrationContext

#: Records read per cursor step, and written back per pipelined round trip.
BATCH = 2000


def rows(ctx: MigrationContext) -> Iterator[dict[str, str]]:
    """``{"__key", "job", "started_at"}`` of every indexed execution, in batches."""
    index = ctx.keys.index_alias("executions")
    reply = ctx.r.execute_command("FT.AGGREGATE", index, "*", "LOAD", "3", "@__key", "@job",
                                  "@started_at", "WITHCURSOR", "COUNT", BATCH)  # fmt: skip
    while True:
        page, cursor = reply
        yield from _page_rows(page)
        if not cursor:
            return
        reply = ctx.r.execute_command("FT.CURSOR", "READ", index, cursor, "COUNT", BATCH)


def _page_rows(page: Any) -> Iterator[dict[str, str]]:
    """The rows of one reply page, RESP3 (a map with ``results``) or RESP2 (count, then a flat
    field/value list per row)."""
    if isinstance(page, dict):
        for row in page.get("results", []):
            yield {str(k): str(v) for k, v in row.get("extra_attributes", {}).items()}
        return
    for row in page[1:]:
        yield {str(row[i]): str(row[i + 1]) for i in range(0, len(row) - 1, 2)}


def apply(ctx: MigrationContext) -> None:
    prefix = ctx.keys.execution_prefix()
    pipe = ctx.r.pipeline(transaction=False)
    queued = 0
    for row in rows(ctx):
        key, job, started = row.get("__key", ""), row.get("job"), row.get("started_at")
        if not key.startswith(prefix) or job is None or started is None:
            continue  # not one of ours, or without the fields the write path always sets
        # The key's parts and the job TAG value are enc() output: decoded, they give the ids.
        tenant, _, member = key[len(prefix) :].partition(":")
        tenant_id, job_id = dec(tenant), dec(job)
        pipe.zadd(ctx.keys.job_executions(tenant_id, job_id), {member: int(float(started))})
        pipe.sadd(ctx.keys.tenant_execution_jobs(tenant_id), job)
        queued += 1
        if queued >= BATCH:
            pipe.execute()
            queued = 0
    if queued:
        pipe.execute()


MIGRATION = Migration(
    name="0002_job_executions",
    description="per-job execution sets (retention) built from the executions index",
    apply=apply,
)
