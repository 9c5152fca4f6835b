"""One run of a job: its identity, timing and capture, and the events that record it.

A run sends a ``running`` event when it starts and a terminal event with the same ``execId``
when it ends. ``KeyboardInterrupt`` and ``asyncio.CancelledError`` are recorded as
``cancelled``; the caller lets them propagate.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chronos_sdk.capture import Capture
from chronos_sdk.events import base_event, clip_fields, error_fields, iso_utc

if TYPE_CHECKING:
    from chronos_sdk.runner import ChronosRunner

PROPAGATE = (KeyboardInterrupt, asyncio.CancelledError)

Handler = Callable[[], Any]


@dataclass
class RunResult:
    """The outcome of one run. ``exc`` is the handler's exception, if it raised."""

    exec_id: str
    job_id: str
    status: str
    value: Any = None
    exc: BaseException | None = None
    exit_code: int | None = None
    duration_ms: int = 0
    stdout: str | None = None
    stderr: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass
class Job:
    """A registered handler and how to run it."""

    job_id: str
    fn: Handler | None
    timeout: float | None = None
    overlap: str = "allow"
    version: str | None = None
    labels: dict[str, str] | None = None
    snippet: str | None = field(default=None, repr=False)
    snippet_done: bool = False


class Run:
    """One run's identity, timing and capture; builds and sends its events."""

    def __init__(
        self,
        runner: ChronosRunner,
        job: Job,
        *,
        trigger_id: str | None,
        attempt: int,
        capture: bool = True,
    ) -> None:
        self.runner = runner
        self.job = job
        self.exec_id = uuid.uuid4().hex
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.capture = (
            Capture(runner.max_output_bytes) if capture and runner.capture_console else None
        )
        self._token: Any = None
        self.event = base_event(
            self.exec_id,
            job.job_id,
            "running",
            self.started,
            host=runner.host,
            app_version=runner._app_version_for(job.fn),
            job_version=job.version,
            attempt=attempt,
            trigger_id=trigger_id,
            labels=job.labels,
        )

    def start(self) -> None:
        self.runner.client.send(self.event)
        if self.capture is not None:
            self._token = self.capture.activate()

    def succeed(self, value: Any) -> RunResult:
        return self.finish("success", value=value, exit_code=0)

    def timed_out(self) -> RunResult:
        timeout = self.job.timeout
        if self.job.fn is not None and not is_async(self.job.fn):
            self.runner.log.warning(
                "chronos: job %s exceeded its %ss timeout; its thread is abandoned and may "
                "still be running", self.job.job_id, timeout)
        error = {"errorType": "TimeoutError", "errorMessage": f"timed out after {timeout}s"}
        return self.finish("timeout", error=error)

    def fail(self, exc: BaseException) -> RunResult:
        status, exit_code = "failed", 1
        if isinstance(exc, SystemExit):
            code = exc.code
            if code is None or code == 0:
                status, exit_code = "success", 0
            elif isinstance(code, int):
                exit_code = code
        elif isinstance(exc, PROPAGATE):
            status, exit_code = "cancelled", None
        error = error_fields(exc) if status != "success" else None
        return self.finish(status, exc=exc, exit_code=exit_code, error=error)

    def finish(
        self,
        status: str,
        *,
        value: Any = None,
        exc: BaseException | None = None,
        exit_code: int | None = None,
        error: dict[str, Any] | None = None,
        snippet: bool = True,
    ) -> RunResult:
        if self._token is not None:
            # ValueError: finished in another context than it started; nothing to undo there.
            with contextlib.suppress(ValueError):
                Capture.deactivate(self._token)
            self._token = None
        duration_ms = int((time.perf_counter() - self._t0) * 1000)
        result = RunResult(self.exec_id, self.job.job_id, status, value, exc, exit_code,
                           duration_ms)
        try:
            event = dict(self.event, status=status, exitCode=exit_code, durationMs=duration_ms,
                         finishedAt=iso_utc(self.started + duration_ms / 1000), **(error or {}))
            truncated = []
            if self.capture is not None:
                result.stdout = event["stdout"] = self.capture.stdout.getvalue()
                result.stderr = event["stderr"] = self.capture.stderr.getvalue()
                truncated += [n for n in ("stdout", "stderr")
                              if getattr(self.capture, n).truncated]
            code = self.runner._snippet(self.job) if snippet else None
            if code is not None:
                event.update(codeSnippet=code, codeLanguage="python")
            fields = ("errorMessage", "errorStack", "codeSnippet")
            truncated += clip_fields(event, fields, self.runner.max_output_bytes)
            if truncated:
                event["metadata"] = {"truncated": truncated}
            self.runner.client.send(event)
        except Exception as exc:  # recording must never break the run it records
            self.runner.log.error("chronos: could not record run %s: %r", self.exec_id, exc)
        return result


class Tracked:
    """A run of code that the caller executes itself; see :meth:`ChronosRunner.track`."""

    def __init__(self, runner: ChronosRunner, job_id: str, trigger_id: str | None) -> None:
        self.runner = runner
        self.job_id = job_id
        self.trigger_id = trigger_id
        self.result: RunResult | None = None
        self._run: Run | None = None

    @property
    def exec_id(self) -> str | None:
        return self._run.exec_id if self._run else None

    def __enter__(self) -> Tracked:
        try:
            job = self.runner._jobs.get(self.job_id) or Job(self.job_id, None)
            self._run = Run(self.runner, job, trigger_id=self.trigger_id, attempt=1)
            self._run.start()
        except Exception as exc:
            self.runner.log.error("chronos: could not start tracking %s: %r", self.job_id, exc)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._run is not None:
            self.result = self._run.succeed(None) if exc is None else self._run.fail(exc)
        return False

    async def __aenter__(self) -> Tracked:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return self.__exit__(exc_type, exc, tb)


def is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
