"""Trigger delivery with Redis Streams and consumer groups, and the scanner's deadlines.

Each ``(tenant, job)`` has a stream of fired triggers with one consumer group, ``runners``:
``XREADGROUP`` hands each trigger to exactly one runner, it stays in the group's pending list
until ``XACK``, and ``XPENDING``/``XCLAIM`` move it to another runner when it has waited too
long unacknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from chronos.backends.base import TriggerStore
from chronos.backends.redis_stack import documents as docs
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import RedisCore
from chronos.models import Delivery, Trigger

GROUP = "runners"
#: Trigger records are kept as long as executions (at least a week when those never expire).
_MIN_RECORD_TTL_MS = 7 * 24 * 3600 * 1000
_TRIGGER_FIELDS = ("tenant_id", "job_id", "trigger_id", "scheduled_for", "fired_at", "deadline",
                   "status", "runner", "delivered_at", "deliveries")  # fmt: skip


def _trigger(doc: dict[str, Any]) -> Trigger:
    return Trigger(**{k: doc[k] for k in _TRIGGER_FIELDS if k in doc})


class RedisTriggers(RedisCore, TriggerStore):
    @translated
    def advance_fire(self, tenant_id: str, job_id: str, expected: int, new: int | None) -> bool:
        return self.advance_fires([(tenant_id, job_id, expected, new)])[0]

    @translated
    def advance_fires(self, items: Sequence[tuple[str, str, int, int | None]]) -> list[bool]:
        calls: list[tuple[list[str], list[Any]]] = [
            ([self.keys.schedule()],
             [self.keys.schedule_member(t, j), expected, "" if new is None else new])
            for t, j, expected, new in items
        ]  # fmt: skip
        return [bool(moved) for moved in self.run_scripts("ADVANCE_FIRE", calls)] if calls else []

    @translated
    def enqueue_trigger(self, trigger: Trigger) -> None:
        self.enqueue_triggers([trigger])

    @translated
    def enqueue_triggers(self, triggers: Sequence[Trigger]) -> None:
        if not triggers:
            return
        ttl = max(self.options.execution_ttl_ms or 0, _MIN_RECORD_TTL_MS)
        calls: list[tuple[list[str], list[Any]]] = []
        for trigger in triggers:
            k, t = self.keys, trigger.tenant_id
            record = {f: getattr(trigger, f) for f in _TRIGGER_FIELDS}
            payload = {"jobId": trigger.job_id, "triggerId": trigger.trigger_id,
                       "scheduledFor": trigger.scheduled_for}  # fmt: skip
            calls.append((
                [k.trigger(t, trigger.trigger_id), k.trigger_stream(t, trigger.job_id),
                 k.job_triggers(t, trigger.job_id), k.deadlines(), k.job(t, trigger.job_id),
                 k.job_state(t, trigger.job_id)],
                [docs.dumps(record), trigger.trigger_id, trigger.scheduled_for,
                 trigger.deadline, k.pair(t, trigger.trigger_id), trigger.fired_at, ttl,
                 docs.dumps(payload)],
            ))  # fmt: skip
        self.run_scripts("ENQUEUE_TRIGGER", calls)

    def _ensure_groups(self, streams: list[str]) -> None:
        pipe = self.client().pipeline(transaction=False)
        for stream in streams:
            pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    @translated
    def read_triggers(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, count: int, block_ms: int
    ) -> list[Delivery]:
        if not job_ids or count < 1:
            return []
        streams = {self.keys.trigger_stream(tenant_id, j): j for j in job_ids}
        args: dict[Any, Any] = dict.fromkeys(streams, ">")
        try:
            reply = self.client().xreadgroup(GROUP, runner, args, count=count,
                                             block=block_ms or None)  # fmt: skip
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_groups(list(streams))
            reply = self.client().xreadgroup(GROUP, runner, args, count=count,
                                             block=block_ms or None)  # fmt: skip
        found: list[Delivery] = []
        for stream, entries in (reply or {}).items():
            for msg_id, fields in entries[0] if isinstance(entries[0], list) else entries:
                found.append(self._delivery(tenant_id, streams[stream], msg_id, fields, 1))
        return found

    def _delivery(self, tenant_id: str, job_id: str, msg_id: str, fields: dict[str, str],
                  deliveries: int) -> Delivery:  # fmt: skip
        payload = json.loads(fields["p"])
        return Delivery(tenant_id=tenant_id, job_id=job_id, trigger_id=payload["triggerId"],
                        scheduled_for=int(payload["scheduledFor"]), deliveries=deliveries,
                        ref=msg_id)  # fmt: skip

    @translated
    def claim_stale_triggers(
        self, tenant_id: str, job_ids: Sequence[str], runner: str, min_idle_ms: int, count: int
    ) -> list[Delivery]:
        r = self.client()
        found: list[Delivery] = []
        for job_id in job_ids:
            stream = self.keys.trigger_stream(tenant_id, job_id)
            try:  # claim no more than will be returned: a claim restarts the idle clock
                pending = r.xpending_range(stream, GROUP, min="-", max="+",
                                           count=count - len(found), idle=min_idle_ms)  # fmt: skip
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    continue
                raise
            if not pending:
                continue
            times = {p["message_id"]: int(p["times_delivered"]) for p in pending}
            claimed = r.xclaim(stream, GROUP, runner, min_idle_ms, list(times))
            for msg_id, fields in claimed:
                if fields:  # withdrawn (missed) triggers come back empty
                    found.append(self._delivery(tenant_id, job_id, msg_id, fields,
                                                times[msg_id] + 1))  # fmt: skip
            if len(found) >= count:
                break
        return found[:count]

    @translated
    def ack_trigger(self, delivery: Delivery, runner: str, now: int) -> bool:
        k, t = self.keys, delivery.tenant_id
        acked = self.client().xack(k.trigger_stream(t, delivery.job_id), GROUP, delivery.ref)
        if acked:
            key = k.trigger(t, delivery.trigger_id)
            self.client().eval(
                "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('JSON.MSET', "
                "KEYS[1], '$.status', ARGV[1], KEYS[1], '$.runner', ARGV[2], "
                "KEYS[1], '$.delivered_at', ARGV[3], KEYS[1], '$.deliveries', ARGV[4]) end",
                1, key, '"delivered"', docs.dumps(runner), now, delivery.deliveries,
            )  # fmt: skip
        return bool(acked)

    @translated
    def due_deadlines(self, now: int, limit: int) -> list[Trigger]:
        r = self.client()
        members = r.zrangebyscore(self.keys.deadlines(), "-inf", now, start=0, num=limit)
        if not members:
            return []
        pairs = [self.keys.parse_pair(m) for m in members]
        records = r.json().mget([self.keys.trigger(t, tid) for t, tid in pairs], "$")
        found, gone = [], []
        for member, record in zip(members, records):
            if record:
                found.append(_trigger(record[0]))
            else:
                gone.append(member)  # expired record: nothing left to decide
        if gone:
            r.zrem(self.keys.deadlines(), *gone)
        return found

    @translated
    def settle_trigger(self, trigger: Trigger, missed: bool) -> None:
        k, t = self.keys, trigger.tenant_id
        self.client().eval(
            """
            redis.call('ZREM', KEYS[1], ARGV[1])
            if ARGV[2] ~= '1' or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
            redis.call('JSON.SET', KEYS[2], '$.status', '"missed"')
            local ref = redis.call('JSON.GET', KEYS[2], '$.ref')
            if ref then
              local id = cjson.decode(ref)[1]
              if id then
                redis.call('XACK', KEYS[3], 'runners', id)
                redis.call('XDEL', KEYS[3], id)
              end
            end
            return 1
            """,
            3, k.deadlines(), k.trigger(t, trigger.trigger_id),
            k.trigger_stream(t, trigger.job_id), k.pair(t, trigger.trigger_id),
            "1" if missed else "0",
        )  # fmt: skip

    @translated
    def list_triggers(self, tenant_id: str, job_id: str, limit: int) -> list[Trigger]:
        if limit < 1:
            return []
        r = self.client()
        ids = r.zrevrange(self.keys.job_triggers(tenant_id, job_id), 0, max(0, limit - 1))
        if not ids:
            return []
        records = r.json().mget([self.keys.trigger(tenant_id, i) for i in ids], "$")
        return [_trigger(rec[0]) for rec in records if rec]

    @translated
    def due_timeouts(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        r = self.client()
        rows = r.zrangebyscore(self.keys.timeouts(), "-inf", now, start=0, num=limit,
                               withscores=True)  # fmt: skip
        pairs = [(*self.keys.parse_pair(m), int(score)) for m, score in rows]
        if not pairs:
            return []
        pipe = r.pipeline(transaction=False)
        for tenant_id, exec_id, _ in pairs:
            pipe.exists(self.keys.execution(tenant_id, exec_id))
        alive = pipe.execute()
        gone = [m for (m, _), ok in zip(rows, alive) if not ok]
        if gone:  # the record expired while running: nothing is left to time out
            r.zrem(self.keys.timeouts(), *gone)
        return [p for p, ok in zip(pairs, alive) if ok]
