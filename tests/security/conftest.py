"""Fixtures of the security suite: two tenants whose ids collide, and a browser-like session.

``walled`` builds tenant A and tenant B on the real Redis Stack, through the API as their apps
would. A owns a job, a run and a fired trigger for every id in ``HOSTILE`` (ids that mean
something to RediSearch, to URLs or to key names); B owns the same for the ids in ``SHARED``,
so that B asking for "its" job ``a|b`` must get its own and never A's. Everything A wrote
carries the word ``MARK`` (names, descriptions, output, error, host, version, tags, labels,
metadata), which therefore must never appear in anything B is answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from chronos.accounts import generate_api_key, hash_password
from chronos.extension import get_state
from chronos.models import Trigger, User
from chronos.scheduler.scanner import trigger_id_for
from chronos.timeutil import now_ms

PASSWORD = "correct horse battery"
MARK = "zqalpha"
HOSTILE = [
    "a|b",
    "*",
    "{x}",
    "\\",
    ":",
    "%2F",
    "a b",
    "@x:{y}",
    "-x",
    "é",
    "日本",
    "x/y",
    "job:daily",
    "(a|b)",
    '"q"',
    "$p0",
]
#: The ids B uses too, for its own jobs, runs and triggers.
SHARED = HOSTILE[::2]
A_ONLY = [i for i in HOSTILE if i not in SHARED]
ALL_SCOPES = ("ingest", "read", "admin")
HOUR = 3_600_000


def url_id(value: str) -> str:
    """``value`` as one path segment (``/`` and ``%`` encoded too)."""
    return quote(value, safe="")


class Browser:
    """A test client used as a browser: ``Browser(app).login("bob")`` keeps its session."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()

    def csrf(self) -> str:
        self.client.get("/login")
        with self.client.session_transaction() as session:
            return str(session["csrf"])

    def login(self, username: str, password: str = PASSWORD) -> Browser:
        form = {"username": username, "password": password, "csrf_token": self.csrf()}
        answer = self.client.post("/login", data=form)
        assert answer.status_code == 303, answer.text
        return self

    def get(self, path: str, **query: Any) -> TestResponse:
        return self.client.get(path, query_string=query)

    def post(self, path: str, **form: Any) -> TestResponse:
        return self.client.post(path, data={**form, "csrf_token": self.csrf()})


def make_user(
    app: Flask, username: str, tenant: str, admin: bool = True, password: str = PASSWORD
) -> None:
    get_state(app).backend().create_user(
        User(
            username=username,
            tenant_id=tenant,
            is_admin=admin,
            password_hash=hash_password(password),
        )
    )


def make_key(app: Flask, tenant: str, username: str, *scopes: str) -> tuple[str, str]:
    """A new key's ``(plaintext, key id)``."""
    new = generate_api_key(tenant, username, "security", scopes or ALL_SCOPES, now_ms())
    get_state(app).backend().create_api_key(new.record)
    return new.plaintext, new.record.key_id


@dataclass
class Walled:
    app: Flask
    a_key: str
    b_key: str
    a_key_id: str
    b_key_id: str
    #: Trigger ids by (tenant, job id).
    triggers: dict[tuple[str, str], str] = field(default_factory=dict)
    started: int = 0

    def a(self) -> dict[str, str]:
        return Tenants.headers(self.a_key)

    def b(self) -> dict[str, str]:
        return Tenants.headers(self.b_key)


def _job(job_id: str, word: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "name": f"{word} {job_id}",
        "description": f"owned by {word}",
        "schedule": "0 3 * * *",
        "tags": [word],
        "version": f"{word}-v",
        "metadata": {"owner": word},
    }


def _run(exec_id: str, job_id: str, started: int, word: str, status: str) -> dict[str, Any]:
    return {
        "execId": exec_id,
        "jobId": job_id,
        "status": status,
        "startedAt": started,
        "finishedAt": started + 800,
        "durationMs": 800,
        "stdout": f"{word} out",
        "errorMessage": f"{word} error",
        "errorType": f"{word.title()}Error",
        "host": f"{word}-host",
        "jobVersion": f"{word}-v",
        "appVersion": f"{word}-app",
        "labels": {"who": word},
        "metadata": {"who": word},
    }


def _send(client: FlaskClient, key: str, path: str, body: dict[str, Any]) -> None:
    answer = client.post(path, json=body, headers=Tenants.headers(key))
    assert answer.status_code == 200 and not answer.get_json()["rejected"], answer.text


@pytest.fixture
def walled(app: Flask, client: FlaskClient) -> Walled:
    """Tenants ``tenant-a`` (user ``alice``) and ``tenant-b`` (user ``bob``), both admins with
    all-scope keys, their colliding jobs, runs and triggers."""
    make_user(app, "alice", "tenant-a", password="alice's own password")
    make_user(app, "bob", "tenant-b")
    a_key, a_key_id = make_key(app, "tenant-a", "alice")
    b_key, b_key_id = make_key(app, "tenant-b", "bob")
    walled = Walled(app, a_key, b_key, a_key_id, b_key_id, started=now_ms() - HOUR)
    started = walled.started
    _send(client, a_key, "/api/ingest/jobs/register", {"jobs": [_job(i, MARK) for i in HOSTILE]})
    _send(
        client,
        a_key,
        "/api/ingest/executions/batch",
        {"executions": [_run(i, i, started + n, MARK, "failed") for n, i in enumerate(HOSTILE)]},
    )
    _send(client, b_key, "/api/ingest/jobs/register", {"jobs": [_job(i, "bravo") for i in SHARED]})
    _send(
        client,
        b_key,
        "/api/ingest/executions/batch",
        {
            "executions": [
                _run(i, i, started + 100 + n, "bravo", "success") for n, i in enumerate(SHARED)
            ]
        },
    )
    backend, instant = get_state(app).backend(), now_ms() - 60_000
    fired = [("tenant-a", i) for i in HOSTILE] + [("tenant-b", i) for i in SHARED]
    for tenant, job_id in fired:
        walled.triggers[(tenant, job_id)] = trigger_id_for(tenant, job_id, instant)
    backend.enqueue_triggers(
        [
            Trigger(
                tenant, job_id, walled.triggers[(tenant, job_id)], instant, instant, instant + HOUR
            )
            for tenant, job_id in fired
        ]
    )
    return walled
