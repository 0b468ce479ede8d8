"""Patients' states for the cc topic: many patients in one statement, the same answer as reading them
one by one (the latest value per vital, the latest assessment, open alerts, the gateway's status)."""

from __future__ import annotations

from datetime import timedelta

from engine_support import HIGH_COMPONENTS, FakeClock, gateway_status, ingest, news2_assessment
from server_support import T0
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from edge_agent import protocol
from edge_agent.protocol import VitalCode
from server.engine.patient_state import patient_states, patients_of_gateways
from server.ingest import Ingestor


def readings(
    gateway_id: str, seq: int, patient_id: str, values: list[tuple[VitalCode, float, float]]
) -> protocol.ObservationBatch:
    """An observation batch of (vital, value, seconds after T0 it was measured)."""
    return protocol.ObservationBatch(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=T0 + timedelta(seconds=100),
        observations=[
            protocol.Observation(
                patient_id=patient_id,
                vital=vital,
                value=value,
                unit=protocol.VITALS[vital].ucum,
                measured_at=T0 + timedelta(seconds=when),
                time_source=protocol.TimeSource.DEVICE,
                device_id="dev-1",
            )
            for vital, value, when in values
        ],
    )


async def test_states_of_many_patients_in_one_statement_match_the_latest_rows(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, ingestor: Ingestor, gateway_id: str
) -> None:
    clock = FakeClock()
    gw_a, gw_b = f"{gateway_id}-a", f"{gateway_id}-b"
    await ingest(ingestor, gateway_status(gw_a, "birth", sent_at=T0), T0)
    await ingest(ingestor, gateway_status(gw_b, "birth", sent_at=T0), T0)
    await ingest(ingestor, gateway_status(gw_b, "death", sent_at=T0 + timedelta(seconds=1)), T0)
    # pt-1: a later batch brings an older SpO2 (arrival order is not measurement order)
    await ingest(
        ingestor,
        readings(gw_a, 0, "pt-1", [(VitalCode.SPO2, 95, 10), (VitalCode.HEART_RATE, 80, 10)]),
        T0,
    )
    await ingest(
        ingestor,
        readings(gw_a, 1, "pt-1", [(VitalCode.SPO2, 91, 5), (VitalCode.RESPIRATORY_RATE, 22, 12)]),
        T0,
    )
    # two assessments, the one that arrives last assessed first
    late = T0 + timedelta(seconds=30)
    await ingest(ingestor, news2_assessment(gw_a, 2, patient_id="pt-1", assessed_at=late), T0)
    medium: dict[str, int | None] = {**HIGH_COMPONENTS, "respiration": 1, "spo2": 1, "temperature": 0}
    early = news2_assessment(gw_a, 3, patient_id="pt-1", assessed_at=T0, components=medium)
    await ingest(ingestor, early, T0)
    # pt-2 on the same gateway: readings, no assessment; pt-3 on the offline gateway: nothing but a batch
    await ingest(ingestor, readings(gw_a, 4, "pt-2", [(VitalCode.BODY_TEMPERATURE, 37.9, 1)]), T0)
    await ingest(ingestor, readings(gw_b, 0, "pt-3", [(VitalCode.SYSTOLIC_BP, 101, 2)]), T0)

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with sessions() as session:
            states = await patient_states(session, {"pt-3", "pt-1", "pt-2", "pt-unknown"}, now=clock.now)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len([s for s in statements if "observations" in s]) == 1

    assert [s.patient_id for s in states] == ["pt-1", "pt-2", "pt-3"]
    one, two, three = states
    assert one.latest == {VitalCode.SPO2: 95, VitalCode.HEART_RATE: 80, VitalCode.RESPIRATORY_RATE: 22}
    assert (one.total, one.risk, one.gateway_id, one.gateway_online) == (8, protocol.Risk.HIGH, gw_a, True)
    assert one.components == HIGH_COMPONENTS
    assert (two.latest, two.total, two.risk, two.components) == (
        {VitalCode.BODY_TEMPERATURE: 37.9},
        None,
        None,
        {},
    )
    assert (three.latest, three.gateway_online) == ({VitalCode.SYSTOLIC_BP: 101}, False)
    assert all(state.open_alerts == 0 and state.updated_at == clock.now for state in states)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with sessions() as session:
            assert await patient_states(session, ["pt-2"], now=clock.now) == [two]  # alone, the same answer
            assert await patient_states(session, ["pt-unknown"], now=clock.now) == []
            assert await patients_of_gateways(session, {gw_a, gw_b}) == ["pt-1", "pt-2", "pt-3"]
            assert await patients_of_gateways(session, [gw_b]) == ["pt-3"]
            assert await patients_of_gateways(session, set()) == []
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    if engine.dialect.name == "postgresql":
        # One statement text for any number of patients or gateways (= ANY of an array, not an IN list):
        # asyncpg prepares each text once per connection, so a new count was a new prepare.
        assert len({s for s in statements if "observations" in s}) == 1
        assert len({s for s in statements if "FROM patients" in s and "observations" not in s}) == 1
