"""In-process publish/subscribe for :class:`MemoryBackend`: one bounded queue per subscriber."""

from __future__ import annotations

import contextlib
import copy
import queue
import threading

from chronos.backends.base import Subscription
from chronos.models import Event

#: Events a subscriber may fall behind by before the oldest ones are dropped.
QUEUE_SIZE = 10_000


class MemoryHub:
    """Fans published events out to every open subscription, in order."""

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        self._lock = threading.Lock()
        self._subscriptions: set[MemorySubscription] = set()
        self._maxsize = maxsize

    def publish(self, event: Event) -> None:
        with self._lock:
            for subscription in self._subscriptions:
                subscription.deliver(copy.deepcopy(event))

    def subscribe(self) -> MemorySubscription:
        subscription = MemorySubscription(self, self._maxsize)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def unregister(self, subscription: MemorySubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def close_all(self) -> None:
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            subscription.close()


class MemorySubscription(Subscription):
    def __init__(self, hub: MemoryHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[Event] = queue.Queue(maxsize)
        self._closed = False

    def deliver(self, event: Event) -> None:
        """Enqueue without blocking; a full queue loses its oldest event, never the publisher's
        time. Called only under the hub's lock, so a freed slot stays free for this put."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._queue.put_nowait(event)

    def get(self, timeout: float) -> Event | None:
        if self._closed:
            return None
        try:
            return self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub.unregister(self)
