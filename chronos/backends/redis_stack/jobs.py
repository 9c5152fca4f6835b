"""Job definitions: one JSON document per (tenant, job), searched through the jobs index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chronos.backends import cursor
from chronos.backends.base import JobStore
from chronos.backends.redis_stack import documents as docs
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import RedisCore
from chronos.backends.redis_stack.keys import enc
from chronos.backends.redis_stack.search import Query, search_documents, words
from chronos.errors import NotFound, ValidationError
from chronos.models import Job, JobQuery, Page, WriteOutcome, replace

MAX_LIMIT = 1000


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")


class RedisJobs(RedisCore, JobStore):
    @translated
    def upsert_jobs(self, tenant_id: str, jobs: Sequence[Job], now: int) -> list[WriteOutcome]:
        for job in jobs:
            if job.tenant_id != tenant_id:
                raise ValueError(f"job {job.id!r} belongs to tenant {job.tenant_id!r}")
        if not jobs:
            return []
        calls: list[tuple[list[str], list[Any]]] = []
        for job in jobs:
            doc = docs.job_to_doc(replace(job, updated_at=now, created_at=now, seq=0))
            keys = [self.keys.job(tenant_id, job.id), self.keys.job_seq(tenant_id)]
            calls.append((keys, [docs.dumps(doc), now]))
        return self.run_scripts("UPSERT_JOB", calls)

    @translated
    def get_job(self, tenant_id: str, job_id: str) -> Job | None:
        found = self.client().json().mget(
            [self.keys.job(tenant_id, job_id), self.keys.job_state(tenant_id, job_id)], "$"
        )
        doc, state = (item[0] if item else None for item in found)
        return docs.job_from_doc(doc, state) if doc else None

    @translated
    def get_jobs(self, refs: Sequence[tuple[str, str]]) -> list[Job | None]:
        if not refs:
            return []
        keys = [k for t, j in refs for k in (self.keys.job(t, j), self.keys.job_state(t, j))]
        found = self.client().json().mget(keys, "$")
        jobs: list[Job | None] = []
        for doc, state in zip(found[::2], found[1::2]):
            jobs.append(docs.job_from_doc(doc[0], state[0] if state else None) if doc else None)
        return jobs

    def _with_states(self, tenant_id: str, found: list[dict[str, Any]]) -> list[Job]:
        if not found:
            return []
        states = self.client().json().mget(
            [self.keys.job_state(tenant_id, d["id"]) for d in found], "$"
        )
        return [docs.job_from_doc(d, s[0] if s else None) for d, s in zip(found, states)]

    @translated
    def list_job_ids(self, tenant_id: str) -> list[str]:
        """From the jobs index alone (ids from the keys, 1,000 a round trip), no document read."""
        ids: list[str] = []
        after = 0
        while True:
            q = Query().tag("tenant", enc(tenant_id)).numeric("seq", after + 1, None)
            params = [x for item in q.params.items() for x in item]
            reply = self.client().execute_command(
                "FT.SEARCH", self.keys.index_alias("jobs"), str(q),
                "PARAMS", len(params), *params, "RETURN", 1, "seq",
                "SORTBY", "seq", "ASC", "LIMIT", 0, 1000, "DIALECT", 2,
            )  # fmt: skip
            rows = reply["results"]
            ids += [self.keys.job_id_of(row["id"]) for row in rows]
            if len(rows) < 1000:
                return ids
            after = int(rows[-1]["extra_attributes"]["seq"])

    @translated
    def list_jobs(self, tenant_id: str, query: JobQuery) -> Page[Job]:
        check_limit(query.limit)
        if query.text is not None and not words(query.text):
            return Page(items=[])  # nothing literal to look for
        after = 0
        if query.cursor:
            after = cursor.decode(query.cursor, "jobs", seq=int)["seq"]
        q = Query().tag("tenant", enc(tenant_id))
        if query.enabled is not None:
            q.tag("enabled", "1" if query.enabled else "0")
        if query.tag is not None:
            q.tag("tag", enc(query.tag))
        q.text(["name", "description"], query.text)
        q.numeric("seq", after + 1, None)
        found = search_documents(
            self.client(), self.keys.index_alias("jobs"), q,
            sort_by="seq", ascending=True, offset=0, limit=query.limit + 1,
        )  # fmt: skip
        items = self._with_states(tenant_id, found[: query.limit])
        next_cursor = None
        if len(found) > query.limit:
            next_cursor = cursor.encode("jobs", seq=items[-1].seq)
        return Page(items=items, next_cursor=next_cursor)

    @translated
    def set_job_enabled(self, tenant_id: str, job_id: str, enabled: bool, now: int) -> Job:
        key = self.keys.job(tenant_id, job_id)
        done = self.client().eval(
            "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
            "redis.call('JSON.MSET', KEYS[1], '$.enabled', ARGV[1], KEYS[1], '$._k.en', ARGV[2], "
            "KEYS[1], '$.updated_at', ARGV[3]) return 1",
            1, key, "true" if enabled else "false", '"1"' if enabled else '"0"', now,
        )  # fmt: skip
        if not done:
            raise NotFound(f"no job {job_id!r}")
        job = self.get_job(tenant_id, job_id)
        if job is None:  # deleted between the two calls
            raise NotFound(f"no job {job_id!r}")
        return job

    @translated
    def delete_job(self, tenant_id: str, job_id: str) -> bool:
        pipe = self.client().pipeline(transaction=True)
        pipe.delete(self.keys.job(tenant_id, job_id), self.keys.job_state(tenant_id, job_id))
        pipe.zrem(self.keys.schedule(), self.keys.schedule_member(tenant_id, job_id))
        deleted, _ = pipe.execute()
        return bool(deleted)
