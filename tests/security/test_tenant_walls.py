"""Every route and websocket, walked with tenant B's credentials against tenant A's objects.

``ROUTES`` has one check per (rule, method) of the app's URL map, and
``test_every_route_is_in_the_table`` fails when a route is added without one. Each check uses
B's all-scope API key or B's dashboard session (user ``bob``, an admin) on A's ids (which B
partly shares, see ``conftest``), and asserts a refusal (404) or an answer holding B's data
only: nothing A wrote (``MARK``), none of A's trigger or key ids.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import LiveServer, WSClient
from flask import Flask, url_for
from flask.testing import FlaskClient
from markupsafe import escape
from simple_websocket import Client
from werkzeug.test import TestResponse

from chronos.extension import get_state
from chronos.models import Trigger
from chronos.scheduler.scanner import trigger_id_for
from chronos.timeutil import now_ms

from .conftest import A_ONLY, HOSTILE, MARK, SHARED, Browser, Walled, url_id


@dataclass
class Walk:
    w: Walled
    client: FlaskClient
    request: pytest.FixtureRequest

    @cached_property
    def bob(self) -> Browser:
        return Browser(self.w.app).login("bob")

    @cached_property
    def live(self) -> LiveServer:
        return self.request.getfixturevalue("live")

    def api(self, path: str, **query: Any) -> TestResponse:
        answer = self.client.get(path, query_string=query, headers=self.w.b())
        clean(answer)
        return answer

    def data(self, path: str, **query: Any) -> Any:
        answer = self.api(path, **query)
        assert answer.status_code == 200, (path, query, answer.text)
        return answer.get_json()["data"]

    def a_sees(self, path: str) -> Any:
        answer = self.client.get(path, headers=self.w.a())
        assert answer.status_code == 200, answer.text
        return answer.get_json()["data"]

    def a_secrets(self) -> list[str]:
        """A's ids that B must never be shown, besides anything carrying ``MARK``."""
        a_triggers = [t for (tenant, _), t in self.w.triggers.items() if tenant == "tenant-a"]
        return [MARK, *a_triggers, self.w.a_key_id]

    def a_links(self) -> list[str]:
        """The links a page would hold to A's own jobs and runs (as in its HTML)."""
        with self.w.app.test_request_context():
            return [
                str(escape(url_for(endpoint, **{arg: item_id})))
                for item_id in A_ONLY
                for endpoint, arg in (
                    ("dashboard.job_detail", "job_id"),
                    ("dashboard.execution_detail", "exec_id"),
                )
            ]


def clean(answer: TestResponse, *secrets: str, echoed: Iterable[str] = ()) -> None:
    """The answer is no error of ours and shows nothing of tenant A. ``echoed`` are the query
    values a page repeats in its form fields and links, which are not A's data."""
    assert answer.status_code < 500, answer.text
    text = answer.get_data(as_text=True)
    for value in echoed:
        text = text.replace(f'value="{escape(value)}"', "").replace(urlencode({"": value}), "")
    text = text.lower()
    for secret in (MARK, *secrets):
        assert secret.lower() not in text, f"{secret!r} in {answer.request.path}"


def refused(answer: TestResponse) -> None:
    assert answer.status_code in (403, 404), (answer.request.path, answer.status_code)
    clean(answer)


ROUTES: dict[tuple[str, str], Callable[[Walk], None]] = {}


def route(rule: str, *methods: str) -> Callable[[Callable[[Walk], None]], Callable[[Walk], None]]:
    def register(check: Callable[[Walk], None]) -> Callable[[Walk], None]:
        for method in methods:
            ROUTES[(rule, method)] = check
        return check

    return register


# -- public routes: nothing of any tenant --------------------------------------------------------


@route("/healthz", "GET")
@route("/api/health", "GET")
@route("/api/openapi.json", "GET")
def public_documents(walk: Walk) -> None:
    for path in ("/healthz", "/api/health", "/api/openapi.json"):
        answer = walk.client.get(path, headers=walk.w.b())
        clean(answer, *walk.a_secrets(), "tenant-a")
        assert answer.status_code in (200, 503)


@route("/metrics", "GET")
def metrics(walk: Walk) -> None:
    answer = walk.client.get("/metrics", headers=walk.w.b())
    assert answer.status_code == 200, answer.text
    clean(answer, *walk.a_secrets(), "tenant-a")
    text = answer.get_data(as_text=True)
    assert set(re.findall(r'tenant="([^"]*)"', text)) == {"tenant-b"}
    assert len(set(re.findall(r'job="((?:[^"\\]|\\.)*)"', text))) == len(SHARED)


@route("/static/<path:filename>", "GET")
def static_files(walk: Walk) -> None:
    for name in ("app.css", "live.js"):
        with walk.bob.client.get(f"/static/{name}") as answer:
            assert answer.status_code == 200
            clean(answer)
    for outside in ("../__init__.py", "%2E%2E/config.py", "..%2F..%2Fsetup.cfg", "/etc/passwd"):
        with walk.bob.client.get(f"/static/{outside}", follow_redirects=True) as answer:
            assert answer.status_code == 404, outside


@route("/login", "GET", "POST")
def login(walk: Walk) -> None:
    assert walk.bob.get("/login").status_code == 302  # logged in already: sent on
    intruder = Browser(walk.w.app)
    form = {"username": "alice", "password": "correct horse battery"}  # bob's password
    answer = intruder.post("/login", **form)
    assert answer.status_code == 401
    with intruder.client.session_transaction() as session:
        assert "tenant" not in session
    with walk.bob.client.session_transaction() as session:
        assert (session["user"], session["tenant"]) == ("bob", "tenant-b")


@route("/logout", "POST")
def logout(walk: Walk) -> None:
    assert walk.bob.post("/logout").status_code == 303
    assert walk.bob.get("/").status_code == 302  # back to the login page
    with walk.bob.client.session_transaction() as session:
        assert "tenant" not in session


# -- dashboard pages, as bob ---------------------------------------------------------------------


@route("/", "GET")
def overview(walk: Walk) -> None:
    page = walk.bob.get("/")
    assert page.status_code == 200 and "job:daily" in page.text
    clean(page, *walk.a_secrets(), *walk.a_links())
    kpis = dict(re.findall(r'data-kpi="([a-z]+)">(\d+)<', page.text))
    assert kpis == {"jobs": str(len(SHARED)), "runs": str(len(SHARED))}
    assert "0 failed" in page.text


@route("/jobs", "GET")
def jobs_page(walk: Walk) -> None:
    for query in (
        {},
        {"q": MARK},
        {"tag": MARK},
        {"health": "failing"},
        {"enabled": "yes"},
        {"q": "*"},
        {"tag": "*"},
        {"q": "@tenant:{tenant\\-a}"},
    ):
        page = walk.bob.get("/jobs", **query)
        assert page.status_code == 200, query
        clean(page, *walk.a_secrets(), echoed=query.values())
    assert "bravo" in walk.bob.get("/jobs").text


@route("/jobs/<path:job_id>", "GET")
def job_page(walk: Walk) -> None:
    for job_id in A_ONLY:
        refused(walk.bob.get(f"/jobs/{url_id(job_id)}"))
    for job_id in SHARED:
        page = walk.bob.get(f"/jobs/{url_id(job_id)}")
        assert page.status_code == 200 and "owned by bravo" in page.text, job_id
        clean(page, *walk.a_secrets())


@route("/jobs/<path:job_id>/enabled", "POST")
def job_enabled(walk: Walk) -> None:
    for job_id in A_ONLY:
        refused(walk.bob.post(f"/jobs/{url_id(job_id)}/enabled", enabled="0"))
    for job_id in SHARED:
        assert walk.bob.post(f"/jobs/{url_id(job_id)}/enabled", enabled="0").status_code == 302
        assert walk.data(f"/api/jobs/{url_id(job_id)}")["enabled"] is False
    for job_id in HOSTILE:  # A's jobs, shared ids included, are untouched
        assert walk.a_sees(f"/api/jobs/{url_id(job_id)}")["enabled"] is True, job_id


@route("/executions/<path:exec_id>", "GET")
def execution_page(walk: Walk) -> None:
    for exec_id in A_ONLY:
        refused(walk.bob.get(f"/executions/{url_id(exec_id)}"))
    for exec_id in SHARED:
        page = walk.bob.get(f"/executions/{url_id(exec_id)}")
        assert page.status_code == 200 and "bravo out" in page.text
        clean(page, *walk.a_secrets())


@route("/search", "GET")
def search_page(walk: Walk) -> None:
    queries: list[dict[str, str]] = [
        {"q": MARK},
        {"q": "error"},
        {"host": f"{MARK}-host"},
        {"version": f"{MARK}-v"},
        {"status": "failed"},
    ]
    queries += [{"job": job_id} for job_id in HOSTILE] + [{"q": job_id} for job_id in HOSTILE]
    for query in queries:
        page = walk.bob.get("/search", **query)
        assert page.status_code == 200, query
        clean(page, *walk.a_secrets(), echoed=query.values())
    assert "bravo" in walk.bob.get("/search", q="error").text


@route("/analytics", "GET")
def analytics_page(walk: Walk) -> None:
    for query in ({}, *({"job": job_id} for job_id in HOSTILE), {"range": "90d"}):
        page = walk.bob.get("/analytics", **query)
        assert page.status_code == 200, query
        clean(page, *walk.a_secrets(), echoed=query.values())
        if "job" not in query:  # the table: B's jobs only
            clean(page, *walk.a_links())
            assert "job:daily" in page.text


@route("/keys", "GET")
def keys_page(walk: Walk) -> None:
    page = walk.bob.get("/keys")
    assert page.status_code == 200 and walk.w.b_key_id in page.text
    clean(page, *walk.a_secrets())


@route("/keys", "POST")
def create_key(walk: Walk) -> None:
    page = walk.bob.post("/keys", name="bob's new key", scopes=["read", "admin"])
    assert page.status_code == 201
    clean(page, *walk.a_secrets())
    backend = get_state(walk.w.app).backend()
    created = [k for k in backend.list_api_keys("tenant-b") if k.name == "bob's new key"]
    assert len(created) == 1 and created[0].key_id in page.text
    assert not [k for k in backend.list_api_keys("tenant-a") if k.name == "bob's new key"]


@route("/keys/<key_id>/revoke", "POST")
def revoke_key(walk: Walk) -> None:
    for key_id in (walk.w.a_key_id, *HOSTILE):
        refused(walk.bob.post(f"/keys/{url_id(key_id)}/revoke"))
    assert walk.a_sees("/api/jobs")  # A's key still works


# -- the read API and analytics, with B's key (and B's session where it is accepted) -------------


@route("/api/jobs", "GET")
def list_jobs(walk: Walk) -> None:
    assert [j["id"] for j in walk.data("/api/jobs", limit=1000)] == SHARED
    for query in ({"tag": MARK}, {"q": MARK}, {"q": "*"}, {"tag": "*"}, {"health": "failing"}):
        assert [j["id"] for j in walk.data("/api/jobs", **query)] in ([], SHARED), query
    assert walk.data("/api/jobs", tag=MARK) == [] and walk.data("/api/jobs", q=MARK) == []


@route("/api/jobs/<path:job_id>", "GET")
def get_job(walk: Walk) -> None:
    for job_id in A_ONLY:
        refused(walk.api(f"/api/jobs/{url_id(job_id)}"))
    for job_id in SHARED:
        job = walk.data(f"/api/jobs/{url_id(job_id)}")
        assert (job["id"], job["description"]) == (job_id, "owned by bravo")


@route("/api/jobs/<path:job_id>/executions", "GET")
def job_executions(walk: Walk) -> None:
    for job_id in HOSTILE:
        runs = walk.data(f"/api/jobs/{url_id(job_id)}/executions")
        assert [r["execId"] for r in runs] == ([job_id] if job_id in SHARED else []), job_id
        assert walk.data(f"/api/jobs/{url_id(job_id)}/executions", q=MARK) == []


@route("/api/jobs/<path:job_id>/triggers", "GET")
def job_triggers(walk: Walk) -> None:
    for job_id in HOSTILE:
        found = [t["triggerId"] for t in walk.data(f"/api/jobs/{url_id(job_id)}/triggers")]
        mine = [walk.w.triggers[("tenant-b", job_id)]] if job_id in SHARED else []
        assert found == mine, job_id


@route("/api/executions", "GET")
def list_executions(walk: Walk) -> None:
    runs = walk.data("/api/executions", limit=1000)
    assert sorted(r["execId"] for r in runs) == sorted(SHARED)
    for query in (
        {"q": MARK},
        {"host": f"{MARK}-host"},
        {"version": f"{MARK}-v"},
        {"status": "failed"},
        *({"jobId": job_id} for job_id in A_ONLY),
    ):
        assert walk.data("/api/executions", **query) == [], query


@route("/api/executions/<path:exec_id>", "GET")
def get_execution(walk: Walk) -> None:
    for exec_id in A_ONLY:
        refused(walk.api(f"/api/executions/{url_id(exec_id)}"))
    for exec_id in SHARED:
        run = walk.data(f"/api/executions/{url_id(exec_id)}")
        assert (run["execId"], run["stdout"], run["status"]) == (exec_id, "bravo out", "success")


def _as_key_and_session(walk: Walk, path: str, **query: Any) -> list[Any]:
    by_key = walk.data(path, **query)
    by_session = walk.bob.get(path, **query)
    clean(by_session)
    assert by_session.status_code == 200, by_session.text
    return [by_key, by_session.get_json()["data"]]


@route("/api/analytics/summary", "GET")
def analytics_summary(walk: Walk) -> None:
    for data in _as_key_and_session(walk, "/api/analytics/summary"):
        assert data["last24h"]["runs"] == len(SHARED) and data["last24h"]["failure"] == 0
        assert data["jobs"]["total"] == len(SHARED)


@route("/api/analytics/trends", "GET")
def analytics_trends(walk: Walk) -> None:
    for data in _as_key_and_session(walk, "/api/analytics/trends"):
        assert sum(b["runs"] for b in data["buckets"]) == len(SHARED)
        assert sum(b["failure"] for b in data["buckets"]) == 0
    for job_id in HOSTILE:
        for data in _as_key_and_session(walk, "/api/analytics/trends", jobId=job_id):
            runs = sum(b["runs"] for b in data["buckets"])
            assert runs == (1 if job_id in SHARED else 0), job_id


@route("/api/analytics/versions", "GET")
def analytics_versions(walk: Walk) -> None:
    for job_id in HOSTILE:
        for by in ("job", "app"):
            for data in _as_key_and_session(walk, "/api/analytics/versions", jobId=job_id,
                                            by=by, range="7d"):  # fmt: skip
                runs = sum(v["runs"] for v in data["versions"])
                assert runs == (1 if job_id in SHARED else 0), (job_id, by)


@route("/api/analytics/jobs", "GET")
def analytics_jobs(walk: Walk) -> None:
    for data in _as_key_and_session(walk, "/api/analytics/jobs", range="7d"):
        assert sorted(row["id"] for row in data["jobs"]) == sorted(SHARED)
        assert sum(row["runs"] for row in data["jobs"]) == len(SHARED)


# -- writes with B's key land in B's tenant only -------------------------------------------------


@route("/api/settings/retention", "GET", "PUT")
def retention_settings(walk: Walk) -> None:
    path, client = "/api/settings/retention", walk.client
    mine = client.put(path, json={"executionDays": 3}, headers=walk.w.a())
    assert mine.status_code == 200 and mine.get_json()["data"]["executionDays"] == 3
    assert walk.data(path)["overrides"]["executionDays"] is None  # A's override is A's
    answer = client.put(path, json={"executionDays": 9}, headers=walk.w.b())
    clean(answer)
    assert answer.status_code == 200 and answer.get_json()["data"]["executionDays"] == 9
    assert walk.a_sees(path)["executionDays"] == 3


def _post(walk: Walk, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = walk.client.post(path, json=body, headers=walk.w.b())
    clean(answer, *walk.a_secrets())
    assert answer.status_code == 200, answer.text
    return answer.get_json()


def _a_is_untouched(walk: Walk) -> None:
    for item_id in HOSTILE:
        assert walk.a_sees(f"/api/jobs/{url_id(item_id)}")["description"] == f"owned by {MARK}"
        run = walk.a_sees(f"/api/executions/{url_id(item_id)}")
        assert (run["status"], run["stdout"]) == ("failed", f"{MARK} out")


@route("/api/ingest/jobs/register", "POST")
def register_jobs(walk: Walk) -> None:
    answer = _post(
        walk,
        "/api/ingest/jobs/register",
        {"jobs": [{"id": i, "description": "b's"} for i in HOSTILE]},
    )
    outcomes = {r["id"]: r["outcome"] for r in answer["results"]}
    assert outcomes == {i: "updated" if i in SHARED else "created" for i in HOSTILE}
    _a_is_untouched(walk)


def _b_run(exec_id: str) -> dict[str, Any]:
    return {
        "execId": exec_id,
        "jobId": exec_id,
        "status": "success",
        "startedAt": now_ms() - 1000,
        "finishedAt": now_ms(),
    }


@route("/api/ingest/executions/batch", "POST")
def ingest_batch(walk: Walk) -> None:
    answer = _post(
        walk, "/api/ingest/executions/batch", {"executions": [_b_run(i) for i in A_ONLY]}
    )
    assert [r["outcome"] for r in answer["results"]] == ["created"] * len(A_ONLY)
    _a_is_untouched(walk)


@route("/api/ingest/executions", "POST")
def ingest_one(walk: Walk) -> None:
    for exec_id in A_ONLY:
        assert _post(walk, "/api/ingest/executions", _b_run(exec_id))["outcome"] == "created"
    _a_is_untouched(walk)


# -- websockets ----------------------------------------------------------------------------------


def _connect(walk: Walk, path: str, headers: dict[str, str]) -> Client:
    return WSClient.connect(walk.live.url.replace("http://", "ws://") + path, headers=headers)


def _drain(ws: Client, seconds: float, until: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The messages received within ``seconds``, stopping early after one ``until`` accepts."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        raw = ws.receive(timeout=left)
        if raw is None:
            break
        got.append(raw)
        if until(json.loads(raw)):
            deadline = min(deadline, time.monotonic() + 0.5)  # a little longer for stragglers
    return got


@route("/ws/live", "GET")
def live_socket(walk: Walk) -> None:
    cookie = walk.bob.client.get_cookie("session")
    assert cookie is not None
    sockets = [
        _connect(walk, "/ws/live", walk.w.b()),
        _connect(walk, "/ws/live", {"Cookie": f"session={cookie.value}"}),
    ]
    try:
        for ws in sockets:
            assert json.loads(ws.receive(timeout=5))["type"] == "hello"
        time.sleep(0.3)  # the process's subscription comes up
        client = walk.client
        for n, job_id in enumerate(HOSTILE):  # A writes on every id, B then on one
            client.post("/api/ingest/executions", json=_run_of_a(job_id, n), headers=walk.w.a())
        client.post(
            "/api/ingest/jobs/register",
            json={"jobs": [{"id": HOSTILE[0], "description": f"{MARK} again"}]},
            headers=walk.w.a(),
        )
        assert _post(walk, "/api/ingest/executions", _b_run("b-live"))["outcome"] == "created"
        for ws in sockets:
            got = _drain(ws, 5, lambda m: m.get("data", {}).get("execId") == "b-live")
            assert any('"b-live"' in raw for raw in got), got
            for raw in got:
                assert MARK not in raw.lower() and "zq-" not in raw, raw
    finally:
        for ws in sockets:
            ws.close()


def _run_of_a(job_id: str, n: int) -> dict[str, Any]:
    return {
        "execId": f"zq-{n}",
        "jobId": job_id,
        "status": "failed",
        "startedAt": now_ms() - 1000,
        "errorMessage": MARK,
    }


@route("/ws/runner", "GET")
def runner_socket(walk: Walk) -> None:
    ws = _connect(walk, "/ws/runner", walk.w.b())
    try:
        ws.send(json.dumps({"type": "hello", "jobs": HOSTILE, "runner": "bob"}))
        assert json.loads(ws.receive(timeout=5))["type"] == "ready"
        instant = now_ms()
        fresh = [("tenant-a", i) for i in HOSTILE] + [("tenant-b", i) for i in SHARED]
        backend = get_state(walk.w.app).backend()
        backend.enqueue_triggers(
            [
                Trigger(t, j, trigger_id_for(t, j, instant), instant, instant, instant + 60_000)
                for t, j in fresh
            ]
        )
        b_fresh = {trigger_id_for("tenant-b", j, instant) for j in SHARED}
        seen: set[str] = set()

        def all_of_b(message: dict[str, Any]) -> bool:
            if message.get("type") == "job:trigger":
                seen.add(message["triggerId"])
            return b_fresh <= seen

        got = _drain(ws, 8, all_of_b)
        triggers = [json.loads(raw) for raw in got]
        b_ids = {t for (tenant, _), t in walk.w.triggers.items() if tenant == "tenant-b"}
        delivered = {m["triggerId"] for m in triggers if m["type"] == "job:trigger"}
        assert b_fresh <= delivered <= b_fresh | b_ids, delivered
        a_fresh = {trigger_id_for("tenant-a", j, instant) for j in HOSTILE}
        assert not delivered & (a_fresh | set(walk.a_secrets()))
    finally:
        ws.close()


# -- the walk ------------------------------------------------------------------------------------


def test_every_route_is_in_the_table(app: Flask) -> None:
    found = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    missing = sorted(found - set(ROUTES))
    assert not missing, f"add a cross-tenant check to ROUTES for {missing}"
    assert not set(ROUTES) - found, "ROUTES names routes the app does not have"


@pytest.mark.parametrize(("rule", "method"), sorted(ROUTES))
def test_tenant_b_never_reaches_tenant_a(
    rule: str, method: str, walled: Walled, client: FlaskClient, request: pytest.FixtureRequest
) -> None:
    ROUTES[(rule, method)](Walk(walled, client, request))
