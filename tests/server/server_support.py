"""Builders for gateway messages (through the wire-contract models) and small database helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def obs_topic(gateway_id: str) -> str:
    return protocol.gateway_topic(gateway_id, protocol.GatewayChannel.OBS)


def observation_batch(
    gateway_id: str, seq: int, *, patient_id: str = "pt-0001", count: int = 2, sent: float = 0
) -> protocol.ObservationBatch:
    readings = [
        protocol.Observation(
            patient_id=patient_id,
            vital=protocol.VitalCode.SPO2 if i % 2 == 0 else protocol.VitalCode.HEART_RATE,
            value=94.0 - i if i % 2 == 0 else 80.0 + i,
            unit="%" if i % 2 == 0 else "/min",
            measured_at=at(sent - count + i),
            time_source=protocol.TimeSource.DEVICE,
            device_id="oximeter-1",
            quality=[protocol.QualityFlag.MOTION] if i == 1 else [],
            perfusion_index=1.5 if i % 2 == 0 else None,
        )
        for i in range(count)
    ]
    return protocol.ObservationBatch(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=at(sent),
        observations=readings,
    )


def assessment(gateway_id: str, seq: int, *, patient_id: str = "pt-0001") -> protocol.Assessment:
    components: dict[str, int | None] = dict.fromkeys(protocol.NEWS2_PARAMETERS, 0)
    components["respiration"] = 3
    return protocol.Assessment(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=at(1),
        patient_id=patient_id,
        assessed_at=at(0),
        total=3,
        components=components,
        risk=protocol.Risk.LOW_MEDIUM,
        complete=True,
        input_ages_s={"respiratory_rate": 12.0, "spo2": None},
        spo2_scale=1,
        on_oxygen=False,
        consciousness=protocol.Consciousness.ALERT,
    )


def probe_off_event(gateway_id: str, seq: int, *, patient_id: str = "pt-0001") -> protocol.Event:
    return protocol.Event(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=at(2),
        occurred_at=at(1),
        detail=protocol.ProbeOff(kind="probe_off", device_id="oximeter-1", patient_id=patient_id),
    )


def status(
    gateway_id: str,
    state: Literal["birth", "heartbeat", "death"],
    *,
    session: int,
    sent: float,
    backlog: int = 0,
) -> protocol.GatewayStatus:
    return protocol.GatewayStatus(
        gateway_id=gateway_id,
        state=state,
        session=session,
        sent_at=at(sent),
        software_version="0.1.0",
        heartbeat_interval_s=30,
        backlog=backlog,
        clock_synchronized=True,
    )


def topic_for(message: protocol.WireModel) -> str:
    gateway_id: str = message.gateway_id  # type: ignore[attr-defined]
    channel = {
        protocol.ObservationBatch: protocol.GatewayChannel.OBS,
        protocol.Assessment: protocol.GatewayChannel.SCORE,
        protocol.Event: protocol.GatewayChannel.EVENT,
        protocol.GatewayStatus: protocol.GatewayChannel.STATUS,
        protocol.CommandAck: protocol.GatewayChannel.CMD_ACK,
    }[type(message)]
    return protocol.gateway_topic(gateway_id, channel)


async def scalar(sessions: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> Any:
    async with sessions() as session:
        return (await session.execute(text(sql), params)).scalar()


async def rows(sessions: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.execute(text(sql), params)).all())
