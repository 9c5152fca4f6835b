"""The doctor's checks of a Redis server: reachable with these credentials and TLS settings,
the right version and modules, writable, migrated, indexed, persistent, not evicting, on time.

Each ``check_*`` takes the client (and what else it needs) and returns one ``Result``; a
Redis error while checking becomes that check's failure, worded for the operator (an ACL that
refuses a command says which rule to add).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import redis

import migrations_redis
from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import RedisStackBackend
from chronos.backends.redis_stack import url as urls
from chronos.backends.redis_stack.backend import REQUIRED_MODULES
from chronos.backends.redis_stack.keys import Keys
from chronos.doctor import FAIL, REDIS_CHECKS, SKIP, Result, fail, ok, warn
from chronos.doctor_server import check_clock, check_memory, check_persistence
from chronos.errors import ConfigError

MIN_REDIS = (7, 2)
#: Lowest module versions (as MODULE LIST reports them) with what Chronos uses of each.
MIN_MODULES: dict[str, tuple[int, str]] = {
    "ReJSON": (20600, "RedisJSON 2.6 (JSON documents, JSON.MSET)"),
    "search": (20600, "RediSearch 2.6 (indices over JSON, array tags, DIALECT 2)"),
    "timeseries": (10600, "RedisTimeSeries 1.6 (metrics, compactions, ALIGN)"),
    "bf": (20400, "RedisBloom 2.4 (t-digest duration percentiles)"),
}
PROBE_TTL_MS = 60_000
_PROBE = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return redis.call('PTTL', KEYS[1])"
_ACL_HINT = (
    "the ACL of Chronos's user needs: ~<prefix>* &<prefix>events:* +@all -@dangerous +info "
    "+module|list (deploy/redis-stack/users.acl.example)"
)


def _version(number: int) -> str:
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def _refused(exc: redis.RedisError) -> bool:
    return isinstance(exc, redis.exceptions.NoPermissionError) or str(exc).startswith("NOPERM")


def check_connection(r: redis.Redis, shown_url: str) -> Result:
    """PING with the URL's credentials and TLS settings; which user we are."""
    started = time.perf_counter()
    try:
        r.ping()
    except redis.AuthenticationError as exc:
        return fail(
            "connection",
            f"Redis at {shown_url} refused the credentials: {str(exc).rstrip('.')}.",
            "check the user and password in CHRONOS_BACKEND_URL (percent-encode "
            "characters such as @ : / in them) and that the ACL user is on",
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        text = str(exc)
        if any(s in text.lower() for s in ("ssl", "certificate", "tls")):
            hint = (
                "check the TLS options: ssl_ca_certs=<CA file> to trust the server's "
                "certificate, ssl_certfile/ssl_keyfile if it requires a client certificate, "
                "and rediss:// only for a TLS port"
            )
        elif shown_url.startswith("rediss://") and isinstance(exc, redis.TimeoutError):
            hint = (
                "a rediss:// URL on a port that does not speak TLS waits for a handshake that "
                "never comes: use redis:// for a plain port, or the server's tls-port"
            )
        elif "Permission denied" in text:
            hint = "the unix socket's permissions keep this user out (unixsocketperm)"
        else:
            hint = (
                "is the server running, listening on that address (bind), and reachable "
                "through the firewall? `redis-cli -u <url> ping` tries the same"
            )
        return fail("connection", f"Cannot reach Redis at {shown_url}: {text}", hint)
    except redis.ResponseError as exc:
        return fail(
            "connection",
            f"Redis at {shown_url} answered PING with an error: {exc}",
            "NOAUTH means the server wants a password: put user:password in the URL",
        )
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    try:
        user = str(r.execute_command("ACL", "WHOAMI"))
    except redis.RedisError:
        user = "?"
    return ok(
        "connection",
        f"Connected to {shown_url} as user {user!r}; PING took {latency_ms} ms.",
        user=user,
        latencyMs=latency_ms,
    )


def check_server(r: redis.Redis) -> Result:
    """Version, standalone (not cluster), primary (not a read-only replica)."""
    server = r.info("server")
    role = r.info("replication").get("role", "?")
    version = str(server.get("redis_version", "0"))
    mode = server.get("redis_mode", "standalone")
    details = {"version": version, "mode": mode, "role": role}
    if mode == "cluster":
        return fail(
            "server",
            "This Redis runs in cluster mode. Chronos writes an execution's "
            "document, metrics and sketches in one Lua script, and those keys lie in "
            "different hash slots, which a cluster refuses (CROSSSLOT).",
            "use a standalone server or a single-shard database; see 'What scales how' "
            "in docs/deployment.md",
            **details,
        )
    if role in ("slave", "replica"):
        return fail(
            "server",
            f"Redis {version} at this address is a read-only replica.",
            "point CHRONOS_BACKEND_URL at the primary",
            **details,
        )
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_REDIS:
        return fail(
            "server",
            f"Redis {version} is older than {MIN_REDIS[0]}.{MIN_REDIS[1]}.",
            "upgrade to Redis Stack 7.2 or later, or Redis 8",
            **details,
        )
    return ok(
        "server", f"Redis {version}, {mode}, {'primary' if role == 'master' else role}.", **details
    )


def check_modules(r: redis.Redis) -> Result:
    """The four modules, each at least its minimum version."""
    found = {str(m["name"]): int(m["ver"]) for m in r.module_list()}
    shown = {name: _version(found[name]) for name in REQUIRED_MODULES if name in found}
    problems = []
    for name in REQUIRED_MODULES:
        minimum, what = MIN_MODULES[name]
        if name not in found:
            problems.append(f"{name} is missing (needed: {what})")
        elif found[name] < minimum:
            problems.append(f"{name} {_version(found[name])} is older than {what}")
    if problems:
        return fail(
            "modules",
            "; ".join(problems) + ".",
            "use Redis Stack 7.2+ or Redis 8 (modules built in), or load the modules "
            "(loadmodule in redis.conf)",
            modules=shown,
        )
    listed = ", ".join(f"{name} {version}" for name, version in shown.items())
    return ok("modules", f"Modules: {listed}.", modules=shown)


def check_url(url: str) -> list[Result]:
    """The URL's options, then its database number (RediSearch indexes database 0 only)."""
    try:
        urls.check_options(url)
    except ConfigError as exc:
        return [
            fail(
                "url", exc.message, "fix CHRONOS_BACKEND_URL; docs/deployment.md lists the options"
            )
        ]
    found = [ok("url", "The URL's options are ones Chronos understands.")]
    try:
        urls.check_database(url)
    except ConfigError as exc:
        return [*found, fail("database", exc.message, "end the URL with /0")]
    return [*found, ok("database", "Database 0, the only one RediSearch indexes.")]


def check_write(r: redis.Redis, keys: Keys, now: int) -> Result:
    """Write a short-lived key from a Lua script: what every ingest does."""
    probe = json.dumps({"at": now, "host": socket.gethostname()})
    ttl = r.eval(_PROBE, 1, keys.heartbeat("doctor"), probe, PROBE_TTL_MS)
    return ok(
        "write",
        f"Writes from Lua scripts work (probe key {keys.heartbeat('doctor')}, "
        f"expires in {int(ttl) // 1000} s).",
    )


def check_pubsub(r: redis.Redis, keys: Keys) -> Result:
    """Subscribe to the live-event pattern as each web worker does. An ACL checks a PSUBSCRIBE
    pattern literally against its channel rules, so ``&chronos:*`` does not allow it."""
    pattern = keys.events_pattern()
    pubsub = r.pubsub()
    try:
        pubsub.psubscribe(pattern)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "psubscribe":
                return ok("pubsub", f"Live events can be received (PSUBSCRIBE {pattern}).")
        return warn(
            "pubsub",
            f"PSUBSCRIBE {pattern} was not confirmed within 3 s.",
            "live updates may lag; check the server's load",
        )
    except redis.ResponseError as exc:
        return fail(
            "pubsub",
            f"PSUBSCRIBE {pattern} is refused ({exc}): dashboards and /ws/live get no live events.",
            f"allow the channel pattern literally: &{pattern} in the user's ACL",
        )
    finally:
        pubsub.close()


def check_schema(r: redis.Redis, keys: Keys) -> Result:
    """Stored migrations against the code's list."""
    rows = migrations_redis.status(r, keys, migrations_redis.MIGRATIONS)
    known = {row["name"] for row in rows}
    applied = set(r.hkeys(keys.schema_applied()))
    stored = r.get(keys.schema_version())
    details = {"version": int(stored) if stored else 0, "code": len(rows)}
    unknown = sorted(applied - known)
    if unknown:
        return fail(
            "schema",
            f"The database has migrations this code does not know "
            f"({', '.join(unknown)}): a newer Chronos wrote it.",
            "upgrade this installation to the version the others run",
            **details,
        )
    pending = [row["name"] for row in rows if not row["applied_at"]]
    if pending:
        return fail(
            "schema",
            f"{len(pending)} of {len(rows)} migrations are pending: {', '.join(pending)}.",
            "run `chronos migrate` (web workers also apply them on first use while "
            "CHRONOS_AUTO_MIGRATE=1)",
            pending=pending,
            **details,
        )
    lock_ms = r.pttl(keys.schema_lock())
    if lock_ms > 0:
        return warn(
            "schema",
            f"A migration holds the lock {keys.schema_lock()} (expires in {lock_ms // 1000} s).",
            "wait for it to finish",
            **details,
        )
    return ok(
        "schema",
        f"Schema version {details['version']}: all {len(rows)} migrations "
        f"applied (latest {rows[-1]['name']}).",
        **details,
    )


def _info(reply: Any) -> dict[str, Any]:
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))


def check_indices(r: redis.Redis, keys: Keys) -> Result:
    """Each alias the code queries exists, points at the version the code expects, and has
    finished indexing without failures."""
    problems, busy, shown = [], [], {}
    for name, (version, _definition) in migrations_redis.LIVE_INDEXES.items():
        alias, expected = keys.index_alias(name), keys.index_version(name, version)
        try:
            info = _info(r.execute_command("FT.INFO", alias))
        except redis.ResponseError as exc:
            if "unknown index" in str(exc).lower() or "no such index" in str(exc).lower():
                problems.append(f"{alias} is missing")
                continue
            raise
        target = str(info.get("index_name"))
        shown[alias] = {
            "index": target,
            "docs": int(float(info.get("num_docs", 0))),
            "failures": int(float(info.get("hash_indexing_failures", 0))),
        }
        if target != expected:
            problems.append(f"{alias} points at {target}, the code queries {expected}")
        if str(info.get("indexing", "0")) not in ("0", "0.0"):
            busy.append(f"{alias} is {float(info.get('percent_indexed', 0)) * 100:.0f}% built")
        if shown[alias]["failures"]:
            busy.append(f"{alias} could not index {shown[alias]['failures']} documents")
    if problems:
        return fail(
            "indices",
            "; ".join(problems) + ".",
            "run `chronos migrate` (or `chronos create-indices`)",
            indices=shown,
        )
    if busy:
        return warn(
            "indices",
            "; ".join(busy) + ".",
            "searches miss documents until indexing ends; failures are listed by FT.INFO",
            indices=shown,
        )
    listed = ", ".join(f"{a} -> {v['index']} ({v['docs']} docs)" for a, v in shown.items())
    return ok("indices", f"Indices: {listed}.", indices=shown)


def run(
    url: str, options: BackendOptions, clock: Callable[[], int]
) -> tuple[list[Result], RedisStackBackend | None]:
    """The Redis checks, in ``REDIS_CHECKS`` order, and the connected backend (``None`` when
    there is no connection: the remaining checks are then skipped)."""
    results = check_url(url)

    def skipped(why: str) -> list[Result]:
        return [Result(name, SKIP, why) for name in REDIS_CHECKS[len(results) :]]

    if results[-1].status == FAIL:
        return results + skipped("the URL is unusable"), None
    # Shorter waits than the app's: an operator is watching, and each try is retried twice.
    options = dataclasses.replace(options, connect_timeout_s=3.0, socket_timeout_s=3.0)
    backend = RedisStackBackend(url, options)
    r, keys = backend.client(), backend.keys
    results.append(check_connection(r, urls.redact(url)))
    if results[-1].status == FAIL:
        backend.close()
        return results + skipped("no connection to Redis"), None
    steps: list[tuple[str, Callable[[], Result]]] = [
        ("server", lambda: check_server(r)),
        ("modules", lambda: check_modules(r)),
        ("write", lambda: check_write(r, keys, clock())),
        ("pubsub", lambda: check_pubsub(r, keys)),
        ("schema", lambda: check_schema(r, keys)),
        ("indices", lambda: check_indices(r, keys)),
        ("persistence", lambda: check_persistence(r)),
        ("memory", lambda: check_memory(r)),
        ("clock", lambda: check_clock(r, clock)),
    ]
    for name, step in steps:
        try:
            results.append(step())
        except redis.RedisError as exc:
            hint = _ACL_HINT if _refused(exc) else "see the message"
            results.append(fail(name, f"Redis refused the check: {exc}", hint))
    return results, backend
