"""Live events over Pub/Sub (one channel per tenant) and the scheduler's shared state."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from chronos.backends.base import EventBus, RateLimiter, SchedulerStore, Subscription
from chronos.backends.redis_stack.connection import translate, translated
from chronos.backends.redis_stack.core import RedisCore
from chronos.backends.redis_stack.keys import Keys
from chronos.errors import BackendUnavailable
from chronos.models import Event

SUBSCRIBE_TIMEOUT_S = 5.0


class RedisSubscription(Subscription):
    """A pattern subscription to every tenant's channel on its own connection."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._keys = keys
        self._pubsub = client.pubsub()
        self._closed = False
        self._pubsub.psubscribe(keys.events_pattern())
        # Wait for the server's confirmation: only then are later publishes guaranteed to
        # reach us, which is what the contract promises.
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.1)
            if message and message["type"] == "psubscribe":
                return
        self.close()
        raise BackendUnavailable("Redis did not confirm the event subscription in time")

    def get(self, timeout: float) -> Event | None:
        deadline = time.monotonic() + timeout
        while not self._closed:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                message = self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
            except redis.RedisError as exc:
                raise translate(exc) from exc
            if message and message["type"] == "pmessage":
                return self._event(message["channel"], message["data"])
            if time.monotonic() >= deadline:
                return None
        return None

    def ping(self) -> None:
        try:
            self._pubsub.ping()
        except redis.RedisError as exc:
            raise translate(exc) from exc

    def _event(self, channel: str, data: str) -> Event | None:
        try:
            payload = json.loads(data)
            return Event(
                tenant_id=self._keys.tenant_from_channel(channel),
                type=str(payload["type"]),
                data=dict(payload.get("data") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return None  # not one of ours; ignore rather than break the feed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()


class RedisRealtime(RedisCore, EventBus, SchedulerStore, RateLimiter):
    @translated
    def publish(self, event: Event) -> None:
        payload = json.dumps({"type": event.type, "data": event.data}, separators=(",", ":"))
        self.client().publish(self.keys.events_channel(event.tenant_id), payload)

    @translated
    def publish_many(self, events: Sequence[Event]) -> None:
        if not events:
            return
        pipe = self.client().pipeline(transaction=False)
        for event in events:
            payload = json.dumps({"type": event.type, "data": event.data}, separators=(",", ":"))
            pipe.publish(self.keys.events_channel(event.tenant_id), payload)
        pipe.execute()

    @translated
    def subscribe(self) -> Subscription:
        return RedisSubscription(self.client(), self.keys)

    @translated
    def beat(self, name: str, data: dict[str, Any], ttl_ms: int) -> None:
        self.client().set(self.keys.heartbeat(name), json.dumps(data), px=ttl_ms)

    @translated
    def last_beat(self, name: str) -> dict[str, Any] | None:
        raw = self.client().get(self.keys.heartbeat(name))
        return json.loads(raw) if raw else None

    @translated
    def set_next_fire(self, tenant_id: str, job_id: str, when: int | None) -> None:
        member = self.keys.schedule_member(tenant_id, job_id)
        if when is None:
            self.client().zrem(self.keys.schedule(), member)
        else:
            self.client().zadd(self.keys.schedule(), {member: when})

    @translated
    def due_fires(self, now: int, limit: int) -> list[tuple[str, str, int]]:
        rows = self.client().zrangebyscore(
            self.keys.schedule(), "-inf", now, start=0, num=limit, withscores=True
        )
        return [(*self.keys.parse_schedule_member(m), int(score)) for m, score in rows]

    @translated
    def claim_triggers(
        self, items: Sequence[tuple[str, str, int]], owner: str, ttl_ms: int
    ) -> list[bool]:
        pipe = self.client().pipeline(transaction=False)
        for tenant_id, job_id, instant in items:
            pipe.set(self.keys.claim(tenant_id, job_id, instant), owner, nx=True, px=ttl_ms)
        return [bool(won) for won in pipe.execute()] if items else []

    @translated
    def claim_trigger(
        self, tenant_id: str, job_id: str, instant: int, owner: str, ttl_ms: int
    ) -> bool:
        key = self.keys.claim(tenant_id, job_id, instant)
        return bool(self.client().set(key, owner, nx=True, px=ttl_ms))

    @translated
    def hit(self, name: str, limit: int, window_ms: int, now: int, cost: int = 1) -> int:
        start = now - now % window_ms
        key = self.keys.rate_window(name, start)
        if cost == 0:  # a read: creates no key
            count = int(self.client().get(key) or 0)
        else:
            pipe = self.client().pipeline(transaction=True)
            pipe.incrby(key, cost)
            pipe.pexpire(key, window_ms * 2, nx=True)
            count, _ = pipe.execute()
        return 0 if count <= limit else max(1, start + window_ms - now)
