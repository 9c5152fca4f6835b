"""Users and API keys as RedisJSON documents, with per-tenant sets for listing."""

from __future__ import annotations

import json

from chronos.backends.base import AccountStore
from chronos.backends.redis_stack import documents as docs
from chronos.backends.redis_stack.connection import translated
from chronos.backends.redis_stack.core import RedisCore
from chronos.backends.redis_stack.keys import dec, enc
from chronos.errors import Conflict
from chronos.models import ApiKey, User


class RedisAccounts(RedisCore, AccountStore):
    @translated
    def create_user(self, user: User) -> User:
        r = self.client()
        key = self.keys.user(user.username)
        if not r.json().set(key, "$", docs.user_to_doc(user), nx=True):
            raise Conflict(f"user {user.username!r} exists already")
        pipe = r.pipeline(transaction=True)
        pipe.sadd(self.keys.tenants(), enc(user.tenant_id))
        pipe.sadd(self.keys.tenant_users(user.tenant_id), enc(user.username))
        pipe.execute()
        return user

    @translated
    def get_user(self, username: str) -> User | None:
        doc = self.client().json().get(self.keys.user(username))
        return docs.user_from_doc(doc) if doc else None

    @translated
    def list_users(self, tenant_id: str) -> list[User]:
        r = self.client()
        names = sorted(dec(n) for n in r.smembers(self.keys.tenant_users(tenant_id)))
        if not names:
            return []
        found = r.json().mget([self.keys.user(n) for n in names], "$")
        return [docs.user_from_doc(d[0]) for d in found if d]

    @translated
    def list_tenants(self) -> list[str]:
        return sorted(dec(t) for t in self.client().smembers(self.keys.tenants()))

    @translated
    def create_api_key(self, key: ApiKey) -> ApiKey:
        r = self.client()
        if not r.json().set(self.keys.api_key(key.key_id), "$", docs.api_key_to_doc(key), nx=True):
            raise Conflict(f"API key id {key.key_id!r} exists already")
        r.zadd(self.keys.tenant_api_keys(key.tenant_id), {enc(key.key_id): key.created_at})
        return key

    @translated
    def get_api_key(self, key_id: str) -> ApiKey | None:
        doc = self.client().json().get(self.keys.api_key(key_id))
        return docs.api_key_from_doc(doc) if doc else None

    @translated
    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        r = self.client()
        ids = [dec(k) for k in r.zrange(self.keys.tenant_api_keys(tenant_id), 0, -1, desc=True)]
        if not ids:
            return []
        found = r.json().mget([self.keys.api_key(k) for k in ids], "$")
        return [docs.api_key_from_doc(d[0]) for d in found if d]

    @translated
    def revoke_api_key(self, tenant_id: str, key_id: str, now: int) -> bool:
        # Check-and-set in one script so that a concurrent revoke cannot answer True twice.
        result = self.client().eval(
            """
            local v = redis.call('JSON.GET', KEYS[1], '$.tenant_id', '$.revoked_at')
            if not v then return 0 end
            local d = cjson.decode(v)
            if d['$.tenant_id'][1] ~= ARGV[1] or d['$.revoked_at'][1] ~= cjson.null then
              return 0
            end
            redis.call('JSON.SET', KEYS[1], '$.revoked_at', ARGV[2])
            return 1
            """,
            1,
            self.keys.api_key(key_id),
            tenant_id,
            now,
        )
        return bool(result)

    @translated
    def touch_api_key(self, key_id: str, now: int) -> None:
        key = self.keys.api_key(key_id)
        # XX-style: only an existing document gets the field; a missing key stays missing.
        self.client().eval(
            "if redis.call('EXISTS', KEYS[1]) == 1 then "
            "redis.call('JSON.SET', KEYS[1], '$.last_used_at', ARGV[1]) end return 0",
            1,
            key,
            json.dumps(now),
        )
