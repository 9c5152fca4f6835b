"""Backend URLs: what is refused before connecting, what is hidden in messages, and rediss://
with a private CA and client certificates against a real Redis Stack serving TLS."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from chronos import create_app, doctor
from chronos.backends.base import BackendOptions
from chronos.backends.redis_stack import RedisStackBackend
from chronos.backends.redis_stack.url import check_url, redact
from chronos.embedded import MODULES, Distribution, answers, free_port
from chronos.errors import ConfigError
from chronos.extension import get_state


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://chronos:p%40ss@redis.internal", "unix:///run/r.sock",
    "unix:///run/r.sock?db=0", "rediss://h:6380/0?ssl_cert_reqs=none&ssl_check_hostname=false",
    "redis://h/0?socket_timeout=2.5&max_connections=50&client_name=web-1",
])  # fmt: skip
def test_accepted(url: str) -> None:
    check_url(url)
    RedisStackBackend(url, BackendOptions()).close()  # built without connecting


@pytest.mark.parametrize(("url", "words"), [
    ("redis://h/2", "database 2"),
    ("redis://h/0?db=1", "database 1"),
    ("rediss://h/0?ssl_ca_cert=/x", "option 'ssl_ca_cert'"),
    ("redis://h/0?ssl_ca_certs=/etc/hostname", "needs a rediss://"),
    ("rediss://h/0?ssl_ca_certs=/no/such.pem", "not a file this user can read"),
    ("rediss://h/0?ssl_cert_reqs=maybe", "required, optional or none"),
    ("redis://h/0?max_connections=lots", "whole number"),
    ("redis://h/0?protocol=2", "option 'protocol'"),
    ("http://h/0", "redis://, rediss:// or unix://"),
])  # fmt: skip
def test_refused_with_the_reason(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    assert words in caught.value.message
    with pytest.raises(ConfigError):  # the backend refuses it up front, not at first use
        RedisStackBackend(url, BackendOptions())


def test_a_refused_url_is_a_json_error_not_a_crash(tmp_path: Path) -> None:
    app = create_app({"CHRONOS_BACKEND_URL": "redis://127.0.0.1:1/0?ssl_ca_cert=x",
                      "CHRONOS_DATA_DIR": str(tmp_path)})  # fmt: skip
    key = "chr_000000000000_" + "a" * 43
    answer = app.test_client().get("/api/jobs", headers={"x-api-key": key})
    assert answer.status_code == 500
    assert "ssl_ca_cert" in answer.json["error"]


def test_redact_hides_passwords() -> None:
    assert redact("redis://chronos:s%40cret@h:6379/0") == "redis://chronos:***@h:6379/0"
    assert redact("redis://:pw@h") == "redis://:***@h"
    shown = redact("rediss://u:pw@h/0?ssl_password=kp&ssl_ca_certs=/etc/ca.pem")
    assert "pw" not in shown.replace("ssl_password", "") and "kp" not in shown
    assert "ssl_ca_certs=/etc/ca.pem" in shown


@dataclass
class TlsServer:
    port: int
    ca: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """Redis Stack speaking only TLS, with a certificate from a throwaway CA, requiring
    clients to show a certificate from that CA too (mutual TLS)."""
    root = tmp_path_factory.mktemp("tls-redis")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("chronos-web")
    files = {"ca.pem": ca.cert_pem, "server.key": server_cert.private_key_pem,
             "server.crt": server_cert.cert_chain_pems[0], "client.key": client.private_key_pem,
             "client.crt": client.cert_chain_pems[0]}  # fmt: skip
    for name, blob in files.items():
        blob.write_to_path(str(root / name))
    dist = Distribution.locate()
    port = free_port()
    args = [str(dist.server), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(root / "server.crt"), "--tls-key-file", str(root / "server.key"),
            "--tls-ca-cert-file", str(root / "ca.pem"), "--tls-auth-clients", "yes",
            "--dir", str(root), "--save", "", "--appendonly", "no"]  # fmt: skip
    for module in MODULES:
        args += ["--loadmodule", str(dist.modules / module)]
    env = dict(os.environ, LD_LIBRARY_PATH=f"{dist.library_dir(root / 'ssl')}:{dist.openssl}")
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsServer(port, root / "ca.pem", root / "client.crt", root / "client.key")
    url = (f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={server.ca}&ssl_certfile="
           f"{server.client_cert}&ssl_keyfile={server.client_key}")  # fmt: skip
    try:
        for _ in range(200):
            if answers(url):
                break
            assert process.poll() is None, "the TLS server exited at start"
            time.sleep(0.05)
        else:
            pytest.fail("the TLS Redis Stack did not answer")
        yield server
    finally:
        process.terminate()
        process.wait(10)


def doctor_over(url: str, tmp_path: Path) -> dict[str, doctor.Result]:
    app = create_app({"CHRONOS_BACKEND_URL": url, "CHRONOS_KEY_PREFIX": "tls:",
                      "CHRONOS_DATA_DIR": str(tmp_path)})  # fmt: skip
    try:
        return {r.name: r for r in doctor.run(get_state(app))}
    finally:
        get_state(app).close()


def test_mutual_tls_with_a_private_ca(tls_redis: TlsServer, tmp_path: Path) -> None:
    url = (f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tls_redis.ca}"
           f"&ssl_certfile={tls_redis.client_cert}&ssl_keyfile={tls_redis.client_key}")  # fmt: skip
    backend = RedisStackBackend(url, BackendOptions(key_prefix="tls:"))
    try:
        assert backend.migrate() or backend.schema_status()
        assert backend.health()["status"] == "ok"
    finally:
        backend.close()
    found = doctor_over(url, tmp_path)
    assert found["connection"].status == "ok" and found["modules"].status == "ok"
    assert found["schema"].status == "ok"


def test_tls_problems_are_named(tls_redis: TlsServer, tmp_path: Path) -> None:
    base = f"rediss://127.0.0.1:{tls_redis.port}/0"
    untrusted = doctor_over(base, tmp_path)["connection"]
    assert untrusted.status == "fail" and "certificate verify failed" in untrusted.message
    assert "ssl_ca_certs" in untrusted.hint
    no_client_cert = doctor_over(f"{base}?ssl_ca_certs={tls_redis.ca}", tmp_path)["connection"]
    assert no_client_cert.status == "fail"
    assert "ssl_certfile" in no_client_cert.hint
    plain = doctor_over(f"redis://127.0.0.1:{tls_redis.port}/0", tmp_path)["connection"]
    assert plain.status == "fail"
