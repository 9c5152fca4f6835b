"""Index migrations on a real Redis Stack: ordered, locked, versioned behind aliases, idempotent."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import cleanup_prefix

import migrations_redis
from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import RedisStackBackend
from chronos.backends.redis_stack import documents as docs
from chronos.backends.redis_stack.keys import Keys
from chronos.models import Execution, ExecutionQuery, Job, JobQuery
from chronos.timeutil import now_ms
from migrations_redis import MIGRATIONS, Migration, MigrationContext, schemas
from migrations_redis import runner as migration_runner

pytestmark = pytest.mark.redis

T = 1_767_225_600_000
ALL = [m.name for m in MIGRATIONS]


@pytest.fixture
def r(redis_stack_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_stack_url, decode_responses=True)
    yield client
    client.close()
    cleanup_prefix(redis_stack_url, key_prefix)


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def backend(redis_stack_url: str, key_prefix: str, r: redis.Redis) -> Iterator[RedisStackBackend]:
    """An unmigrated backend on the test prefix (``r`` cleans the prefix afterwards)."""
    backend = RedisStackBackend(redis_stack_url, BackendOptions(key_prefix=key_prefix))
    yield backend
    backend.close()


def run(r: redis.Redis, keys: Keys, migrations: list[Migration] = MIGRATIONS) -> list[str]:
    return migrations_redis.migrate(r, keys, migrations, now_ms)


def indexes(r: redis.Redis, keys: Keys) -> list[str]:
    return sorted(name for name in r.execute_command("FT._LIST") if name.startswith(keys.prefix))


def alias_target(r: redis.Redis, keys: Keys, name: str) -> str:
    return str(r.execute_command("FT.INFO", keys.index_alias(name))["index_name"])


def add_jobs(backend: RedisStackBackend, tenant: str, ids: list[str]) -> None:
    backend.upsert_jobs(tenant, [Job(tenant_id=tenant, id=i, name=f"job {i}") for i in ids], T)


def listed(backend: RedisStackBackend, tenant: str) -> list[str]:
    return [job.id for job in backend.list_jobs(tenant, JobQuery(limit=1000)).items]


def test_migrate_twice_applies_once(r: redis.Redis, keys: Keys) -> None:
    before = now_ms()
    assert run(r, keys) == ALL == ["0001_initial", "0002_job_executions", "0003_executions_v2"]
    assert run(r, keys) == []
    assert indexes(r, keys) == sorted(
        [keys.index_version("executions", 2), keys.index_version("jobs", 1)]
    )
    assert alias_target(r, keys, "jobs") == keys.index_version("jobs", 1)
    assert alias_target(r, keys, "executions") == keys.index_version("executions", 2)
    rows = migrations_redis.status(r, keys, MIGRATIONS)
    assert [row["name"] for row in rows] == ALL
    assert all(before <= row["applied_at"] <= now_ms() for row in rows)
    assert r.get(keys.schema_version()) == str(len(ALL))
    assert r.get(keys.schema_lock()) is None  # released


def test_status_before_migrating_lists_pending(r: redis.Redis, keys: Keys) -> None:
    assert migrations_redis.status(r, keys, MIGRATIONS) == [
        {"name": m.name, "description": m.description, "applied_at": None} for m in MIGRATIONS
    ]


def test_concurrent_migrations_apply_once(redis_stack_url: str, r: redis.Redis, keys: Keys) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        client = redis.Redis.from_url(redis_stack_url, decode_responses=True)
        try:
            barrier.wait()
            results.append(run(client, keys))
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(results) == 4
    assert sorted(name for result in results for name in result) == ALL
    assert indexes(r, keys) == sorted(
        [keys.index_version("executions", 2), keys.index_version("jobs", 1)]
    )


def test_a_new_index_version_moves_the_alias_and_keeps_the_documents(
    r: redis.Redis, keys: Keys, backend: RedisStackBackend
) -> None:
    backend.migrate()
    add_jobs(backend, "t", ["a", "b:c", "*"])
    assert listed(backend, "t") == ["a", "b:c", "*"]
    v2 = Migration(
        "0002_test",
        "jobs v2 (same fields) to prove an alias move",
        apply=lambda ctx: ctx.build_index("jobs", 2, schemas.jobs_v1(ctx.keys)),
    )
    assert run(r, keys, [*MIGRATIONS, v2]) == ["0002_test"]
    assert alias_target(r, keys, "jobs").endswith(":v2")
    assert indexes(r, keys) == sorted(
        [keys.index_version("executions", 2), keys.index_version("jobs", 2)]
    )
    assert r.get(keys.schema_version()) == str(len(ALL) + 1)
    assert r.exists(keys.job("t", "a"), keys.job("t", "b:c"), keys.job("t", "*")) == 3
    assert listed(backend, "t") == ["a", "b:c", "*"]
    assert run(r, keys, [*MIGRATIONS, v2]) == []


def test_executions_v2_finds_what_v1_found_in_records_of_both_layouts(
    r: redis.Redis, keys: Keys, backend: RedisStackBackend
) -> None:
    """0003 rebuilds the executions index without rewriting a record: one written in the
    earlier layout (every field named) and one in the packed layout answer every kind of search
    the same before and after, and read back whole."""
    assert run(r, keys, MIGRATIONS[:2]) == ALL[:2]
    tenant = "t|1"
    common = dict(tenant_id=tenant, job_id="a:b", status="failed", stdout="alpha beta\n",
                  error_message="gamma {x}", host="h*", job_version="v|2", trigger_id="tr\\",
                  labels={"env": "prod"}, exit_code=1, received_at=T)  # fmt: skip
    old = Execution(exec_id="old", started_at=T, finished_at=T + 10, **common)  # type: ignore[arg-type]
    new = Execution(exec_id="new", started_at=T + 1, finished_at=T + 11, **common)  # type: ignore[arg-type]
    earlier = {f.name: getattr(old, f.name) for f in dataclasses.fields(Execution)}
    earlier["_k"] = docs.execution_to_doc(old)["_k"]
    r.json().set(keys.execution(tenant, "old"), "$", earlier)
    backend.write_executions(tenant, [new])
    queries = [
        ExecutionQuery(text="alpha"),
        ExecutionQuery(text="gamma x"),
        ExecutionQuery(job_id="a:b", statuses=("failed", "timeout"), host="h*",
                       job_version="v|2", trigger_id="tr\\"),  # fmt: skip
        ExecutionQuery(since=T, until=T + 2),
    ]

    def found(who: str) -> list[list[str]]:
        return [[e.exec_id for e in backend.search_executions(who, q).items] for q in queries]

    assert found(tenant) == [["new", "old"]] * len(queries)
    assert run(r, keys) == ["0003_executions_v2"]
    assert alias_target(r, keys, "executions") == keys.index_version("executions", 2)
    assert indexes(r, keys) == sorted(
        [keys.index_version("executions", 2), keys.index_version("jobs", 1)]
    )
    assert found(tenant) == [["new", "old"]] * len(queries)
    assert found("t") == [[]] * len(queries)
    assert backend.get_execution(tenant, "old") == old
    assert backend.get_execution(tenant, "new") == new
    options = r.execute_command("FT.INFO", keys.index_alias("executions"))["index_options"]
    assert {"NOOFFSETS", "NOFREQS"} <= set(options)


def test_build_index_is_resumable_when_the_target_exists(r: redis.Redis, keys: Keys) -> None:
    """A migration that died after FT.CREATE but before the alias move can simply rerun."""
    ctx = MigrationContext(r=r, keys=keys)
    r.execute_command("FT.CREATE", keys.index_version("jobs", 1), *schemas.jobs_v1(keys))
    ctx.build_index("jobs", 1, schemas.jobs_v1(keys))
    assert alias_target(r, keys, "jobs") == keys.index_version("jobs", 1)


def test_a_missing_live_index_is_rebuilt(
    r: redis.Redis, keys: Keys, backend: RedisStackBackend
) -> None:
    assert backend.migrate() == ALL
    add_jobs(backend, "t", ["x", "y"])
    r.execute_command("FT.DROPINDEX", keys.index_version("jobs", 1))  # keeps the documents
    assert keys.index_version("jobs", 1) not in indexes(r, keys)
    result = backend.migrate()
    assert len(result) == 1
    assert result[0].startswith("rebuilt")
    assert result[0].endswith(keys.index_version("jobs", 1))
    assert listed(backend, "t") == ["x", "y"]
    assert backend.migrate() == []


def test_migrate_waits_for_a_held_lock(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.schema_lock(), "someone-else", px=1500)
    started = time.monotonic()
    assert run(r, keys) == ALL
    assert time.monotonic() - started >= 1.0
    assert r.get(keys.schema_lock()) is None


def test_migrate_gives_up_on_a_lock_held_too_long(
    r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migration_runner, "LOCK_WAIT_S", 0.3)
    r.set(keys.schema_lock(), "someone-else", px=5000)
    with pytest.raises(TimeoutError, match="migration lock") as info:
        run(r, keys)
    assert keys.schema_lock() in str(info.value)
    assert r.get(keys.schema_lock()) == "someone-else"  # never released someone else's lock
    assert migrations_redis.status(r, keys, MIGRATIONS)[0]["applied_at"] is None
    assert indexes(r, keys) == []


def test_a_failing_migration_releases_the_lock_and_keeps_earlier_ones(
    r: redis.Redis, keys: Keys
) -> None:
    def explode(ctx: MigrationContext) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(r, keys, [*MIGRATIONS, Migration("9999_broken", "fails", explode)])
    assert r.get(keys.schema_lock()) is None
    assert r.get(keys.schema_version()) == str(len(ALL))
    assert run(r, keys) == []
