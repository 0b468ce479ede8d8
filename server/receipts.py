"""Receipts: tell each gateway which of its messages are stored, so it can forget them.

Ingest calls :meth:`ReceiptSender.note` after the transaction that stored a message (or found it
already stored) committed; :meth:`ReceiptSender.run` publishes, every ``interval_s``, one
``edge_agent.protocol.Receipt`` per gateway on ``wardwatch/v1/gw/{id}/receipt`` listing those
sequence numbers, ``stored_at`` being when the last of them was noted (so every one was stored by
then). A gateway keeps every message until its receipt arrives, so a broker that acknowledged a message
and then lost it cannot lose a reading (docs/protocol.md, Receipts).

The receipts of one flush are published concurrently, at most ``max_concurrent`` at once. The server
publishes them at QoS 0 (``server.process``); a QoS 1 publisher waits for each PUBACK, and a thousand
gateways' receipts one PUBACK after another would take longer than the interval.

A receipt that fails to go out is not retried here: the gateway publishes the message again after its
receipt timeout, ingest finds it stored, and a new receipt is noted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from edge_agent.mqtt import MqttError
from edge_agent.protocol import GatewayChannel, Receipt, SequencedMessage, encode, gateway_topic
from server.ingest import IngestOutcome, OutcomeKind

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
MAX_SEQS_PER_RECEIPT: Final = 5000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReceiptSender:
    def __init__(
        self,
        publish: Publish,
        *,
        interval_s: float = 0.2,
        max_concurrent: int = 64,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._publish = publish
        self._interval_s = interval_s
        self._clock = clock
        self._pending: dict[str, _Noted] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self._ready = asyncio.Event()
        self.sent = 0
        self.failed = 0

    async def note(self, outcome: IngestOutcome) -> None:
        """Ingest's hook (after commit): remember the stored message's sequence number."""
        if outcome.kind not in (OutcomeKind.STORED, OutcomeKind.DUPLICATE):
            return
        message = outcome.message
        if not isinstance(message, SequencedMessage):
            return  # statuses and command acknowledgements are not kept by the gateway's outbox
        noted = self._pending.get(message.gateway_id)
        if noted is None:
            noted = self._pending[message.gateway_id] = _Noted()
        noted.seqs.add(message.seq)
        noted.last_at = self._clock()
        self._ready.set()

    async def run(self) -> None:
        """Publish the noted receipts, batched, until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self.flush()
            await asyncio.sleep(self._interval_s)  # batch what arrives meanwhile into the next receipt

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        async with asyncio.TaskGroup() as group:
            for gateway_id, noted in pending.items():
                ordered = sorted(noted.seqs)
                for start in range(0, len(ordered), MAX_SEQS_PER_RECEIPT):
                    chunk = ordered[start : start + MAX_SEQS_PER_RECEIPT]
                    receipt = Receipt(gateway_id=gateway_id, seqs=chunk, stored_at=noted.last_at)
                    await self._slots.acquire()
                    group.create_task(self._send(receipt), name=f"receipt {gateway_id}")

    async def _send(self, receipt: Receipt) -> None:
        try:
            await self._publish(gateway_topic(receipt.gateway_id, GatewayChannel.RECEIPT), encode(receipt))
        except (MqttError, OSError) as exc:
            self.failed += 1
            log.warning(
                "receipt for %d messages of %s not sent: %s", len(receipt.seqs), receipt.gateway_id, exc
            )
        else:
            self.sent += 1
        finally:
            self._slots.release()


@dataclass(slots=True)
class _Noted:
    """A gateway's sequence numbers stored since the last flush, and when the last was noted."""

    seqs: set[int] = field(default_factory=set)
    last_at: datetime = field(default_factory=_utc_now)
