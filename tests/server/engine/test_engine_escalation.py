"""The escalation engine against real SQLite and real PostgreSQL: the policy's decisions become alert
rows, audit records and deliveries; timers fire exactly once, also with two workers racing."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from engine_support import FakeClock, RecordingPublisher, gateway_status, ingest, news2_assessment
from server_support import T0, rows, scalar
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.engine import EngineSettings, EscalationEngine, store
from server.engine.settings import WebhookSettings
from server.engine.tables import AlertDelivery, EscalationSubject
from server.escalation import (
    ActionRefusedError,
    AlertChange,
    AlertNotOpenError,
    EscalationPolicy,
    EscalationState,
    PolicyInput,
    Role,
)
from server.ingest import Ingestor
from server.settings import IngestSettings
from server.storage import create_engine, session_factory
from server.storage.models import Alert, AlertEventRecord

HIGH_ACK_TIMEOUT_S = 5 * 60


def make_engine(
    sessions: async_sessionmaker[AsyncSession],
    clock: FakeClock,
    publisher: RecordingPublisher,
    **options: object,
) -> EscalationEngine:
    return EscalationEngine(
        sessions,
        policy=EscalationPolicy(),
        publisher=publisher,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def scalar_list(engine: EscalationEngine, patient_id: str) -> list[uuid.UUID]:
    async with engine.sessions() as session:
        result = await session.scalars(select(Alert.id).where(Alert.patient_id == patient_id))
        return list(result.all())


async def _raise_high_alert(
    engine: EscalationEngine, ingestor: Ingestor, clock: FakeClock, gateway_id: str, patient_id: str
) -> uuid.UUID:
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
    high = news2_assessment(gateway_id, 0, patient_id=patient_id, assessed_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, high, clock.now))
    (alert_id,) = await scalar_list(engine, patient_id)
    return alert_id


async def test_high_news2_raises_publishes_and_escalates_once(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    alert_id = await _raise_high_alert(engine, ingestor, clock, gateway_id, "pt-high")

    alert = (await rows(sessions, "SELECT state, priority, tier, category, condition FROM alerts"))[0]
    assert tuple(alert) == ("open", "high", 2, "clinical", "news2")
    assert await engine.drain() == 0  # published at once after the commit, not by the delivery loop
    assert await engine.deliver_pending() == 0
    (raised,) = publisher.alert_events()
    assert (raised.alert_id, raised.action, raised.priority, raised.tier) == (alert_id, "raised", "high", 2)
    assert raised.patient_id == "pt-high" and raised.risk is protocol.Risk.HIGH and raised.total == 8
    assert await scalar(sessions, "SELECT status FROM alert_deliveries") == "delivered"

    clock.advance(HIGH_ACK_TIMEOUT_S - 1)
    await engine.fire_due()
    assert await scalar(sessions, "SELECT count(*) FROM alert_events") == 1  # not due yet

    clock.advance(2)
    assert await engine.fire_due() == 1
    assert await engine.fire_due() == 0  # fired once; nothing is due any more at this time
    clock.advance(0.5)
    await engine.fire_due()
    events = await rows(sessions, "SELECT action, tier, actor FROM alert_events ORDER BY id")
    assert [tuple(event) for event in events] == [("raised", 2, None), ("escalated", 3, None)]
    assert await scalar(sessions, "SELECT tier FROM alerts") == 3

    await engine.drain()
    escalated = publisher.alert_events()[-1]
    assert (escalated.action, escalated.tier) == ("escalated", 3)
    assert engine.counters.max_timer_lateness_s == pytest.approx(1.0)

    assert await engine.publish_patient_states() == 1
    topic, payload, retained = publisher.published[-1]
    state = protocol.decode(protocol.PatientState, payload)
    assert topic == protocol.cc_patient_topic("pt-high") and retained
    assert (state.risk, state.total, state.open_alerts, state.gateway_online) == (
        protocol.Risk.HIGH,
        8,
        1,
        True,
    )


async def test_acknowledge_stops_escalation_and_resolve_needs_a_note(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    alert_id = await _raise_high_alert(engine, ingestor, clock, gateway_id, "pt-ack")

    clock.advance(60)
    (ack,) = await engine.acknowledge(alert_id, actor="nurse-7", role=Role.NURSE, note="calling the patient")
    assert (ack.action, ack.actor) == ("acknowledged", "nurse-7")
    with pytest.raises(ActionRefusedError) as refused:
        await engine.resolve(alert_id, actor="nurse-7", role=Role.NURSE, note="")
    assert refused.value.reason == "note_required"
    with pytest.raises(ActionRefusedError):
        await engine.acknowledge(alert_id, actor="bot", role=Role.INTEGRATION)
    with pytest.raises(AlertNotOpenError):
        await engine.acknowledge(uuid.uuid4(), actor="nurse-7", role=Role.NURSE)

    clock.advance(HIGH_ACK_TIMEOUT_S)
    await engine.fire_due()  # acknowledged: no escalation
    (resolved,) = await engine.resolve(
        alert_id, actor="dr-2", role=Role.PHYSICIAN, note="seen at home, stable"
    )
    assert resolved.action == "resolved"
    with pytest.raises(AlertNotOpenError):
        await engine.escalate(alert_id, actor="dr-2", role=Role.PHYSICIAN)

    events = await rows(sessions, "SELECT action, actor, reason FROM alert_events ORDER BY id")
    assert [(e.action, e.actor) for e in events] == [
        ("raised", None),
        ("acknowledged", "nurse-7"),
        ("resolved", "dr-2"),
    ]
    assert events[2].reason == "seen at home, stable"
    row = (await rows(sessions, "SELECT state, acknowledged_by, resolved_by FROM alerts"))[0]
    assert tuple(row) == ("resolved", "nurse-7", "dr-2")
    assert engine.counters.actions_refused == 4


async def test_gateway_death_raises_the_offline_alarm(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    birth = gateway_status(gateway_id, "birth", session=4, sent_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
    clock.advance(10)
    death = gateway_status(gateway_id, "death", session=4, sent_at=T0)  # the will, composed at connect
    await engine.handle_outcome(await ingest(ingestor, death, clock.now))
    alarm = (await rows(sessions, "SELECT category, condition, subject, state, gateway_id FROM alerts"))[0]
    assert tuple(alarm) == ("technical", "gateway_offline", f"gateway:{gateway_id}", "open", gateway_id)

    clock.advance(5)
    back = gateway_status(gateway_id, "birth", session=5, sent_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, back, clock.now))
    assert await scalar(sessions, "SELECT state FROM alerts") == "resolved"
    actions = [row.action for row in await rows(sessions, "SELECT action FROM alert_events ORDER BY id")]
    assert actions == ["raised", "resolved"]


async def test_missed_heartbeats_raise_the_offline_alarm_at_one_and_a_half_intervals(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now, heartbeat_interval_s=20)
    await engine.handle_outcome(await ingest(ingestor, birth, clock.now))

    clock.advance(29.9)
    assert await engine.fire_due() == 0
    assert await scalar(sessions, "SELECT count(*) FROM alerts") == 0
    clock.advance(0.2)
    assert await engine.fire_due() == 1
    (condition, state) = (await rows(sessions, "SELECT condition, state FROM alerts"))[0]
    assert (condition, state) == ("gateway_offline", "open")
    detail = await scalar(sessions, "SELECT detail FROM alert_events")
    assert "due_at" in str(detail)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_workers_racing_fire_each_escalation_exactly_once(
    database_url: str, gateway_id: str
) -> None:
    clock = FakeClock()
    engines = [create_engine(database_url, pool_size=4) for _ in range(2)]
    try:
        workers = [
            EscalationEngine(
                session_factory(db),
                policy=EscalationPolicy(),
                publisher=RecordingPublisher(),
                clock=clock,
                worker_id=f"w{index}",
                settings=EngineSettings(timer_batch=2),
            )
            for index, db in enumerate(engines)
        ]
        ingestor = Ingestor(session_factory(engines[0]))
        birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
        await workers[0].handle_outcome(await ingest(ingestor, birth, clock.now))
        patients = [f"pt-race-{index}" for index in range(12)]
        for seq, patient_id in enumerate(patients):
            high = news2_assessment(gateway_id, seq, patient_id=patient_id, assessed_at=clock.now)
            await workers[seq % 2].handle_outcome(await ingest(ingestor, high, clock.now))

        clock.advance(HIGH_ACK_TIMEOUT_S + 0.5)
        fired = [0, 0]
        while True:
            counts = await asyncio.gather(*(worker.fire_due() for worker in workers))
            fired = [total + count for total, count in zip(fired, counts, strict=True)]
            if sum(counts) == 0:
                break
        assert sum(fired) == len(patients)

        sessions = session_factory(engines[0])
        per_alert = await rows(
            sessions,
            "SELECT alert_id, count(*) AS n FROM alert_events WHERE action = 'escalated' GROUP BY alert_id",
        )
        assert len(per_alert) == len(patients)
        assert {row.n for row in per_alert} == {1}
        assert await scalar(sessions, "SELECT count(*) FROM alerts WHERE tier = 3") == len(patients)
        assert await scalar(sessions, "SELECT count(*) FROM alert_deliveries WHERE sink = 'mqtt'") == 2 * len(
            patients
        )
    finally:
        for db in engines:
            await db.dispose()


async def test_a_subject_whose_timers_fail_is_set_aside_and_others_still_fire(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    await _raise_high_alert(engine, ingestor, clock, gateway_id, "pt-healthy")
    async with sessions() as session, session.begin():
        session.add(
            EscalationSubject(
                subject="patient:pt-corrupt",
                state={"alerts": "not a mapping"},
                next_due_at=clock.now,
                updated_at=clock.now,
                version=1,
            )
        )

    clock.advance(HIGH_ACK_TIMEOUT_S + 1)
    assert await engine.fire_due() == 2
    assert engine.counters.timer_errors == 1
    assert await scalar(sessions, "SELECT count(*) FROM alert_events WHERE action = 'escalated'") == 1
    postponed = await scalar(
        sessions, "SELECT next_due_at FROM escalation_subjects WHERE subject = 'patient:pt-corrupt'"
    )
    assert str(postponed).startswith(str((clock.now + timedelta(seconds=60)).replace(tzinfo=None))[:19])
    assert await engine.fire_due() == 0  # set aside for 60 s, not retried in a tight loop


async def test_escalation_deferred_while_the_database_is_unavailable_is_applied_later(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
    outcome = await ingest(
        ingestor, news2_assessment(gateway_id, 0, patient_id="pt-deferred", assessed_at=clock.now), clock.now
    )

    real_decide = engine._decide
    failures = 0

    async def unavailable(subject: str, item: object) -> list[object]:
        nonlocal failures
        failures += 1
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database restarting"))

    engine._decide = unavailable  # type: ignore[assignment,method-assign]
    await engine.handle_outcome(outcome)  # must not raise: ingest has already committed the message
    assert failures == 1 and engine.counters.inputs_deferred == 1
    assert await scalar(sessions, "SELECT count(*) FROM alerts") == 0

    engine._decide = real_decide  # type: ignore[method-assign]
    async with asyncio.TaskGroup() as group:
        retrying = group.create_task(engine.run_deferred())
        async with asyncio.timeout(10):
            await engine.wait_for_changes(lambda: engine.counters.alert_events >= 1)
        retrying.cancel()
    assert await scalar(sessions, "SELECT priority FROM alerts WHERE patient_id = 'pt-deferred'") == "high"


def _oximeter_batch(gateway_id: str, seq: int, at: datetime, *, probe_off: bool) -> protocol.ObservationBatch:
    return protocol.ObservationBatch(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=at,
        observations=[
            protocol.Observation(
                patient_id="pt-probe",
                vital=protocol.VitalCode.SPO2,
                value=0.0 if probe_off else 96.0,
                unit="%",
                measured_at=at,
                time_source=protocol.TimeSource.DEVICE,
                device_id="oximeter-1",
                quality=[protocol.QualityFlag.PROBE_OFF] if probe_off else [],
            )
        ],
    )


async def test_probe_off_readings_raise_and_a_clean_reading_clears_the_alarm(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    subject_rows = "SELECT count(*) FROM escalation_subjects WHERE subject = :subject"
    clean = _oximeter_batch(gateway_id, 0, clock.now, probe_off=False)
    await engine.handle_outcome(await ingest(ingestor, clean, clock.now))
    # Nothing is off and nothing is flagged: the batch cannot matter, no transaction for the policy.
    assert await scalar(sessions, subject_rows, subject=f"gateway:{gateway_id}") == 0

    clock.advance(1)
    flagged = _oximeter_batch(gateway_id, 1, clock.now, probe_off=True)
    await engine.handle_outcome(await ingest(ingestor, flagged, clock.now))
    assert await scalar(sessions, subject_rows, subject=f"gateway:{gateway_id}") == 1
    watch = "SELECT probe_watch FROM gateways WHERE gateway_id = :gateway_id"
    assert await scalar(sessions, watch, gateway_id=gateway_id)  # ingest tells the engine from now on
    clock.advance(EscalationPolicy().probe_off_grace_s + 1)
    await engine.fire_due()
    alarm = (await rows(sessions, "SELECT condition, subject, device_id, state FROM alerts"))[0]
    assert tuple(alarm) == ("probe_off", f"device:{gateway_id}/oximeter-1", "oximeter-1", "open")

    clock.advance(5)
    back_on = _oximeter_batch(gateway_id, 2, clock.now, probe_off=False)
    outcome = await ingest(ingestor, back_on, clock.now)
    assert outcome.probe_watch
    await engine.handle_outcome(outcome)
    assert await scalar(sessions, "SELECT state FROM alerts") == "resolved"
    assert not await scalar(sessions, watch, gateway_id=gateway_id)
    clock.advance(1)
    quiet = await ingest(ingestor, _oximeter_batch(gateway_id, 3, clock.now, probe_off=False), clock.now)
    assert not quiet.probe_watch  # nothing followed any more: the next clean batch costs no transaction


async def test_decisions_changing_no_alert_are_saved_together_and_before_a_change_of_their_subject(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    """In one batch: another gateway's heartbeat changes no alert and is saved with one statement at the
    end. This gateway's flagged reading changes no alert either, but the gateway now follows a probe;
    the outbox eviction after it raises an alarm, so the reading's state (and the probe watch) is saved
    first and the eviction's on top of it."""
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    other = f"{gateway_id}-b"
    for gateway in (gateway_id, other):
        birth = gateway_status(gateway, "birth", session=2, sent_at=clock.now)
        await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
    versions_sql = "SELECT subject, version FROM escalation_subjects"
    before = dict(tuple(row) for row in await rows(sessions, versions_sql))
    clock.advance(10)
    messages = [
        _oximeter_batch(gateway_id, 0, clock.now, probe_off=True),
        protocol.Event(
            message_id=protocol.new_message_id(),
            gateway_id=gateway_id,
            seq=1,
            sent_at=clock.now,
            occurred_at=clock.now,
            detail=protocol.OutboxEviction(
                kind="outbox_eviction",
                evicted_observations=120,
                oldest_evicted_at=clock.now - timedelta(hours=30),
                newest_evicted_at=clock.now - timedelta(hours=29),
            ),
        ),
        gateway_status(other, "heartbeat", session=2, sent_at=clock.now),
    ]
    outcomes = [await ingest(ingestor, message, clock.now) for message in messages]

    await engine.handle_outcomes(outcomes)

    after = dict(tuple(row) for row in await rows(sessions, versions_sql))
    assert after[f"gateway:{gateway_id}"] == before[f"gateway:{gateway_id}"] + 2
    assert after[f"gateway:{other}"] == before[f"gateway:{other}"] + 1
    watch = "SELECT probe_watch FROM gateways WHERE gateway_id = :gateway_id"
    assert await scalar(sessions, watch, gateway_id=gateway_id)  # saved with the reading's state
    alarms = await rows(sessions, "SELECT condition, gateway_id, state FROM alerts")
    assert [tuple(alarm) for alarm in alarms] == [("outbox_eviction", gateway_id, "open")]
    async with sessions() as session:
        stored = {row.subject: row for row in (await session.scalars(select(EscalationSubject))).all()}
    flagged = EscalationState.model_validate(stored[f"gateway:{gateway_id}"].state).gateways[gateway_id]
    oximeter = flagged.devices["oximeter-1"]
    assert oximeter.probe_confirm_at is not None or oximeter.probe_off_since is not None
    alive = EscalationState.model_validate(stored[f"gateway:{other}"].state).gateways[other]
    assert (alive.online, alive.last_status_sent_at) == (True, clock.now)
    assert stored[f"gateway:{other}"].next_due_at is not None  # its heartbeat deadline


async def test_outbox_eviction_and_local_alert_events_reach_the_policy(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)

    def event(seq: int, detail: protocol.OutboxEviction | protocol.LocalAlert) -> protocol.Event:
        return protocol.Event(
            message_id=protocol.new_message_id(),
            gateway_id=gateway_id,
            seq=seq,
            sent_at=clock.now,
            occurred_at=clock.now,
            detail=detail,
        )

    eviction = protocol.OutboxEviction(
        kind="outbox_eviction",
        evicted_observations=120,
        oldest_evicted_at=clock.now - timedelta(hours=30),
        newest_evicted_at=clock.now - timedelta(hours=29),
    )
    for seq in (0, 1):
        await engine.handle_outcome(await ingest(ingestor, event(seq, eviction), clock.now))
    local = protocol.LocalAlert(
        kind="local_alert", patient_id="pt-local", risk=protocol.Risk.HIGH, total=9, uplink_down_s=600
    )
    await engine.handle_outcome(await ingest(ingestor, event(2, local), clock.now))

    alerts = await rows(
        sessions, "SELECT category, condition, subject, priority FROM alerts ORDER BY raised_at, id"
    )
    assert {tuple(alert) for alert in alerts} == {
        ("technical", "outbox_eviction", f"gateway:{gateway_id}", "medium"),
        ("clinical", "news2", "pt-local", "high"),
    }
    actions = [row.action for row in await rows(sessions, "SELECT action FROM alert_events ORDER BY id")]
    assert actions == ["raised", "updated", "raised"]  # the second eviction updates the open alarm


async def test_a_decision_for_a_stored_message_completes_when_ingest_is_cancelled(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    outcome = await ingest(
        ingestor, news2_assessment(gateway_id, 0, patient_id="pt-shutdown", assessed_at=clock.now), clock.now
    )
    real_decide = engine._decide
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_decide(subject: str, item: PolicyInput) -> list[AlertChange]:
        entered.set()
        await release.wait()
        return await real_decide(subject, item)

    engine._decide = slow_decide  # type: ignore[method-assign]
    hook = asyncio.create_task(engine.handle_outcome(outcome))
    await entered.wait()
    hook.cancel()  # the worker is shutting down: ingest is cancelled mid-hook
    with pytest.raises(asyncio.CancelledError):
        await hook
    release.set()
    assert await engine.drain(timeout_s=10) == 0
    assert await scalar(sessions, "SELECT priority FROM alerts WHERE patient_id = 'pt-shutdown'") == "high"


async def test_catch_up_escalates_what_was_stored_but_never_escalated(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    """A worker died between ingest's commit and the engine: the next worker's start-up finds the input."""
    clock, publisher = FakeClock(), RecordingPublisher()
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
    await ingest(ingestor, birth, clock.now)
    await ingest(
        ingestor, news2_assessment(gateway_id, 0, patient_id="pt-lost", assessed_at=clock.now), clock.now
    )
    assert await scalar(sessions, "SELECT count(*) FROM alerts") == 0

    clock.advance(30)
    engine = make_engine(sessions, clock, publisher)
    assert await engine.catch_up() == 2  # the gateway's status and the patient's newest assessment
    assert await scalar(sessions, "SELECT priority FROM alerts WHERE patient_id = 'pt-lost'") == "high"
    assert await engine.catch_up() == 2
    assert await scalar(sessions, "SELECT count(*) FROM alert_events") == 1  # offered again: nothing new


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # only this backend has it
async def test_catch_up_waits_out_a_database_restart_instead_of_failing(
    database_url: str, sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    """A worker starting while PostgreSQL refuses connections must not exit: its ingest session would
    keep taking its share of the gateways' traffic with nobody to store it."""
    import logging

    import asyncpg
    from sqlalchemy.engine import make_url

    clock, publisher = FakeClock(), RecordingPublisher()
    await ingest(
        ingestor, news2_assessment(gateway_id, 0, patient_id="pt-restart", assessed_at=clock.now), clock.now
    )
    url = make_url(database_url)
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database="postgres")
    refused = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "escalation catch-up: database unavailable" in record.getMessage():
                refused.set()

    seen = Seen()
    logging.getLogger("server.engine.escalator").addHandler(seen)
    pool = create_engine(database_url, pool_size=2)
    try:
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", url.database
        )
        catching_up = asyncio.create_task(
            make_engine(session_factory(pool), clock, publisher).catch_up_until_done(retry_s=0.05)
        )
        async with asyncio.timeout(30):
            await refused.wait()
        assert not catching_up.done()
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        async with asyncio.timeout(30):
            assert await catching_up == 1
    finally:
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        await admin.close()
        await pool.dispose()
        logging.getLogger("server.engine.escalator").removeHandler(seen)
    assert await scalar(sessions, "SELECT priority FROM alerts WHERE patient_id = 'pt-restart'") == "high"


async def test_one_transactions_outcomes_are_decided_in_order_per_subject(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    """handle_outcomes: subjects side by side, each subject's inputs in the order they were stored."""
    from engine_support import topic_of

    clock, publisher = FakeClock(), RecordingPublisher()
    engine = make_engine(sessions, clock, publisher)
    medium = {"respiration": 2, "spo2": 1, "air_or_oxygen": 0, "systolic_bp": 1, "pulse": 1}
    medium |= {"consciousness": 0, "temperature": 0}
    messages: list[protocol.WireModel] = [
        gateway_status(gateway_id, "birth", sent_at=clock.now),
        news2_assessment(
            gateway_id, 0, patient_id="pt-a", assessed_at=clock.now - timedelta(seconds=1), components=medium
        ),
        news2_assessment(gateway_id, 1, patient_id="pt-b", assessed_at=clock.now),
        news2_assessment(gateway_id, 2, patient_id="pt-a", assessed_at=clock.now),  # worse: high
    ]
    outcomes = await ingestor.ingest_many(
        [(topic_of(message), protocol.encode(message)) for message in messages], clock.now
    )
    await engine.handle_outcomes(outcomes)

    events = await rows(
        sessions,
        "SELECT a.patient_id, e.action, e.priority FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
        "WHERE a.category = 'clinical' ORDER BY e.id",
    )
    per_patient: dict[str, list[tuple[str, str]]] = {}
    for patient_id, action, priority in events:
        per_patient.setdefault(patient_id, []).append((action, priority))
    assert per_patient["pt-a"][0] == ("raised", "medium"), events  # the medium first, as stored
    assert per_patient["pt-a"][-1][1] == "high", events  # then worsened to high
    assert per_patient["pt-b"] == [("raised", "high")]


async def test_one_ingest_batch_is_decided_in_one_transaction_and_a_bad_subject_stays_alone(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, ingestor: Ingestor, gateway_id: str
) -> None:
    """A burst of assessments and heartbeats from many homes is decided in one transaction (the
    subjects locked together, in order), with the same alerts as one by one; a subject whose stored
    state cannot be read fails alone, and the rest of its batch is decided."""
    clock, publisher = FakeClock(), RecordingPublisher()
    escalation = make_engine(sessions, clock, publisher)
    outcomes = []
    for n in range(12):
        gateway = f"{gateway_id}-{n}"
        birth = await ingest(ingestor, gateway_status(gateway, "birth", sent_at=clock.now), clock.now)
        await escalation.handle_outcome(birth)
        high = news2_assessment(gateway, 0, patient_id=f"pt-burst-{n}", assessed_at=clock.now)
        outcomes.append(await ingest(ingestor, high, clock.now))
        heartbeat = gateway_status(gateway, "heartbeat", sent_at=clock.now + timedelta(seconds=1))
        outcomes.append(await ingest(ingestor, heartbeat, clock.now))
    async with sessions() as session, session.begin():  # a state this version cannot read
        session.add(
            EscalationSubject(
                subject="patient:pt-burst-3",
                state={"alerts": "from a newer version"},
                next_due_at=None,
                updated_at=clock.now,
                version=7,
            )
        )
    versions = dict(
        tuple(row) for row in await rows(sessions, "SELECT subject, version FROM escalation_subjects")
    )

    commits: list[object] = []

    def committed(connection: object) -> None:
        commits.append(connection)

    event.listen(engine.sync_engine, "commit", committed)
    try:
        await escalation.handle_outcomes(outcomes[:6] + outcomes[8:])  # all but home 3: 22 subjects
    finally:
        event.remove(engine.sync_engine, "commit", committed)
    assert len(commits) == 2  # the decisions, then the record of their events' immediate delivery
    assert len(publisher.alert_events()) == 11
    others = [n for n in range(12) if n != 3]
    raised = {tuple(row) for row in await rows(sessions, "SELECT patient_id, priority FROM alerts")}
    assert raised == {(f"pt-burst-{n}", "high") for n in others}
    after = dict(
        tuple(row) for row in await rows(sessions, "SELECT subject, version FROM escalation_subjects")
    )
    for n in others:  # each heartbeat moved its gateway's state on by one decision
        assert after[f"gateway:{gateway_id}-{n}"] == versions[f"gateway:{gateway_id}-{n}"] + 1

    await escalation.handle_outcomes(outcomes[6:8])  # home 3: its assessment and its heartbeat
    assert escalation.counters.inputs_failed == 1
    assert await scalar(sessions, "SELECT count(*) FROM alerts WHERE patient_id = 'pt-burst-3'") == 0
    after = dict(
        tuple(row) for row in await rows(sessions, "SELECT subject, version FROM escalation_subjects")
    )
    assert after[f"gateway:{gateway_id}-3"] == versions[f"gateway:{gateway_id}-3"] + 1
    assert after["patient:pt-burst-3"] == 7


MEDIUM_COMPONENTS: dict[str, int | None] = {
    "respiration": 2,
    "spo2": 0,
    "air_or_oxygen": 0,
    "systolic_bp": 2,
    "pulse": 1,
    "consciousness": 0,
    "temperature": 0,
}
"""NEWS2 5: medium risk."""


async def _alert_history(database_url: str) -> dict[str, list[dict[str, object]]]:
    """One alert's life (raised medium, re-escalated as high, escalated by its timer, acknowledged,
    resolved) with two webhooks, on a fresh database; every row the engine wrote, without the generated
    ids."""
    history, _ = await _alert_run(database_url)
    return history


async def _alert_run(
    database_url: str, *, unlocked: bool | None = None
) -> tuple[dict[str, list[dict[str, object]]], dict[str, float]]:
    """:func:`_alert_history`, and the engine's counters; ``unlocked`` turns its unlocked decisions on
    or off (default: the engine's choice for the backend)."""
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        ingestor = Ingestor(sessions, IngestSettings(), retry_delay_s=0.01)
        clock, publisher = FakeClock(), RecordingPublisher()
        hooks = [
            WebhookSettings(name=name, url=f"https://{name}.example/hook", secret="a-shared-secret-16")
            for name in ("pager", "ehr")
        ]
        wardwatch = make_engine(sessions, clock, publisher, webhooks=hooks)
        if unlocked is not None:
            wardwatch.unlocked_decisions = unlocked
        birth = gateway_status("gw-history", "birth", sent_at=clock.now)
        await wardwatch.handle_outcome(await ingest(ingestor, birth, clock.now))
        medium = news2_assessment(
            "gw-history", 0, patient_id="pt-h", assessed_at=clock.now, components=MEDIUM_COMPONENTS
        )
        await wardwatch.handle_outcome(await ingest(ingestor, medium, clock.now))
        clock.advance(60)
        high = news2_assessment("gw-history", 1, patient_id="pt-h", assessed_at=clock.now)
        await wardwatch.handle_outcome(await ingest(ingestor, high, clock.now))
        clock.advance(HIGH_ACK_TIMEOUT_S + 1)
        assert await wardwatch.fire_due() == 1
        (alert_id,) = await scalar_list(wardwatch, "pt-h")
        clock.advance(30)
        await wardwatch.acknowledge(alert_id, actor="nurse-7", role=Role.NURSE, note="on my way")
        clock.advance(30)
        await wardwatch.resolve(alert_id, actor="dr-2", role=Role.PHYSICIAN, note="treated at home")
        await wardwatch.drain()

        history: dict[str, list[dict[str, object]]] = {}
        async with sessions() as session:
            for table, order, generated in (
                (Alert.__table__, "id", ()),
                (AlertEventRecord.__table__, "id", ("id", "message_id")),
                (AlertDelivery.__table__, "id", ("id", "message_id")),
                (EscalationSubject.__table__, "subject", ()),
            ):
                result = await session.execute(select(table).order_by(table.c[order]))
                history[table.name] = [
                    {key: value for key, value in row._mapping.items() if key not in generated}
                    for row in result
                ]
        for delivery in history["alert_deliveries"]:
            payload = dict(delivery["payload"])  # type: ignore[call-overload]
            del payload["message_id"]
            delivery["payload"] = payload
        return history, wardwatch.counters.snapshot()
    finally:
        await engine.dispose()


async def test_postgresql_saves_a_decision_in_one_statement_with_the_same_rows_as_the_portable_path(
    fresh_postgres_url: str, sqlite_template: Path, tmp_path: Path
) -> None:
    sqlite_path = tmp_path / "portable.db"
    shutil.copyfile(sqlite_template, sqlite_path)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "alert" in statement:
            statements.append(statement)

    portable = await _alert_history(f"sqlite+aiosqlite:///{sqlite_path}")
    event.listen(Engine, "before_cursor_execute", count)
    try:
        one_statement = await _alert_history(fresh_postgres_url)
    finally:
        event.remove(Engine, "before_cursor_execute", count)

    assert one_statement == portable
    actions = [row["action"] for row in portable["alert_events"]]
    tiers = [row["tier"] for row in portable["alert_events"]]
    assert actions == ["raised", "escalated", "escalated", "acknowledged", "resolved"]  # medium, then high
    assert tiers == [1, 2, 3, 3, 3]
    assert [(row["sink"], row["target"]) for row in portable["alert_deliveries"][:3]] == [
        ("mqtt", protocol.CC_ALERT_TOPIC),
        ("webhook", "pager"),
        ("webhook", "ehr"),
    ]
    (alert,) = portable["alerts"]
    assert (alert["state"], alert["acknowledged_by"], alert["resolved_by"]) == ("resolved", "nurse-7", "dr-2")
    # each decision wrote its state, alert, audit record and deliveries in one statement on PostgreSQL
    writes = [s for s in statements if s.lstrip().startswith("WITH state AS")]
    assert len(writes) == 5
    assert not [s for s in statements if s.lstrip().startswith(("INSERT INTO alert", "UPDATE alerts"))]


async def test_locking_subjects_creates_the_missing_and_uses_one_statement_text_for_any_count(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """A batch's subjects are locked with ``= ANY`` of one array on PostgreSQL: asyncpg prepares each
    statement text once per connection, and an IN list is a new text for every number of subjects."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    texts: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM escalation_subjects" in statement:
            texts.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        for subjects in (["patient:b", "patient:a", "patient:c"], ["patient:b"], ["gateway:x", "patient:a"]):
            async with sessions() as session, session.begin():
                locked = await store.lock_subjects(session, subjects, now=now)
            assert list(locked) == sorted(subjects)
            assert {subject.version for subject in locked.values()} == {0}
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    names = {name for (name,) in await rows(sessions, "SELECT subject FROM escalation_subjects")}
    assert names == {"patient:a", "patient:b", "patient:c", "gateway:x"}
    assert len(texts) == 5  # each lock, and a second read after creating the missing ones (twice)
    if engine.dialect.name == "postgresql":  # the lock, and the second read: two texts, whatever the counts
        assert len(set(texts)) == 2
