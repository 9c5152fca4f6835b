"""The ``chronos`` command group, through Flask's CLI runner on a real Redis Stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskCliRunner

from chronos import create_app
from chronos.backends.redis_stack.keys import Keys
from chronos.cli import chronos_cli, main
from chronos.extension import get_state

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def live_indexes(url: str, prefix: str) -> list[str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(n for n in r.execute_command("FT._LIST") if n.startswith(prefix))
    finally:
        r.close()


@pytest.mark.redis
def test_create_indices_is_idempotent(
    runner: FlaskCliRunner, redis_stack_url: str, key_prefix: str
) -> None:
    first = runner.invoke(args=["chronos", "create-indices"])
    assert first.exit_code == 0, first.output
    assert "applied now: 0001_initial" in first.output
    second = runner.invoke(args=["chronos", "create-indices"])
    assert second.exit_code == 0, second.output
    assert "nothing (up to date)" in second.output
    assert "schema: 3 of 3 migrations" in second.output
    keys = Keys(key_prefix)
    assert live_indexes(redis_stack_url, key_prefix) == sorted(
        [keys.index_version("executions", 2), keys.index_version("jobs", 1)]
    )


@pytest.mark.redis
def test_migrate_then_status(runner: FlaskCliRunner) -> None:
    pending = runner.invoke(args=["chronos", "migrate", "--status"])
    assert pending.exit_code == 0, pending.output
    assert re.search(r"^0001_initial\s+pending\s", pending.output, re.M)
    assert "applied now" not in pending.output  # --status changes nothing

    applied = runner.invoke(args=["chronos", "migrate"])
    assert applied.exit_code == 0, applied.output
    assert "applied now: 0001_initial" in applied.output

    status = runner.invoke(args=["chronos", "migrate", "--status"])
    assert status.exit_code == 0, status.output
    assert re.search(rf"^0001_initial\s+{ISO}\s", status.output, re.M), status.output

    again = runner.invoke(args=["chronos", "migrate"])
    assert again.exit_code == 0, again.output
    assert "nothing (up to date)" in again.output


def test_migrate_with_redis_down_fails_cleanly(tmp_path: Path) -> None:
    from chronos.embedded import free_port

    port = free_port()
    app = create_app(
        {
            "CHRONOS_BACKEND_URL": f"redis://127.0.0.1:{port}/0",
            "CHRONOS_DATA_DIR": str(tmp_path),
        }
    )
    result = app.test_cli_runner().invoke(args=["chronos", "migrate"])
    assert result.exit_code == 1
    assert "Redis is unreachable" in result.output
    assert str(port) in result.output  # the operator is told where
    assert "Traceback" not in result.output


def test_the_console_script_has_the_same_commands() -> None:
    assert {"create-indices", "migrate", "serve", "embedded"} <= set(chronos_cli.commands)
    assert set(main.commands) == set(chronos_cli.commands)
    for name, command in chronos_cli.commands.items():
        assert main.commands[name] is command


def test_embedded_status_with_a_backend_url_says_there_is_none(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["chronos", "embedded", "status"])
    assert result.exit_code != 0
    assert "there is no embedded server" in result.output


def test_embedded_status_when_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHRONOS_BACKEND_URL", raising=False)
    app = create_app({"CHRONOS_DATA_DIR": str(tmp_path / "instance")})
    result = app.test_cli_runner().invoke(args=["chronos", "embedded", "status"])
    assert result.exit_code == 1
    assert "not running" in result.output
    assert not (tmp_path / "instance" / "redis" / "server.json").exists()


def test_user_and_key_lifecycle(app: Flask) -> None:
    runner = app.test_cli_runner()
    made = runner.invoke(args=["chronos", "create-user", "alice", "--password-stdin"],
                         input="correct horse battery\n")  # fmt: skip
    assert made.exit_code == 0, made.output
    again = runner.invoke(args=["chronos", "create-user", "alice", "--password-stdin"],
                          input="correct horse battery\n")  # fmt: skip
    assert again.exit_code != 0 and "exists" in again.output
    short = runner.invoke(args=["chronos", "create-user", "bob", "--password-stdin"], input="x\n")
    assert short.exit_code != 0 and "8 characters" in short.output

    created = runner.invoke(args=["chronos", "create-api-key", "--user", "alice", "--name",
                                  "billing", "--scope", "ingest", "--scope", "read"])  # fmt: skip
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("chr_") and " " not in key
    key_id = key.split("_")[1]
    backend = get_state(app).backend()
    record = backend.get_api_key(key_id)
    assert record is not None and record.scopes == ("ingest", "read")
    assert key.split("_", 2)[2] not in str(record)  # only the hash is stored

    listed = runner.invoke(args=["chronos", "list-api-keys", "--user", "alice"])
    assert key_id in listed.output and "active" in listed.output and key not in listed.output
    revoked = runner.invoke(args=["chronos", "revoke-api-key", key_id, "--user", "alice"])
    assert revoked.exit_code == 0 and backend.get_api_key(key_id).revoked_at is not None
    twice = runner.invoke(args=["chronos", "revoke-api-key", key_id, "--user", "alice"])
    assert twice.exit_code != 0 and "no active key" in twice.output
    nobody = runner.invoke(args=["chronos", "create-api-key", "--user", "nobody"])
    assert nobody.exit_code != 0 and "no user" in nobody.output
