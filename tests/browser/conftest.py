"""Fixtures for the dashboard's browser tests: headless Chromium and deterministic data.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``), driven by Playwright's Python
package; Playwright's own browser download is never used. Without Chromium the tests fail,
never skip: CI must go red (``./dev.sh test`` installs it when it can).

``seeded`` builds two tenants through the backend: ``acme`` (user ``alice``, an admin) with six
jobs and their executions over the last three days, and ``zeta`` (user ``zed``) with its own.
Every figure a page shows can be computed from the returned ``Seed``. Timestamps are relative
to now, kept well away from the edges of the windows the pages count over.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from chronos.accounts import generate_api_key, hash_password
from chronos.extension import get_state
from chronos.models import FAILURE_STATUSES, Execution, Job, User
from chronos.timeutil import now_ms

CHROMIUM = os.environ.get("CHRONOS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery"
PARIS = "Europe/Paris"
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """One headless Chromium for the browser tests. Package-scoped, not session-scoped:
    Playwright's sync API leaves its event loop marked running in the main thread while
    started, which would break later tests that call ``asyncio.run``."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                    "(`apt-get install chromium`, or run ./dev.sh test as root)",
                    pytrace=False)  # fmt: skip
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)  # fmt: skip
    except Exception as exc:
        playwright.stop()
        pytest.fail(f"could not launch {CHROMIUM}: {exc}", pytrace=False)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


# the seed ------------------------------------------------------------------------------------
@dataclass
class Seed:
    now: int
    jobs: dict[str, list[Job]] = field(default_factory=dict)
    executions: dict[str, list[Execution]] = field(default_factory=dict)
    ingest_keys: dict[str, str] = field(default_factory=dict)
    #: The execution with every field set (acme).
    rich_exec_id: str = ""

    def runs(self, tenant: str, start: int, end: int, job_id: str | None = None,
             statuses: frozenset[str] | None = None) -> list[Execution]:  # fmt: skip
        """Terminal executions counted in ``[start, end)`` (metrics count at ``finished_at``)."""
        return [e for e in self.executions[tenant]
                if (job_id is None or e.job_id == job_id)
                and (statuses is None or e.status in statuses)
                and e.finished_at is not None and start <= e.finished_at < end]  # fmt: skip

    def failures(self, tenant: str, start: int, end: int, job_id: str | None = None) -> int:
        return len(self.runs(tenant, start, end, job_id, FAILURE_STATUSES))

    def with_word(self, tenant: str, word: str) -> list[Execution]:
        word = word.lower()
        return [e for e in self.executions[tenant]
                if any(word in (t or "").lower() for t in (e.error_type, e.error_message,
                       e.error_stack, e.stdout, e.stderr))]  # fmt: skip

    def job_ids(self, tenant: str) -> list[str]:
        return [j.id for j in self.jobs[tenant]]

    def exec_ids(self, tenant: str) -> list[str]:
        return [e.exec_id for e in self.executions[tenant]]

    def last_status(self, tenant: str, job_id: str) -> str | None:
        runs = [e for e in self.executions[tenant] if e.job_id == job_id]
        return max(runs, key=lambda e: e.started_at).status if runs else None


CODE = '''def clean(partition: int) -> int:
    """Remove the expired rows of one partition."""
    rows = db.expired(partition)
    for row in rows:
        db.delete(row)
    return len(rows)
'''
STACK = """Traceback (most recent call last):
  File "/srv/jobs/cleanup.py", line 42, in clean
    db.delete(row)
ValueError: xylophone tuning failed for partition 7"""

# (job id, name, description, schedule, enabled, max runtime s, tags)
ACME_JOBS = [
    ("nightly-backup", "Nightly backup", "Dumps the billing database to cold storage",
     "0 3 * * *", True, 3600, ["backup"]),
    ("invoice-sync", "Invoice sync", "Pushes new invoices to the accounting system",
     "*/15 * * * *", True, None, ["billing"]),
    ("report-mailer", "Report mailer", "Mails the weekday sales report",
     "30 9 * * 1-5", True, None, ["reports"]),
    ("cache-warmer", "Cache warmer", "Preloads the product catalogue cache",
     "0 * * * *", True, None, []),
    ("legacy-export", "Legacy export", "Monthly export for the old ERP",
     "0 0 1 * *", False, None, ["legacy"]),
    ("data-cleanup", "Data cleanup", "Purges expired rows",
     "*/5 * * * *", True, None, ["maintenance"]),
]  # fmt: skip

# (job id, hours ago started, status, duration ms, extra fields)
ACME_RUNS: list[tuple[str, float, str, int, dict]] = [
    ("nightly-backup", 50, "success", 42_000, {}),
    ("nightly-backup", 26, "success", 45_000, {}),
    (
        "nightly-backup",
        7,
        "timeout",
        3_600_000,
        {"error_message": "max runtime of 3600 s exceeded"},
    ),
    ("invoice-sync", 40, "success", 1_800, {}),
    (
        "invoice-sync",
        34,
        "failed",
        2_100,
        {"error_type": "SyncError", "error_message": "the xylophone endpoint refused the batch"},
    ),
    ("invoice-sync", 30, "success", 1_500, {}),
    ("invoice-sync", 20, "success", 1_400, {}),
    ("invoice-sync", 12, "success", 1_600, {}),
    (
        "invoice-sync",
        10,
        "failed",
        2_500,
        {"error_type": "ConnectionError", "error_message": "connection reset by peer"},
    ),
    ("invoice-sync", 8, "success", 1_300, {}),
    ("invoice-sync", 4, "success", 1_200, {}),
    ("invoice-sync", 3, "success", 1_250, {}),
    ("invoice-sync", 2, "success", 1_350, {}),
    (
        "invoice-sync",
        0.5,
        "failed",
        2_000,
        {"error_type": "SyncError", "error_message": "xylophone endpoint timed out"},
    ),
    (
        "report-mailer",
        70,
        "failed",
        9_000,
        {"error_type": "SMTPError", "error_message": "quota exceeded"},
    ),
    ("report-mailer", 46, "success", 8_000, {}),
    ("report-mailer", 22, "success", 7_500, {}),
    ("cache-warmer", 5.5, "success", 300, {}),
    ("cache-warmer", 4.5, "success", 320, {}),
    ("cache-warmer", 3.5, "success", 310, {}),
    ("cache-warmer", 2.5, "success", 290, {}),
    ("cache-warmer", 1.5, "success", 305, {}),
    ("legacy-export", 60, "success", 55_000, {}),
    (
        "data-cleanup",
        14,
        "failed",
        4_200,
        {
            "exit_code": 1,
            "host": "worker-7",
            "attempt": 2,
            "app_version": "2.4.1",
            "job_version": "v17",
            "sdk_version": "chronos-python 0.3.0",
            "trigger_id": "trg_manual_0001",
            "labels": {"region": "eu-west", "shard": "7"},
            "metadata": {"batch": 42},
            "stdout": "scanning partition 7\nmarmalade checkpoint reached\n120 rows expired",
            "stderr": "warning: quokka cache is cold",
            "error_type": "ValueError",
            "error_message": "xylophone tuning failed for partition 7",
            "error_stack": STACK,
            "code_snippet": CODE,
            "code_language": "python",
        },
    ),
    ("data-cleanup", 1.2, "success", 3_900, {"stdout": "120 rows expired"}),
]

#: invoice-sync's release v42 went out 9 hours ago: its runs report their job version.
ACME_RUNS = [(job, hours, status, ms, {**extra, "job_version": "v42" if hours < 9 else "v41"})
             if job == "invoice-sync" else (job, hours, status, ms, extra)
             for job, hours, status, ms, extra in ACME_RUNS]  # fmt: skip

ZETA_JOBS = [
    ("zeta-etl", "Zeta ETL", "Loads the zebrafish survey", "*/10 * * * *", True, None, []),
    ("zeta-audit", "Zeta audit", "Audits zebrafish tanks", "0 6 * * *", True, None, []),
]  # fmt: skip
ZETA_RUNS: list[tuple[str, float, str, int, dict]] = [
    ("zeta-etl", 3, "success", 900, {"stdout": "stdout x zebrafish loaded"}),
    (
        "zeta-etl",
        1,
        "failed",
        1_100,
        {
            "error_type": "EtlError",
            "error_message": "zebrafish overflow",
            "stdout": "stdout x zebrafish * | @stdout:{x}",
            "stderr": "zebrafish",
        },
    ),
    ("zeta-audit", 6, "success", 700, {"stdout": "zebrafish tanks audited"}),
]


def _same_local_day(start: int, end: int) -> bool:
    zone = ZoneInfo(PARIS)
    day = [datetime.fromtimestamp(t / 1000, UTC).astimezone(zone).date() for t in (start, end)]
    return day[0] == day[1]


def _execution(tenant: str, exec_id: str, job_id: str, started: int, status: str,
               duration: int, extra: dict) -> Execution:  # fmt: skip
    # A run's bar (by finish) and its search results (by start) agree: no run spans a
    # local midnight.
    while not _same_local_day(started, started + duration):
        started -= duration + MINUTE
    return Execution(tenant_id=tenant, exec_id=exec_id, job_id=job_id, status=status,
                     started_at=started, finished_at=started + duration, duration_ms=duration,
                     received_at=started + duration, **extra)  # fmt: skip


def _seed_tenant(backend, seed: Seed, tenant: str, username: str, admin: bool,
                 jobs: list, runs: list, prefix: str) -> None:  # fmt: skip
    backend.create_user(
        User(
            username=username,
            tenant_id=tenant,
            is_admin=admin,
            password_hash=hash_password(PASSWORD),
            created_at=seed.now,
        )
    )
    records = [Job(tenant_id=tenant, id=jid, name=name, description=desc, schedule=sched,
                   timezone=PARIS, enabled=enabled, max_runtime_seconds=max_rt, tags=tags,
                   version="1.0")
               for jid, name, desc, sched, enabled, max_rt, tags in jobs]  # fmt: skip
    backend.upsert_jobs(tenant, records, seed.now - 4 * DAY)
    executions = [
        _execution(tenant, f"{prefix}-{i:03d}-{jid}", jid, seed.now - int(hours_ago * HOUR),
                   status, duration, extra)
        for i, (jid, hours_ago, status, duration, extra) in enumerate(runs, 1)
    ]  # fmt: skip
    # Oldest first, as they would have arrived: each job's state follows its latest run.
    executions.sort(key=lambda e: e.started_at)
    backend.write_executions(tenant, executions)
    key = generate_api_key(tenant, username, "browser-tests", ("ingest", "read"), seed.now)
    backend.create_api_key(key.record)
    seed.jobs[tenant] = backend_jobs = [backend.get_job(tenant, j.id) for j in records]
    assert all(backend_jobs)
    seed.executions[tenant] = executions
    seed.ingest_keys[tenant] = key.plaintext


@pytest.fixture
def seeded(app: Flask) -> Seed:
    """acme (alice, admin) and zeta (zed) with jobs and executions, through the backend."""
    backend = get_state(app).backend()
    seed = Seed(now=now_ms())
    _seed_tenant(backend, seed, "acme", "alice", True, ACME_JOBS, ACME_RUNS, "exa")
    _seed_tenant(backend, seed, "zeta", "zed", False, ZETA_JOBS, ZETA_RUNS, "exz")
    seed.rich_exec_id = next(e.exec_id for e in seed.executions["acme"]
                             if e.code_snippet)  # fmt: skip
    return seed
