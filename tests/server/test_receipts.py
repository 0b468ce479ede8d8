"""ReceiptSender: stored and duplicate sequenced messages are receipted per gateway, batched."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from edge_agent.protocol import (
    GatewayStatus,
    Observation,
    ObservationBatch,
    Receipt,
    decode,
    gateway_topic,
    new_message_id,
)
from server.ingest import IngestOutcome, OutcomeKind
from server.receipts import ReceiptSender

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def batch(gateway_id: str, seq: int) -> ObservationBatch:
    observation = Observation(
        patient_id="pt-1",
        vital="heart_rate",
        value=70,
        unit="/min",
        measured_at=NOW,
        time_source="device",
        device_id="hr-1",
    )
    return ObservationBatch(
        message_id=new_message_id(), gateway_id=gateway_id, seq=seq, sent_at=NOW, observations=[observation]
    )


def outcome(kind: OutcomeKind, message: object) -> IngestOutcome:
    return IngestOutcome(kind=kind, topic="t", received_at=NOW, message=message)  # type: ignore[arg-type]


async def test_receipts_list_stored_and_duplicate_messages_per_gateway() -> None:
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        published.append((topic, payload))

    sender = ReceiptSender(publish, clock=lambda: NOW)
    await sender.note(outcome(OutcomeKind.STORED, batch("gw-a", 3)))
    await sender.note(outcome(OutcomeKind.DUPLICATE, batch("gw-a", 1)))
    await sender.note(outcome(OutcomeKind.STORED, batch("gw-b", 0)))
    await sender.note(outcome(OutcomeKind.DEAD_LETTER, None))
    status = GatewayStatus(
        gateway_id="gw-a",
        state="birth",
        session=1,
        sent_at=NOW,
        software_version="x",
        heartbeat_interval_s=30,
    )
    await sender.note(outcome(OutcomeKind.STORED, status))
    await sender.flush()
    receipts = {topic: decode(Receipt, payload) for topic, payload in published}
    assert receipts[gateway_topic("gw-a", "receipt")].seqs == [1, 3]
    assert receipts[gateway_topic("gw-b", "receipt")].seqs == [0]
    assert sender.sent == 2


async def test_a_failed_publish_is_counted_and_the_sender_keeps_going() -> None:
    from edge_agent.mqtt import ConnectionLost

    attempted = asyncio.Event()

    async def publish(topic: str, payload: bytes) -> None:
        attempted.set()
        raise ConnectionLost("broker gone")

    sender = ReceiptSender(publish, interval_s=0.01)
    runner = asyncio.create_task(sender.run())
    await sender.note(outcome(OutcomeKind.STORED, batch("gw-a", 0)))
    await asyncio.wait_for(attempted.wait(), 5)
    await asyncio.sleep(0)  # let the sender finish handling the failure
    runner.cancel()
    assert sender.failed == 1
    assert not runner.done() or runner.cancelled()


async def test_one_flush_publishes_its_receipts_concurrently_within_the_bound() -> None:
    """A thousand gateways' receipts one PUBACK after another would outlast the interval: they go out
    together, at most ``max_concurrent`` awaiting the broker at once."""
    in_flight = 0
    most = 0
    all_started = asyncio.Event()
    release = asyncio.Event()
    started = 0

    async def publish(topic: str, payload: bytes) -> None:
        nonlocal in_flight, most, started
        in_flight += 1
        started += 1
        most = max(most, in_flight)
        if in_flight == 4:
            all_started.set()
        await release.wait()  # the PUBACK comes only when the test says so
        in_flight -= 1

    sender = ReceiptSender(publish, max_concurrent=4, clock=lambda: NOW)
    for n in range(10):
        await sender.note(outcome(OutcomeKind.STORED, batch(f"gw-{n}", 0)))
    flushing = asyncio.create_task(sender.flush())
    await asyncio.wait_for(all_started.wait(), 5)
    assert started == 4  # the bound holds while none is acknowledged
    release.set()
    await asyncio.wait_for(flushing, 5)
    assert (most, started, sender.sent) == (4, 10, 10)


async def test_stored_at_is_when_the_last_listed_message_was_noted() -> None:
    published: list[bytes] = []
    times = iter([NOW, NOW.replace(second=1), NOW.replace(second=2)])

    async def publish(topic: str, payload: bytes) -> None:
        published.append(payload)

    sender = ReceiptSender(publish, clock=lambda: next(times))
    await sender.note(outcome(OutcomeKind.STORED, batch("gw-a", 0)))
    await sender.note(outcome(OutcomeKind.STORED, batch("gw-a", 1)))
    await sender.note(outcome(OutcomeKind.STORED, batch("gw-b", 0)))
    await sender.flush()  # the clock is not read again: a slow flush does not age the receipts
    stamps = sorted(decode(Receipt, payload).stored_at for payload in published)
    assert stamps == [NOW.replace(second=1), NOW.replace(second=2)]
