"""``chronos-run JOB_ID -- COMMAND [ARGS...]``: run a command and report it as one run of a job.

The command runs without a shell (pass ``sh -c '...'`` for one). Its stdout and stderr stream
through live while the head and tail of each are kept for the report. SIGTERM and SIGINT are
forwarded to it, and ``chronos-run`` exits with its exit code (128 + N when signal N killed it).

Reporting never changes the outcome: when Chronos is unreachable or misconfigured, each problem is
one ``chronos-run:`` line on stderr and the command's exit code is still the exit code. Even
unparsable options only turn reporting off when the command follows ``--``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import IO, Any

from chronos_sdk.capture import OutputBuffer, truncate
from chronos_sdk.client import ChronosClient
from chronos_sdk.events import base_event, detect_app_version, error_fields, hostname, iso_utc

FORWARDED = (signal.SIGTERM, signal.SIGINT)
READER_GRACE = 2.0  # seconds to drain pipes after exit; a daemonized grandchild may hold them open

log = logging.getLogger("chronos_sdk")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    opts, command = _parse(argv)
    if not command:
        print("chronos-run: no command given; usage: chronos-run JOB_ID -- COMMAND [ARGS...]",
              file=sys.stderr)
        return 2
    reporter = _Reporter.create(opts, command) if opts is not None else None
    return _execute(command, reporter, opts.max_output_bytes if opts else 64 * 1024)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chronos-run",
        usage="chronos-run [options] JOB_ID -- COMMAND [ARGS...]",
        description="Run COMMAND and report it to Chronos as one run of JOB_ID.",
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--endpoint", help="Chronos URL (default: $CHRONOS_ENDPOINT)")
    p.add_argument("--api-key", help="API key (default: $CHRONOS_API_KEY)")
    p.add_argument("--trigger-id", help="the trigger this run answers, if any")
    p.add_argument("--label", action="append", default=[], metavar="K=V",
                   help="a label for this run (repeatable)")
    p.add_argument("--spool-dir", default=os.environ.get("CHRONOS_SPOOL_DIR"),
                   help="keep undelivered events here (default: $CHRONOS_SPOOL_DIR)")
    p.add_argument("--flush-timeout", type=float, default=10.0,
                   help="seconds to wait for delivery after the command ends (default: 10)")
    p.add_argument("--max-output-bytes", type=int, default=64 * 1024,
                   help="bytes of stdout and of stderr to keep, head and tail (default: 65536)")
    return p


def _parse(argv: list[str]) -> tuple[argparse.Namespace | None, list[str]]:
    """Options and the command. Options are ``None`` when unparsable but a command is known."""
    parser = _parser()
    if "--" in argv:
        i = argv.index("--")
        pre, command = argv[:i], argv[i + 1 :]
        try:
            return parser.parse_args(pre), command
        except SystemExit as exc:
            if exc.code == 0 or not command:
                raise
            log.error("bad options %s; running the command without reporting", shlex.join(pre))
            return None, command
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    return opts, opts.command


class _Reporter:
    """The Chronos side of one wrapped run. Every method logs and swallows its errors."""

    def __init__(self, client: ChronosClient, event: dict[str, Any], opts: Any) -> None:
        self.client = client
        self.event = event
        self.opts = opts
        self.t0 = time.perf_counter()

    @classmethod
    def create(cls, opts: argparse.Namespace, command: list[str]) -> _Reporter | None:
        try:
            labels = {}
            for item in opts.label:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    log.warning("ignoring label %r (expected K=V)", item)
                    continue
                labels[key] = value
            client = ChronosClient(opts.api_key, opts.endpoint, spool_dir=opts.spool_dir,
                                   flush_interval=0.2,
                                   timeout=min(10.0, max(0.5, opts.flush_timeout)))
            event = base_event(uuid.uuid4().hex, opts.job_id, "running", time.time(),
                               host=hostname(), app_version=detect_app_version(),
                               trigger_id=opts.trigger_id, labels=labels)
            return cls(client, event, opts)
        except Exception as exc:
            log.error("reporting disabled: %s: %s", type(exc).__name__, exc)
            return None

    def started(self) -> None:
        self.t0 = time.perf_counter()
        self.client.send(self.event)

    def finished(self, exit_code: int, out: OutputBuffer, err: OutputBuffer,
                 error: dict[str, Any] | None = None, command: list[str] | None = None) -> None:
        try:
            duration_ms = int((time.perf_counter() - self.t0) * 1000)
            event = dict(self.event, status="success" if exit_code == 0 else "failed",
                         exitCode=exit_code, durationMs=duration_ms,
                         finishedAt=iso_utc(time.time()), stdout=out.getvalue(),
                         stderr=err.getvalue(), **(error or {}))
            metadata: dict[str, Any] = {}
            if command:
                metadata["command"] = truncate(shlex.join(command), 1024)[0]
            cut = [name for name, buf in (("stdout", out), ("stderr", err)) if buf.truncated]
            if cut:
                metadata["truncated"] = cut
            if metadata:
                event["metadata"] = metadata
            self.client.send(event)
            self.client.close(self.opts.flush_timeout)
            if self.client.spool is not None and not self.client.flush(0):
                log.warning("report not delivered within %ss; kept in %s for the next run",
                            self.opts.flush_timeout, self.opts.spool_dir)
        except Exception as exc:
            log.error("reporting failed: %s: %s", type(exc).__name__, exc)


class _Forwarder:
    """Forwards SIGTERM and SIGINT to the child, remembering any that arrive before it exists."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}
        # At a terminal, Ctrl-C already reaches the child (same foreground process group);
        # forwarding it again would interrupt the child twice.
        self.tty_sigint = _in_foreground_of_tty()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in FORWARDED:
            self.previous[signum] = signal.signal(signum, self._handle)

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        for signum in self.pending:
            self._send(signum)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.tty_sigint:
            return
        if self.proc is None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        try:
            assert self.proc is not None
            self.proc.send_signal(signum)
        except OSError:
            pass  # the child already exited


def _in_foreground_of_tty() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def _execute(command: list[str], reporter: _Reporter | None, max_bytes: int) -> int:
    out, err = OutputBuffer(max_bytes), OutputBuffer(max_bytes)
    if reporter:
        reporter.started()
    forwarder = _Forwarder()
    forwarder.install()
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        forwarder.restore()
        code = 126 if isinstance(exc, PermissionError) else 127
        print(f"chronos-run: {command[0]}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        err.write(f"{command[0]}: {exc.strerror or exc}\n")
        if reporter:
            error = error_fields(exc)
            del error["errorStack"]  # the wrapper's own frames say nothing about the command
            reporter.finished(code, out, err, error, command)
        return code
    forwarder.attach(proc)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        _start_reader(proc.stdout, _binary(sys.stdout), out),
        _start_reader(proc.stderr, _binary(sys.stderr), err),
    ]
    rc = proc.wait()
    deadline = time.monotonic() + READER_GRACE
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    forwarder.restore()
    error = None
    exit_code = rc
    if rc < 0:
        signum = -rc
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        error = {"errorType": "Signal", "errorMessage": f"killed by {name}"}
        exit_code = 128 + signum
    if reporter:
        reporter.finished(rc, out, err, error, command)
    if all(not r.is_alive() for r in readers):
        proc.stdout.close()
        proc.stderr.close()
    return exit_code


def _binary(stream: Any) -> IO[bytes] | None:
    return getattr(stream, "buffer", None)


def _start_reader(src: IO[bytes], dest: IO[bytes] | None, buf: OutputBuffer) -> threading.Thread:
    def pump() -> None:
        target = dest
        fd = src.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            buf.write(chunk)
            if target is not None:
                try:
                    target.write(chunk)
                    target.flush()
                except (OSError, ValueError):
                    target = None  # our own output is gone; keep draining the child's

    thread = threading.Thread(target=pump, name="chronos-run-reader", daemon=True)
    thread.start()
    return thread


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().removeprefix("chronos: ")
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc})"
        return "chronos-run: " + " ".join(message.split())


def _setup_logging() -> None:
    if any(isinstance(h.formatter, _OneLine) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False


if __name__ == "__main__":
    sys.exit(main())
