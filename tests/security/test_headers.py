"""Security headers on every page, logged in and out, error pages included; and no inline
script, event handler or style in what the pages actually render (charts and highlighted code
included), so the Content-Security-Policy can forbid them.

``chronos.security`` sets the headers; ``tests/test_dashboard_auth.py`` greps the templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from chronos import create_app
from chronos.embedded import free_port
from chronos.extension import get_state
from chronos.timeutil import now_ms

from .conftest import Browser, make_user

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SNIPPET = "def handler():\n    print('<script>alert(1)</script>')  # style=x onclick=y\n"


def policy(response: TestResponse) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    directives = [d.split() for d in header.split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


def assert_hardened(response: TestResponse, what: str) -> None:
    csp = policy(response)
    assert csp, f"{what}: no Content-Security-Policy"
    scripts = csp.get("script-src", csp.get("default-src"))
    styles = csp.get("style-src", csp.get("default-src"))
    assert scripts == ["'self'"] and styles == ["'self'"], (what, csp)
    assert csp["default-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"], what
    assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp), what
    assert csp.get("base-uri") == ["'self'"] and csp.get("form-action") == ["'self'"], what
    assert response.headers["X-Frame-Options"] == "DENY", what
    assert response.headers["X-Content-Type-Options"] == "nosniff", what
    assert response.headers["Referrer-Policy"] in ("same-origin", "no-referrer"), what


def assert_no_inline_code(html: str, what: str) -> None:
    """Nothing the policy would block: inline scripts, handlers, style attributes or
    elements, ``javascript:`` URLs."""
    for tag in re.findall(r"<script\b[^>]*>", html, re.IGNORECASE):
        assert re.search(r"\bsrc\s*=", tag), f"{what}: inline {tag}"
    for body in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.IGNORECASE | re.DOTALL):
        assert not body.strip(), f"{what}: a script with a body"
    tags = re.findall(r"<[a-zA-Z][^>]*>", html)
    for tag in tags:
        assert not re.search(r"\son[a-z]+\s*=", tag, re.IGNORECASE), f"{what}: handler {tag}"
        assert not re.search(r"\sstyle\s*=", tag, re.IGNORECASE), f"{what}: style= in {tag}"
        assert "javascript:" not in tag.lower(), f"{what}: {tag}"
    assert not re.search(r"<style\b", html, re.IGNORECASE), f"{what}: a <style> element"


@pytest.fixture
def seeded(app: Flask, client: FlaskClient, tenants: Tenants) -> Browser:
    """Bob (an admin of ``acme``) with a job that has runs, a failure with a highlighted code
    snippet and hostile text, and a fired trigger; logged in."""
    key = tenants.key("acme", "ingest", "read")
    job = {"id": "job:<b>", "name": "<script>x</script>", "schedule": "*/5 * * * *"}
    assert (
        client.post(
            "/api/ingest/jobs/register", json={"jobs": [job]}, headers=Tenants.headers(key)
        ).status_code
        == 200
    )
    now = now_ms()
    runs = [
        {
            "execId": f"run-{n}",
            "jobId": "job:<b>",
            "status": "failed" if n % 2 else "success",
            "startedAt": now - n * 3_600_000,
            "finishedAt": now - n * 3_600_000 + 900,
            "stdout": "<img src=x onerror=alert(1)>",
            "errorMessage": 'style="x"',
            "codeSnippet": SNIPPET,
            "codeLanguage": "python",
        }
        for n in range(6)
    ]
    answer = client.post(
        "/api/ingest/executions/batch", json={"executions": runs}, headers=Tenants.headers(key)
    )
    assert answer.status_code == 200 and not answer.get_json()["rejected"]
    make_user(app, "bob", "acme")
    make_user(app, "carol", "acme", admin=False)
    return Browser(app).login("bob")


PAGES = [
    "/",
    "/jobs",
    "/jobs/job%3A%3Cb%3E",
    "/executions/run-1",
    "/search",
    "/search?q=style&status=failed",
    "/analytics",
    "/analytics?range=90d&bucket=week",
    "/keys",
    "/login",
    "/jobs?health=failing&tag=x&q=y",
]


def test_every_dashboard_page_is_covered(app: Flask) -> None:
    pages = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("dashboard.") and "GET" in (rule.methods or ())
    }
    assert pages == {
        "/",
        "/jobs",
        "/jobs/<path:job_id>",
        "/executions/<path:exec_id>",
        "/search",
        "/analytics",
        "/keys",
        "/login",
    }, "add new pages to PAGES"


def test_pages_logged_in_are_hardened_and_hold_no_inline_code(seeded: Browser) -> None:
    for path in PAGES:
        page = seeded.client.get(path)
        expected = 302 if path == "/login" else 200  # logged in: /login sends you on
        assert page.status_code == expected, (path, page.status_code)
        assert_hardened(page, path)
        assert_no_inline_code(page.get_data(as_text=True), path)
    for page in ("/jobs/job%3A%3Cb%3E", "/executions/run-1", "/analytics"):
        text = seeded.client.get(page).text
        assert "<svg" in text or "highlight" in text, f"{page}: charts or code expected"
    created = seeded.post("/keys", name="k", scopes="read")  # the page that shows a new key
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    assert_hardened(created, "key created")
    assert_no_inline_code(created.text, "key created")


def test_pages_logged_out_are_hardened(client: FlaskClient) -> None:
    for path in [*PAGES, "/static/live.js", "/static/app.css", "/healthz"]:
        with client.get(path, headers=HTML) as answer:
            assert_hardened(answer, path)
            assert answer.status_code in (200, 302, 503), (path, answer.status_code)
            if answer.mimetype == "text/html":
                assert_no_inline_code(answer.get_data(as_text=True), path)


def _errors(app: Flask, bob: Browser) -> Iterator[tuple[str, int, TestResponse]]:
    anonymous = app.test_client()
    yield "unknown page", 404, anonymous.get("/nope", headers=HTML)
    yield "unknown job", 404, bob.client.get("/jobs/none")
    yield "unknown execution", 404, bob.client.get("/executions/none")
    yield "method", 405, bob.client.get("/logout", headers=HTML)  # as a browser asks
    yield "csrf", 400, bob.client.post("/keys", data={"name": "x", "scopes": "read"})
    yield "bad cursor", 422, bob.client.get("/search?cursor=nope")
    yield "form too big", 413, bob.client.post("/keys", data={"name": "x" * (1 << 21)})
    carol = Browser(app).login("carol")
    yield "not an admin", 403, carol.post("/jobs/job%3A%3Cb%3E/enabled", enabled="0")
    for _ in range(10):
        last = Browser(app).post("/login", username="bob", password="wrong")
    yield "login limit", 429, last


def test_error_pages_are_hardened_and_hold_no_inline_code(app: Flask, seeded: Browser) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    for what, status, page in _errors(app, seeded):
        assert page.status_code == status, (what, page.status_code)
        assert page.mimetype == "text/html", what
        assert_hardened(page, what)
        assert_no_inline_code(page.get_data(as_text=True), what)


def test_server_error_and_outage_pages_are_hardened(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(
        {
            "TESTING": False,
            "CHRONOS_BACKEND_URL": down,
            "CHRONOS_DATA_DIR": str(tmp_path / "i"),
            "SECRET_KEY": "k" * 32,
        }
    )

    def broken() -> str:
        raise RuntimeError("an unexpected bug")

    app.add_url_rule("/broken", "broken", broken)  # the real error path, with a real bug
    client = app.test_client()
    try:
        with client.session_transaction() as session:
            session.update(user="bob", tenant="acme", csrf="t")
        for path, status in (("/", 503), ("/jobs", 503), ("/broken", 500)):
            page = client.get(path, headers=HTML)
            assert page.status_code == status and page.mimetype == "text/html", path
            assert_hardened(page, path)
            assert_no_inline_code(page.get_data(as_text=True), path)
            assert "an unexpected bug" not in page.text
        assert client.get("/", headers=HTML).headers["Retry-After"]
    finally:
        get_state(app).close()
