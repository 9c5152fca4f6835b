"""ChronosRunner: run job handlers and record each run as execution events.

A run sends a ``running`` event when it starts and a terminal event (``success``, ``failed``,
``timeout`` or ``cancelled``) with the same ``execId`` when it ends. The handler's exception is
recorded and returned in the :class:`RunResult`, never raised, except ``KeyboardInterrupt`` and
``asyncio.CancelledError``, which are recorded as ``cancelled`` and then propagate, because
swallowing them would break Ctrl-C and task cancellation. :meth:`ChronosRunner.track`
re-raises whatever the block raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import copy_context
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chronos_sdk.client import ChronosClient
from chronos_sdk.events import detect_app_version, hostname, iso_utc
from chronos_sdk.runs import PROPAGATE, Handler, Job, Run, RunResult, Tracked, is_async
from chronos_sdk.triggers import TriggerListener

if TYPE_CHECKING:
    import ssl

SKIPPED_MESSAGE = "skipped: previous run still running"


class ChronosRunner:
    """Registers job handlers, runs them, and reports every run to Chronos.

    ``client_kwargs`` go to :class:`ChronosClient` (``batch_size``, ``spool_dir``, ...) unless
    ``client`` is given. ``app_version`` defaults to ``$CHRONOS_APP_VERSION``, then the installed
    version of the handler's top-level package, then the short git commit of the working directory.

    :meth:`start` connects to the server's runner websocket and runs the registered handlers when
    their jobs are due. ``runner_name`` (default ``$CHRONOS_RUNNER_NAME``) is a stable name for
    this runner; ``max_concurrent_runs`` bounds the handlers running at once for triggers;
    ``reconnect_base``/``reconnect_cap`` set the reconnection backoff; ``ssl_context`` is used for
    ``https`` endpoints.
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        capture_console: bool = True,
        capture_code: bool = True,
        app_version: str | None = None,
        host: str | None = None,
        client: ChronosClient | None = None,
        max_output_bytes: int = 64 * 1024,
        logger: logging.Logger | None = None,
        runner_name: str | None = None,
        max_concurrent_runs: int = 4,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.log = logger or logging.getLogger("chronos_sdk")
        self.client = client or ChronosClient(api_key, endpoint, logger=self.log, **client_kwargs)
        self.capture_console = capture_console
        self.capture_code = capture_code
        self.app_version = app_version
        self.host = host or hostname()
        self.max_output_bytes = max_output_bytes
        self._jobs: dict[str, Job] = {}
        self._definitions: dict[str, dict[str, Any]] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()
        self._versions: dict[str | None, str | None] = {}
        self.listener = TriggerListener(
            self, name=runner_name, max_concurrent_runs=max_concurrent_runs,
            reconnect_base=reconnect_base, reconnect_cap=reconnect_cap, ssl_context=ssl_context,
        )

    # -- registration ------------------------------------------------------------------------

    def register(
        self,
        job_id: str,
        fn: Handler,
        *,
        timeout: float | None = None,
        overlap: str = "allow",
        version: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """Register ``fn`` (sync or ``async def``, no arguments) as the handler of ``job_id``."""
        if overlap not in ("allow", "skip"):
            raise ValueError(f"overlap must be 'allow' or 'skip', not {overlap!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._jobs[job_id] = Job(job_id, fn, timeout, overlap, version, labels)

    def job(
        self,
        job_id: str,
        schedule: str | None = None,
        run_mode: str | None = None,
        run_at: datetime | str | float | None = None,
        timezone: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        overlap: str = "allow",
        register: bool = True,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator: register the handler and, unless ``register=False``, remember its job
        definition for :meth:`sync_jobs`. ``run_mode`` defaults to ``recurring`` with a
        ``schedule`` and ``once`` with only ``run_at``; ``timeout`` also becomes the job's
        ``maxRuntimeSeconds``."""

        def decorate(fn: Handler) -> Handler:
            self.register(job_id, fn, timeout=timeout, overlap=overlap, version=version,
                          labels=labels)
            if register:
                mode = run_mode or ("recurring" if schedule else "once" if run_at else None)
                definition = {
                    "id": job_id,
                    "name": name,
                    "description": description,
                    "schedule": schedule,
                    "runMode": mode,
                    "runAt": _run_at(run_at),
                    "timezone": timezone,
                    "tags": list(tags) if tags else None,
                    "version": version,
                    "maxRuntimeSeconds": math.ceil(timeout) if timeout else None,
                }
                self._definitions[job_id] = {
                    k: v for k, v in definition.items() if v is not None
                }
            return fn

        return decorate

    def register_jobs(self, jobs: list[dict[str, Any]] | None = None) -> Any:
        """Send job definitions (by default those declared with :meth:`job`); never raises."""
        return self.sync_jobs() if jobs is None else self.client.register_jobs(jobs)

    def sync_jobs(self) -> Any:
        """Send every definition declared with :meth:`job`; the server's answer or ``None``."""
        if not self._definitions:
            return None
        return self.client.register_jobs(list(self._definitions.values()))

    # -- running -----------------------------------------------------------------------------

    def run_now(self, job_id: str, *, trigger_id: str | None = None, attempt: int = 1) -> RunResult:
        """Run ``job_id``'s handler in this thread and record the run.

        An ``async def`` handler runs under ``asyncio.run``; inside a running event loop use
        ``await runner.arun_now(...)`` instead.
        """
        job = self._get(job_id)
        if is_async(job.fn):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self.arun_now(job_id, trigger_id=trigger_id, attempt=attempt))
            raise RuntimeError(
                f"job {job_id!r} has an async handler and an event loop is running in this "
                f"thread; use `await runner.arun_now({job_id!r})` instead of run_now()"
            )
        if not self._acquire(job):
            return self._skipped(job, trigger_id, attempt)
        run = Run(self, job, trigger_id=trigger_id, attempt=attempt)
        run.start()
        if job.timeout is None:
            try:
                value = job.fn()  # type: ignore[misc]
            except BaseException as exc:
                result = run.fail(exc)
                if isinstance(exc, PROPAGATE):
                    raise
                return result
            finally:
                self._release(job)
            return run.succeed(value)
        done = threading.Event()
        outcome: list[Any] = []

        def on_done(ok: bool, value: Any) -> None:
            outcome[:] = [ok, value]
            done.set()

        self._in_thread(job, on_done)
        try:
            finished = done.wait(job.timeout)
        except BaseException as exc:
            run.fail(exc)
            raise
        if not finished:
            return run.timed_out()
        ok, value = outcome
        return run.succeed(value) if ok else run.fail(value)

    async def arun_now(
        self, job_id: str, *, trigger_id: str | None = None, attempt: int = 1
    ) -> RunResult:
        """Run ``job_id``'s handler from async code; a sync handler runs in a worker thread."""
        job = self._get(job_id)
        if not self._acquire(job):
            return self._skipped(job, trigger_id, attempt)
        run = Run(self, job, trigger_id=trigger_id, attempt=attempt)
        run.start()
        released = False
        try:
            if is_async(job.fn):
                awaitable: Awaitable[Any] = job.fn()  # type: ignore[misc]
            else:
                awaitable = self._thread_future(job)
                released = True  # the thread releases the overlap slot when it really ends
            if job.timeout is None:
                value = await awaitable
            else:
                task = asyncio.ensure_future(awaitable)
                try:
                    done, _ = await asyncio.wait({task}, timeout=job.timeout)
                except asyncio.CancelledError:
                    task.cancel()
                    raise
                if not done:
                    await _cancel(task)
                    return run.timed_out()
                value = task.result()
        except BaseException as exc:
            result = run.fail(exc)
            if isinstance(exc, PROPAGATE):
                raise
            return result
        finally:
            if not released:
                self._release(job)
        return run.succeed(value)

    def track(self, job_id: str, *, trigger_id: str | None = None) -> Tracked:
        """Context manager that records the enclosed block as a run of ``job_id``.

        The block's exception is recorded and re-raised unchanged. Use ``async with`` (or
        :meth:`atrack`) in async code.
        """
        return Tracked(self, job_id, trigger_id)

    atrack = track

    # -- triggers from the server ------------------------------------------------------------

    def start(self) -> None:
        """Connect to the server in a background thread and run registered jobs when due.

        Returns at once and never raises: connection problems are logged and retried with
        backoff. Calling it again while started does nothing. Jobs registered after ``start()``
        are announced on the next reconnection.
        """
        try:
            self.listener.start()
        except Exception as exc:
            self.log.error("chronos: could not start the runner: %r", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect, and wait up to ``timeout`` seconds for triggered runs still in progress.
        Triggers already acknowledged but not yet started still run first."""
        try:
            self.listener.stop(timeout)
        except Exception as exc:
            self.log.error("chronos: could not stop the runner cleanly: %r", exc)

    @property
    def connected(self) -> bool:
        """Whether the runner connection is up (the server answered ``ready``)."""
        return self.listener.connected

    @property
    def triggers_received(self) -> int:
        """How many ``job:trigger`` messages arrived, duplicates and unknown jobs included."""
        return self.listener.triggers_received

    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the runner connection (see :meth:`stop`), then flush and close the client."""
        deadline = time.monotonic() + timeout
        self.stop(timeout)
        self.client.close(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> ChronosRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise KeyError(
                f"no handler registered for job {job_id!r} (registered: {known}); "
                "use runner.register() or @runner.job()"
            ) from None

    def _acquire(self, job: Job) -> bool:
        with self._lock:
            if job.overlap == "skip" and self._running.get(job.job_id):
                return False
            self._running[job.job_id] = self._running.get(job.job_id, 0) + 1
            return True

    def _release(self, job: Job) -> None:
        with self._lock:
            self._running[job.job_id] -= 1

    def _skipped(self, job: Job, trigger_id: str | None, attempt: int) -> RunResult:
        run = Run(self, job, trigger_id=trigger_id, attempt=attempt, capture=False)
        return run.finish("cancelled", error={"errorMessage": SKIPPED_MESSAGE}, snippet=False)

    def _in_thread(self, job: Job, on_done: Callable[[bool, Any], None]) -> None:
        """Run the handler in a daemon thread that shares this run's context (and capture)."""
        ctx = copy_context()

        def target() -> None:
            try:
                ok, value = True, ctx.run(job.fn)  # type: ignore[arg-type]
            except BaseException as exc:
                ok, value = False, exc
            finally:
                self._release(job)
            on_done(ok, value)

        name = f"chronos-job-{job.job_id}"
        threading.Thread(target=target, name=name, daemon=True).start()

    def _thread_future(self, job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        def on_done(ok: bool, value: Any) -> None:
            # RuntimeError: the loop is closed, so nobody waits for this result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, ok, value)

        self._in_thread(job, on_done)
        return future

    def _app_version_for(self, fn: Any) -> str | None:
        if self.app_version:
            return self.app_version
        module = getattr(fn, "__module__", None)
        if module not in self._versions:
            self._versions[module] = detect_app_version(module)
        return self._versions[module]

    def _snippet(self, job: Job) -> str | None:
        if not self.capture_code or job.fn is None:
            return None
        if not job.snippet_done:
            job.snippet_done = True
            try:
                job.snippet = inspect.getsource(job.fn)
            except (OSError, TypeError):
                job.snippet = None
        return job.snippet


async def _cancel(task: asyncio.Future[Any], grace: float = 1.0) -> None:
    """Cancel a timed-out handler and give it ``grace`` seconds to unwind."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    await asyncio.wait({task}, timeout=grace)


def _run_at(value: datetime | str | float | None) -> str | int | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return iso_utc(value.astimezone(UTC).timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return value
