"""How far behind the gateways' traffic this worker is: its stream lag.

Every stored message carries the gateway's ``sent_at`` and ingest stamps when it took the message
(``IngestOutcome.received_at``); the difference is how long the message waited (in the gateway's
outbox, in the broker, in this worker's queue) plus the gateway's clock error. A worker that cannot
keep up stores messages that get older by the second, and a heartbeat sent on time reaches its engine
that much later: judged on the server's clock alone, every gateway would look offline once the lag grew
by half a heartbeat interval (a storm of false alarms that adds decisions to the queue that caused it).
The engine hands the lag to the policy (``decide(stream_lag=...)``), which postpones the timers that only
news from a gateway can stop by that much.

The estimate must not be inflated by messages that are old for reasons of their own: a gateway's
outbox replaying hours of backlog after an outage, a retained birth delivered on subscribing, a death
(the MQTT will, stamped when the gateway connected), a gateway clock running behind. So each ingest
transaction contributes one value, a low quantile of its messages' ages (the fresh traffic in it), and
the lag is the median of the values of the last ``window_s`` seconds; without traffic in that window it
is zero. Ages below zero (a gateway clock ahead) count as zero. An underestimate only leaves the alarms
as they would be without this; an overestimate delays them, by at most ``max_stream_lag_s``.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from edge_agent.protocol import GatewayStatus, SequencedMessage
from server.ingest import IngestOutcome, OutcomeKind


class StreamLag:
    """The worker's stream lag from the outcomes of its ingest transactions."""

    def __init__(
        self, clock: Callable[[], datetime], *, window_s: float = 10.0, quantile: float = 0.1
    ) -> None:
        if window_s <= 0 or not 0 <= quantile <= 1:
            raise ValueError("window_s must be positive and quantile within 0..1")
        self._clock = clock
        self._window = timedelta(seconds=window_s)
        self._quantile = quantile
        self._values: deque[tuple[datetime, float]] = deque()
        """(received_at, seconds) per ingest transaction, oldest first."""
        self._sorted: list[float] = []
        """The same values in ascending order: the median is read, not computed, on every decision (a
        window holds a value per ingest transaction, thousands at full load; sorting them for each of the
        engine's transactions cost the worker 7 % of its CPU)."""

    def observe(self, outcomes: Sequence[IngestOutcome]) -> None:
        """Take the ages of one transaction's stored messages (duplicates, stale statuses, dead
        letters and deaths say nothing about this worker's queue)."""
        ages: list[float] = []
        received_at: datetime | None = None
        for outcome in outcomes:
            message = outcome.message
            if outcome.kind is not OutcomeKind.STORED:
                continue
            if isinstance(message, SequencedMessage) or (
                isinstance(message, GatewayStatus) and message.state != "death"
            ):
                ages.append((outcome.received_at - message.sent_at).total_seconds())
                received_at = outcome.received_at
        if received_at is None:
            return
        ages.sort()
        rank = max(0, math.ceil(self._quantile * len(ages)) - 1)  # nearest rank
        value = max(0.0, ages[rank])
        self._values.append((received_at, value))
        bisect.insort(self._sorted, value)
        self._forget(self._clock())

    def current(self) -> timedelta:
        """The lag now: the median of the last window's values, zero without any."""
        self._forget(self._clock())
        values, count = self._sorted, len(self._sorted)
        if not count:
            return timedelta(0)
        middle = count // 2
        median = values[middle] if count % 2 else (values[middle - 1] + values[middle]) / 2
        return timedelta(seconds=median)

    def _forget(self, now: datetime) -> None:
        horizon = now - self._window
        while self._values and self._values[0][0] < horizon:
            _, value = self._values.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, value)]
