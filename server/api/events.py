"""An in-process broadcaster of live changes (alert events, patient state) for the API's event stream.

The escalation engine calls :meth:`Broadcaster.publish` after it commits a change; every open
``GET /api/events`` stream receives it. ``publish`` never blocks and never fails because of a slow
client: each subscriber has a bounded queue, and a subscriber that falls behind loses the excess and
receives one ``resync`` event telling it to reload the lists it shows.

Payloads must not contain a patient's display name (they carry pseudonymous ids, like MQTT): a browser
that needs the name reads it from the authenticated patient endpoints.

Usage::

    broadcaster = Broadcaster()
    broadcaster.publish("alert", {"alert_id": "...", "action": "raised"})

    async with broadcaster.subscribe() as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

CLOSED: Final = "closed"
"""Kind of the last event a subscriber receives when the broadcaster closes (the server is stopping)."""
RESYNC: Final = "resync"
"""Kind of the event a subscriber receives after it lost events (its queue overflowed)."""


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: int
    """Increasing within this process."""
    kind: str
    """``alert``, ``patient`` (state changed), ``gateway``, ``command``, or ``resync``."""
    data: Mapping[str, Any]

    def to_sse(self) -> str:
        """The event in text/event-stream framing."""
        body = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n"


class Subscription:
    """One subscriber's queue; iterate it for events."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize=size)
        self._overflowed = False

    def _offer(self, event: LiveEvent, resync: LiveEvent) -> None:
        if self._overflowed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Make room for the one event that tells the client to reload; drop everything after it
            # until the client has caught up (the queue is empty again).
            self._queue.get_nowait()
            self._queue.put_nowait(resync)
            self._overflowed = True

    def _close(self, closing: LiveEvent) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(closing)

    async def next(self) -> LiveEvent:
        event = await self._queue.get()
        if self._queue.empty():
            self._overflowed = False
        return event

    def __aiter__(self) -> AsyncIterator[LiveEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[LiveEvent]:
        while True:
            yield await self.next()


class Broadcaster:
    """Fan-out of live events to any number of subscribers in this process (not thread-safe: publish
    from the event loop's thread)."""

    def __init__(self, *, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every subscription (each gets a ``closed`` event) and refuse new ones; call before
        stopping the HTTP server so that open event streams finish."""
        self._closed = True
        closing = LiveEvent(0, CLOSED, {})
        for subscription in tuple(self._subscribers):
            subscription._close(closing)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: Mapping[str, Any]) -> LiveEvent:
        """Send an event to every current subscriber; returns it (with its id)."""
        event = LiveEvent(next(self._ids), kind, dict(data))
        resync: LiveEvent | None = None
        for subscription in tuple(self._subscribers):
            if resync is None:
                resync = LiveEvent(event.id, RESYNC, {"reason": "events were dropped; reload"})
            subscription._offer(event, resync)
        return event

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        subscription = Subscription(self._queue_size)
        if self._closed:
            subscription._close(LiveEvent(0, CLOSED, {}))
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
