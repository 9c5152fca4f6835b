"""ChronosClient: a bounded queue, one daemon thread that batches and delivers, an optional spool.

Delivery policy, per batch (``POST /api/ingest/executions/batch``):

- 2xx: delivered; items the server rejected are logged and dropped, never retried.
- 413: the batch is split in halves and each half is sent; a single event that is still too
  large is dropped with a log line.
- 408, 429, 5xx and network errors: retried with exponential backoff and full jitter
  (``backoff_base`` doubling up to ``backoff_cap``), waiting at least ``Retry-After`` when the
  server sends one. The batch is retried for as long as the client is open; memory stays bounded
  because ``send`` drops the oldest queued event (or spills to the spool) when the queue is full.
- Any other status (3xx, 4xx): logged and the batch dropped.

With ``spool_dir``, a batch that failed once is written to disk and deleted after a 2xx, queued
events are spilled there while the server is unreachable, and ``close`` spools what is left, so
nothing is lost across a server outage or a process restart.

No public method raises, and none blocks except ``flush``/``close`` (bounded by their timeout) and
``register_jobs`` (one request, bounded by ``timeout``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any

from chronos_sdk import __version__
from chronos_sdk.events import iso_utc
from chronos_sdk.outbox import Batch, Event, Outbox
from chronos_sdk.spool import Spool
from chronos_sdk.transport import Response, Transport, UrllibTransport

DEFAULT_ENDPOINT = "http://127.0.0.1:5000"
REGISTER_PATH = "/api/ingest/jobs/register"
BATCH_PATH = "/api/ingest/executions/batch"

_clients: weakref.WeakSet[ChronosClient] = weakref.WeakSet()


class ChronosClient:
    """Sends execution events and job definitions to a Chronos server.

    ``api_key`` defaults to ``$CHRONOS_API_KEY``, ``endpoint`` to ``$CHRONOS_ENDPOINT`` or
    ``http://127.0.0.1:5000``. Counters: ``dropped`` (events given up: queue overflow, refused
    batches, left over at close without a spool), ``delivered`` (accepted or duplicate) and
    ``rejected`` (items the server refused individually).
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        transport: Transport | None = None,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10000,
        spool_dir: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        logger: logging.Logger | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.log = logger or logging.getLogger("chronos_sdk")
        self.api_key = api_key if api_key is not None else os.environ.get("CHRONOS_API_KEY")
        raw = endpoint or os.environ.get("CHRONOS_ENDPOINT") or DEFAULT_ENDPOINT
        self.endpoint = str(raw).rstrip("/")
        self.transport: Transport = transport or UrllibTransport()
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.dropped = 0
        self.delivered = 0
        self.rejected = 0
        self._outage = False
        self._logged: set[Any] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._disabled = not self._valid_endpoint()
        self.spool: Spool | None = None
        if spool_dir is not None:
            try:
                self.spool = Spool(spool_dir)
            except OSError as exc:
                self.log.error("chronos: spool directory %s unusable, spooling off: %s",
                               spool_dir, exc)
        self.outbox = Outbox(
            batch_size=max(1, int(batch_size)),
            flush_interval=max(0.0, float(flush_interval)),
            max_queue=max(1, int(max_queue)),
            spool=self.spool,
            on_drop=self._count_dropped,
            on_error=lambda message: self.log.error("chronos: %s", message),
        )
        if not self.api_key:
            self.log.warning("chronos: no API key (set CHRONOS_API_KEY); the server will refuse")
        atexit.register(self._atexit)
        _clients.add(self)
        if self.outbox.spooled and not self._disabled:
            self._ensure_worker()  # resend what an earlier process left behind

    def _valid_endpoint(self) -> bool:
        try:
            parts = urllib.parse.urlsplit(self.endpoint)
            if parts.scheme in ("http", "https") and parts.hostname:
                return True
        except ValueError:
            pass
        self.log.error("chronos: endpoint %r is not an http(s) URL; telemetry is disabled",
                       self.endpoint)
        return False

    # -- public API --------------------------------------------------------------------------

    def register_jobs(self, jobs: Iterable[Mapping[str, Any]]) -> Any:
        """Send job definitions now; return the server's parsed answer, or ``None`` on failure."""
        try:
            if self._disabled:
                return None
            payload = {"jobs": [_without_none(job) for job in jobs]}
            resp = self.transport.post(
                self.endpoint + REGISTER_PATH, self._headers(), _dumps(payload), self.timeout
            )
            if 200 <= resp.status < 300:
                return resp.json()
            self.log.warning("chronos: job registration refused: %s", _describe(resp))
        except Exception as exc:
            self.log.warning("chronos: job registration failed: %s", _exc_line(exc))
        return None

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue one execution event; never blocks. Sets ``execId`` when the event has none."""
        try:
            # A JSON round trip snapshots the event (later changes by the caller do not leak in)
            # and turns datetimes and other odd values into JSON now, not in the worker.
            event = json.loads(_dumps(_without_none(event)))
            event.setdefault("execId", uuid.uuid4().hex)
            event.setdefault("sdkVersion", __version__)
            if self._disabled or self._closed:
                self._count_dropped(1, "client closed or disabled")
                return
            self.outbox.put(event)
            self._ensure_worker()
        except Exception as exc:
            self.log.error("chronos: could not queue an event: %s", _exc_line(exc))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until all queued and spooled events are delivered or given up.

        Returns ``False`` if ``timeout`` seconds passed first. With the server down, only a
        timeout ends the wait; pass one.
        """
        try:
            if self._disabled or not self.outbox.pending():
                return True
            if self.outbox.stopping:
                return False
            self._ensure_worker()
            return self.outbox.wait_empty(timeout)
        except Exception as exc:
            self.log.error("chronos: flush failed: %s", _exc_line(exc))
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the thread. Idempotent.

        Events still undelivered are spooled when a spool is configured, else counted as dropped.
        """
        try:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self._atexit)
            deadline = time.monotonic() + timeout
            self.flush(timeout)
            self.outbox.stop()
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                # A little grace past the deadline lets a thread that is between attempts exit.
                thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
            self.outbox.save_leftovers()
        except Exception as exc:
            self.log.error("chronos: close failed: %s", _exc_line(exc))

    def __enter__(self) -> ChronosClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _atexit(self) -> None:
        self.close()

    def _ensure_worker(self) -> None:
        with self.outbox.cond:
            if self.outbox.stopping:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="chronos-sdk",
                                                daemon=True)
                self._thread.start()

    def _count_dropped(self, n: int, why: str) -> None:
        self.dropped += n
        key = ("dropped", why)
        if key not in self._logged or why == "not delivered before close":
            self._logged.add(key)
            self.log.warning("chronos: dropped %d event(s): %s (total dropped: %d)",
                             n, why, self.dropped)

    # -- delivery thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self.outbox.take()) is not None:
                if batch.events is None and not self.outbox.load(batch):
                    self.outbox.finish(batch)
                elif not self._deliver(batch):
                    return
        except Exception:
            self.log.exception("chronos: delivery thread crashed; it restarts on the next send")

    def _deliver(self, batch: Batch) -> bool:
        """Send one batch until it is done. ``False`` when the client stopped meanwhile."""
        events = batch.events or []
        attempt = 0
        while True:
            outcome, wait = self._post(events)
            if outcome == "done":
                if self._outage:
                    self._outage = False
                    self.log.info("chronos: server reachable again; delivering")
                self.outbox.finish(batch)
                return True
            if outcome == "split":
                self.outbox.split(batch)
                return True
            if self.outbox.stopping:
                return False
            attempt += 1
            self.outbox.keep(batch)
            self.outbox.spill()
            ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
            delay = max(wait, random.uniform(0, ceiling))  # noqa: S311 - jitter, not crypto
            if self.outbox.sleep(delay):
                return False

    def _post(self, events: list[Event]) -> tuple[str, float]:
        """One attempt. Returns ("done" | "split" | "retry", seconds the server asked to wait)."""
        url = self.endpoint + BATCH_PATH
        try:
            resp = self.transport.post(url, self._headers(), _dumps({"executions": events}),
                                       self.timeout)
        except (OSError, HTTPException) as exc:
            self._log_outage(f"cannot reach {self.endpoint}: {_exc_line(exc)}")
            return "retry", 0.0
        except Exception as exc:
            self._log_outage(f"transport error: {_exc_line(exc)}")
            return "retry", 0.0
        status = resp.status
        if 200 <= status < 300:
            self._accepted(resp, events)
            return "done", 0.0
        if status == 413:
            if len(events) > 1:
                return "split", 0.0
            self._count_dropped(1, f"event {events[0].get('execId')} too large (HTTP 413)")
            return "done", 0.0
        if status in (408, 429) or status >= 500:
            self._log_outage(f"server answered {_describe(resp)}")
            return "retry", _retry_after(resp)
        # Configuration problems (bad key, wrong URL) would repeat on every batch: log them once.
        once = status in (401, 403, 404)
        if not once or status not in self._logged:
            self._logged.add(status)
            self.log.log(logging.ERROR if once else logging.WARNING,
                         "chronos: batch of %d event(s) refused, dropped: %s",
                         len(events), _describe(resp))
        self.dropped += len(events)
        return "done", 0.0

    def _accepted(self, resp: Response, events: list[Event]) -> None:
        answer = resp.json()
        answer = answer if isinstance(answer, dict) else {}
        rejected = answer.get("rejected") or []
        rejected = rejected if isinstance(rejected, list) else []
        for item in rejected:
            index = item.get("index") if isinstance(item, dict) else None
            event = events[index] if isinstance(index, int) and 0 <= index < len(events) else {}
            errors = item.get("errors") if isinstance(item, dict) else item
            self.log.warning("chronos: server rejected event %s (job %s): %s",
                             event.get("execId"), event.get("jobId"), errors)
        self.rejected += len(rejected)
        accepted, duplicates = answer.get("accepted"), answer.get("duplicates")
        if isinstance(accepted, int):
            self.delivered += accepted + (duplicates if isinstance(duplicates, int) else 0)
        else:
            self.delivered += len(events) - len(rejected)

    def _log_outage(self, message: str) -> None:
        if self._outage:
            self.log.debug("chronos: %s; retrying", message)
        else:
            self._outage = True
            self.log.warning("chronos: %s; retrying in the background", message)

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"chronos-sdk-python/{__version__}",
        }
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers


def _after_fork_in_child() -> None:
    # A forked child inherits the queue and locks but not the thread; the parent keeps delivering
    # what was queued, and the child starts clean (with fresh, unheld locks).
    for client in list(_clients):
        client.outbox.reset()
        client._thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _without_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    """Datetimes as ISO 8601, anything else unknown as its ``str`` (never a failed batch)."""
    if isinstance(value, datetime):
        return iso_utc(value.timestamp()) if value.tzinfo else value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _retry_after(resp: Response) -> float:
    value = resp.headers.get("retry-after")
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def _describe(resp: Response) -> str:
    answer = resp.json()
    if isinstance(answer, dict) and answer.get("error"):
        code = f" [{answer['code']}]" if answer.get("code") else ""
        return f"HTTP {resp.status}{code}: {answer['error']}"
    return f"HTTP {resp.status}: {resp.body[:200].decode('utf-8', 'replace')}"


def _exc_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
