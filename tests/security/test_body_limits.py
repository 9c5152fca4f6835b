"""Oversized and deeply nested bodies are refused, and refused cheaply.

A body over ``CHRONOS_MAX_BODY_BYTES`` gets 413 while the client is still sending it (the
server never waits for the rest), whether its length was announced or it comes chunked; JSON
nested 10,000 deep is a quick 400 (Python's parser would raise ``RecursionError``); a batch
over ``CHRONOS_MAX_BATCH_ITEMS`` is 413; objects with too many keys, values or levels are 422;
a websocket message over 1 MiB closes the socket.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import LiveServer, Tenants, WSClient
from flask import Flask
from flask.testing import FlaskClient
from simple_websocket import ConnectionClosed

from chronos.blueprints.sockets import MAX_MESSAGE_BYTES
from chronos.timeutil import now_ms

from .conftest import Browser, make_user

LIMIT = 64 * 1024
#: A refusal has to come this fast (seconds), far below what reading or parsing it all costs.
QUICK = 2.0
JSON_POSTS = ["/api/ingest/jobs/register", "/api/ingest/executions/batch", "/api/ingest/executions"]


@pytest.fixture
def key(tenants: Tenants) -> str:
    return tenants.key("acme", "ingest", "read", "admin")


@pytest.fixture
def small(app: Flask, live: LiveServer) -> LiveServer:
    """The live server with a 64 KiB body limit."""
    app.config["MAX_CONTENT_LENGTH"] = LIMIT
    return live


def raw_request(
    server: LiveServer, head: str, body_parts: list[bytes], read_after: int
) -> tuple[int, dict[str, Any], float]:
    """Send ``head`` and body parts, stop sending after ``read_after`` parts (the body is left
    unfinished) and read the answer: ``(status, JSON body, seconds it took)``."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head.encode())
        for part in body_parts[:read_after]:
            try:
                conn.sendall(part)
            except OSError:  # the server answered and closed already
                break
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_raw, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head_raw.split(b" ", 2)[1])
    return status, json.loads(payload or b"null"), time.perf_counter() - started


def _complete(answer: bytes) -> bool:
    head, _, payload = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":")[1])
    return False


def _head(path: str, key: str, extra: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {key}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


@pytest.mark.parametrize("path", JSON_POSTS)
def test_an_announced_oversized_body_is_413_before_it_is_sent(
    small: LiveServer, key: str, path: str
) -> None:
    head = _head(path, key, "Content-Length: 50000000\r\n")  # 50 MB announced, 1 KiB sent
    status, body, took = raw_request(small, head, [b"[" * 1024], read_after=1)
    assert status == 413 and body["code"] == "payload_too_large", body
    assert body["details"]["limit_bytes"] == LIMIT and took < QUICK


@pytest.mark.parametrize("path", JSON_POSTS)
def test_a_chunked_body_is_413_once_over_the_limit(small: LiveServer, key: str, path: str) -> None:
    chunk = b"[" * 8192
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 1000  # 8 MB, never finished
    head = _head(path, key, "Transfer-Encoding: chunked\r\n")
    status, body, took = raw_request(small, head, parts, read_after=LIMIT // len(chunk) + 2)
    assert status == 413 and body["code"] == "payload_too_large", body
    assert took < QUICK


@pytest.mark.parametrize(("size", "status"), [(100, 200), (LIMIT, 200), (LIMIT + 1, 413)])
def test_a_chunked_body_up_to_the_limit_is_read(
    small: LiveServer, key: str, size: int, status: int
) -> None:
    run = json.dumps({"jobId": "j", "status": "success", "startedAt": now_ms()}).encode()
    run = run.ljust(size)  # padded with blanks to exactly `size` bytes
    parts = [
        f"{len(run[:10]):x}\r\n".encode() + run[:10] + b"\r\n",
        f"{len(run[10:]):x}\r\n".encode() + run[10:] + b"\r\n",
        b"0\r\n\r\n",
    ]
    head = _head("/api/ingest/executions", key, "Transfer-Encoding: chunked\r\n")
    answer, body, _ = raw_request(small, head, parts, read_after=3)
    assert answer == status, body
    assert (
        body.get("outcome") == "created" if status == 200 else body["code"] == "payload_too_large"
    )


def test_dashboard_forms_are_limited_too(app: Flask, small: LiveServer) -> None:
    make_user(app, "bob", "acme")
    browser = Browser(app).login("bob")
    answer = browser.client.post(
        "/keys", data={"name": "x" * (LIMIT + 1), "scopes": "read", "csrf_token": browser.csrf()}
    )
    assert answer.status_code == 413 and answer.mimetype == "text/html"
    assert "limit" in answer.text


def _nested(depth: int, open_: str = "[", close: str = "]", inner: str = "") -> str:
    return open_ * depth + inner + close * depth


def _deep_object(depth: int) -> Any:
    """``{"a": {"a": ... 0}}``, ``depth`` objects deep."""
    return json.loads(_nested(depth, '{"a":', "}", "0"))


@pytest.mark.parametrize(
    "body",
    [
        _nested(10_000),
        _nested(10_000, '{"a":', "}", "0"),
        '{"executions": ' + _nested(10_000) + "}",
        '{"jobs": [{"id": "j", "metadata": ' + _nested(5_000, '{"a":', "}", "0") + "}]}",
        "[" * 5_000_000,
    ],
    ids=["arrays", "objects", "inside", "in-metadata", "5MB-of-brackets"],
)
def test_deeply_nested_json_is_a_quick_400(client: FlaskClient, key: str, body: str) -> None:
    for path in [*JSON_POSTS, "/api/settings/retention"]:
        method = client.put if path.endswith("retention") else client.post
        started = time.perf_counter()
        answer = method(
            path, data=body, headers={**Tenants.headers(key), "Content-Type": "application/json"}
        )
        took = time.perf_counter() - started
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
        assert answer.get_json()["code"] == "bad_request" and took < QUICK, (path, took)


def test_too_many_items_is_413(client: FlaskClient, key: str) -> None:
    for path, name in (
        ("/api/ingest/jobs/register", "jobs"),
        ("/api/ingest/executions/batch", "executions"),
    ):
        body = json.dumps({name: [{}] * 5001})
        started = time.perf_counter()
        answer = client.post(
            path, data=body, headers={**Tenants.headers(key), "Content-Type": "application/json"}
        )
        assert answer.status_code == 413, answer.text[:200]
        assert answer.get_json()["details"] == {"limit_items": 5000}
        assert time.perf_counter() - started < QUICK


def _one(**extra: Any) -> dict[str, Any]:
    return {"jobId": "j", "status": "success", "startedAt": now_ms(), **extra}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metadata", lambda: {f"k{n}": n for n in range(300_000)}, "bytes of JSON"),
        ("metadata", lambda: {"a": [0] * 2_000_000}, "bytes of JSON"),
        ("labels", lambda: {f"k{n}": "v" for n in range(300_000)}, "bytes of JSON"),
        ("metadata", lambda: _deep_object(33), "levels deep"),
        ("labels", lambda: {"k": json.loads(_nested(200))}, "levels deep"),
    ],
    ids=["many-keys", "long-list", "many-labels", "deep", "deep-label"],
)
def test_oversized_objects_are_a_quick_422(
    client: FlaskClient, key: str, field: str, value: Callable[[], Any], message: str
) -> None:
    runs = [_one(execId="bad", **{field: value()}), _one(execId="ok")]
    body = json.dumps({"executions": runs})
    started = time.perf_counter()
    answer = client.post(
        "/api/ingest/executions/batch",
        data=body,
        headers={**Tenants.headers(key), "Content-Type": "application/json"},
    )
    assert time.perf_counter() - started < QUICK
    result = answer.get_json()
    assert answer.status_code == 200, result  # the good neighbour is stored
    assert [r["execId"] for r in result["results"]] == ["ok"]
    assert message in result["rejected"][0]["errors"][field][0]


def test_many_unknown_keys_are_ignored_cheaply(client: FlaskClient, key: str) -> None:
    body = json.dumps(_one(execId="wide", **{f"x{n}": n for n in range(300_000)}))
    started = time.perf_counter()
    answer = client.post(
        "/api/ingest/executions",
        data=body,
        headers={**Tenants.headers(key), "Content-Type": "application/json"},
    )
    assert answer.status_code == 200 and time.perf_counter() - started < QUICK


def test_metadata_as_deep_as_allowed_is_stored(client: FlaskClient, key: str) -> None:
    deepest = _deep_object(32)
    answer = client.post(
        "/api/ingest/executions",
        json=_one(execId="deep", metadata=deepest),
        headers=Tenants.headers(key),
    )
    assert answer.status_code == 200, answer.text
    stored = client.get("/api/executions/deep", headers=Tenants.headers(key)).get_json()
    assert stored["data"]["metadata"] == deepest


def test_websocket_messages_are_bounded_and_parsed_safely(live: LiveServer, key: str) -> None:
    url = live.url.replace("http://", "ws://") + "/ws/runner"
    deep = WSClient.connect(url, headers=Tenants.headers(key))
    try:
        deep.send(_nested(50_000))  # not a hello, and too deep to parse: refused cleanly
        message = json.loads(deep.receive(timeout=5))
        assert message["type"] == "error" and "hello" in message["error"]
    finally:
        deep.close()
    huge = WSClient.connect(url, headers=Tenants.headers(key))
    hello = json.dumps({"type": "hello", "jobs": ["j" * 200] * 6000})
    assert len(hello) > MAX_MESSAGE_BYTES
    with pytest.raises(ConnectionClosed) as closed:
        huge.send(hello)
        huge.receive(timeout=5)
        huge.receive(timeout=5)
    assert closed.value.reason == 1009  # message too big
