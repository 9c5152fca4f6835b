"""Live events for the dashboard: one backend subscription per process, fanned out to that
process's websocket clients, each tenant's events to that tenant's clients only.

Each client has a bounded queue: a slow or dead client loses its own oldest events (and is
told so) and never blocks the others. The subscriber pings the backend every 20 s and, when
the connection is lost, resubscribes with backoff; its state is reported by ``/healthz``.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from chronos.backends.base import Backend, Subscription
from chronos.models import Event

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
PING_EVERY_S = 20.0


class Client:
    """One connected websocket: its tenant and its bounded queue of events."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                try:  # drop the oldest, keep the newest
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass


class LiveHub:
    """The per-process subscriber and its clients."""

    def __init__(self, backend: Callable[[], Backend]) -> None:
        self._backend = backend
        self._clients: dict[str, set[Client]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.state = "idle"
        self.last_event_at: float | None = None
        self.reconnects = 0

    def register(self, tenant_id: str) -> Client:
        client = Client(tenant_id)
        with self._lock:
            self._clients.setdefault(tenant_id, set()).add(client)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="chronos-live",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        return client

    def unregister(self, client: Client) -> None:
        with self._lock:
            clients = self._clients.get(client.tenant_id)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del self._clients[client.tenant_id]

    def client_count(self) -> int:
        with self._lock:
            return sum(len(c) for c in self._clients.values())

    def report(self) -> dict[str, Any]:
        return {"state": self.state, "clients": self.client_count(),
                "reconnects": self.reconnects}  # fmt: skip

    def dispatch(self, event: Event) -> None:
        with self._lock:
            targets = list(self._clients.get(event.tenant_id, ()))
        for client in targets:
            client.offer(event)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            subscription: Subscription | None = None
            try:
                subscription = self._backend().subscribe()
                self.state = "connected"
                backoff = 0.5
                self._pump(subscription)
            except Exception as exc:  # the backend went away: resubscribe after a pause
                if self.state != "reconnecting":
                    log.warning("live events: subscription lost (%s); reconnecting", exc)
                self.state = "reconnecting"
                self.reconnects += 1
                self._stop.wait(random.uniform(0, backoff))  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, 30.0)
            finally:
                if subscription is not None:
                    subscription.close()
        self.state = "stopped"

    def _pump(self, subscription: Subscription) -> None:
        next_ping = time.monotonic() + PING_EVERY_S
        while not self._stop.is_set():
            event = subscription.get(timeout=1.0)
            if event is not None:
                self.last_event_at = time.time()
                self.dispatch(event)
            if time.monotonic() >= next_ping:
                subscription.ping()
                next_ping = time.monotonic() + PING_EVERY_S
