"""Guessing API keys is rate limited: failed authentications are counted per client address and
per key id, across workers (the backend's rate limiter), and over the limit every request from
there, or naming that key id, gets 429 with ``Retry-After`` before its key is even looked up,
so that a right guess cannot be told from a wrong one until the minute ends.

The tests run with a limit of 5 a minute (``CHRONOS_AUTH_FAILURES_PER_MINUTE``) and start
away from the edge of a minute, where the fixed window would start counting afresh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, Tenants, WSClient
from flask import Flask
from flask.testing import FlaskClient
from simple_websocket import ConnectionClosed
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from chronos import config, create_app
from chronos.extension import get_state

from .conftest import make_key

LIMIT = 5
WRONG = "chr_0123456789ab_" + "x" * 43


def away_from_minute_edge(margin_s: float = 3.0) -> None:
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.1)


@pytest.fixture
def limited(app: Flask) -> Flask:
    app.config["CHRONOS_AUTH_FAILURES_PER_MINUTE"] = LIMIT
    away_from_minute_edge()
    return app


def from_address(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def jobs(client: FlaskClient, key: str | None, **headers: str) -> TestResponse:
    return client.get("/api/jobs", headers={**({"x-api-key": key} if key else {}), **headers})


def assert_limited(answer: TestResponse) -> None:
    assert answer.status_code == 429, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["code"] == "rate_limited" and "failed authentications" in body["error"]
    assert 1 <= int(answer.headers["Retry-After"]) <= 60


def test_the_limit_is_a_setting_of_20_by_default() -> None:
    assert config.DEFAULTS["CHRONOS_AUTH_FAILURES_PER_MINUTE"] == 20
    found = config.from_environ({"CHRONOS_AUTH_FAILURES_PER_MINUTE": "7"})
    assert found == {"CHRONOS_AUTH_FAILURES_PER_MINUTE": 7}


def test_an_address_over_the_limit_is_refused_even_with_a_right_key(limited: Flask) -> None:
    good, _ = make_key(limited, "acme", "alice", "read")
    guesser = from_address(limited, "203.0.113.9")
    for n in range(LIMIT):
        assert jobs(guesser, f"chr_{n:012x}_" + "y" * 43).status_code == 401
    assert_limited(jobs(guesser, WRONG))  # after LIMIT failures, every try
    assert_limited(jobs(guesser, good))  # a right guess looks the same
    assert_limited(guesser.get("/api/analytics/summary", headers=Tenants.headers(good)))
    assert_limited(
        guesser.post("/api/ingest/executions", json={}, headers={"Authorization": f"Bearer {good}"})
    )
    assert jobs(from_address(limited, "203.0.113.10"), good).status_code == 200  # another one


def test_malformed_keys_count_too_and_missing_keys_do_not(limited: Flask) -> None:
    good, _ = make_key(limited, "acme", "alice", "read")
    client = from_address(limited, "198.51.100.1")
    for _ in range(3 * LIMIT):  # a client that forgot its key is not guessing
        assert jobs(client, None).status_code == 401
    assert jobs(client, good).status_code == 200
    for garbage in ("nope", "chr_", "chr_x_y", "Bearer", "x" * 500):
        assert jobs(client, garbage).status_code == 401
    assert_limited(jobs(client, "still wrong"))
    assert_limited(jobs(client, good))


def test_a_key_id_under_attack_is_refused_from_everywhere(limited: Flask) -> None:
    good, key_id = make_key(limited, "acme", "alice", "read")
    for n in range(LIMIT):  # a distributed guesser: one try per address, one key id
        answer = jobs(from_address(limited, f"192.0.2.{n}"), f"chr_{key_id}_" + "z" * 43)
        assert answer.status_code == 401
    assert_limited(jobs(from_address(limited, "192.0.2.200"), f"chr_{key_id}_" + "w" * 43))
    assert_limited(jobs(from_address(limited, "192.0.2.201"), good))
    other, _ = make_key(limited, "acme", "alice", "read")
    assert jobs(from_address(limited, "192.0.2.202"), other).status_code == 200


def test_successes_are_not_counted(limited: Flask) -> None:
    good, _ = make_key(limited, "acme", "alice", "read")
    client = from_address(limited, "198.51.100.2")
    for _ in range(4 * LIMIT):
        assert jobs(client, good).status_code == 200
    for _ in range(LIMIT):
        assert jobs(client, WRONG).status_code == 401
    assert_limited(jobs(client, good))


def test_a_wrong_scope_is_not_a_failed_authentication(limited: Flask) -> None:
    ingest_only, _ = make_key(limited, "acme", "alice", "ingest")
    client = from_address(limited, "198.51.100.3")
    for _ in range(2 * LIMIT):
        assert jobs(client, ingest_only).status_code == 403
    answer = client.post("/api/ingest/executions", json={}, headers=Tenants.headers(ingest_only))
    assert answer.status_code == 422  # let in: only the body is wrong


def test_zero_turns_the_limit_off(app: Flask) -> None:
    app.config["CHRONOS_AUTH_FAILURES_PER_MINUTE"] = 0
    good, _ = make_key(app, "acme", "alice", "read")
    client = from_address(app, "198.51.100.4")
    for _ in range(30):
        assert jobs(client, WRONG).status_code == 401
    assert jobs(client, good).status_code == 200


@pytest.fixture
def proxied(redis_stack_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "CHRONOS_BACKEND_URL": redis_stack_url,
            "CHRONOS_KEY_PREFIX": key_prefix,
            "CHRONOS_TRUST_PROXY": True,
            "CHRONOS_AUTH_FAILURES_PER_MINUTE": LIMIT,
            "CHRONOS_DATA_DIR": str(tmp_path / "i"),
        }
    )
    away_from_minute_edge()
    yield app
    get_state(app).close()


def test_behind_a_trusted_proxy_the_forwarded_address_counts(proxied: Flask) -> None:
    assert isinstance(proxied.wsgi_app, ProxyFix)
    good, _ = make_key(proxied, "acme", "alice", "read")
    proxy = from_address(proxied, "10.0.0.1")  # every request comes through the proxy
    for _ in range(LIMIT + 1):
        jobs(proxy, WRONG, **{"X-Forwarded-For": "203.0.113.50"})
    assert_limited(jobs(proxy, good, **{"X-Forwarded-For": "203.0.113.50"}))
    assert jobs(proxy, good, **{"X-Forwarded-For": "203.0.113.51"}).status_code == 200


def test_without_a_trusted_proxy_forwarded_for_changes_nothing(limited: Flask) -> None:
    good, _ = make_key(limited, "acme", "alice", "read")
    client = from_address(limited, "203.0.113.60")
    for n in range(LIMIT + 1):  # a new forged address each time does not reset the count
        jobs(client, WRONG, **{"X-Forwarded-For": f"198.18.0.{n}"})
    assert_limited(jobs(client, good, **{"X-Forwarded-For": "198.18.1.1"}))


def test_the_runner_socket_closes_with_4429(limited: Flask, live: LiveServer) -> None:
    good, _ = make_key(limited, "acme", "alice", "ingest")
    url = live.url.replace("http://", "ws://") + "/ws/runner"
    for _ in range(LIMIT):
        ws = WSClient.connect(url, headers=Tenants.headers(WRONG))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.receive(timeout=5)
        assert closed.value.reason == 4401
    ws = WSClient.connect(url, headers=Tenants.headers(good))
    message = json.loads(ws.receive(timeout=5))
    assert message["type"] == "error" and message["code"] == "rate_limited"
    with pytest.raises(ConnectionClosed) as closed:
        ws.receive(timeout=5)
    assert closed.value.reason == 4429
