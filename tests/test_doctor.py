"""`chronos doctor` on real Redis Stack servers: all OK on a well-set-up one, and each problem
found and worded (pending migrations, unreachable, wrong password, ACL limits, eviction, no
persistence, stale scanner, clock skew), through the functions and through the CLI."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import cleanup_prefix
from flask import Flask

from chronos import create_app, doctor, doctor_server
from chronos.embedded import RedisStackServer, free_port
from chronos.extension import get_state
from chronos.scheduler.service import HEARTBEAT
from chronos.timeutil import now_ms

REPO = Path(__file__).resolve().parents[1]
ACL_EXAMPLE = REPO / "deploy" / "redis-stack" / "users.acl.example"


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Stack of this module's own, persistent like a production one (AOF, fsync
    always), where users can be created and settings changed without touching the shared one."""
    server = RedisStackServer(root=tmp_path_factory.mktemp("doctor-redis"), persistent=True,
                              port=free_port())  # fmt: skip
    url = server.start()
    yield url
    server.stop()


def make_app(url: str, prefix: str, tmp_path: Path, **extra: object) -> Flask:
    return create_app({"TESTING": True, "CHRONOS_BACKEND_URL": url, "CHRONOS_KEY_PREFIX": prefix,
                       "CHRONOS_DATA_DIR": str(tmp_path / "instance"), **extra})  # fmt: skip


def by_name(results: list[doctor.Result]) -> dict[str, doctor.Result]:
    return {r.name: r for r in results}


def fresh_beat(app: Flask, age_ms: int = 0, **extra: object) -> None:
    get_state(app).backend().beat(HEARTBEAT, {"at": now_ms() - age_ms, "owner": "test:1",
                                              "tookMs": 1.5, **extra}, ttl_ms=60_000)  # fmt: skip


def acl_rule(prefix: str) -> list[str]:
    """The `chronos` user's rules from deploy/redis-stack/users.acl.example, for ``prefix``."""
    line = next(x for x in ACL_EXAMPLE.read_text().splitlines() if x.startswith("user chronos "))
    rules = line.split()[4:]  # after "user chronos on #<hash>"
    return [r.replace("chronos:", prefix) for r in rules]


def test_all_ok_after_migrations_and_a_fresh_heartbeat(private_redis, key_prefix, tmp_path):
    app = make_app(private_redis, key_prefix, tmp_path)
    try:
        get_state(app).backend()  # migrates (CHRONOS_AUTO_MIGRATE)
        fresh_beat(app)
        results = doctor.run(get_state(app))
        assert [r.name for r in results] == ["secret-key", "backend", *doctor.REDIS_CHECKS,
                                             "scanner"]  # fmt: skip
        assert {r.name: r.status for r in results if r.status != "ok"} == {}, doctor.render(results)
        found = by_name(results)
        assert "Append-only file on, fsync always" in found["persistence"].message
        assert found["modules"].details["modules"].keys() == {"ReJSON", "search", "timeseries",
                                                              "bf"}  # fmt: skip
        assert found["scanner"].details["owner"] == "test:1"
        assert not doctor.failed(results)
        text = doctor.render(results)
        assert text.splitlines()[-1].endswith("15 ok, 0 warn, 0 fail, 0 skipped")
    finally:
        get_state(app).close()
        cleanup_prefix(private_redis, key_prefix)


def test_pending_migrations_and_missing_indices_fail(redis_stack_url, key_prefix, tmp_path):
    app = make_app(redis_stack_url, key_prefix, tmp_path)
    result = app.test_cli_runner().invoke(args=["chronos", "doctor"])
    assert result.exit_code == 1, result.output
    assert re.search(r"^FAIL\s+schema\s+\d+ of \d+ migrations are pending: 0001_initial",
                     result.output, re.M), result.output  # fmt: skip
    assert "run `chronos migrate`" in result.output
    assert re.search(rf"^FAIL\s+indices\s+{re.escape(key_prefix)}idx:jobs is missing",
                     result.output, re.M)  # fmt: skip
    cleanup_prefix(redis_stack_url, key_prefix)


def test_unreachable_url_fails_and_skips_the_rest(tmp_path):
    app = make_app(f"redis://127.0.0.1:{free_port()}/0", "x:", tmp_path)
    result = app.test_cli_runner().invoke(args=["chronos", "doctor", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["connection"] == "fail"
    assert {statuses[n] for n in ("server", "modules", "schema", "scanner")} == {"skip"}
    connection = next(c for c in report["checks"] if c["name"] == "connection")
    assert "Cannot reach Redis" in connection["message"] and "Connection refused" in \
        connection["message"]  # fmt: skip
    assert "firewall" in connection["hint"]


def test_wrong_options_and_database_fail_before_connecting(tmp_path):
    typo = by_name(doctor.run(get_state(make_app("rediss://127.0.0.1:1/0?ssl_ca_cert=/x", "x:",
                                                 tmp_path))))  # fmt: skip
    assert typo["url"].status == "fail" and "'ssl_ca_cert'" in typo["url"].message
    assert typo["connection"].status == "skip"
    db1 = by_name(doctor.run(get_state(make_app("redis://127.0.0.1:1/1", "x:", tmp_path))))
    assert db1["database"].status == "fail" and "database 1" in db1["database"].message


def test_scanner_heartbeat_stale_missing_or_with_errors(redis_backend):
    now = now_ms()
    missing = doctor.check_scanner(redis_backend, now, 500)
    assert missing.status == "warn" and "No scanner has ticked" in missing.message
    redis_backend.beat(HEARTBEAT, {"at": now - 30_000, "owner": "h:7", "tookMs": 2}, 60_000)
    stale = doctor.check_scanner(redis_backend, now, 500)
    assert stale.status == "warn" and "30.0 s ago" in stale.message and "h:7" in stale.message
    # a slow scan interval moves the threshold: 10 intervals
    assert doctor.check_scanner(redis_backend, now, 5_000).status == "ok"
    redis_backend.beat(HEARTBEAT, {"at": now, "owner": "h:7", "tookMs": 2, "errors": 3}, 60_000)
    erring = doctor.check_scanner(redis_backend, now, 500)
    assert erring.status == "warn" and "3 errors" in erring.message


def test_acl_user_with_the_documented_rules(private_redis, key_prefix, tmp_path):
    admin = redis.Redis.from_url(private_redis, decode_responses=True)
    user = f"chronos-{key_prefix.split(':')[1]}"
    secret = "pw-" + hashlib.sha256(user.encode()).hexdigest()[:20]
    admin.execute_command("ACL", "SETUSER", user, "on", f">{secret}", *acl_rule(key_prefix))
    url = private_redis.replace("redis://", f"redis://{user}:{secret}@")
    app = make_app(url, key_prefix, tmp_path)
    try:
        get_state(app).backend()  # migrations run as the restricted user
        fresh_beat(app)
        found = by_name(doctor.run(get_state(app)))
        assert {n: r.status for n, r in found.items() if r.status != "ok"} == {
            "persistence": "warn"}, {n: r.message for n, r in found.items()}  # fmt: skip
        assert "CONFIG GET is refused" in found["persistence"].message
        assert "append-only file is on" in found["persistence"].message
        assert f"as user {user!r}" in found["connection"].message
        assert secret not in found["connection"].message and ":***@" in found["backend"].message

        wrong = make_app(url.replace(secret, "not-it"), key_prefix, tmp_path)
        failed = by_name(doctor.run(get_state(wrong)))
        assert failed["connection"].status == "fail"
        assert "refused the credentials" in failed["connection"].message
        assert "not-it" not in failed["connection"].message

        # `&prefix*` alone does not allow PSUBSCRIBE prefix:events:* (patterns match literally).
        admin.execute_command("ACL", "SETUSER", user, "resetchannels", f"&{key_prefix}*")
        deaf = by_name(doctor.run(get_state(make_app(url, key_prefix, tmp_path))))
        assert deaf["pubsub"].status == "fail" and "no live events" in deaf["pubsub"].message
        assert f"&{key_prefix}events:*" in deaf["pubsub"].hint

        # Without +module|list, /healthz cannot work: a failure that names the ACL rule.
        admin.execute_command("ACL", "SETUSER", user, "-module|list")
        limited = by_name(doctor.run(get_state(make_app(url, key_prefix, tmp_path))))
        assert limited["modules"].status == "fail"
        assert "+module|list" in limited["modules"].hint
    finally:
        get_state(app).close()
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
        cleanup_prefix(private_redis, key_prefix)


def test_eviction_policy_and_memory_use(private_redis):
    r = redis.Redis.from_url(private_redis, decode_responses=True, protocol=3)
    try:
        assert doctor_server.check_memory(r).status == "ok"
        r.config_set("maxmemory-policy", "allkeys-lru")
        evicting = doctor_server.check_memory(r)
        assert evicting.status == "warn" and "allkeys-lru" in evicting.message
        r.config_set("maxmemory-policy", "noeviction")
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", int(used * 1.05))
        full = doctor_server.check_memory(r)
        assert full.status == "warn" and "of maxmemory is used" in full.message
    finally:
        r.config_set("maxmemory", 0)
        r.config_set("maxmemory-policy", "noeviction")
        r.close()


def test_persistence_settings(private_redis):
    r = redis.Redis.from_url(private_redis, decode_responses=True, protocol=3)
    try:
        r.config_set("appendfsync", "no")
        assert doctor_server.check_persistence(r).status == "warn"
        r.config_set("appendonly", "no")
        r.config_set("save", "3600 1")
        snapshots = doctor_server.check_persistence(r)
        assert snapshots.status == "warn" and "Only snapshots" in snapshots.message
    finally:
        r.config_set("appendonly", "yes")
        r.config_set("appendfsync", "always")
        r.config_set("save", "")
        # Turning the AOF on rewrites it in the background; a server still doing that refuses
        # to shut down on SIGTERM.
        while r.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.02)
        r.close()


def test_clock_skew(private_redis):
    r = redis.Redis.from_url(private_redis, decode_responses=True)
    try:
        assert doctor_server.check_clock(r, now_ms).status == "ok"
        behind = doctor_server.check_clock(r, lambda: now_ms() - 5_000)
        assert behind.status == "warn" and "behind" in behind.message
        assert 4_000 < behind.details["skewMs"] < 6_000
        ahead = doctor_server.check_clock(r, lambda: now_ms() + 120_000)
        assert ahead.status == "fail" and "ahead of" in ahead.message
    finally:
        r.close()


def test_memory_backend_skips_the_redis_checks(tmp_path):
    results = doctor.run(get_state(make_app("memory://", "x:", tmp_path)))
    found = by_name(results)
    assert found["backend"].status == "warn" and "each process" in found["backend"].message
    assert {found[n].status for n in (*doctor.REDIS_CHECKS, "scanner")} == {"skip"}
    assert "no Redis server" in found["schema"].message
    assert not doctor.failed(results)


def test_secret_key_sources(tmp_path):
    short = doctor.check_secret_key({"CHRONOS_SECRET_KEY": "abc"}, tmp_path)
    assert short.status == "warn" and "3 characters" in short.message
    assert doctor.check_secret_key({"CHRONOS_SECRET_KEY": "k" * 40}, tmp_path).status == "ok"
    assert doctor.check_secret_key({}, tmp_path).status == "warn"  # not generated yet
    key = tmp_path / "secret_key"
    key.write_text("x" * 64)
    key.chmod(0o644)
    loose = doctor.check_secret_key({}, tmp_path)
    assert loose.status == "warn" and "chmod 600" in loose.hint
    key.chmod(0o600)
    assert doctor.check_secret_key({}, tmp_path).status == "ok"
