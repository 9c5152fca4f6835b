"""Request ids and ``CHRONOS_LOG_FORMAT=json``: every line is one JSON object with the request's
fields, and no API key, token, password or session cookie ever reaches a line."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Tenants, cleanup_prefix
from flask import Flask, request
from flask.testing import FlaskClient

from chronos import config, create_app, logs
from chronos.accounts import hash_password
from chronos.embedded import free_port
from chronos.errors import ConfigError
from chronos.extension import get_state
from chronos.models import User

TOKEN = "operator-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"
KEY_RE = re.compile(r"chr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Where the JSON handler writes during the test; the root logger is restored after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    captured = io.StringIO()
    yield captured
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def app(redis_stack_url: str, key_prefix: str, tmp_path: Path, stream: io.StringIO):
    """The suite's app logging JSON into ``stream`` (overrides conftest's ``app`` here)."""
    app = create_app({"TESTING": True, "CHRONOS_BACKEND_URL": redis_stack_url,
                      "CHRONOS_KEY_PREFIX": key_prefix, "CHRONOS_METRICS_TOKEN": TOKEN,
                      "CHRONOS_LOG_FORMAT": "json",
                      "CHRONOS_DATA_DIR": str(tmp_path / "instance")})  # fmt: skip
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, logs.JsonHandler)]
    handler.setStream(stream)
    yield app
    get_state(app).close()
    cleanup_prefix(redis_stack_url, key_prefix)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written, each parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def request_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [entry for entry in lines(stream) if entry["logger"] == logs.REQUEST_LOGGER]


def test_request_line_has_the_request_fields(client: FlaskClient, tenants: Tenants, stream):
    key = tenants.key("acme", "read")
    answer = client.get("/api/jobs?limit=5&tag=nightly", headers={"x-api-key": key})
    assert answer.status_code == 200
    [entry] = request_lines(stream)
    assert entry["request_id"] == answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", entry["request_id"])
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/api/jobs", 200)
    assert entry["tenant"] == "acme"
    assert entry["level"] == "INFO" and entry["message"] == "GET /api/jobs 200"
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert "nightly" not in stream.getvalue()  # paths without their query string


def test_caller_request_id_kept_when_sane(client: FlaskClient, stream) -> None:
    kept = client.get("/api/jobs", headers={"X-Request-ID": "trace-42.a_b"})
    assert kept.headers["X-Request-ID"] == "trace-42.a_b"
    replaced = client.get("/api/jobs", headers={"X-Request-ID": 'bad id" {} ' + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"])
    assert [e["request_id"] for e in request_lines(stream)] == [
        "trace-42.a_b", replaced.headers["X-Request-ID"]]  # fmt: skip
    assert [e["status"] for e in request_lines(stream)] == [401, 401]
    assert "tenant" not in request_lines(stream)[0]  # not known: the key was missing


def test_exceptions_are_logged_with_their_traceback_and_context(app: Flask, stream) -> None:
    @app.get("/test/boom")
    def boom() -> str:
        raise RuntimeError("the disk is on fire")

    answer = app.test_client().get("/test/boom", headers={"X-Request-ID": "boom-1"})
    assert answer.status_code == 500
    [error] = [e for e in lines(stream) if e["level"] == "ERROR"]
    assert error["message"] == "unhandled error" and error["request_id"] == "boom-1"
    assert "Traceback" in error["exception"] and "the disk is on fire" in error["exception"]
    assert error["path"] == "/test/boom"


def test_no_secret_reaches_the_log(app: Flask, client: FlaskClient, tenants, stream) -> None:
    key = tenants.key("acme", "ingest", "read")
    get_state(app).backend().create_user(
        User(username="alice", tenant_id="acme", password_hash=hash_password(PASSWORD)))

    @app.post("/test/echo")
    def echo() -> str:
        # The worst case: code logging everything it was sent, headers and body included.
        logging.getLogger("chronos.test").warning("headers %s body %s", dict(request.headers),
                                                  request.get_data(as_text=True))  # fmt: skip
        raise RuntimeError(f"could not use key {request.headers.get('x-api-key')}")

    client.get("/login")
    with client.session_transaction() as session:
        csrf = session["csrf"]
    login = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                        "csrf_token": csrf})  # fmt: skip
    assert login.status_code == 303
    cookie = client.get_cookie("session")
    assert cookie is not None
    client.get("/", headers={"x-api-key": key})
    client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    client.post("/test/echo", headers={"x-api-key": key, "Authorization": f"Bearer {TOKEN}"},
                json={"password": PASSWORD, "apiKey": key})  # fmt: skip
    text = stream.getvalue()
    entries = lines(stream)
    assert any(e["logger"] == "chronos.test" for e in entries)
    assert any("exception" in e and "could not use key" in e["exception"] for e in entries)
    key_id, secret = KEY_RE.fullmatch(key).groups()
    for leaked in (secret, TOKEN, PASSWORD, cookie.value, app.config["SECRET_KEY"]):
        assert leaked not in text
    assert f"chr_{key_id}_[redacted]" in text  # which key it was stays visible
    assert {e["tenant"] for e in request_lines(stream) if e["path"] == "/"} == {"acme"}


def test_gunicorn_access_records_never_carry_header_atoms() -> None:
    key = "chr_0123456789ab_" + "s" * 43
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, '%(m)s %(U)s %(s)s',
                               None, None)  # fmt: skip
    record.args = {"m": "GET", "U": "/api/jobs", "s": "200", "D": 1500, "{x-api-key}i": key}
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry == {"time": entry["time"], "level": "INFO", "logger": "gunicorn.access",
                     "message": "GET /api/jobs 200", "method": "GET", "path": "/api/jobs",
                     "status": 200, "duration_ms": 1.5}  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [
    ("key chr_0123456789ab_" + "A" * 43, "key chr_0123456789ab_[redacted]"),
    ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
    ('{"password": "hunter2", "user": "bob"}', '{"password": "[redacted]", "user": "bob"}'),
    ("Cookie: session=eyJhbGci.x; theme=dark", "Cookie: [redacted]; theme=dark"),
    ("token=abc&next=/", "token=[redacted]&next=/"),
    ("nothing secret here", "nothing secret here"),
])  # fmt: skip
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_text_format_by_default_still_sets_request_ids(tmp_path: Path) -> None:
    app = create_app({"CHRONOS_BACKEND_URL": "memory://", "CHRONOS_DATA_DIR": str(tmp_path)})
    assert app.config["CHRONOS_LOG_FORMAT"] == "text"
    assert not any(isinstance(h, logs.JsonHandler) for h in logging.getLogger().handlers)
    assert app.test_client().get("/api/jobs").headers["X-Request-ID"]


def test_log_format_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CHRONOS_LOG_FORMAT"):
        config.from_environ({"CHRONOS_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="CHRONOS_LOG_FORMAT"):
        create_app({"CHRONOS_BACKEND_URL": "memory://", "CHRONOS_LOG_FORMAT": "yaml",
                    "CHRONOS_DATA_DIR": str(tmp_path)})  # fmt: skip
    assert config.from_environ({"CHRONOS_LOG_FORMAT": "json"})["CHRONOS_LOG_FORMAT"] == "json"


@pytest.mark.slow
def test_gunicorn_master_and_workers_log_json(tmp_path: Path) -> None:
    """With ``logconfig_dict = gunicorn_logconfig()`` every line gunicorn and Chronos write is
    JSON, one request line per request (gunicorn's own access line is off)."""
    conf = tmp_path / "gunicorn_test.conf.py"
    conf.write_text("from chronos.logs import gunicorn_logconfig\n"
                    "logconfig_dict = gunicorn_logconfig()\n")  # fmt: skip
    port = free_port()
    env = {**os.environ, "CHRONOS_LOG_FORMAT": "json", "CHRONOS_BACKEND_URL": "memory://",
           "CHRONOS_DATA_DIR": str(tmp_path / "instance")}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--worker-class", "gthread", "--threads", "2", "chronos:create_app()"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).close()
                break
            time.sleep(0.2)
        secret_key = "chr_0123456789ab_" + "k" * 43
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs?tag=x",
                                         headers={"x-api-key": secret_key})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    written = [line for line in (out + err).decode().splitlines() if line.strip()]
    entries = [json.loads(line) for line in written]  # every line is JSON
    assert any(e["logger"] == "gunicorn.error" and "Starting gunicorn" in e["message"]
               for e in entries)  # the master's own lines too  # fmt: skip
    assert [e["path"] for e in entries if e["logger"] == logs.REQUEST_LOGGER] == [
        "/healthz", "/api/jobs"]  # fmt: skip
    assert not any(e["logger"] == "gunicorn.access" for e in entries)
    assert "k" * 43 not in (out + err).decode()
