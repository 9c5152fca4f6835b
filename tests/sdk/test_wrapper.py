"""chronos-run, run as a real subprocess against the fake ingest server."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import FakeIngest

CHRONOS_RUN = Path(sys.executable).with_name("chronos-run")


def chronos_run(ingest_url: str, *args: str, **kwargs: Any) -> list[str]:
    return [str(CHRONOS_RUN), "--endpoint", ingest_url, "--api-key", "k", *args]


def run(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOS_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def runs(ingest: FakeIngest) -> dict[str, list[dict[str, Any]]]:
    """Events grouped by execId."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in ingest.accepted():
        grouped.setdefault(event["execId"], []).append(event)
    return grouped


def only_run(ingest: FakeIngest) -> tuple[dict[str, Any], dict[str, Any]]:
    (events,) = runs(ingest).values()
    running, terminal = events
    assert running["status"] == "running"
    return running, terminal


def test_console_script_is_installed() -> None:
    assert CHRONOS_RUN.exists()


def test_success_passes_output_through_and_reports(ingest: FakeIngest) -> None:
    code = "import sys; print('hello out'); print('hello err', file=sys.stderr)"
    proc = run(chronos_run(ingest.url, "--label", "env=test", "--trigger-id", "trig-1",
                           "backup", "--", sys.executable, "-c", code))
    assert proc.returncode == 0
    assert proc.stdout == "hello out\n"
    assert proc.stderr == "hello err\n"  # nothing from chronos-run itself
    running, done = only_run(ingest)
    assert done["status"] == "success" and done["exitCode"] == 0
    assert done["jobId"] == "backup" and done["execId"] == running["execId"]
    assert done["stdout"] == "hello out\n" and done["stderr"] == "hello err\n"
    assert done["labels"] == {"env": "test"} and done["triggerId"] == "trig-1"
    assert isinstance(done["durationMs"], int) and done["finishedAt"].endswith("Z")
    assert done["metadata"] == {"command": shlex.join([sys.executable, "-c", code])}


def test_failing_shell_command_keeps_its_exit_code(ingest: FakeIngest) -> None:
    proc = run(chronos_run(ingest.url, "job", "--", "sh", "-c",
                           "echo out; echo err >&2; exit 3"))
    assert proc.returncode == 3
    assert proc.stdout == "out\n" and proc.stderr == "err\n"
    _, done = only_run(ingest)
    assert done["status"] == "failed" and done["exitCode"] == 3
    assert done["stderr"].endswith("err\n") and done["stdout"] == "out\n"


def test_unreachable_chronos_never_fails_the_command() -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.monotonic()
    proc = run(chronos_run(dead, "--flush-timeout", "0.5", "job", "--",
                           "sh", "-c", "echo still ran; exit 5"))
    assert proc.returncode == 5
    assert proc.stdout == "still ran\n"
    assert time.monotonic() - t0 < 5
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("chronos-run: ") for line in lines)


def test_garbage_options_still_run_the_command() -> None:
    proc = run([str(CHRONOS_RUN), "--no-such-flag", "job", "--", "sh", "-c", "exit 4"])
    assert proc.returncode == 4
    assert "chronos-run: bad options" in proc.stderr


def test_unreachable_chronos_with_spool_keeps_the_report(ingest: FakeIngest, tmp_path) -> None:
    ingest.down()
    proc = run(chronos_run(ingest.url, "--flush-timeout", "0.3", "--spool-dir", str(tmp_path),
                           "job", "--", "true"))
    assert proc.returncode == 0
    assert list(tmp_path.glob("*.json"))
    assert "kept in" in proc.stderr

    ingest.up()  # the next invocation delivers the previous run's report first
    proc = run(chronos_run(ingest.url, "--spool-dir", str(tmp_path), "job", "--", "true"))
    assert proc.returncode == 0
    assert len(runs(ingest)) == 2
    assert list(tmp_path.glob("*.json")) == []


def test_sigterm_is_forwarded_to_the_child(ingest: FakeIngest) -> None:
    script = 'trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.05; done'
    proc = subprocess.Popen(chronos_run(ingest.url, "job", "--", "sh", "-c", script),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 42
    assert out == "got TERM\n"
    _, done = only_run(ingest)
    assert done["exitCode"] == 42 and done["status"] == "failed"


def test_death_by_signal_is_reported(ingest: FakeIngest) -> None:
    proc = run(chronos_run(ingest.url, "job", "--", "sh", "-c", "kill -KILL $$"))
    assert proc.returncode == 128 + signal.SIGKILL
    _, done = only_run(ingest)
    assert done["exitCode"] == -signal.SIGKILL
    assert done["errorType"] == "Signal" and done["errorMessage"] == "killed by SIGKILL"


@pytest.mark.parametrize(("command", "exit_code", "error_type"),
                         [("no-such-command-xyz", 127, "FileNotFoundError"),
                          ("/dev/null", 126, "PermissionError")])
def test_command_that_cannot_start(ingest, command, exit_code, error_type) -> None:
    proc = run(chronos_run(ingest.url, "job", "--", command, "arg"))
    assert proc.returncode == exit_code
    assert proc.stderr.startswith(f"chronos-run: {command}: ")
    _, done = only_run(ingest)
    assert done["status"] == "failed" and done["exitCode"] == exit_code
    assert done["errorType"] == error_type


def test_no_command_is_a_usage_error() -> None:
    proc = run([str(CHRONOS_RUN), "job", "--"])
    assert proc.returncode == 2
