"""The trigger listener behind ``ChronosRunner.start()``: the runner side of the runner protocol
(docs/runner-protocol.md).

One daemon thread holds the websocket to ``{endpoint}/ws/runner``: it sends ``hello`` with the
registered job ids, waits for ``ready``, then acknowledges each ``job:trigger`` at once and hands
it to a small pool of daemon worker threads, so a slow handler never blocks the socket (pings are
still answered). A trigger id already seen (the last 10,000 are remembered) is acknowledged again
but not run twice. A trigger for a job this runner has no handler for is ignored, not
acknowledged, so the server delivers it to a runner that has one.

Connection problems never reach the host application: they are logged (a warning for the first,
debug for the next ones of the same outage) and the thread reconnects with exponential backoff and
full jitter.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from chronos_sdk import __version__
from chronos_sdk.events import SHORT_MAX
from chronos_sdk.websocket import WebSocket, WebSocketClosed, WebSocketError, ws_url

if TYPE_CHECKING:
    import ssl

    from chronos_sdk.runner import ChronosRunner

RUNNER_PATH = "/ws/runner"
MAX_HELLO_JOBS = 1000
SEEN_MAX = 10_000
#: The close code of a server that is up but cannot serve now (its storage is down).
TRY_AGAIN_LATER = 1013

Trigger = tuple[str, str, int]  # job id, trigger id, attempt


class SeenTriggers:
    """The last ``size`` trigger ids, least recently seen evicted first."""

    def __init__(self, size: int = SEEN_MAX) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, trigger_id: str) -> bool:
        """Remember ``trigger_id``; ``False`` if it was already remembered."""
        if trigger_id in self._ids:
            self._ids.move_to_end(trigger_id)
            return False
        self._ids[trigger_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True

    def discard(self, trigger_id: str) -> None:
        self._ids.pop(trigger_id, None)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class TriggerListener:
    def __init__(
        self,
        runner: ChronosRunner,
        *,
        name: str | None = None,
        max_concurrent_runs: int = 4,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
        connect_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.runner = runner
        self.log = runner.log
        self.name = name or os.environ.get("CHRONOS_RUNNER_NAME") or None
        self.max_concurrent_runs = max(1, int(max_concurrent_runs))
        self.reconnect_base = float(reconnect_base)
        self.reconnect_cap = float(reconnect_cap)
        self.connect_timeout = float(connect_timeout)
        self.idle_timeout = float(idle_timeout)
        self.ssl_context = ssl_context
        self.connected = False
        self.server_name: str | None = None  # the name the server gave this runner in `ready`
        self.triggers_received = 0  # every job:trigger message, duplicates and unknown jobs too
        self.connections = 0  # sessions that reached `ready`
        self.seen = SeenTriggers()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._queue: queue.Queue[Trigger | None] = queue.Queue()
        self._ws: WebSocket | None = None
        self._outage = False
        self._warned_jobs: set[str] = set()
        self._warned_long = False
        self._last_error: str | None = None  # the last `error` message of the server

    # -- control (called from the host application) -----------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            client = self.runner.client
            if client._disabled or client._closed:
                self.log.error("chronos: runner not started: the client is %s",
                               "closed" if client._closed else "disabled (bad endpoint)")
                return
            self.url = ws_url(client.endpoint, RUNNER_PATH)
            self._stop = threading.Event()
            self._queue = queue.Queue()
            self._workers = [
                threading.Thread(target=self._work, args=(self._queue,),
                                 name=f"chronos-runner-worker-{i}", daemon=True)
                for i in range(self.max_concurrent_runs)
            ]
            for worker in self._workers:
                worker.start()
            self._thread = threading.Thread(target=self._main, args=(self._stop, self._queue),
                                            name="chronos-runner", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection, then give runs in progress up to ``timeout`` seconds to end."""
        deadline = time.monotonic() + timeout
        with self._lock:
            thread, workers, ws = self._thread, self._workers, self._ws
            self._thread, self._workers = None, []
            self._stop.set()
            if thread is None:
                return
            for _ in workers:
                self._queue.put(None)  # after the triggers already taken: they still run
        if ws is not None:
            ws.close(1000, "runner stopping", timeout=min(1.0, timeout))
        for t in [thread, *workers]:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self.log.warning("chronos: the runner connection thread did not stop in time")

    # -- the connection thread ---------------------------------------------------------------

    def _main(self, stop: threading.Event, jobs_queue: queue.Queue[Trigger | None]) -> None:
        attempt = 0
        while not stop.is_set():
            try_later = False
            try:
                self._session(stop, jobs_queue)
            except Exception as exc:
                # Such a server says `ready`, then closes at once: backing off as after a
                # failed attempt keeps its runners from reconnecting at the base delay.
                try_later = isinstance(exc, WebSocketClosed) and exc.code == TRY_AGAIN_LATER
                if not stop.is_set():
                    self._problem(exc)
            finally:
                was_ready, self.connected = self.connected, False
                with self._lock:
                    ws, self._ws = self._ws, None
                if ws is not None:
                    ws.abort()
            if stop.is_set():
                break
            # a session that got `ready` resets the backoff, unless it was told to try later
            attempt = 1 if was_ready and not try_later else attempt + 1
            ceiling = min(self.reconnect_cap, self.reconnect_base * 2 ** (attempt - 1))
            stop.wait(random.uniform(0, ceiling))  # noqa: S311 - jitter, not crypto

    def _session(self, stop: threading.Event, jobs_queue: queue.Queue[Trigger | None]) -> None:
        """One connection: hello, ready, then messages until it breaks (raises) or stop()."""
        client = self.runner.client
        headers = {"User-Agent": f"chronos-sdk-python/{__version__}"}
        if client.api_key:
            headers["x-api-key"] = client.api_key
        ws = WebSocket.connect(self.url, headers, timeout=self.connect_timeout,
                               ssl_context=self.ssl_context)
        with self._lock:
            if stop.is_set():
                ws.abort()
                return
            self._ws = ws
        jobs = sorted(j for j in self.runner._jobs if 0 < len(j) <= SHORT_MAX)
        if len(jobs) < len(self.runner._jobs) and not self._warned_long:
            self._warned_long = True  # the server refuses a hello with such an id in it
            self.log.warning("chronos: job ids longer than %d characters cannot be triggered",
                             SHORT_MAX)
        if len(jobs) > MAX_HELLO_JOBS:
            self.log.warning("chronos: %d jobs registered; only the first %d are announced",
                             len(jobs), MAX_HELLO_JOBS)
            jobs = jobs[:MAX_HELLO_JOBS]
        hello: dict[str, Any] = {"type": "hello", "jobs": jobs}
        if self.name:
            hello["runner"] = self.name
        ws.send(json.dumps(hello))
        ready_by = time.monotonic() + self.connect_timeout
        while not stop.is_set():
            # Before `ready`, the handshake timeout; after it, the protocol's 60 s of silence
            # (the server pings every 20 s).
            if self.connected:
                wait = ws.last_received + self.idle_timeout - time.monotonic()
            else:
                wait = ready_by - time.monotonic()
            raw = ws.recv(max(0.0, wait))
            if raw is not None:
                self._on_message(ws, raw, stop, jobs_queue)
            elif not self.connected:
                raise WebSocketError("no `ready` from the server")
            elif time.monotonic() - ws.last_received >= self.idle_timeout:
                raise WebSocketError(f"nothing received for {self.idle_timeout:g}s")

    def _on_message(self, ws: WebSocket, raw: str | bytes, stop: threading.Event,
                    jobs_queue: queue.Queue[Trigger | None]) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            self.log.debug("chronos: ignored a runner message that is not JSON")
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "job:trigger":
            self._on_trigger(ws, message, stop, jobs_queue)
        elif kind == "ping":
            ws.send('{"type":"pong"}')
        elif kind == "ready":
            self._on_ready(message)
        elif kind == "error":
            self._last_error = str(message.get("error"))
            self.log.debug("chronos: runner error from the server: %s", self._last_error)
        # anything else: a newer server; ignored

    def _on_ready(self, message: dict[str, Any]) -> None:
        name = message.get("runner")
        self.server_name = name if isinstance(name, str) else None
        self.connected = True
        self.connections += 1
        level = logging.INFO if self._outage or self.connections == 1 else logging.DEBUG
        self._outage = False
        self.log.log(level, "chronos: runner connected to %s as %s (%d jobs)", self.url,
                     self.server_name or "?", len(self.runner._jobs))

    def _on_trigger(self, ws: WebSocket, message: dict[str, Any], stop: threading.Event,
                    jobs_queue: queue.Queue[Trigger | None]) -> None:
        self.triggers_received += 1
        job_id, trigger_id = message.get("jobId"), message.get("triggerId")
        if not (isinstance(job_id, str) and isinstance(trigger_id, str) and trigger_id):
            self.log.debug("chronos: ignored a malformed trigger: %r", message)
            return
        if job_id not in self.runner._jobs:  # not acked: the server delivers it elsewhere
            if job_id not in self._warned_jobs:
                self._warned_jobs.add(job_id)
                self.log.warning("chronos: trigger for job %r, which this runner has no handler "
                                 "for; left to other runners", job_id)
            return
        ack = json.dumps({"type": "ack", "triggerId": trigger_id})
        if not self.seen.add(trigger_id):
            ws.send(ack)  # the server missed our ack; it is not run a second time
            return
        delivery = message.get("delivery")
        ok = isinstance(delivery, int) and not isinstance(delivery, bool) and delivery >= 1
        # Under the lock, so that stop() cannot slip in between the ack and the queueing: a
        # trigger acknowledged is a trigger run (stop() queues the workers' end after it).
        with self._lock:
            if stop.is_set():
                self.seen.discard(trigger_id)  # not acked: the server gives it to another runner
                return
            try:
                ws.send(ack)
            except BaseException:
                self.seen.discard(trigger_id)  # not acked, not run: a redelivery may run it
                raise
            jobs_queue.put((job_id, trigger_id, delivery if ok else 1))

    def _problem(self, exc: BaseException) -> None:
        error, self._last_error = self._last_error, None
        if isinstance(exc, WebSocketClosed) and exc.code in (4401, 4403):
            what = f"refused ({exc.code}: {error or exc.reason or 'bad API key'})"
        else:
            what = f"{type(exc).__name__}: {exc}" + (f" ({error})" if error else "")
        if self._outage:
            self.log.debug("chronos: runner connection to %s: %s; retrying", self.url, what)
        else:
            self._outage = True
            self.log.warning("chronos: runner connection to %s: %s; reconnecting in the "
                             "background", self.url, what)

    # -- worker threads ----------------------------------------------------------------------

    def _work(self, jobs: queue.Queue[Trigger | None]) -> None:
        while (item := jobs.get()) is not None:
            job_id, trigger_id, attempt = item
            try:
                self.runner.run_now(job_id, trigger_id=trigger_id, attempt=attempt)
            except BaseException:  # recorded as cancelled by run_now; the worker carries on
                self.log.exception("chronos: run of %s (trigger %s) raised", job_id, trigger_id)
