"""Putting a small ward into the database through the real ingest (and alerts as the engine writes them)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from server_support import T0, at, topic_for
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.ingest import Ingestor, OutcomeKind
from server.storage.models import Alert


def reading(
    patient_id: str, vital: protocol.VitalCode, value: float, measured: float, *, device: str = "oximeter-1"
) -> protocol.Observation:
    return protocol.Observation(
        patient_id=patient_id,
        vital=vital,
        value=value,
        unit=protocol.VITALS[vital].ucum,
        measured_at=at(measured),
        time_source=protocol.TimeSource.DEVICE,
        device_id=device,
    )


def batch(
    gateway_id: str, seq: int, readings: list[protocol.Observation], sent: float
) -> protocol.ObservationBatch:
    return protocol.ObservationBatch(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=at(sent),
        observations=readings,
    )


def score(
    gateway_id: str,
    seq: int,
    patient_id: str,
    components: dict[str, int],
    assessed: float,
    risk: protocol.Risk,
) -> protocol.Assessment:
    full: dict[str, int | None] = dict.fromkeys(protocol.NEWS2_PARAMETERS, 0)
    full.update(components)
    return protocol.Assessment(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=at(assessed + 1),
        patient_id=patient_id,
        assessed_at=at(assessed),
        total=sum(v for v in full.values() if v is not None),
        components=full,
        risk=risk,
        complete=True,
        input_ages_s={"respiratory_rate": 5.0},
        spo2_scale=1,
        on_oxygen=False,
        consciousness=protocol.Consciousness.ALERT,
    )


def birth(gateway_id: str, *, battery: int, backlog: int = 0) -> protocol.GatewayStatus:
    return protocol.GatewayStatus(
        gateway_id=gateway_id,
        state="birth",
        session=1,
        sent_at=at(0),
        software_version="0.1.0",
        heartbeat_interval_s=30,
        backlog=backlog,
        devices=[
            protocol.DeviceState(
                device_id="oximeter-1",
                device_kind="pulse_oximeter",
                connected=True,
                battery_pct=battery,
                last_reading_at=at(50),
            )
        ],
        clock_synchronized=True,
    )


async def ingest(ingestor: Ingestor, *messages: protocol.WireModel) -> None:
    for message in messages:
        outcome = await ingestor.ingest(topic_for(message), protocol.encode(message), received_at=at(60))
        assert outcome.kind is OutcomeKind.STORED, outcome


async def seed_ward(ingestor: Ingestor) -> None:
    """Four patients on three gateways:

    - pt-high (gw-a): NEWS2 7, high; newest data at T0+55 s
    - pt-med-old (gw-b): NEWS2 5, medium; newest data at T0+20 s (longer without data)
    - pt-med-new (gw-b): NEWS2 5, medium; newest data at T0+40 s
    - pt-low (gw-c): NEWS2 0, low; plus readings of several vitals
    """
    hr, spo2, rr = protocol.VitalCode.HEART_RATE, protocol.VitalCode.SPO2, protocol.VitalCode.RESPIRATORY_RATE
    await ingest(
        ingestor,
        birth("gw-a", battery=12, backlog=7),
        batch("gw-a", 0, [reading("pt-high", hr, 121, 30), reading("pt-high", spo2, 89, 30)], 31),
        batch("gw-a", 1, [reading("pt-high", hr, 125, 55), reading("pt-high", spo2, 88, 55)], 56),
        score("gw-a", 2, "pt-high", {"respiration": 3, "spo2": 3, "pulse": 1}, 55, protocol.Risk.HIGH),
        batch("gw-b", 0, [reading("pt-med-old", hr, 100, 20), reading("pt-med-new", hr, 101, 40)], 41),
        score("gw-b", 1, "pt-med-old", {"respiration": 2, "spo2": 3}, 20, protocol.Risk.MEDIUM),
        score("gw-b", 2, "pt-med-new", {"respiration": 2, "spo2": 3}, 40, protocol.Risk.MEDIUM),
        batch(
            "gw-c",
            0,
            [reading("pt-low", rr, 14, s) for s in range(0, 10)] + [reading("pt-low", hr, 70, 9.5)],
            11,
        ),
        score("gw-c", 1, "pt-low", {}, 10, protocol.Risk.LOW),
    )


async def add_alert(
    sessions: async_sessionmaker[AsyncSession],
    *,
    subject: str,
    priority: str,
    tier: int,
    category: str = "clinical",
    condition: str = "news2",
    patient_id: str | None = None,
    gateway_id: str | None = None,
    raised: datetime = T0,
    next_escalation_in_s: float | None = 300,
) -> uuid.UUID:
    """An open alert as the escalation engine stores it."""
    alert_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(
            Alert(
                id=alert_id,
                category=category,
                condition=condition,
                subject=subject,
                patient_id=patient_id,
                gateway_id=gateway_id,
                device_id=None,
                state="open",
                priority=priority,
                tier=tier,
                risk=priority if category == "clinical" and priority != "emergency" else None,
                total=7 if priority == "high" else None,
                reason=f"{condition} {priority}",
                raised_at=raised,
                updated_at=raised,
                next_escalation_at=(
                    None if next_escalation_in_s is None else raised + timedelta(seconds=next_escalation_in_s)
                ),
            )
        )
    return alert_id
