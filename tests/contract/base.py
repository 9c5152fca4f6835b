"""The backend contract: one test body that every ``Backend`` implementation must pass.

Subclass :class:`BackendContract` in ``tests/contract/test_<backend>.py`` and give it a
function-scoped ``backend`` fixture that yields a fresh, empty backend isolated from every other
test (the Redis backend uses a per-test key prefix) and closes it afterwards. The tests use only
the public API of ``chronos.backends.base.Backend``, pass every timestamp they care about
explicitly, and never sleep to wait for the store. The one kind of time they cannot pass in is
how long a handed-out trigger has waited (a Redis stream's idle time is the server's own
clock), so the trigger-claim tests sleep a little, a few times the ``min_idle_ms`` they ask for.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from chronos.backends.base import Backend, Subscription
from chronos.errors import Conflict, NotFound, ValidationError
from chronos.models import (
    ApiKey,
    Event,
    Execution,
    ExecutionQuery,
    Job,
    JobQuery,
    JobState,
    Trigger,
    User,
    VersionStats,
    replace,
)

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
# A UTC midnight two days ago: recent enough that every backend still keeps per-minute
# metrics and hourly sketches for it (the Redis Stack backend counts runs by wall-clock
# retention), fixed for the whole test session.
T0 = (time.time_ns() // 1_000_000 // DAY - 2) * DAY

HOSTILE_IDS = [
    "a|b",
    "*",
    "{x}",
    "\\",
    "a:b",
    "job-1",
    "job1",
    "Job1",
    "a b",
    "a,b",
    "@x",
    "-neg",
    '"q"',
    "é",
]
ALL_IDS = [*HOSTILE_IDS, "a", "b", "x"]
HOSTILE_TENANTS = ["t|1", "t*", "t:1"]
ALL_TENANTS = [*HOSTILE_TENANTS, "t", "t1"]


def make_job(tenant: str, job_id: str, **kw: Any) -> Job:
    return Job(tenant_id=tenant, id=job_id, **kw)


def make_exec(tenant: str, exec_id: str, job_id: str, **kw: Any) -> Execution:
    """An execution; terminal ones finish a second after they start unless told otherwise."""
    kw.setdefault("status", "success")
    kw.setdefault("started_at", T0)
    if kw["status"] != "running" and "finished_at" not in kw:
        kw["finished_at"] = kw["started_at"] + 1000
    return Execution(tenant_id=tenant, exec_id=exec_id, job_id=job_id, **kw)


def finished(tenant: str, exec_id: str, job_id: str, at: int, **kw: Any) -> Execution:
    """A terminal execution that finished at ``at`` (its metric time) after a 1 s run."""
    return make_exec(tenant, exec_id, job_id, started_at=at - 1000, finished_at=at, **kw)


def make_trigger(
    tenant: str, job_id: str, trigger_id: str, scheduled_for: int = T0, **kw: Any
) -> Trigger:
    """A freshly fired trigger: fired 5 ms after its instant, with a minute of grace."""
    kw.setdefault("fired_at", scheduled_for + 5)
    kw.setdefault("deadline", scheduled_for + MINUTE)
    return Trigger(tenant_id=tenant, job_id=job_id, trigger_id=trigger_id,
                   scheduled_for=scheduled_for, **kw)  # fmt: skip


def triggers_of(items: list[Any]) -> list[str]:
    """The trigger ids of triggers or deliveries, in order."""
    return [t.trigger_id for t in items]


def job_ids(items: list[Job]) -> list[str]:
    return [j.id for j in items]


def exec_ids(items: list[Execution]) -> list[str]:
    return [e.exec_id for e in items]


def counts(backend: Backend, tenant: str, job: str | None, edges: list[int]) -> list[tuple]:
    return [(b.runs, b.success, b.failure) for b in backend.metric_buckets(tenant, job, edges)]


def next_event(sub: Subscription, timeout: float = 2.0) -> Event | None:
    return sub.get(timeout=timeout)


class BackendContract:
    """Subclasses provide a function-scoped ``backend`` fixture."""

    # users -------------------------------------------------------------------------------
    def test_create_and_get_user(self, backend: Backend) -> None:
        user = User("alice", "acme", "hash$1", is_admin=True, created_at=T0)
        assert backend.create_user(user) == user
        assert backend.get_user("alice") == user

    def test_get_user_is_exact(self, backend: Backend) -> None:
        backend.create_user(User("alice", "acme", "h"))
        assert backend.get_user("Alice") is None
        assert backend.get_user("alic") is None
        assert backend.get_user("nobody") is None

    def test_create_user_conflict(self, backend: Backend) -> None:
        backend.create_user(User("alice", "acme", "h1"))
        with pytest.raises(Conflict):
            backend.create_user(User("alice", "other", "h2"))
        assert backend.get_user("alice").tenant_id == "acme"

    def test_list_users_and_tenants(self, backend: Backend) -> None:
        for name, tenant in [("carol", "acme"), ("alice", "acme"), ("bob", "zeta"), ("dan", "b")]:
            backend.create_user(User(name, tenant, "h"))
        assert [u.username for u in backend.list_users("acme")] == ["alice", "carol"]
        assert [u.username for u in backend.list_users("zeta")] == ["bob"]
        assert backend.list_users("nobody") == []
        assert backend.list_tenants() == ["acme", "b", "zeta"]

    # api keys ----------------------------------------------------------------------------
    def _key(self, key_id: str, tenant: str = "acme", created_at: int = T0, **kw: Any) -> ApiKey:
        return ApiKey(key_id, tenant, "alice", f"hash-{key_id}", created_at=created_at, **kw)

    def test_create_and_get_api_key(self, backend: Backend) -> None:
        key = self._key("k1", name="CI ingest", scopes=("ingest", "read"))
        assert backend.create_api_key(key) == key
        assert backend.get_api_key("k1") == key
        assert backend.get_api_key("K1") is None

    def test_create_api_key_conflict(self, backend: Backend) -> None:
        backend.create_api_key(self._key("k1"))
        with pytest.raises(Conflict):
            backend.create_api_key(self._key("k1", tenant="other"))
        assert backend.get_api_key("k1").tenant_id == "acme"

    def test_list_api_keys_newest_first(self, backend: Backend) -> None:
        backend.create_api_key(self._key("old", created_at=T0))
        backend.create_api_key(self._key("new", created_at=T0 + 2000))
        backend.create_api_key(self._key("mid", created_at=T0 + 1000))
        backend.create_api_key(self._key("foreign", tenant="other", created_at=T0 + 5000))
        backend.revoke_api_key("acme", "mid", T0 + 3000)
        assert [k.key_id for k in backend.list_api_keys("acme")] == ["new", "mid", "old"]
        assert [k.key_id for k in backend.list_api_keys("other")] == ["foreign"]

    def test_revoke_api_key(self, backend: Backend) -> None:
        backend.create_api_key(self._key("k1"))
        assert backend.revoke_api_key("acme", "k1", T0 + 10) is True
        key = backend.get_api_key("k1")
        assert key.revoked_at == T0 + 10 and not key.active
        assert backend.revoke_api_key("acme", "k1", T0 + 20) is False
        assert backend.get_api_key("k1").revoked_at == T0 + 10

    def test_revoke_api_key_of_other_tenant_or_missing(self, backend: Backend) -> None:
        backend.create_api_key(self._key("k1"))
        assert backend.revoke_api_key("other", "k1", T0) is False
        assert backend.revoke_api_key("acme", "missing", T0) is False
        assert backend.get_api_key("k1").active

    def test_touch_api_key(self, backend: Backend) -> None:
        backend.create_api_key(self._key("k1"))
        backend.touch_api_key("k1", T0 + 5)
        assert backend.get_api_key("k1").last_used_at == T0 + 5
        backend.touch_api_key("missing", T0 + 5)
        assert backend.get_api_key("missing") is None

    # jobs --------------------------------------------------------------------------------
    def test_upsert_creates_then_updates(self, backend: Backend) -> None:
        assert backend.upsert_jobs("acme", [make_job("acme", "a"), make_job("acme", "b")], T0) == [
            "created",
            "created",
        ]
        batch = [make_job("acme", "b"), make_job("acme", "c"), make_job("acme", "c")]
        assert backend.upsert_jobs("acme", batch, T0 + 1) == ["updated", "created", "updated"]

    def test_new_job_gets_created_at_seq_and_updated_at(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a"), make_job("acme", "b")], T0)
        backend.upsert_jobs("acme", [make_job("acme", "c")], T0 + 5)
        a, b, c = (backend.get_job("acme", i) for i in "abc")
        assert (a.created_at, a.updated_at, c.created_at, c.updated_at) == (T0, T0, T0 + 5, T0 + 5)
        assert a.seq < b.seq < c.seq
        assert a.state == JobState()

    def test_update_replaces_definition_keeps_created_at_seq_state(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a", name="old", tags=["x"])], T0)
        backend.write_executions("acme", [make_exec("acme", "e1", "a")])
        before = backend.get_job("acme", "a")
        new = make_job("acme", "a", name="new", tags=["y"], created_at=1, seq=99)
        backend.upsert_jobs("acme", [new], T0 + 7)
        after = backend.get_job("acme", "a")
        assert (after.name, after.tags) == ("new", ["y"])
        assert (after.created_at, after.seq, after.updated_at) == (T0, before.seq, T0 + 7)
        assert after.state == before.state and after.state.last_exec_id == "e1"

    @pytest.mark.parametrize("run_mode, run_at", [("recurring", None), ("once", T0 + DAY)])
    def test_job_fields_round_trip(self, backend: Backend, run_mode: str, run_at: int | None):
        job = make_job(
            "acme",
            "nightly-ü",
            name="Nightly backup ✓",
            description="Copies «data»",
            schedule="*/5 * * * *",
            run_mode=run_mode,
            run_at=run_at,
            timezone="Europe/Berlin",
            enabled=False,
            tags=["ops", "db backup"],
            version="v1.2",
            grace_seconds=30,
            max_runtime_seconds=600,
            org_id="org-1",
            app_id="app-1",
            metadata={"owner": "ops", "n": 3, "f": 1.5, "ok": True, "none": None, "l": [1, "2"]},
        )
        backend.upsert_jobs("acme", [job], T0)
        got = backend.get_job("acme", "nightly-ü")
        assert got == replace(job, created_at=T0, updated_at=T0, seq=got.seq, state=JobState())

    def test_get_job_is_exact(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "job-1", name="dash")], T0)
        assert backend.get_job("acme", "job-1").name == "dash"
        for other in ["job1", "Job-1", "job-", "job-1 ", "job"]:
            assert backend.get_job("acme", other) is None

    def test_tenants_have_independent_jobs(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "job:daily-report", name="A")], T0)
        backend.upsert_jobs("zeta", [make_job("zeta", "job:daily-report", name="Z")], T0 + 1)
        assert backend.get_job("acme", "job:daily-report").name == "A"
        assert backend.get_job("zeta", "job:daily-report").name == "Z"
        assert backend.get_job("zeta", "job:daily-report").tenant_id == "zeta"
        assert backend.delete_job("acme", "job:daily-report") is True
        assert backend.get_job("zeta", "job:daily-report") is not None
        assert backend.list_jobs("acme", JobQuery()).items == []

    def test_upsert_with_mismatched_tenant_raises(self, backend: Backend) -> None:
        with pytest.raises(ValueError):
            backend.upsert_jobs("acme", [make_job("acme", "a"), make_job("zeta", "b")], T0)
        assert backend.get_job("zeta", "b") is None

    def test_set_job_enabled(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        job = backend.set_job_enabled("acme", "a", False, T0 + 3)
        assert job.enabled is False and job.id == "a"
        assert backend.get_job("acme", "a").enabled is False
        assert backend.set_job_enabled("acme", "a", True, T0 + 4).enabled is True

    def test_set_job_enabled_missing_raises(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        with pytest.raises(NotFound):
            backend.set_job_enabled("zeta", "a", False, T0)
        with pytest.raises(NotFound):
            backend.set_job_enabled("acme", "A", False, T0)

    def test_delete_job(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        assert backend.delete_job("acme", "a") is True
        assert backend.get_job("acme", "a") is None
        assert backend.delete_job("acme", "a") is False
        assert backend.delete_job("acme", "never") is False

    def test_delete_job_keeps_executions_and_metrics(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        backend.write_executions("acme", [finished("acme", "e1", "a", T0 + MINUTE)])
        backend.delete_job("acme", "a")
        assert backend.get_execution("acme", "e1") is not None
        assert counts(backend, "acme", "a", [T0, T0 + HOUR]) == [(1, 1, 0)]

    def test_returned_jobs_are_copies(self, backend: Backend) -> None:
        job = make_job("acme", "a", tags=["x"])
        backend.upsert_jobs("acme", [job], T0)
        job.tags.append("mutated")
        got = backend.get_job("acme", "a")
        got.tags.append("mutated")
        assert backend.get_job("acme", "a").tags == ["x"]

    def test_list_jobs_filters(self, backend: Backend) -> None:
        backend.upsert_jobs(
            "acme",
            [
                make_job("acme", "a", tags=["ops", "db"]),
                make_job("acme", "b", tags=["ops"], enabled=False),
                make_job("acme", "c", tags=["Ops"]),
            ],
            T0,
        )
        backend.upsert_jobs("zeta", [make_job("zeta", "z", tags=["ops"])], T0)
        assert job_ids(backend.list_jobs("acme", JobQuery()).items) == ["a", "b", "c"]
        assert job_ids(backend.list_jobs("acme", JobQuery(enabled=True)).items) == ["a", "c"]
        assert job_ids(backend.list_jobs("acme", JobQuery(enabled=False)).items) == ["b"]
        assert job_ids(backend.list_jobs("acme", JobQuery(tag="ops")).items) == ["a", "b"]
        assert job_ids(backend.list_jobs("acme", JobQuery(tag="db", enabled=True)).items) == ["a"]
        assert backend.list_jobs("acme", JobQuery(tag="o")).items == []

    def _text_jobs(self, backend: Backend) -> None:
        backend.upsert_jobs(
            "acme",
            [
                make_job("acme", "j1", name="Nightly Backup", description="Copies the database"),
                make_job("acme", "j2", name="Report mailer", description="Sends the weekly sales"),
                make_job("acme", "j3", name="cleanup", description="Removes temp files"),
            ],
            T0,
        )
        backend.upsert_jobs("zeta", [make_job("zeta", "z", name="Nightly backup")], T0)

    @pytest.mark.parametrize(
        "text, expected",
        [
            ("backup", ["j1"]),
            ("DATABASE", ["j1"]),
            ("weekly report", ["j2"]),
            ("mailer sales", ["j2"]),
            ("report backup", []),
            ("datab", []),
            ("back", []),
            ("nonexistent", []),
        ],
    )
    def test_list_jobs_text(self, backend: Backend, text: str, expected: list[str]) -> None:
        self._text_jobs(backend)
        assert job_ids(backend.list_jobs("acme", JobQuery(text=text)).items) == expected

    @pytest.mark.parametrize("text", ["*", "a|b", "@name:{x}", '"', "(", "%x%", "\\", "-", "@"])
    def test_list_jobs_text_is_literal(self, backend: Backend, text: str) -> None:
        self._text_jobs(backend)
        assert backend.list_jobs("acme", JobQuery(text=text)).items == []

    def test_list_jobs_pagination(self, backend: Backend) -> None:
        ids = [f"job-{i:02d}" for i in range(25)]
        for i in ids:  # one by one, so registration order is unambiguous
            backend.upsert_jobs("acme", [make_job("acme", i)], T0)
        seen: list[str] = []
        cursor = None
        for _ in range(3):
            page = backend.list_jobs("acme", JobQuery(limit=10, cursor=cursor))
            assert len(page.items) == (10 if len(seen) < 20 else 5)
            seen += job_ids(page.items)
            cursor = page.next_cursor
        assert cursor is None
        assert seen == ids

    def test_list_job_ids(self, backend: Backend) -> None:
        hostile = ["a|b", "*", "{x}", "\\", ":", "z"]
        for job_id in hostile:  # one by one, so registration order is unambiguous
            backend.upsert_jobs("acme", [make_job("acme", job_id)], T0)
        backend.upsert_jobs("a|b", [make_job("a|b", "only-mine")], T0)
        backend.upsert_jobs("acme", [make_job("acme", f"bulk-{i:04d}") for i in range(1005)], T0)
        ids = backend.list_job_ids("acme")
        assert ids == [job.id for job in self._all_jobs(backend, "acme")]
        assert ids[:6] == hostile and len(ids) == 1011
        assert backend.list_job_ids("a|b") == ["only-mine"]
        assert backend.list_job_ids("nobody") == []

    @staticmethod
    def _all_jobs(backend: Backend, tenant_id: str) -> list[Job]:
        jobs: list[Job] = []
        cursor = None
        while True:
            page = backend.list_jobs(tenant_id, JobQuery(limit=1000, cursor=cursor))
            jobs += page.items
            cursor = page.next_cursor
            if cursor is None:
                return jobs

    def test_list_jobs_pagination_with_filter(self, backend: Backend) -> None:
        jobs = [make_job("acme", f"j{i:02d}", enabled=i % 2 == 0) for i in range(12)]
        backend.upsert_jobs("acme", jobs, T0)
        first = backend.list_jobs("acme", JobQuery(enabled=True, limit=4))
        second = backend.list_jobs(
            "acme", JobQuery(enabled=True, limit=4, cursor=first.next_cursor)
        )
        assert job_ids(first.items) == ["j00", "j02", "j04", "j06"]
        assert job_ids(second.items) == ["j08", "j10"]
        assert second.next_cursor is None

    def test_list_jobs_exact_page_has_no_cursor(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a"), make_job("acme", "b")], T0)
        page = backend.list_jobs("acme", JobQuery(limit=2))
        assert job_ids(page.items) == ["a", "b"] and page.next_cursor is None

    @pytest.mark.parametrize("cursor", ["not-a-cursor", "!!!", "eyJrIjoxfQ", "e30"])
    def test_list_jobs_bad_cursor(self, backend: Backend, cursor: str) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        with pytest.raises(ValidationError):
            backend.list_jobs("acme", JobQuery(cursor=cursor))

    def test_list_jobs_rejects_execution_cursor(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", f"e{i}", "a") for i in range(3)])
        cursor = backend.search_executions("acme", ExecutionQuery(limit=1)).next_cursor
        assert cursor is not None
        with pytest.raises(ValidationError):
            backend.list_jobs("acme", JobQuery(cursor=cursor))

    @pytest.mark.parametrize("limit", [0, -1, 1001])
    def test_list_jobs_bad_limit(self, backend: Backend, limit: int) -> None:
        with pytest.raises(ValidationError):
            backend.list_jobs("acme", JobQuery(limit=limit))

    # hostile ids -------------------------------------------------------------------------
    def _hostile_world(self, backend: Backend) -> None:
        for tenant in ("t-one", "t-two"):
            jobs = [make_job(tenant, i, name=f"{tenant} job", tags=[i]) for i in ALL_IDS]
            backend.upsert_jobs(tenant, jobs, T0)
            execs = [
                make_exec(tenant, i, i, started_at=T0 + n * MINUTE) for n, i in enumerate(ALL_IDS)
            ]
            backend.write_executions(tenant, execs)

    @pytest.mark.parametrize("job_id", HOSTILE_IDS)
    def test_hostile_id_matches_only_itself(self, backend: Backend, job_id: str) -> None:
        self._hostile_world(backend)
        job = backend.get_job("t-one", job_id)
        assert (job.id, job.tenant_id, job.tags) == (job_id, "t-one", [job_id])
        found = backend.search_executions("t-one", ExecutionQuery(job_id=job_id)).items
        assert [(e.tenant_id, e.job_id, e.exec_id) for e in found] == [("t-one", job_id, job_id)]
        tagged = backend.list_jobs("t-one", JobQuery(tag=job_id)).items
        assert [(j.tenant_id, j.id) for j in tagged] == [("t-one", job_id)]
        execution = backend.get_execution("t-one", job_id)
        assert (execution.tenant_id, execution.job_id) == ("t-one", job_id)
        assert counts(backend, "t-one", job_id, [T0, T0 + DAY]) == [(1, 1, 0)]

    def test_hostile_ids_in_schedule_and_claims(self, backend: Backend) -> None:
        for n, i in enumerate(ALL_IDS):
            backend.set_next_fire("t-one", i, T0 + n)
        assert backend.due_fires(T0 + DAY, 100) == [
            ("t-one", i, T0 + n) for n, i in enumerate(ALL_IDS)
        ]
        for i in ALL_IDS:
            assert backend.claim_trigger("t-one", i, T0, "me", 60_000) is True

    @pytest.mark.parametrize("tenant", HOSTILE_TENANTS)
    def test_hostile_tenant_ids_are_isolated(self, backend: Backend, tenant: str) -> None:
        for t in ALL_TENANTS:
            backend.create_user(User(f"user-of-{t}", t, "h"))
            backend.upsert_jobs(t, [make_job(t, "job", name="shared words", tags=["tag"])], T0)
            backend.write_executions(t, [make_exec(t, "e1", "job", error_message="boom")])
        assert backend.list_tenants() == sorted(ALL_TENANTS)
        assert [u.username for u in backend.list_users(tenant)] == [f"user-of-{tenant}"]
        assert backend.get_job(tenant, "job").tenant_id == tenant
        for query in (JobQuery(), JobQuery(tag="tag"), JobQuery(text="shared")):
            assert [j.tenant_id for j in backend.list_jobs(tenant, query).items] == [tenant]
        for equery in (ExecutionQuery(), ExecutionQuery(job_id="job"), ExecutionQuery(text="boom")):
            found = backend.search_executions(tenant, equery).items
            assert [e.tenant_id for e in found] == [tenant]
        assert backend.get_execution(tenant, "e1").tenant_id == tenant
        assert counts(backend, tenant, None, [T0, T0 + DAY]) == [(1, 1, 0)]
        assert counts(backend, tenant, "job", [T0, T0 + DAY]) == [(1, 1, 0)]

    # executions --------------------------------------------------------------------------
    def test_write_execution_created(self, backend: Backend) -> None:
        e = make_exec("acme", "e1", "a")
        assert backend.write_executions("acme", [e]) == ["created"]
        assert backend.get_execution("acme", "e1") == e

    def test_same_execution_again_is_duplicate(self, backend: Backend) -> None:
        e = make_exec("acme", "e1", "a")
        backend.write_executions("acme", [e])
        changed = replace(e, exit_code=9)
        assert backend.write_executions("acme", [e, changed]) == ["duplicate", "duplicate"]
        assert backend.get_execution("acme", "e1") == e
        assert exec_ids(backend.search_executions("acme", ExecutionQuery()).items) == ["e1"]

    def test_running_then_terminal_is_updated(self, backend: Backend) -> None:
        running = make_exec("acme", "e1", "a", status="running")
        assert backend.write_executions("acme", [running]) == ["created"]
        assert backend.get_execution("acme", "e1").status == "running"
        done = make_exec("acme", "e1", "a", status="failed", exit_code=1, error_message="boom")
        assert backend.write_executions("acme", [done]) == ["updated"]
        assert backend.get_execution("acme", "e1") == done
        assert backend.write_executions("acme", [done]) == ["duplicate"]

    @pytest.mark.parametrize(
        "first, second",
        [
            ("success", "running"),
            ("success", "failed"),
            ("failed", "success"),
            ("running", "running"),
            ("cancelled", "success"),
        ],
    )
    def test_after_terminal_or_same_status_is_duplicate(self, backend: Backend, first, second):
        backend.write_executions("acme", [make_exec("acme", "e1", "a", status=first)])
        assert backend.write_executions("acme", [make_exec("acme", "e1", "a", status=second)]) == [
            "duplicate"
        ]
        assert backend.get_execution("acme", "e1").status == first

    def test_batch_outcomes_in_order(self, backend: Backend) -> None:
        batch = [
            make_exec("acme", "e1", "a", status="running"),
            make_exec("acme", "e2", "a"),
            make_exec("acme", "e1", "a", status="success"),
            make_exec("acme", "e2", "a"),
        ]
        assert backend.write_executions("acme", batch) == [
            "created",
            "created",
            "updated",
            "duplicate",
        ]
        assert backend.get_execution("acme", "e1").status == "success"

    def test_write_with_mismatched_tenant_raises(self, backend: Backend) -> None:
        with pytest.raises(ValueError):
            backend.write_executions("acme", [make_exec("zeta", "e1", "a")])
        assert backend.get_execution("zeta", "e1") is None
        assert backend.get_execution("acme", "e1") is None

    def test_get_execution_is_tenant_scoped_and_exact(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", "e-1", "a")])
        assert backend.get_execution("zeta", "e-1") is None
        assert backend.get_execution("acme", "e1") is None
        assert backend.get_execution("acme", "E-1") is None

    def test_same_exec_id_in_two_tenants(self, backend: Backend) -> None:
        assert backend.write_executions("acme", [make_exec("acme", "e1", "a")]) == ["created"]
        assert backend.write_executions("zeta", [make_exec("zeta", "e1", "z")]) == ["created"]
        assert backend.get_execution("acme", "e1").job_id == "a"
        assert backend.get_execution("zeta", "e1").job_id == "z"

    def test_execution_fields_round_trip(self, backend: Backend) -> None:
        e = Execution(
            tenant_id="acme",
            exec_id="run-ü-1",
            job_id="job:a",
            status="failed",
            started_at=T0 + 123,
            finished_at=T0 + 4567,
            duration_ms=4444,
            exit_code=2,
            stdout="line one\nzweite Zeile ✓\n",
            stderr="warn: ∆ \t tab\r\n",
            error_type="ValueError",
            error_message="bad value «x» | * {y}",
            error_stack='Traceback (most recent call last):\n  File "x.py", line 1\n',
            code_snippet="def f():\n    raise ValueError\n",
            code_language="python",
            attempt=3,
            trigger_id="trig-1",
            host="worker-7.example",
            app_version="1.2.3",
            job_version="abc123",
            sdk_version="0.1.0",
            labels={"env": "prod", "région": "eu"},
            metadata={
                "n": 1,
                "f": 1.5,
                "b": True,
                "none": None,
                "l": [1, "two", {"k": 3}],
                "nested": {"k": "v"},
                "empty": {},
            },
            truncated=["stdout", "error_stack"],
            received_at=T0 + 5000,
        )
        backend.write_executions("acme", [e])
        assert backend.get_execution("acme", "run-ü-1") == e

    def test_minimal_execution_round_trips(self, backend: Backend) -> None:
        e = Execution(
            "acme", "e0", "a", "success", T0, exit_code=0, attempt=0, duration_ms=0, stdout=""
        )
        backend.write_executions("acme", [e])
        assert backend.get_execution("acme", "e0") == e

    def test_big_stdout_round_trips(self, backend: Backend) -> None:
        big = "".join(f"line {i:06d} ✓ output\n" for i in range(10_000))
        assert len(big.encode()) > 200_000
        e = make_exec("acme", "big", "a", stdout=big, stderr=big[:1000])
        backend.write_executions("acme", [e])
        assert backend.get_execution("acme", "big").stdout == big

    # version stats ---------------------------------------------------------------------------
    def _versioned_runs(self, backend: Backend, job: str) -> None:
        """v1: three 1 s successes; one success reporting no version; v2: failed, timed out,
        succeeded and cancelled in 3 s, one still running. App versions: "1.0" for v1 and
        "2.0" for the rest. Around them: another job, another tenant, the window's edges."""
        def run(n: int, status: str, version: str | None, app: str | None,
                duration: int | None, **kw: Any) -> Execution:
            return make_exec("acme", f"{job}/{n}", job, status=status,
                             started_at=T0 + n * MINUTE, duration_ms=duration,
                             job_version=version, app_version=app, **kw)  # fmt: skip

        backend.write_executions("acme", [
            run(0, "success", "v1{x}*", "1.0 | \\", 1000),
            run(1, "success", "v1{x}*", "1.0 | \\", 1000),
            run(2, "success", "v1{x}*", "1.0 | \\", 1000),
            run(3, "success", None, "2.0", None),
            run(4, "failed", "v2", "2.0", 3000),
            run(5, "timeout", "v2", "2.0", 3000),
            run(6, "success", "v2", "2.0", 3000),
            run(7, "cancelled", "v2", "2.0", 3000),
            run(8, "running", "v2", "2.0", None),
            run(60, "success", "v2", "2.0", 3000),  # at the window's end: outside
            make_exec("acme", f"{job}/other", "other", job_version="v2", app_version="2.0",
                      started_at=T0 + 5 * MINUTE, duration_ms=5),
        ])  # fmt: skip
        backend.write_executions("zeta", [
            make_exec("zeta", f"{job}/z", job, job_version="v2", app_version="2.0",
                      started_at=T0 + 5 * MINUTE, duration_ms=5),
        ])  # fmt: skip

    def test_version_stats_by_job_version(self, backend: Backend) -> None:
        job = "a|b"
        self._versioned_runs(backend, job)
        found = backend.version_stats("acme", job, "job", T0, T0 + 60 * MINUTE)
        assert found == [
            VersionStats("v2", runs=4, success=1, failure=2, duration_avg_ms=3000,
                         duration_p95_ms=3000, first_started_at=T0 + 4 * MINUTE,
                         last_started_at=T0 + 7 * MINUTE),
            VersionStats(None, runs=1, success=1, failure=0, first_started_at=T0 + 3 * MINUTE,
                         last_started_at=T0 + 3 * MINUTE),
            VersionStats("v1{x}*", runs=3, success=3, failure=0, duration_avg_ms=1000,
                         duration_p95_ms=1000, first_started_at=T0,
                         last_started_at=T0 + 2 * MINUTE),
        ]  # fmt: skip

    def test_version_stats_by_app_version(self, backend: Backend) -> None:
        self._versioned_runs(backend, "*")
        found = backend.version_stats("acme", "*", "app", T0 + MINUTE, T0 + 61 * MINUTE)
        assert [(v.version, v.runs, v.success, v.failure) for v in found] == [
            ("2.0", 6, 3, 2), ("1.0 | \\", 2, 2, 0)]  # fmt: skip
        new = found[0]
        assert new.duration_avg_ms == 3000 and new.duration_p95_ms == 3000, new
        assert (new.first_started_at, new.last_started_at) == (T0 + 3 * MINUTE, T0 + 60 * MINUTE)

    def test_version_stats_of_nothing(self, backend: Backend) -> None:
        self._versioned_runs(backend, "j")
        assert backend.version_stats("acme", "j", "job", T0 + 9 * MINUTE, T0 + 60 * MINUTE) == []
        assert backend.version_stats("acme", "nope", "job", T0, T0 + DAY) == []
        assert backend.version_stats("other-tenant", "j", "app", T0, T0 + DAY) == []
        with pytest.raises(ValueError, match="by must be one of"):
            backend.version_stats("acme", "j", "host", T0, T0 + DAY)

    def test_version_stats_has_every_version(self, backend: Backend) -> None:
        backend.write_executions("acme", [
            make_exec("acme", f"m/{i}", "m", started_at=T0 + i * 1000, duration_ms=i,
                      status="failed" if i % 3 else "success", job_version=f"{i:02d}",
                      app_version="" if i == 0 else None)
            for i in range(40)
        ])  # fmt: skip
        found = backend.version_stats("acme", "m", "job", T0, T0 + DAY)
        assert [v.version for v in found] == [f"{i:02d}" for i in reversed(range(40))]
        assert sum(v.success for v in found) == 14 and sum(v.failure for v in found) == 26
        [none] = backend.version_stats("acme", "m", "app", T0, T0 + DAY)
        assert (none.version, none.runs) == (None, 40)

    def test_version_stats_p95_lies_within_the_durations(self, backend: Backend) -> None:
        durations = [100 * (i + 1) for i in range(40)]
        backend.write_executions("acme", [
            make_exec("acme", f"p/{i}", "p", started_at=T0 + i * 1000, duration_ms=d,
                      job_version="v")
            for i, d in enumerate(durations)
        ])  # fmt: skip
        [found] = backend.version_stats("acme", "p", "job", T0, T0 + DAY)
        assert found.runs == 40 and found.duration_avg_ms == sum(durations) / 40
        assert found.duration_p95_ms is not None and 3600 <= found.duration_p95_ms <= 4000

    def test_returned_executions_are_copies(self, backend: Backend) -> None:
        e = make_exec("acme", "e1", "a", labels={"k": "v"})
        backend.write_executions("acme", [e])
        e.labels["k"] = "changed"
        backend.get_execution("acme", "e1").labels["k"] = "changed"
        assert backend.get_execution("acme", "e1").labels == {"k": "v"}

    # search ------------------------------------------------------------------------------
    def _search_world(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                make_exec(
                    "acme",
                    "e1",
                    "a",
                    status="failed",
                    started_at=T0 + 1000,
                    error_type="TimeoutError",
                    error_message="Database connection refused by upstream",
                    host="h1",
                    job_version="v1",
                ),
                make_exec(
                    "acme",
                    "e2",
                    "a",
                    started_at=T0 + 2000,
                    stdout="processed 42 rows successfully",
                    host="h2",
                    job_version="v2",
                ),
                make_exec(
                    "acme",
                    "e3",
                    "b",
                    status="timeout",
                    started_at=T0 + 3000,
                    stderr="warning disk nearly full",
                    error_stack="Traceback: KeyError in parser module",
                    host="h1",
                ),
                make_exec(
                    "acme",
                    "e4",
                    "b",
                    status="running",
                    started_at=T0 + 4000,
                    host="h2",
                    job_version="v1",
                ),
            ],
        )
        backend.write_executions(
            "zeta",
            [
                make_exec(
                    "zeta",
                    "z1",
                    "a",
                    status="failed",
                    started_at=T0 + 1500,
                    error_message="connection refused",
                    host="h1",
                    job_version="v1",
                ),
            ],
        )

    @pytest.mark.parametrize(
        "query, expected",
        [
            (ExecutionQuery(), ["e4", "e3", "e2", "e1"]),
            (ExecutionQuery(job_id="a"), ["e2", "e1"]),
            (ExecutionQuery(job_id="A"), []),
            (ExecutionQuery(statuses=("failed",)), ["e1"]),
            (ExecutionQuery(statuses=("running",)), ["e4"]),
            (ExecutionQuery(statuses=("failed", "running")), ["e4", "e1"]),
            (ExecutionQuery(statuses=("timeout", "missed")), ["e3"]),
            (ExecutionQuery(job_version="v1"), ["e4", "e1"]),
            (ExecutionQuery(host="h1"), ["e3", "e1"]),
            (ExecutionQuery(host="h2", job_id="b"), ["e4"]),
            (ExecutionQuery(since=T0 + 2000), ["e4", "e3", "e2"]),
            (ExecutionQuery(until=T0 + 3000), ["e2", "e1"]),
            (ExecutionQuery(since=T0 + 2000, until=T0 + 3000), ["e2"]),
            (ExecutionQuery(since=T0 + 5000), []),
            (
                ExecutionQuery(job_id="a", statuses=("success",), host="h2", job_version="v2"),
                ["e2"],
            ),
        ],
    )
    def test_search_filters(self, backend: Backend, query: ExecutionQuery, expected: list[str]):
        self._search_world(backend)
        assert exec_ids(backend.search_executions("acme", query).items) == expected

    @pytest.mark.parametrize(
        "text, expected",
        [
            ("refused", ["e1"]),  # error_message
            ("REFUSED", ["e1"]),
            ("connection refused", ["e1"]),
            ("TimeoutError", ["e1"]),  # error_type
            ("rows", ["e2"]),  # stdout
            ("disk", ["e3"]),  # stderr
            ("parser", ["e3"]),  # error_stack
            ("refused rows", []),
            ("datab", []),
            ("nothing", []),
        ],
    )
    def test_search_text(self, backend: Backend, text: str, expected: list[str]) -> None:
        self._search_world(backend)
        assert exec_ids(backend.search_executions("acme", ExecutionQuery(text=text)).items) == (
            expected
        )

    def test_search_text_with_filters(self, backend: Backend) -> None:
        self._search_world(backend)
        query = ExecutionQuery(text="refused", job_id="b")
        assert backend.search_executions("acme", query).items == []
        query = ExecutionQuery(text="refused", statuses=("failed",), since=T0, until=T0 + 2000)
        assert exec_ids(backend.search_executions("acme", query).items) == ["e1"]

    @pytest.mark.parametrize(
        "text",
        [
            "ERR|*",
            "@stdout:{x}",
            '"',
            "*",
            "(",
            "%x%",
            "{x}",
            "a|b",
            "\\",
            "@",
            "-",
            "~x",
            "'",
        ],
    )
    def test_search_text_is_literal(self, backend: Backend, text: str) -> None:
        self._search_world(backend)
        assert backend.search_executions("acme", ExecutionQuery(text=text)).items == []

    def test_search_pagination_with_equal_start_times(self, backend: Backend) -> None:
        execs = [
            make_exec("acme", f"e{i:02d}", "a", started_at=T0 + (i // 3) * 1000) for i in range(30)
        ]
        backend.write_executions("acme", execs[::2])
        backend.write_executions("acme", execs[1::2])
        seen: list[Execution] = []
        cursor = None
        for _ in range(10):
            page = backend.search_executions("acme", ExecutionQuery(limit=7, cursor=cursor))
            assert 1 <= len(page.items) <= 7
            seen += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert cursor is None
        assert len(seen) == 30
        assert sorted(exec_ids(seen)) == sorted(e.exec_id for e in execs)
        starts = [e.started_at for e in seen]
        assert starts == sorted(starts, reverse=True)

    def test_search_spans_any_time_range_newest_first(self, backend: Backend) -> None:
        # Start times on and around every hour/day boundary a backend might slice time at,
        # back to more than a year ago, with ties, and one in the future (a skewed clock).
        now = time.time_ns() // 1_000_000
        backend.clock = lambda: now  # type: ignore[attr-defined]  # boundaries at known times
        hour = 3_600_000
        ages = sorted({0, 1, 2, *(h * hour + d for h in (1, 6, 24, 72, 168, 720, 2160, 9000)
                                   for d in (-1, 0, 1))})  # fmt: skip
        starts = [now + 5 * hour] + [now - age for age in ages] + [now - 6 * hour] * 3
        execs = [make_exec("acme", f"e{i:03d}", "a", started_at=t) for i, t in enumerate(starts)]
        backend.write_executions("acme", execs)
        expected = sorted(starts, reverse=True)
        for limit in (1, 4, 25, 200):
            seen: list[Execution] = []
            cursor = None
            while True:
                page = backend.search_executions("acme", ExecutionQuery(limit=limit, cursor=cursor))
                seen += page.items
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert [e.started_at for e in seen] == expected
            assert sorted(exec_ids(seen)) == sorted(e.exec_id for e in execs)
        since, until = now - 72 * hour, now - hour
        page = backend.search_executions(
            "acme", ExecutionQuery(since=since, until=until, limit=200)
        )
        assert [e.started_at for e in page.items] == [t for t in expected if since <= t < until]

    def test_search_pagination_with_filter(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                make_exec("acme", f"e{i:02d}", "a" if i % 3 else "b", started_at=T0 + i * 1000)
                for i in range(20)
            ],
        )
        first = backend.search_executions("acme", ExecutionQuery(job_id="b", limit=5))
        assert exec_ids(first.items) == ["e18", "e15", "e12", "e09", "e06"]
        rest = backend.search_executions(
            "acme", ExecutionQuery(job_id="b", limit=5, cursor=first.next_cursor)
        )
        assert exec_ids(rest.items) == ["e03", "e00"] and rest.next_cursor is None

    @pytest.mark.parametrize("cursor", ["not-a-cursor", "!!!", "eyJrIjoxfQ", "e30"])
    def test_search_bad_cursor(self, backend: Backend, cursor: str) -> None:
        backend.write_executions("acme", [make_exec("acme", "e1", "a")])
        with pytest.raises(ValidationError):
            backend.search_executions("acme", ExecutionQuery(cursor=cursor))

    @pytest.mark.parametrize("limit", [0, -1, 1001])
    def test_search_bad_limit(self, backend: Backend, limit: int) -> None:
        with pytest.raises(ValidationError):
            backend.search_executions("acme", ExecutionQuery(limit=limit))

    # metrics -----------------------------------------------------------------------------
    def test_metric_buckets_with_unequal_widths(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                finished("acme", "e1", "a", T0 + 5 * MINUTE),
                finished("acme", "e2", "a", T0 + HOUR, status="failed"),
                finished("acme", "e3", "a", T0 + 2 * HOUR + MINUTE),
                finished("acme", "e4", "a", T0 + 5 * HOUR, status="timeout"),
                finished("acme", "e5", "a", T0 + 2 * DAY),  # past the last edge
                finished("acme", "e6", "a", T0 - MINUTE),  # before the first edge
            ],
        )
        edges = [T0, T0 + HOUR, T0 + 3 * HOUR, T0 + DAY, T0 + 2 * DAY]
        buckets = backend.metric_buckets("acme", "a", edges)
        assert [(b.start, b.end) for b in buckets] == list(zip(edges, edges[1:]))
        assert counts(backend, "acme", "a", edges) == [(1, 1, 0), (2, 1, 1), (1, 0, 1), (0, 0, 0)]

    def test_metric_buckets_empty(self, backend: Backend) -> None:
        edges = [T0, T0 + HOUR, T0 + DAY]
        buckets = backend.metric_buckets("acme", "nothing", edges)
        assert [
            (b.start, b.end, b.runs, b.success, b.failure, b.duration_count) for b in buckets
        ] == [(T0, T0 + HOUR, 0, 0, 0, 0), (T0 + HOUR, T0 + DAY, 0, 0, 0, 0)]
        assert counts(backend, "acme", None, edges) == [(0, 0, 0), (0, 0, 0)]

    def test_statuses_counted(self, backend: Backend) -> None:
        statuses = ["success", "failed", "timeout", "missed", "cancelled", "success"]
        backend.write_executions(
            "acme",
            [finished("acme", f"e{i}", "a", T0 + MINUTE, status=s) for i, s in enumerate(statuses)],
        )
        assert counts(backend, "acme", "a", [T0, T0 + HOUR]) == [(6, 2, 3)]

    def test_retried_batch_never_double_counts(self, backend: Backend) -> None:
        batch = [finished("acme", f"e{i}", "a", T0 + i * MINUTE, duration_ms=10) for i in range(5)]
        backend.write_executions("acme", batch)
        backend.write_executions("acme", batch)
        buckets = backend.metric_buckets("acme", "a", [T0, T0 + HOUR])
        assert (buckets[0].runs, buckets[0].duration_count) == (5, 5)
        assert counts(backend, "acme", None, [T0, T0 + HOUR]) == [(5, 5, 0)]

    def test_running_then_terminal_counted_once(self, backend: Backend) -> None:
        edges = [T0, T0 + HOUR]
        backend.write_executions("acme", [make_exec("acme", "e1", "a", status="running")])
        assert counts(backend, "acme", "a", edges) == [(0, 0, 0)]
        done = finished("acme", "e1", "a", T0 + MINUTE, status="failed")
        backend.write_executions("acme", [done])
        backend.write_executions("acme", [done, make_exec("acme", "e1", "a", status="running")])
        assert counts(backend, "acme", "a", edges) == [(1, 0, 1)]

    def test_tenant_level_sums_jobs(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                finished("acme", "e1", "a", T0 + MINUTE),
                finished("acme", "e2", "b", T0 + MINUTE, status="failed"),
                finished("acme", "e3", "c", T0 + HOUR + MINUTE),
            ],
        )
        edges = [T0, T0 + HOUR, T0 + 2 * HOUR]
        assert counts(backend, "acme", None, edges) == [(2, 1, 1), (1, 1, 0)]
        assert counts(backend, "acme", "b", edges) == [(1, 0, 1), (0, 0, 0)]

    def test_metrics_are_tenant_scoped(self, backend: Backend) -> None:
        backend.write_executions("acme", [finished("acme", "e1", "a", T0 + MINUTE)])
        backend.write_executions(
            "zeta", [finished("zeta", "e1", "a", T0 + MINUTE, status="failed", duration_ms=500)]
        )
        edges = [T0, T0 + HOUR]
        assert counts(backend, "acme", "a", edges) == [(1, 1, 0)]
        assert counts(backend, "acme", None, edges) == [(1, 1, 0)]
        assert counts(backend, "zeta", "a", edges) == [(1, 0, 1)]
        assert counts(backend, "other", None, edges) == [(0, 0, 0)]
        assert backend.duration_quantiles("acme", "a", edges, [0.5]) == [
            [pytest.approx(1000, abs=1)]
        ]

    def test_metric_time_is_finished_at(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                make_exec(
                    "acme", "e1", "a", started_at=T0 + 50 * MINUTE, finished_at=T0 + 70 * MINUTE
                ),
            ],
        )
        assert counts(backend, "acme", "a", [T0, T0 + HOUR, T0 + 2 * HOUR]) == [
            (0, 0, 0),
            (1, 1, 0),
        ]

    def test_metric_time_falls_back_to_started_at(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                make_exec(
                    "acme",
                    "e1",
                    "a",
                    status="missed",
                    started_at=T0 + 70 * MINUTE,
                    finished_at=None,
                ),
            ],
        )
        assert counts(backend, "acme", "a", [T0, T0 + HOUR, T0 + 2 * HOUR]) == [
            (0, 0, 0),
            (1, 0, 1),
        ]

    def test_duration_sum_and_count(self, backend: Backend) -> None:
        backend.write_executions(
            "acme",
            [
                finished("acme", "e1", "a", T0 + MINUTE, duration_ms=100),
                finished("acme", "e2", "a", T0 + 2 * MINUTE, duration_ms=300),
                make_exec(
                    "acme", "e3", "a", status="missed", started_at=T0 + MINUTE, finished_at=None
                ),
            ],
        )
        [bucket] = backend.metric_buckets("acme", "a", [T0, T0 + HOUR])
        assert (bucket.runs, bucket.duration_count) == (3, 2)
        assert bucket.duration_sum_ms == pytest.approx(400)
        assert bucket.duration_avg_ms == pytest.approx(200)

    @pytest.mark.parametrize("edges", [[], [T0], [T0, T0], [T0 + 1, T0], [T0, T0 + 2, T0 + 1]])
    def test_bad_edges_raise(self, backend: Backend, edges: list[int]) -> None:
        with pytest.raises(ValueError):
            backend.metric_buckets("acme", None, edges)
        with pytest.raises(ValueError):
            backend.duration_quantiles("acme", None, edges, [0.5])

    @pytest.mark.parametrize("quantiles", [[-0.1], [1.5], [0.5, 2.0]])
    def test_bad_quantiles_raise(self, backend: Backend, quantiles: list[float]) -> None:
        with pytest.raises(ValueError):
            backend.duration_quantiles("acme", None, [T0, T0 + HOUR], quantiles)

    def _hundred_durations(self, backend: Backend, job: str = "q") -> None:
        backend.write_executions(
            "acme",
            [
                finished("acme", f"{job}-{i}", job, T0 + i * 20_000, duration_ms=i + 1)
                for i in range(100)
            ],
        )

    def test_duration_quantiles(self, backend: Backend) -> None:
        self._hundred_durations(backend)
        [[p0, p50, p99, p100]] = backend.duration_quantiles(
            "acme", "q", [T0, T0 + HOUR], [0.0, 0.5, 0.99, 1.0]
        )
        assert p50 == pytest.approx(50, abs=3)
        assert p99 == pytest.approx(99, abs=3)
        assert p0 == pytest.approx(1, abs=1) and p100 == pytest.approx(100, abs=1)

    def test_duration_quantiles_empty_buckets(self, backend: Backend) -> None:
        self._hundred_durations(backend)
        # whole UTC days, so the result is the same whether the backend keeps hourly or daily
        # sketches for this range
        edges = [T0 - DAY, T0, T0 + DAY, T0 + 2 * DAY]
        before, during, after = backend.duration_quantiles("acme", "q", edges, [0.5, 0.99])
        assert before == [None, None] and after == [None, None]
        assert during[0] == pytest.approx(50, abs=3)
        assert backend.duration_quantiles("acme", "other", edges[:2], [0.5]) == [[None]]

    def test_duration_quantiles_tenant_level(self, backend: Backend) -> None:
        self._hundred_durations(backend, "q")
        self._hundred_durations(backend, "r")
        [[p50]] = backend.duration_quantiles("acme", None, [T0, T0 + HOUR], [0.5])
        assert p50 == pytest.approx(50, abs=3)
        assert backend.duration_quantiles("zeta", None, [T0, T0 + HOUR], [0.5]) == [[None]]

    def _runs_of_several_jobs(self, backend: Backend) -> None:
        backend.write_executions("acme", [
            finished("acme", "a1", "a", T0 + MINUTE, duration_ms=100),
            finished("acme", "a2", "a", T0 + 2 * HOUR, status="failed", duration_ms=300),
            finished("acme", "a3", "a", T0 + 5 * HOUR, status="cancelled"),
            finished("acme", "a4", "a", T0 - MINUTE),  # before every window below
            finished("acme", "b1", "b", T0 + 3 * HOUR + 30 * MINUTE, status="timeout"),
            finished("acme", "x1", "a|b", T0 + 4 * HOUR, duration_ms=7),
            finished("acme", "a5", "a", T0 + DAY + 30 * MINUTE, duration_ms=50),  # the next day
        ])  # fmt: skip
        backend.write_executions("zeta", [
            finished("zeta", "a1", "a", T0 + MINUTE, status="failed", duration_ms=900),
            finished("zeta", "c1", "c", T0 + MINUTE),
        ])  # fmt: skip

    @pytest.mark.parametrize(
        "start,end",
        [
            (T0, T0 + DAY),  # whole UTC days
            (T0, T0 + 3 * HOUR),  # whole hours
            (T0 + 7 * MINUTE, T0 + 4 * HOUR + 30 * MINUTE),  # neither
            (T0 - 2 * HOUR, T0 + DAY + 3 * HOUR),  # hours, a whole day, hours
            (T0 - 2 * HOUR, T0 + DAY),  # hours, then a whole day
        ],
    )
    def test_metric_totals_equal_single_job_calls(
        self, backend: Backend, start: int, end: int
    ) -> None:
        self._runs_of_several_jobs(backend)
        ids = ["a", "b", "nothing", "a|b", "c"]
        totals = backend.metric_totals("acme", ids, start, end)
        assert totals == [backend.metric_buckets("acme", j, [start, end])[0] for j in ids]
        assert all((t.start, t.end) == (start, end) for t in totals)
        assert (totals[2].runs, totals[2].duration_count) == (0, 0)  # unknown job
        assert (totals[4].runs, totals[4].success) == (0, 0)  # another tenant's job
        counted = backend.metric_totals("acme", ids, start, end, ("runs", "success", "failure"))
        assert [(t.runs, t.success, t.failure) for t in counted] == [
            (t.runs, t.success, t.failure) for t in totals
        ]
        timed = backend.metric_totals("acme", ids, start, end, ("duration",))
        assert [(t.duration_sum_ms, t.duration_count) for t in timed] == [
            (t.duration_sum_ms, t.duration_count) for t in totals
        ]

    def test_metric_totals_counts(self, backend: Backend) -> None:
        self._runs_of_several_jobs(backend)
        ids = ["a", "b", "nothing", "a|b"]
        a, b, nothing, ab = backend.metric_totals("acme", ids, T0, T0 + DAY)
        assert (a.runs, a.success, a.failure, a.duration_count) == (3, 1, 1, 3)
        assert a.duration_sum_ms == pytest.approx(100 + 300 + 1000)
        assert (b.runs, b.success, b.failure) == (1, 0, 1)
        assert (nothing.runs, nothing.failure, nothing.duration_count) == (0, 0, 0)
        assert (ab.runs, ab.success) == (1, 1)
        [za, zb] = backend.metric_totals("zeta", ["a", "b"], T0, T0 + DAY)
        assert (za.runs, za.failure, zb.runs) == (1, 1, 0)
        assert backend.metric_totals("acme", [], T0, T0 + DAY) == []

    @pytest.mark.parametrize("start,end", [(T0, T0 + DAY), (T0, T0 + 3 * HOUR)])
    def test_duration_quantiles_many_equal_single_job_calls(
        self, backend: Backend, start: int, end: int
    ) -> None:
        self._runs_of_several_jobs(backend)
        self._hundred_durations(backend, "q")
        ids = ["q", "a", "nothing", "a|b", "c"]
        quantiles = [0.0, 0.5, 0.95, 1.0]
        many = backend.duration_quantiles_many("acme", ids, start, end, quantiles)
        single = [backend.duration_quantiles("acme", j, [start, end], quantiles)[0] for j in ids]
        assert many == single
        assert many[0][1] == pytest.approx(50, abs=3)
        assert many[2] == [None] * 4 and many[4] == [None] * 4  # unknown; another tenant's
        assert many[3] == ([pytest.approx(7, abs=0.5)] * 4 if end > T0 + 4 * HOUR else [None] * 4)
        [[z50]] = backend.duration_quantiles_many("zeta", ["a"], start, end, [0.5])
        assert z50 == pytest.approx(900, abs=1)
        assert backend.duration_quantiles_many("acme", [], start, end, [0.5]) == []

    def test_batched_metric_reads_reject_bad_input(self, backend: Backend) -> None:
        with pytest.raises(ValueError):
            backend.metric_totals("acme", ["a"], T0, T0)
        with pytest.raises(ValueError):
            backend.duration_quantiles_many("acme", ["a"], T0 + HOUR, T0, [0.5])
        with pytest.raises(ValueError):
            backend.duration_quantiles_many("acme", ["a"], T0, T0 + HOUR, [1.5])

    # job state ---------------------------------------------------------------------------
    def test_job_state_follows_latest_run(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "j")], T0)
        backend.write_executions(
            "acme",
            [
                make_exec("acme", "e1", "j", started_at=T0, finished_at=T0 + 1000),
            ],
        )
        backend.write_executions(
            "acme",
            [
                make_exec(
                    "acme",
                    "e2",
                    "j",
                    status="failed",
                    started_at=T0 + HOUR,
                    finished_at=T0 + HOUR + 2000,
                ),
            ],
        )
        assert backend.get_job("acme", "j").state == JobState(
            last_exec_id="e2",
            last_status="failed",
            last_started_at=T0 + HOUR,
            last_finished_at=T0 + HOUR + 2000,
            last_duration_ms=2000,
            last_success_at=T0 + 1000,
            last_failure_at=T0 + HOUR + 2000,
        )

    def test_older_run_does_not_move_job_state(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "j")], T0)
        backend.write_executions("acme", [make_exec("acme", "new", "j", started_at=T0 + HOUR)])
        before = backend.get_job("acme", "j").state
        backend.write_executions(
            "acme",
            [
                make_exec("acme", "old", "j", status="failed", started_at=T0),
            ],
        )
        after = backend.get_job("acme", "j").state
        assert before.last_exec_id == "new" and before.last_failure_at is None
        # The last run is still the newer one; the late failure is still the latest failure.
        assert after == replace(before, last_failure_at=T0 + 1000)

    def test_running_run_completes_into_job_state(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "j")], T0)
        backend.write_executions("acme", [make_exec("acme", "e1", "j", status="running")])
        backend.write_executions("acme", [make_exec("acme", "e1", "j", finished_at=T0 + 500)])
        state = backend.get_job("acme", "j").state
        assert (state.last_exec_id, state.last_status, state.last_duration_ms) == (
            "e1",
            "success",
            500,
        )

    def test_executions_do_not_create_jobs(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", "e1", "ghost")])
        assert backend.get_job("acme", "ghost") is None
        backend.upsert_jobs("zeta", [make_job("zeta", "ghost")], T0)
        assert backend.get_job("zeta", "ghost").state == JobState()

    # events ------------------------------------------------------------------------------
    def test_write_publishes_execution_event(self, backend: Backend) -> None:
        with backend.subscribe() as sub:
            backend.write_executions("acme", [make_exec("acme", "e1", "a", status="running")])
            event = next_event(sub)
            assert (event.tenant_id, event.type) == ("acme", "execution")
            assert (event.data["execId"], event.data["status"]) == ("e1", "running")
            backend.write_executions("acme", [make_exec("acme", "e1", "a", exit_code=0)])
            event = next_event(sub)
            assert (event.data["execId"], event.data["status"]) == ("e1", "success")

    def test_duplicate_publishes_nothing(self, backend: Backend) -> None:
        e = make_exec("acme", "e1", "a")
        backend.write_executions("acme", [e])
        with backend.subscribe() as sub:
            backend.write_executions("acme", [e])
            assert sub.get(timeout=0.3) is None

    def test_publish_and_subscribe_in_order(self, backend: Backend) -> None:
        sub_one, sub_two = backend.subscribe(), backend.subscribe()
        sent = [Event("t|1", "custom", {"n": i, "text": "ü", "list": [1, 2]}) for i in range(3)]
        for event in sent:
            backend.publish(event)
        assert [next_event(sub_one) for _ in sent] == sent
        assert [next_event(sub_two) for _ in sent] == sent
        sub_one.close()
        sub_two.close()

    def test_subscription_close_is_idempotent(self, backend: Backend) -> None:
        sub = backend.subscribe()
        sub.close()
        sub.close()
        with backend.subscribe() as other:
            backend.publish(Event("acme", "custom", {}))
            assert next_event(other) == Event("acme", "custom", {})
        other.close()

    # scheduler ---------------------------------------------------------------------------
    def test_due_fires_order_and_limit(self, backend: Backend) -> None:
        backend.set_next_fire("acme", "a", T0 + 3)
        backend.set_next_fire("acme", "b", T0 + 1)
        backend.set_next_fire("zeta", "a", T0 + 2)
        backend.set_next_fire("acme", "c", T0 + 10)
        assert backend.due_fires(T0 + 5, 10) == [
            ("acme", "b", T0 + 1),
            ("zeta", "a", T0 + 2),
            ("acme", "a", T0 + 3),
        ]
        assert backend.due_fires(T0 + 5, 2) == [("acme", "b", T0 + 1), ("zeta", "a", T0 + 2)]
        assert backend.due_fires(T0 + 10, 10)[-1] == ("acme", "c", T0 + 10)
        assert backend.due_fires(T0, 10) == []

    def test_set_next_fire_replaces_and_none_removes(self, backend: Backend) -> None:
        backend.set_next_fire("acme", "a", T0 + 1)
        backend.set_next_fire("acme", "a", T0 + 7)
        assert backend.due_fires(T0 + 10, 10) == [("acme", "a", T0 + 7)]
        backend.set_next_fire("acme", "a", None)
        assert backend.due_fires(T0 + 10, 10) == []
        backend.set_next_fire("acme", "never-set", None)

    def test_next_fire_is_per_tenant(self, backend: Backend) -> None:
        backend.set_next_fire("acme", "job", T0 + 1)
        backend.set_next_fire("zeta", "job", T0 + 2)
        backend.set_next_fire("acme", "job", None)
        assert backend.due_fires(T0 + 10, 10) == [("zeta", "job", T0 + 2)]

    def test_delete_job_removes_schedule_entry(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        backend.set_next_fire("acme", "a", T0 + 1)
        backend.set_next_fire("zeta", "a", T0 + 2)
        backend.delete_job("acme", "a")
        assert backend.due_fires(T0 + 10, 10) == [("zeta", "a", T0 + 2)]

    def test_claim_trigger(self, backend: Backend) -> None:
        assert backend.claim_trigger("acme", "a", T0, "w1", 60_000) is True
        assert backend.claim_trigger("acme", "a", T0, "w2", 60_000) is False
        assert backend.claim_trigger("acme", "a", T0, "w1", 60_000) is False
        assert backend.claim_trigger("acme", "a", T0 + MINUTE, "w2", 60_000) is True
        assert backend.claim_trigger("acme", "b", T0, "w2", 60_000) is True
        assert backend.claim_trigger("zeta", "a", T0, "w2", 60_000) is True

    def test_claim_trigger_race(self, backend: Backend) -> None:
        barrier = threading.Barrier(8)
        results: list[bool] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            barrier.wait()
            won = backend.claim_trigger("acme", "a", T0, f"worker-{n}", 60_000)
            with lock:
                results.append(won)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert sorted(results) == [False] * 7 + [True]

    # trigger store -----------------------------------------------------------------------
    def test_advance_fire_moves_only_from_expected(self, backend: Backend) -> None:
        backend.set_next_fire("acme", "a", T0 + 1)
        assert backend.advance_fire("acme", "a", T0 + 2, T0 + 9) is False
        assert backend.due_fires(T0 + 10, 10) == [("acme", "a", T0 + 1)]
        assert backend.advance_fire("acme", "a", T0 + 1, T0 + 5) is True
        assert backend.due_fires(T0 + 10, 10) == [("acme", "a", T0 + 5)]
        assert backend.advance_fire("acme", "a", T0 + 1, T0 + 7) is False  # moved already
        assert backend.due_fires(T0 + 10, 10) == [("acme", "a", T0 + 5)]
        assert backend.advance_fire("acme", "a", T0 + 5, None) is True
        assert backend.due_fires(T0 + 10, 10) == []
        assert backend.advance_fire("acme", "a", T0 + 5, T0 + 6) is False  # nothing to move
        assert backend.advance_fire("acme", "never-set", T0, T0 + 1) is False
        assert backend.due_fires(T0 + 10, 10) == []

    def test_advance_fire_is_tenant_scoped_and_exact(self, backend: Backend) -> None:
        for n, job_id in enumerate(ALL_IDS):
            backend.set_next_fire("t|1", job_id, T0 + n)
        backend.set_next_fire("t:1", "a|b", T0)
        assert backend.advance_fire("t1", "a|b", T0, T0 + 500) is False  # no such tenant entry
        assert backend.advance_fire("t|1", "a", T0, T0 + 500) is False  # "a" is not "a|b"
        assert backend.advance_fire("t|1", "a|b", T0, T0 + 500) is True
        assert backend.advance_fire("t*", "a|b", T0, T0 + 500) is False
        expected = [("t:1", "a|b", T0)]
        expected += [("t|1", job_id, T0 + n) for n, job_id in enumerate(ALL_IDS) if n]
        expected.insert(ALL_IDS.index("a|b") + len(ALL_IDS), ("t|1", "a|b", T0 + 500))
        assert backend.due_fires(T0 + DAY, 100) == expected

    def test_advance_fire_race_has_one_winner(self, backend: Backend) -> None:
        backend.set_next_fire("acme", "a", T0)
        barrier = threading.Barrier(8)
        results: list[tuple[bool, int]] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            barrier.wait()
            moved = backend.advance_fire("acme", "a", T0, T0 + MINUTE + n)
            with lock:
                results.append((moved, n))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        winners = [n for moved, n in results if moved]
        assert len(results) == 8 and len(winners) == 1
        assert backend.due_fires(T0 + DAY, 10) == [("acme", "a", T0 + MINUTE + winners[0])]

    def test_enqueue_trigger_records_it_and_notes_job_state(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        trigger = make_trigger("acme", "a", "tr-1", fired_at=T0 + 7)
        backend.enqueue_trigger(trigger)
        assert backend.list_triggers("acme", "a", 10) == [trigger]
        assert backend.list_triggers("acme", "a", 10)[0].status == "scheduled"
        assert backend.get_job("acme", "a").state == JobState(
            last_trigger_id="tr-1", last_fired_at=T0 + 7
        )

    def test_enqueue_trigger_is_idempotent(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        first = make_trigger("acme", "a", "tr-1", fired_at=T0 + 7)
        backend.enqueue_trigger(first)
        again = make_trigger("acme", "a", "tr-1", scheduled_for=T0 + HOUR, fired_at=T0 + HOUR)
        backend.enqueue_trigger(again)
        backend.enqueue_trigger(first)
        assert backend.list_triggers("acme", "a", 10) == [first]
        assert backend.get_job("acme", "a").state.last_fired_at == T0 + 7
        assert backend.due_deadlines(T0 + DAY, 10) == [first]
        assert triggers_of(backend.read_triggers("acme", ["a"], "r1", 10, 0)) == ["tr-1"]
        assert backend.read_triggers("acme", ["a"], "r1", 10, 0) == []
        # the same trigger id in another tenant is another trigger
        backend.enqueue_trigger(make_trigger("zeta", "a", "tr-1"))
        assert triggers_of(backend.read_triggers("zeta", ["a"], "r1", 10, 0)) == ["tr-1"]

    def test_enqueue_trigger_of_missing_job_creates_no_job(self, backend: Backend) -> None:
        backend.upsert_jobs("zeta", [make_job("zeta", "ghost")], T0)
        backend.enqueue_trigger(make_trigger("acme", "ghost", "tr-1"))
        assert backend.get_job("acme", "ghost") is None
        assert backend.get_job("zeta", "ghost").state == JobState()
        # it is queued and recorded all the same
        assert [t.trigger_id for t in backend.list_triggers("acme", "ghost", 10)] == ["tr-1"]
        assert triggers_of(backend.read_triggers("acme", ["ghost"], "r1", 10, 0)) == ["tr-1"]

    def test_latest_trigger_moves_job_state(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-1", fired_at=T0 + 7))
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-2", T0 + MINUTE, fired_at=T0 + 9))
        state = backend.get_job("acme", "a").state
        assert (state.last_trigger_id, state.last_fired_at) == ("tr-2", T0 + 9)

    def test_runs_and_upserts_keep_trigger_state(self, backend: Backend) -> None:
        backend.upsert_jobs("acme", [make_job("acme", "a")], T0)
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-1", fired_at=T0 + 7))
        backend.write_executions("acme", [make_exec("acme", "e1", "a", status="running")])
        backend.write_executions("acme", [make_exec("acme", "e1", "a", trigger_id="tr-1")])
        backend.write_executions("acme", [make_exec("acme", "e2", "a", started_at=T0 + HOUR)])
        backend.upsert_jobs("acme", [make_job("acme", "a", name="renamed")], T0 + 1)
        state = backend.get_job("acme", "a").state
        assert (state.last_trigger_id, state.last_fired_at) == ("tr-1", T0 + 7)
        assert (state.last_exec_id, state.last_status) == ("e2", "success")

    def test_read_hands_each_trigger_to_one_runner_oldest_first(self, backend: Backend) -> None:
        for n in range(3):
            backend.enqueue_trigger(make_trigger("acme", "a", f"tr-{n}", T0 + n * MINUTE))
        first = backend.read_triggers("acme", ["a"], "r1", 2, 0)
        assert [(d.tenant_id, d.job_id, d.trigger_id, d.scheduled_for, d.deliveries)
                for d in first] == [
            ("acme", "a", "tr-0", T0, 1),
            ("acme", "a", "tr-1", T0 + MINUTE, 1),
        ]  # fmt: skip
        assert all(isinstance(d.ref, str) and d.ref for d in first)
        assert len({d.ref for d in first}) == 2
        assert triggers_of(backend.read_triggers("acme", ["a"], "r2", 10, 0)) == ["tr-2"]
        assert backend.read_triggers("acme", ["a"], "r1", 10, 0) == []
        assert backend.read_triggers("acme", ["a"], "r3", 10, 0) == []

    def test_read_across_several_jobs(self, backend: Backend) -> None:
        for job_id, trigger_id in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"),
                                   ("b", "b2"), ("a", "a3")]:  # fmt: skip
            backend.enqueue_trigger(make_trigger("acme", job_id, trigger_id))
        found = backend.read_triggers("acme", ["a", "b"], "r1", 10, 0)
        assert [d.trigger_id for d in found if d.job_id == "a"] == ["a1", "a2", "a3"]
        assert [d.trigger_id for d in found if d.job_id == "b"] == ["b1", "b2"]
        assert len(found) == 5
        assert all(d.trigger_id[0] == d.job_id for d in found)
        assert backend.read_triggers("acme", ["a", "b"], "r2", 10, 0) == []
        assert triggers_of(backend.read_triggers("acme", ["b", "c", "d"], "r2", 10, 0)) == ["c1"]

    def test_concurrent_readers_never_share_a_trigger(self, backend: Backend) -> None:
        for n in range(40):
            backend.enqueue_trigger(make_trigger("acme", "ab"[n % 2], f"tr-{n}", T0 + n))
        barrier = threading.Barrier(4)
        got: list[str] = []
        lock = threading.Lock()

        def runner(name: str) -> None:
            barrier.wait()
            while found := backend.read_triggers("acme", ["a", "b"], name, 3, 0):
                with lock:
                    got.extend(d.trigger_id for d in found)

        threads = [threading.Thread(target=runner, args=(f"r{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert sorted(got) == sorted(f"tr-{n}" for n in range(40))

    def test_read_is_tenant_scoped(self, backend: Backend) -> None:
        for tenant in ALL_TENANTS:
            backend.enqueue_trigger(make_trigger(tenant, "a|b", f"of-{tenant}"))
        assert backend.read_triggers("other", ["a|b"], "r1", 10, 0) == []
        for tenant in ALL_TENANTS:
            found = backend.read_triggers(tenant, ["a|b", "a", "b", "*"], "r1", 10, 0)
            assert [(d.tenant_id, d.job_id, d.trigger_id) for d in found] == [
                (tenant, "a|b", f"of-{tenant}")
            ]

    def test_read_with_nothing_to_read(self, backend: Backend) -> None:
        assert backend.read_triggers("acme", [], "r1", 10, 0) == []
        assert backend.read_triggers("acme", ["never"], "r1", 10, 0) == []
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-1"))
        assert backend.read_triggers("acme", ["never", "other"], "r1", 10, 0) == []
        assert triggers_of(backend.read_triggers("acme", ["never", "a"], "r1", 10, 0)) == ["tr-1"]

    def test_blocking_read_waits_then_returns_nothing(self, backend: Backend) -> None:
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-0"))
        backend.read_triggers("acme", ["a"], "r1", 10, 0)  # the queue exists and is drained
        # triggers of other jobs and tenants queued during the wait do not end it
        timer = threading.Timer(0.05, lambda: [
            backend.enqueue_trigger(make_trigger("acme", "b", "tr-b")),
            backend.enqueue_trigger(make_trigger("zeta", "a", "tr-z")),
        ])  # fmt: skip
        started = time.monotonic()
        timer.start()
        try:
            assert backend.read_triggers("acme", ["a"], "r1", 10, 300) == []
        finally:
            timer.join()
        assert 0.25 <= time.monotonic() - started < 5
        assert triggers_of(backend.read_triggers("acme", ["b"], "r1", 10, 0)) == ["tr-b"]

    def test_blocking_read_returns_a_trigger_queued_meanwhile(self, backend: Backend) -> None:
        timer = threading.Timer(0.2, backend.enqueue_trigger, [make_trigger("acme", "a", "t")])
        started = time.monotonic()
        timer.start()
        try:
            found = backend.read_triggers("acme", ["b", "a"], "r1", 10, 5000)
        finally:
            timer.join()
        assert [(d.job_id, d.trigger_id, d.deliveries) for d in found] == [("a", "t", 1)]
        assert time.monotonic() - started < 4
        assert backend.read_triggers("acme", ["a", "b"], "r2", 10, 0) == []

    def test_claim_stale_triggers(self, backend: Backend) -> None:
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-1"))
        [handed] = backend.read_triggers("acme", ["a"], "r1", 10, 0)
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-2"))  # never handed out
        assert backend.claim_stale_triggers("acme", ["a"], "r2", 60_000, 10) == []
        time.sleep(0.1)
        [claimed] = backend.claim_stale_triggers("acme", ["a"], "r2", 30, 10)
        assert (claimed.tenant_id, claimed.job_id, claimed.trigger_id) == ("acme", "a", "tr-1")
        assert (claimed.scheduled_for, claimed.deliveries) == (T0, 2)
        assert claimed.ref == handed.ref
        # claiming hands it over anew: it is not idle any more
        assert backend.claim_stale_triggers("acme", ["a"], "r3", 60_000, 10) == []
        time.sleep(0.1)
        [again] = backend.claim_stale_triggers("acme", ["a"], "r3", 30, 10)
        assert (again.trigger_id, again.deliveries) == ("tr-1", 3)
        # the fresh one is still there for a reader
        assert triggers_of(backend.read_triggers("acme", ["a"], "r4", 10, 0)) == ["tr-2"]

    def test_claim_stale_is_scoped_and_counted(self, backend: Backend) -> None:
        for n in range(3):
            backend.enqueue_trigger(make_trigger("t|1", "a:b", f"tr-{n}", T0 + n))
        backend.enqueue_trigger(make_trigger("t|1", "a", "other-job"))
        backend.enqueue_trigger(make_trigger("t1", "a:b", "other-tenant"))
        backend.read_triggers("t|1", ["a:b", "a"], "r1", 10, 0)
        backend.read_triggers("t1", ["a:b"], "r1", 10, 0)
        time.sleep(0.1)
        assert backend.claim_stale_triggers("t:1", ["a:b"], "r2", 30, 10) == []
        assert backend.claim_stale_triggers("t|1", ["ab", "a|b"], "r2", 30, 10) == []
        found = backend.claim_stale_triggers("t|1", ["a:b"], "r2", 30, 2)
        assert [(d.tenant_id, d.job_id, d.trigger_id, d.deliveries) for d in found] == [
            ("t|1", "a:b", "tr-0", 2),
            ("t|1", "a:b", "tr-1", 2),
        ]
        rest = backend.claim_stale_triggers("t|1", ["a:b"], "r2", 30, 10)
        assert triggers_of(rest) == ["tr-2"]

    def test_ack_trigger(self, backend: Backend) -> None:
        trigger = make_trigger("acme", "a", "tr-1")
        backend.enqueue_trigger(trigger)
        [delivery] = backend.read_triggers("acme", ["a"], "r1", 10, 0)
        assert backend.ack_trigger(replace(delivery, tenant_id="zeta"), "r1", T0 + 50) is False
        assert backend.ack_trigger(replace(delivery, job_id="b"), "r1", T0 + 50) is False
        assert backend.list_triggers("acme", "a", 10) == [trigger]
        assert backend.ack_trigger(delivery, "r1", T0 + 100) is True
        assert backend.ack_trigger(delivery, "r1", T0 + 200) is False
        expected = replace(trigger, status="delivered", runner="r1", delivered_at=T0 + 100,
                           deliveries=1)  # fmt: skip
        assert backend.list_triggers("acme", "a", 10) == [expected]

    def test_acked_trigger_is_never_handed_out_again(self, backend: Backend) -> None:
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-1"))
        backend.read_triggers("acme", ["a"], "r1", 10, 0)
        time.sleep(0.1)
        [claimed] = backend.claim_stale_triggers("acme", ["a"], "r2", 30, 10)
        assert backend.ack_trigger(claimed, "r2", T0 + 100) is True
        record = backend.list_triggers("acme", "a", 1)[0]
        assert (record.status, record.runner, record.deliveries) == ("delivered", "r2", 2)
        time.sleep(0.1)
        assert backend.claim_stale_triggers("acme", ["a"], "r3", 30, 10) == []
        assert backend.read_triggers("acme", ["a"], "r3", 10, 0) == []

    def test_due_deadlines_order_and_limit(self, backend: Backend) -> None:
        late = make_trigger("acme", "a", "late", deadline=T0 + 30)
        first = make_trigger("zeta", "a", "first", deadline=T0 + 10)
        second = make_trigger("acme", "b", "second", deadline=T0 + 20)
        for trigger in (late, first, second):
            backend.enqueue_trigger(trigger)
        assert backend.due_deadlines(T0 + 9, 10) == []
        assert backend.due_deadlines(T0 + 10, 10) == [first]
        assert backend.due_deadlines(T0 + 25, 10) == [first, second]
        assert backend.due_deadlines(T0 + 30, 2) == [first, second]
        assert backend.due_deadlines(T0 + DAY, 10) == [first, second, late]

    def test_due_deadline_shows_the_current_record(self, backend: Backend) -> None:
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-1", deadline=T0 + 10))
        [delivery] = backend.read_triggers("acme", ["a"], "r1", 10, 0)
        backend.ack_trigger(delivery, "r1", T0 + 5)
        [due] = backend.due_deadlines(T0 + 10, 10)
        assert (due.trigger_id, due.status, due.runner, due.delivered_at) == (
            "tr-1", "delivered", "r1", T0 + 5,
        )  # fmt: skip

    def test_settle_without_missed_only_takes_it_off_the_list(self, backend: Backend) -> None:
        trigger = make_trigger("acme", "a", "tr-1", deadline=T0 + 10)
        backend.enqueue_trigger(trigger)
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-2", deadline=T0 + 20))
        backend.settle_trigger(trigger, missed=False)
        assert triggers_of(backend.due_deadlines(T0 + DAY, 10)) == ["tr-2"]
        assert backend.list_triggers("acme", "a", 10)[1] == trigger  # same scheduled_for
        assert triggers_of(backend.read_triggers("acme", ["a"], "r1", 10, 0)) == ["tr-1", "tr-2"]
        backend.settle_trigger(trigger, missed=False)  # again: nothing to do

    def test_settle_missed_withdraws_an_unread_trigger(self, backend: Backend) -> None:
        trigger = make_trigger("acme", "a", "tr-1", deadline=T0 + 10)
        backend.enqueue_trigger(trigger)
        backend.enqueue_trigger(make_trigger("acme", "a", "tr-2", T0 + MINUTE))
        backend.settle_trigger(trigger, missed=True)
        assert triggers_of(backend.due_deadlines(T0 + 10, 10)) == []
        assert backend.list_triggers("acme", "a", 10)[1] == replace(trigger, status="missed")
        assert triggers_of(backend.read_triggers("acme", ["a"], "r1", 10, 0)) == ["tr-2"]
        time.sleep(0.1)
        assert triggers_of(backend.claim_stale_triggers("acme", ["a"], "r2", 30, 10)) == ["tr-2"]

    def test_settle_missed_withdraws_a_pending_trigger(self, backend: Backend) -> None:
        trigger = make_trigger("acme", "a", "tr-1", deadline=T0 + 10)
        backend.enqueue_trigger(trigger)
        [delivery] = backend.read_triggers("acme", ["a"], "r1", 10, 0)
        backend.settle_trigger(trigger, missed=True)
        time.sleep(0.1)
        assert backend.claim_stale_triggers("acme", ["a"], "r2", 30, 10) == []
        assert backend.read_triggers("acme", ["a"], "r2", 10, 0) == []
        assert backend.ack_trigger(delivery, "r1", T0 + 100) is False
        assert backend.list_triggers("acme", "a", 10) == [replace(trigger, status="missed")]
        assert backend.due_deadlines(T0 + DAY, 10) == []

    def test_list_triggers_newest_first_and_capped(self, backend: Backend) -> None:
        order = [n * 37 % 105 for n in range(105)]  # every instant once, shuffled
        for n in order:
            backend.enqueue_trigger(make_trigger("acme", "a", f"tr-{n}", T0 + n * MINUTE))
        backend.enqueue_trigger(make_trigger("acme", "b", "other-job", T0 + DAY))
        backend.enqueue_trigger(make_trigger("zeta", "a", "other-tenant", T0 + DAY))
        kept = backend.list_triggers("acme", "a", 1000)
        assert triggers_of(kept) == [f"tr-{n}" for n in range(104, 4, -1)]
        assert [t.scheduled_for for t in kept[:2]] == [T0 + 104 * MINUTE, T0 + 103 * MINUTE]
        assert triggers_of(backend.list_triggers("acme", "a", 3)) == ["tr-104", "tr-103", "tr-102"]
        # an instant older than every kept one is recorded but not listed
        backend.enqueue_trigger(make_trigger("acme", "a", "ancient", T0 - DAY))
        assert len(backend.list_triggers("acme", "a", 1000)) == 100
        assert backend.list_triggers("acme", "never", 10) == []
        assert backend.list_triggers("other", "a", 10) == []

    def test_returned_triggers_are_copies(self, backend: Backend) -> None:
        trigger = make_trigger("acme", "a", "tr-1")
        backend.enqueue_trigger(trigger)
        trigger.status = "mutated"
        got = backend.list_triggers("acme", "a", 10)[0]
        got.runner = "mutated"
        assert backend.list_triggers("acme", "a", 10)[0] == make_trigger("acme", "a", "tr-1")

    def _timeout_jobs(self, backend: Backend, tenant: str = "acme") -> None:
        backend.upsert_jobs(tenant, [
            make_job(tenant, "slow", max_runtime_seconds=5),
            make_job(tenant, "free"),
        ], T0)  # fmt: skip

    def test_due_timeouts_of_running_executions(self, backend: Backend) -> None:
        self._timeout_jobs(backend)
        backend.write_executions("acme", [
            make_exec("acme", "e1", "slow", status="running", started_at=T0),
            make_exec("acme", "e2", "free", status="running", started_at=T0),
            make_exec("acme", "e3", "ghost", status="running", started_at=T0),
            make_exec("acme", "e4", "slow", status="running", started_at=T0 - 10_000),
            make_exec("acme", "e5", "slow", started_at=T0 - 20_000),  # finished at once
        ])  # fmt: skip
        assert backend.due_timeouts(T0 - 5001, 10) == []
        assert backend.due_timeouts(T0 + 4999, 10) == [("acme", "e4", T0 - 5000)]
        assert backend.due_timeouts(T0 + 5000, 10) == [
            ("acme", "e4", T0 - 5000),
            ("acme", "e1", T0 + 5000),
        ]
        assert backend.due_timeouts(T0 + DAY, 1) == [("acme", "e4", T0 - 5000)]
        # the same running record again changes nothing
        backend.write_executions("acme", [
            make_exec("acme", "e1", "slow", status="running", started_at=T0 + HOUR),
        ])  # fmt: skip
        assert backend.due_timeouts(T0 + DAY, 10)[1] == ("acme", "e1", T0 + 5000)

    def test_terminal_write_removes_the_timeout(self, backend: Backend) -> None:
        self._timeout_jobs(backend)
        self._timeout_jobs(backend, "zeta")
        for tenant in ("acme", "zeta"):
            backend.write_executions(tenant, [
                make_exec(tenant, "e1", "slow", status="running"),
                make_exec(tenant, "e2", "slow", status="running", started_at=T0 + 1),
            ])  # fmt: skip
        assert backend.write_executions("zeta", [make_exec("zeta", "e1", "slow")]) == ["updated"]
        assert backend.write_executions("acme", [
            make_exec("acme", "e2", "slow", status="timeout", finished_at=T0 + 5001),
        ]) == ["updated"]  # fmt: skip
        assert backend.due_timeouts(T0 + DAY, 10) == [
            ("acme", "e1", T0 + 5000),
            ("zeta", "e2", T0 + 5001),
        ]
        backend.write_executions("acme", [make_exec("acme", "e1", "slow", status="failed")])
        backend.write_executions("zeta", [make_exec("zeta", "e2", "slow", status="cancelled")])
        assert backend.due_timeouts(T0 + DAY, 10) == []

    def test_execution_written_before_its_job_has_no_timeout(self, backend: Backend) -> None:
        backend.write_executions("acme", [make_exec("acme", "e1", "slow", status="running")])
        self._timeout_jobs(backend)
        assert backend.due_timeouts(T0 + DAY, 10) == []

    def test_hostile_ids_in_triggers_and_timeouts(self, backend: Backend) -> None:
        for tenant in HOSTILE_TENANTS:
            backend.upsert_jobs(tenant, [make_job(tenant, i, max_runtime_seconds=1)
                                         for i in ALL_IDS], T0)  # fmt: skip
        everything = [
            (tenant, i, T0 + 1000 * (n * len(ALL_IDS) + k))
            for n, tenant in enumerate(HOSTILE_TENANTS)
            for k, i in enumerate(ALL_IDS)
        ]
        for tenant, i, at in everything:
            backend.enqueue_trigger(make_trigger(tenant, i, i, at, deadline=at))
            backend.write_executions(tenant, [
                make_exec(tenant, i, i, status="running", started_at=at - 1000),
            ])  # fmt: skip
        due = backend.due_deadlines(T0 + DAY, 1000)
        assert [(t.tenant_id, t.job_id, t.trigger_id, t.deadline) for t in due] == [
            (tenant, i, i, at) for tenant, i, at in everything
        ]
        assert backend.due_timeouts(T0 + DAY, 1000) == everything
        tenant = "t|1"
        for i in ALL_IDS:
            assert triggers_of(backend.list_triggers(tenant, i, 10)) == [i]
            [delivery] = backend.read_triggers(tenant, [i], "r1", 10, 0)
            assert (delivery.tenant_id, delivery.job_id, delivery.trigger_id) == (tenant, i, i)
            assert backend.ack_trigger(delivery, "r1", T0) is True
            assert backend.get_job(tenant, i).state.last_trigger_id == i
        for trigger in due:
            if trigger.tenant_id == tenant:
                backend.settle_trigger(trigger, missed=True)
        assert all(t.tenant_id != tenant for t in backend.due_deadlines(T0 + DAY, 1000))
        assert backend.list_triggers(tenant, "a|b", 10)[0].status == "missed"
        assert backend.list_triggers("t*", "a|b", 10)[0].status == "scheduled"
        backend.write_executions(tenant, [make_exec(tenant, i, i) for i in ALL_IDS])
        assert backend.due_timeouts(T0 + DAY, 1000) == [e for e in everything if e[0] != tenant]

    # rate limiting -----------------------------------------------------------------------
    def test_rate_limit_allows_up_to_the_limit_then_says_when(self, backend: Backend) -> None:
        window = 60_000
        now = T0 + 15_000
        assert [backend.hit("ingest:acme", 3, window, now) for _ in range(3)] == [0, 0, 0]
        wait = backend.hit("ingest:acme", 3, window, now)
        assert wait == 45_000

    def test_rate_limit_names_and_windows_are_independent(self, backend: Backend) -> None:
        for _ in range(2):
            backend.hit("ingest:a|b", 2, 60_000, T0)
        assert backend.hit("ingest:a|b", 2, 60_000, T0) > 0
        assert backend.hit("ingest:a", 2, 60_000, T0) == 0  # another name
        assert backend.hit("ingest:a|b", 2, 60_000, T0 + 60_000) == 0  # the next window

    def test_rate_limit_cost_zero_reads_without_counting(self, backend: Backend) -> None:
        now = T0 + 15_000
        assert backend.hit("auth:x", 2, 60_000, now, cost=0) == 0  # nothing counted yet
        assert [backend.hit("auth:x", 2, 60_000, now) for _ in range(2)] == [0, 0]
        for _ in range(5):  # reading at the limit never pushes the window over it
            assert backend.hit("auth:x", 2, 60_000, now, cost=0) == 0
        assert backend.hit("auth:x", 2, 60_000, now) == 45_000
        assert backend.hit("auth:x", 2, 60_000, now, cost=0) == 45_000
        assert backend.hit("auth:x", 2, 60_000, now + 60_000, cost=0) == 0  # the next window
        assert backend.hit("auth:x", 0, 60_000, now + 60_000, cost=3) > 0  # counts 3 at once
        assert backend.hit("auth:x", 3, 60_000, now + 60_000, cost=0) == 0

    def test_rate_limit_is_atomic_across_threads(self, backend: Backend) -> None:
        results: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(10):
                wait = backend.hit("race", 25, 60_000, T0)
                with lock:
                    results.append(wait)

        threads = [threading.Thread(target=worker) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert results.count(0) == 25 and len(results) == 50

    # lifecycle ---------------------------------------------------------------------------
    def test_health(self, backend: Backend) -> None:
        report = backend.health()
        assert report["status"] == "ok"
        assert isinstance(report["backend"], str) and report["backend"] == backend.name

    def test_migrate_is_idempotent(self, backend: Backend) -> None:
        assert isinstance(backend.migrate(), list)
        assert backend.migrate() == []
        for entry in backend.schema_status():
            assert {"name", "description", "applied_at"} <= set(entry)
