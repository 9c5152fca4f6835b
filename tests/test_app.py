"""The app factory, its settings, the health check, the error path and the extension."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from chronos import config, create_app
from chronos.embedded import free_port
from chronos.errors import ConfigError
from chronos.extension import Chronos, get_backend, get_state


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``CHRONOS_*`` setting leaks in from the environment the tests run in."""
    for name in (
        "CHRONOS_BACKEND_URL",
        "CHRONOS_DATA_DIR",
        "CHRONOS_SECRET_KEY",
        "CHRONOS_KEY_PREFIX",
        "CHRONOS_EXECUTION_RETENTION_DAYS",
        "CHRONOS_METRICS_RETENTION_DAYS",
        "CHRONOS_AUTO_MIGRATE",
        "CHRONOS_EMBEDDED_FSYNC",
        "CHRONOS_MAX_BODY_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def memory_app(tmp_path: Path, **config: object) -> Flask:
    return create_app(
        {
            "CHRONOS_BACKEND_URL": "memory://",
            "CHRONOS_DATA_DIR": str(tmp_path),
            "TESTING": True,
            **config,
        }
    )


# create_app ---------------------------------------------------------------------------------


def test_create_app_does_no_network_io(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started = time.monotonic()
    app = create_app(
        {"CHRONOS_BACKEND_URL": "redis://127.0.0.1:1/0", "CHRONOS_DATA_DIR": str(tmp_path)}
    )
    assert time.monotonic() - started < 1.0
    assert get_state(app)._backend is None


def test_create_app_does_not_start_the_embedded_server(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "instance"
    started = time.monotonic()
    app = create_app({"CHRONOS_DATA_DIR": str(data_dir)})
    assert time.monotonic() - started < 1.0
    assert get_state(app).embedded
    assert not (data_dir / "redis").exists()


def test_settings_come_from_the_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CHRONOS_KEY_PREFIX", "envprefix:")
    clean_env.setenv("CHRONOS_DATA_DIR", str(tmp_path / "env-data"))
    clean_env.setenv("CHRONOS_SECRET_KEY", "from-the-env")
    clean_env.setenv("CHRONOS_EXECUTION_RETENTION_DAYS", "7")
    app = create_app()
    assert app.config["CHRONOS_KEY_PREFIX"] == "envprefix:"
    assert app.config["CHRONOS_DATA_DIR"] == str((tmp_path / "env-data").resolve())
    assert app.config["SECRET_KEY"] == "from-the-env"
    assert app.config["CHRONOS_EXECUTION_RETENTION_DAYS"] == 7
    assert get_state(app).options().execution_ttl_ms == 7 * 24 * 3600 * 1000


def test_test_config_overrides_the_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("CHRONOS_KEY_PREFIX", "envprefix:")
    app = memory_app(tmp_path, CHRONOS_KEY_PREFIX="cfg:")
    assert app.config["CHRONOS_KEY_PREFIX"] == "cfg:"


def test_a_bad_int_in_the_environment_names_the_variable(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("CHRONOS_EXECUTION_RETENTION_DAYS", "thirty")
    with pytest.raises(ConfigError, match="CHRONOS_EXECUTION_RETENTION_DAYS") as info:
        create_app({"CHRONOS_DATA_DIR": str(tmp_path)})
    assert "thirty" in info.value.message


def test_secret_key_is_generated_once_and_kept_private(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "instance"
    first = create_app({"CHRONOS_BACKEND_URL": "memory://", "CHRONOS_DATA_DIR": str(data_dir)})
    path = data_dir / "secret_key"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = first.config["SECRET_KEY"]
    assert len(key) >= 32
    assert path.read_text().strip() == key
    second = create_app({"CHRONOS_BACKEND_URL": "memory://", "CHRONOS_DATA_DIR": str(data_dir)})
    assert second.config["SECRET_KEY"] == key


def _generate_keys(dirs: list[str], barrier: Any, out: Any) -> None:
    keys = []
    for data_dir in dirs:
        barrier.wait()
        keys.append(config.secret_key(Path(data_dir)))
    out.put(keys)


def test_workers_booting_together_share_one_whole_generated_key(tmp_path: Path) -> None:
    # gunicorn boots its workers at once; each generates the key if the file is not there yet.
    # (Found by bench/soak.py: a worker read the winner's file before the key was written,
    # got an empty key, and refused every session the other worker had signed.)
    dirs = [str(tmp_path / f"instance-{n}") for n in range(100)]
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_generate_keys, args=(dirs, barrier, out))
               for _ in range(2)]  # fmt: skip
    for worker in workers:
        worker.start()
    first, second = out.get(timeout=60), out.get(timeout=60)
    for worker in workers:
        worker.join(10)
    assert all(len(key) >= 32 for key in first) and first == second
    assert [Path(d, "secret_key").read_text() for d in dirs] == first
    assert not any(name.startswith(".") for d in dirs for name in os.listdir(d))


# /healthz -----------------------------------------------------------------------------------


def test_healthz_on_redis_stack_reports_the_modules(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["backend"]["backend"] == "redis-stack"
    assert {"ReJSON", "search", "timeseries", "bf"} <= set(body["backend"]["modules"])


def test_healthz_on_memory(tmp_path: Path) -> None:
    response = memory_app(tmp_path).test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["backend"]["backend"] == "memory"


def test_healthz_with_redis_down_is_503_with_retry_after(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app({"CHRONOS_BACKEND_URL": url, "CHRONOS_DATA_DIR": str(tmp_path)})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert body["success"] is False
    assert body["code"] == "backend_unavailable"
    assert "unreachable" in body["error"]
    assert url.rsplit(":", 1)[1].split("/")[0] not in response.get_data(as_text=True)
    assert get_state(app)._backend is None  # retried on the next call, not cached broken


def test_an_unknown_scheme_lists_the_installed_ones(tmp_path: Path) -> None:
    app = create_app({"CHRONOS_BACKEND_URL": "foo://x", "CHRONOS_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="'foo'") as info:
        get_state(app).backend()
    for scheme in ("memory", "redis", "rediss", "unix"):
        assert scheme in info.value.message
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["code"] == "config_error"


# the error path -----------------------------------------------------------------------------


def test_an_unknown_route_is_a_json_404(tmp_path: Path) -> None:
    response = memory_app(tmp_path).test_client().get("/no/such/page")
    assert response.status_code == 404
    body = response.get_json()
    assert body["success"] is False
    assert body["code"] == "not_found"
    assert body["error"]


def test_a_wrong_method_is_a_json_405(tmp_path: Path) -> None:
    response = memory_app(tmp_path).test_client().post("/healthz")
    assert response.status_code == 405
    assert response.get_json()["success"] is False


def test_a_body_over_the_limit_is_a_json_413(tmp_path: Path) -> None:
    app = memory_app(tmp_path, CHRONOS_MAX_BODY_BYTES=16)

    @app.post("/echo")
    def echo() -> str:
        return str(len(request.get_data()))

    client = app.test_client()
    assert client.post("/echo", data=b"x" * 16).get_data(as_text=True) == "16"
    response = client.post("/echo", data=b"x" * 17)
    assert response.status_code == 413
    body = response.get_json()
    assert body["success"] is False
    assert body["code"] == "payload_too_large"
    assert "16 bytes" in body["error"]
    assert body["details"] == {"limit_bytes": 16}


def test_an_unexpected_error_is_a_json_500_without_details(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    app.config["TESTING"] = False  # let the error handler answer instead of re-raising

    @app.get("/boom")
    def boom() -> str:
        raise KeyError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal_error"
    assert "secret internals" not in body["error"]


# the extension ------------------------------------------------------------------------------


def test_init_app_twice_is_refused(tmp_path: Path) -> None:
    app = memory_app(tmp_path)  # create_app registered it already
    with pytest.raises(RuntimeError, match="already registered"):
        Chronos().init_app(app)
    bare = Flask(__name__)
    Chronos(bare)
    with pytest.raises(RuntimeError, match="init_app once"):
        Chronos().init_app(bare)


def test_init_app_fills_missing_settings_with_defaults() -> None:
    bare = Flask(__name__)
    bare.config["CHRONOS_KEY_PREFIX"] = "mine:"
    Chronos().init_app(bare)
    assert bare.config["CHRONOS_KEY_PREFIX"] == "mine:"
    assert bare.config["CHRONOS_EXECUTION_RETENTION_DAYS"] == 30


def test_get_backend_without_init_app_says_what_to_do() -> None:
    bare = Flask(__name__)
    with (
        bare.app_context(),
        pytest.raises(RuntimeError, match=r"Did you forget to call 'init_app'\?"),
    ):
        get_backend()


def test_get_backend_builds_the_backend_once(app: Flask) -> None:
    with app.app_context():
        first = get_backend()
        assert get_backend() is first
        assert first.schema_status()[0]["applied_at"] is not None  # auto-migrated
