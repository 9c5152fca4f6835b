"""The dashboard's foundation on the real Redis Stack: login and logout, CSRF on every form,
login rate limits, API-key management walled by tenant, HTML errors, security headers and
cookie flags, and the live websocket accepting a dashboard session."""

from __future__ import annotations

import contextlib
import gc
import json
import re
import time
import warnings
from pathlib import Path

import pytest
from conftest import LiveServer, Tenants, WSClient
from flask import Flask
from flask.testing import FlaskClient
from simple_websocket import Client, ConnectionClosed
from simple_websocket.errors import ConnectionError as SimpleWebsocketError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from chronos import config, create_app
from chronos.accounts import hash_password
from chronos.blueprints.dashboard import auth as dashboard_auth
from chronos.extension import get_state
from chronos.models import User
from chronos.security import CONTENT_SECURITY_POLICY

PASSWORD = "correct horse battery"
TEMPLATES = Path(__file__).resolve().parent.parent / "chronos" / "templates"
KEY_RE = re.compile(r"chr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


class Dashboard:
    """Logs a test client in and out the way a browser does: ``dash.login("alice")``."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    def user(self, username: str, tenant: str, admin: bool = False) -> User:
        user = User(username=username, tenant_id=tenant, is_admin=admin,
                    password_hash=hash_password(PASSWORD))  # fmt: skip
        return get_state(self.app).backend().create_user(user)

    def csrf(self) -> str:
        """The session's token, as the login page or any page's forms carry it."""
        self.client.get("/login")
        with self.client.session_transaction() as session:
            return session["csrf"]

    def login(self, username: str, password: str = PASSWORD, next: str | None = None,
              headers: dict[str, str] | None = None) -> TestResponse:  # fmt: skip
        form = {"username": username, "password": password, "csrf_token": self.csrf()}
        if next is not None:
            form["next"] = next
        return self.client.post("/login", data=form, headers=headers)

    def post(self, path: str, **form: object) -> TestResponse:
        return self.client.post(path, data={**form, "csrf_token": self.csrf()})


@pytest.fixture
def dash(app: Flask, client: FlaskClient) -> Dashboard:
    return Dashboard(app, client)


def error_of(response: TestResponse) -> str | None:
    match = re.search(r'<p class="error"[^>]*>([^<]*)</p>', response.text)
    return match.group(1) if match else None


# -- logging in and out ------------------------------------------------------------------------


def test_login_sets_the_session_and_lands_on_next(dash: Dashboard) -> None:
    dash.user("alice", "acme", admin=True)
    page = dash.client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    answer = dash.login("alice", next="/keys?x=1")
    assert answer.status_code == 303 and answer.location == "/keys?x=1"
    with dash.client.session_transaction() as session:
        assert (session["user"], session["tenant"], session["admin"]) == ("alice", "acme", True)
        assert session.permanent and session["csrf"]
    keys = dash.client.get("/keys")
    assert keys.status_code == 200 and "alice" in keys.text
    assert dash.client.get("/login").location == "/"  # logged in already


def test_wrong_password_and_unknown_user_get_the_same_answer(dash: Dashboard, monkeypatch) -> None:
    dash.user("alice", "acme")
    checked: list[str] = []
    real = dashboard_auth.verify_password

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(dashboard_auth, "verify_password", spy)
    bad_password = dash.login("alice", "not the password")
    unknown_user = dash.login("mallory", PASSWORD)
    assert bad_password.status_code == unknown_user.status_code == 401
    assert error_of(bad_password) == error_of(unknown_user) == "wrong username or password"
    assert len(checked) == 2 and checked[1] == dashboard_auth.DUMMY_HASH  # same work for both
    with dash.client.session_transaction() as session:
        assert "user" not in session
    assert 'value="mallory"' in unknown_user.text  # the username is kept, escaped


@pytest.mark.parametrize("target", [
    "//evil.com", "https://evil.com", "http://evil.com/keys", "/\\evil.com", "/\t/evil.com",
    "javascript:alert(1)", "keys", "",
])  # fmt: skip
def test_login_refuses_off_site_next(dash: Dashboard, target: str) -> None:
    dash.user("alice", "acme")
    answer = dash.login("alice", next=target)
    assert answer.status_code == 303 and answer.location == "/"


@pytest.mark.parametrize("path", ["/", "/jobs", "/search", "/analytics", "/keys"])
def test_pages_redirect_to_login_without_a_session(client: FlaskClient, path: str) -> None:
    answer = client.get(path + "?q=a b")
    assert answer.status_code == 302
    assert answer.location.startswith("/login?next=")
    assert "q%3Da" in answer.location or "q=a" in answer.location


def test_logout_requires_csrf(dash: Dashboard) -> None:
    dash.user("alice", "acme")
    dash.login("alice")
    refused = dash.client.post("/logout")
    assert refused.status_code == 400 and "the form expired, reload and retry" in refused.text
    assert dash.client.get("/keys").status_code == 200  # still logged in
    answer = dash.post("/logout")
    assert answer.status_code == 303 and answer.location == "/login"
    assert dash.client.get("/keys").status_code == 302


def test_every_dashboard_post_checks_csrf(app: Flask, dash: Dashboard) -> None:
    dash.user("alice", "acme", admin=True)
    dash.login("alice")
    posts = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("dashboard.") and "POST" in (rule.methods or ()):
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<{arg}>", "0123456789ab").replace(
                    f"<path:{arg}>", "job-x")
            posts.append(path)
    assert {"/login", "/logout", "/keys", "/keys/0123456789ab/revoke"} <= set(posts)
    for path in posts:
        for form in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
            answer = dash.client.post(path, data={"username": "alice", "password": PASSWORD,
                                                  "name": "k", "scopes": "read", **form})
            assert answer.status_code == 400, (path, form)
            assert answer.mimetype == "text/html"
            assert "the form expired, reload and retry" in answer.text
    assert get_state(app).backend().list_api_keys("acme") == []


def test_a_token_from_another_session_is_refused(app: Flask, dash: Dashboard) -> None:
    dash.user("alice", "acme")
    stolen = Dashboard(app, app.test_client()).csrf()
    answer = dash.client.post("/login", data={"username": "alice", "password": PASSWORD,
                                              "csrf_token": stolen})  # fmt: skip
    assert answer.status_code == 400


def away_from_window_edge(margin_s: float = 15.0) -> None:
    """Login limits count in fixed 15-minute windows: start a counting test well inside one."""
    window_s = dashboard_auth.WINDOW_MS / 1000
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.1)


def test_login_is_rate_limited_per_username(dash: Dashboard) -> None:
    away_from_window_edge()
    dash.user("alice", "acme")
    for _ in range(10):
        assert dash.login("alice", "wrong").status_code == 401
    limited = dash.login("alice", PASSWORD)  # even the right password, until the window ends
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 15 * 60
    assert limited.mimetype == "text/html" and "too many login attempts" in limited.text
    with dash.client.session_transaction() as session:
        assert "user" not in session
    dash.user("bob", "acme")
    assert dash.login("bob").status_code == 303  # another user is not locked out


def test_login_is_rate_limited_per_client_address(dash: Dashboard) -> None:
    away_from_window_edge()
    for n in range(30):
        assert dash.login(f"nobody-{n}", "wrong").status_code == 401
    assert dash.login("nobody-else", "wrong").status_code == 429


def test_forwarded_for_counts_only_behind_a_trusted_proxy(redis_stack_url: str, key_prefix: str,
                                                         tmp_path: Path) -> None:  # fmt: skip
    app = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": redis_stack_url,
                      "CHRONOS_KEY_PREFIX": key_prefix, "CHRONOS_TRUST_PROXY": True,
                      "CHRONOS_DATA_DIR": str(tmp_path / "i")})  # fmt: skip
    try:
        assert isinstance(app.wsgi_app, ProxyFix)
        dash = Dashboard(app, app.test_client())
        away_from_window_edge()
        for n in range(30):
            dash.login(f"u{n}", "wrong", headers={"X-Forwarded-For": "203.0.113.7"})
        assert dash.login("u", "x", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 429
        assert dash.login("u", "x", headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 401
    finally:
        get_state(app).close()


# -- API keys -------------------------------------------------------------------------------------


def key_ids(page: TestResponse) -> set[str]:
    return set(re.findall(r"chr_([0-9a-f]{12})_…", page.text))


def test_keys_page_lists_only_the_tenants_keys(dash: Dashboard, tenants: Tenants) -> None:
    ours = tenants.key("acme", "ingest", username="acme-bot")
    theirs = tenants.key("zeta", "read", "ingest")
    dash.user("alice", "acme")
    dash.login("alice")
    page = dash.client.get("/keys")
    assert page.status_code == 200
    assert key_ids(page) == {ours.split("_")[1]}
    assert theirs.split("_")[1] not in page.text
    assert not KEY_RE.search(page.text)  # never a secret


def test_created_key_is_shown_once(app: Flask, dash: Dashboard) -> None:
    dash.user("alice", "acme")
    dash.login("alice")
    created = dash.post("/keys", name="billing <app>", scopes=["ingest", "read"])
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    (plaintext,) = set(KEY_RE.findall(created.text))
    assert "billing &lt;app&gt;" in created.text and "<app>" not in created.text
    assert 'data-copy-target="new-key"' in created.text and "/static/copy.js" in created.text
    listed = dash.client.get("/keys")
    key_id, secret = plaintext[4:16], plaintext[17:]
    assert key_id in key_ids(listed) and secret not in listed.text
    assert "ingest, read" in listed.text
    answer = dash.client.get("/api/jobs", headers={"x-api-key": plaintext})
    assert answer.status_code == 200  # the key works for the API
    (record,) = get_state(app).backend().list_api_keys("acme")
    assert (record.name, record.scopes, record.username) == ("billing <app>", ("ingest", "read"),
                                                             "alice")  # fmt: skip


def test_creating_a_key_needs_a_scope(dash: Dashboard) -> None:
    dash.user("alice", "acme")
    dash.login("alice")
    answer = dash.post("/keys", name="nothing")
    assert answer.status_code == 422 and error_of(answer) == "choose at least one scope"


def test_only_admins_create_admin_keys(app: Flask, dash: Dashboard) -> None:
    backend = get_state(app).backend()
    dash.user("alice", "acme")
    dash.user("root", "acme", admin=True)
    dash.login("alice")
    assert 'value="admin"' not in dash.client.get("/keys").text
    refused = dash.post("/keys", name="x", scopes=["read", "admin"])
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    assert backend.list_api_keys("acme") == []
    dash.post("/logout")
    dash.login("root")
    assert 'value="admin"' in dash.client.get("/keys").text
    assert dash.post("/keys", name="x", scopes=["admin"]).status_code == 201
    assert backend.list_api_keys("acme")[0].scopes == ("admin",)


def test_revoke_is_walled_by_tenant(app: Flask, dash: Dashboard, tenants: Tenants) -> None:
    backend = get_state(app).backend()
    key = tenants.key("acme", "read", username="acme-bot")
    key_id = key[4:16]
    assert dash.client.get("/api/jobs", headers={"x-api-key": key}).status_code == 200
    dash.user("eve", "zeta")
    dash.login("eve")
    answer = dash.post(f"/keys/{key_id}/revoke")
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert backend.get_api_key(key_id).revoked_at is None
    assert dash.post("/keys/not-a-key-id/revoke").status_code == 404
    dash.post("/logout")
    dash.user("alice", "acme")
    dash.login("alice")
    answer = dash.post(f"/keys/{key_id}/revoke")
    assert answer.status_code == 303 and answer.location == "/keys"
    assert backend.get_api_key(key_id).revoked_at is not None
    page = dash.client.get("/keys")
    assert "revoked" in page.text and f"/keys/{key_id}/revoke" not in page.text
    assert dash.client.get("/api/jobs", headers={"x-api-key": key}).status_code == 401
    assert dash.post(f"/keys/{key_id}/revoke").status_code == 303  # twice: no harm


def test_only_admins_revoke_admin_keys(app: Flask, dash: Dashboard, tenants: Tenants) -> None:
    key_id = tenants.key("acme", "admin", username="acme-bot")[4:16]
    dash.user("alice", "acme")
    dash.login("alice")
    assert dash.post(f"/keys/{key_id}/revoke").status_code == 403
    assert get_state(app).backend().get_api_key(key_id).revoked_at is None


# -- errors, headers, cookies, templates ----------------------------------------------------------


def test_security_headers_on_pages_not_on_the_api(client: FlaskClient) -> None:
    page = client.get("/login")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    with client.get("/static/app.css") as static:  # a file response: close it
        assert static.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "Content-Security-Policy" not in client.get("/api/jobs").headers


def test_session_cookie_flags(dash: Dashboard) -> None:
    dash.user("alice", "acme")
    cookie = dash.login("alice").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie
    assert dash.app.permanent_session_lifetime.total_seconds() == 12 * 3600


def test_secure_cookies_and_session_hours_are_settings(redis_stack_url: str, key_prefix: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    found = config.from_environ({"CHRONOS_SESSION_HOURS": "2", "CHRONOS_SECURE_COOKIES": "1",
                                 "CHRONOS_TRUST_PROXY": "0"})  # fmt: skip
    assert found == {"CHRONOS_SESSION_HOURS": 2, "CHRONOS_SECURE_COOKIES": True,
                     "CHRONOS_TRUST_PROXY": False}  # fmt: skip
    app = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": redis_stack_url,
                      "CHRONOS_KEY_PREFIX": key_prefix, "CHRONOS_DATA_DIR": str(tmp_path / "i"),
                      **found})  # fmt: skip
    try:
        assert app.permanent_session_lifetime.total_seconds() == 2 * 3600
        assert "Secure" in app.test_client().get("/login").headers["Set-Cookie"]
    finally:
        get_state(app).close()


def test_html_errors_for_pages_json_for_the_api(client: FlaskClient) -> None:
    html = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    page = client.get("/nope", headers=html)
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "404" in page.text and "Not Found" in page.text and "Log in" in page.text
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    api = client.get("/api/nope", headers=html)
    assert api.status_code == 404 and api.mimetype == "application/json"
    assert api.json["success"] is False and api.json["code"] == "not_found"
    assert client.get("/nope", headers={"Accept": "application/json"}).mimetype == (
        "application/json")
    assert client.get("/nope", headers={"Accept": "*/*"}).mimetype == "application/json"


def test_templates_hold_no_inline_script_or_handlers() -> None:
    templates = sorted(TEMPLATES.glob("**/*.html"))
    assert {"base.html", "login.html", "keys.html", "key_created.html", "error.html"} <= {
        t.name for t in templates}  # fmt: skip
    for template in templates:
        text = re.sub(r"\{#.*?#\}", "", template.read_text(), flags=re.DOTALL)  # comments
        for tag in re.findall(r"<script\b[^>]*>", text, re.IGNORECASE):
            assert re.search(r"\bsrc\s*=", tag), f"inline <script> in {template.name}: {tag}"
        handler = re.search(r"<[^>]*\son[a-z]+\s*=", text, re.IGNORECASE)
        assert handler is None, f"event handler attribute in {template.name}: {handler.group(0)}"
        style = re.search(r"<style\b|<[^>]*\sstyle\s*=", text, re.IGNORECASE)
        assert style is None, f"inline style in {template.name} (CSP style-src 'self')"


def test_base_template_contract(dash: Dashboard) -> None:
    dash.user("alice", "acme")
    dash.login("alice")
    page = dash.client.get("/keys").text
    assert '<body data-root="" data-live-url="/ws/live">' in page
    assert '<span id="live-status" data-state="connecting" aria-live="polite">' in page
    assert '<a class="skip-link" href="#content">' in page and '<main id="content"' in page
    for href in ("/", "/jobs", "/search", "/analytics", "/keys"):
        assert f'href="{href}"' in page
    assert '<a href="/keys" aria-current="page">API keys</a>' in page
    assert '<script src="/static/live.js" defer></script>' in page
    assert 'href="/static/app.css"' in page and "<title>API keys · Chronos</title>" in page
    assert re.search(r'<form class="logout" method="post" action="/logout">\s*'
                     r'<input type="hidden" name="csrf_token" value="[^"]+">', page)
    anonymous = dash.client.post("/logout", data={"csrf_token": dash.csrf()})
    assert anonymous.status_code == 303
    login_page = dash.client.get("/login").text
    assert "data-live-url" not in login_page and 'id="live-status"' not in login_page


# -- the live websocket ---------------------------------------------------------------------------


def receive_json(ws: Client, timeout: float = 5.0) -> dict | None:
    raw = ws.receive(timeout=timeout)
    return None if raw is None else json.loads(raw)


def test_live_socket_accepts_a_dashboard_session(dash: Dashboard, live: LiveServer) -> None:
    dash.user("alice", "acme")
    dash.login("alice")
    cookie = dash.client.get_cookie("session")
    assert cookie is not None
    url = live.url.replace("http://", "ws://") + "/ws/live"
    ws = WSClient.connect(url, headers={"Cookie": f"session={cookie.value}"})
    try:
        assert receive_json(ws) == {"type": "hello"}
    finally:
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.close()
    try:
        anonymous = WSClient.connect(url)
    except SimpleWebsocketError:
        # The server refused and closed so fast that the client saw the close before it had
        # finished its handshake (a loaded machine): refused all the same. The client leaves
        # its socket to the garbage collector.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return
    try:
        message = receive_json(anonymous)
        assert message is not None and message["type"] == "error"
        with pytest.raises(ConnectionClosed):
            anonymous.receive(timeout=5)
    finally:
        with contextlib.suppress(ConnectionClosed, OSError):
            anonymous.close()
