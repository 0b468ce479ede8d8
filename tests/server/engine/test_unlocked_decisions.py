"""Unlocked decisions on PostgreSQL: a worker decides a gateway input on the subject state it last wrote
and saves the decision in one autocommitted statement guarded by the subject's version. What it writes
must be what the locked path writes, and a state another worker has moved on must write nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from engine_support import FakeClock, RecordingPublisher, gateway_status, ingest, news2_assessment
from server_support import rows, scalar
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_engine_escalation import MEDIUM_COMPONENTS, _alert_run, make_engine

from server.engine import EscalationEngine
from server.ingest import Ingestor
from server.storage import create_engine, session_factory

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])


async def test_an_unlocked_decision_writes_what_a_locked_one_writes(
    database_url: str, second_postgres_url: str
) -> None:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.lstrip())

    locked, locked_counters = await _alert_run(second_postgres_url, unlocked=False)
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        unlocked, unlocked_counters = await _alert_run(database_url, unlocked=True)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)

    assert unlocked == locked
    assert locked_counters["unlocked_decisions"] == 0
    # the second assessment (medium -> high) was decided on the remembered state, in one statement
    assert unlocked_counters["unlocked_decisions"] == 1
    assert unlocked_counters["unlocked_conflicts"] == 0
    guarded = [s for s in statements if s.startswith("WITH state AS")]
    assert len(guarded) == 5  # each of the five decisions wrote its rows in one statement
    assert all("WHERE subject = CAST($" in s and "AND version = CAST($" in s for s in guarded)


async def _inputs(
    workers: list[EscalationEngine], ingestor: Ingestor, clock: FakeClock, gateway_id: str
) -> None:
    """A birth and four assessments of one patient, the n-th input decided by workers[n % len]."""
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
    messages: list[Any] = [birth]
    for seq, components in enumerate((MEDIUM_COMPONENTS, None, None, MEDIUM_COMPONENTS)):
        clock.advance(60)
        messages.append(
            news2_assessment(
                gateway_id, seq, patient_id="pt-race", assessed_at=clock.now, components=components
            )
        )
    for n, message in enumerate(messages):
        await workers[n % len(workers)].handle_outcome(await ingest(ingestor, message, clock.now))


async def _history(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[Any, ...]]:
    events = await rows(
        sessions,
        "SELECT e.action, e.tier, e.priority, e.total FROM alert_events e "
        "JOIN alerts a ON a.id = e.alert_id WHERE a.patient_id = 'pt-race' ORDER BY e.id",
    )
    return [tuple(event) for event in events]


async def test_a_state_another_worker_moved_on_writes_nothing_and_is_decided_again(
    sessions: async_sessionmaker[AsyncSession], database_url: str, second_postgres_url: str, gateway_id: str
) -> None:
    """Two workers take turns with one patient's inputs: each remembers a state the other has since
    replaced. Each such decision fails its version guard, writes nothing, and is made again on the
    current state: the alert's history is that of one worker deciding everything."""
    clock = FakeClock()
    second_db = create_engine(database_url)
    try:
        one = make_engine(sessions, clock, RecordingPublisher())
        two = make_engine(session_factory(second_db), clock, RecordingPublisher())
        await _inputs([one, two], Ingestor(sessions), clock, gateway_id)
        alternating = await _history(sessions)
        versions = await scalar(
            sessions, "SELECT version FROM escalation_subjects WHERE subject LIKE '%pt-race'"
        )
        conflicts = one.counters.unlocked_conflicts + two.counters.unlocked_conflicts
    finally:
        await second_db.dispose()
    # two decided the 1st and 3rd assessments, one the birth and the 2nd and 4th: from the 3rd on, each
    # remembered the state it had written two inputs before, which the other had since moved on
    assert conflicts == 2
    assert one.counters.unlocked_decisions + two.counters.unlocked_decisions == 0
    assert versions == 4

    clock = FakeClock()
    single_db = create_engine(second_postgres_url)
    try:
        single = session_factory(single_db)
        alone = make_engine(single, clock, RecordingPublisher())
        await _inputs([alone], Ingestor(single), clock, gateway_id)
        assert await _history(single) == alternating
    finally:
        await single_db.dispose()
    assert alone.counters.unlocked_decisions == 3  # every assessment after the first
    assert alone.counters.unlocked_conflicts == 0
    assert [action for action, *_ in alternating][:2] == ["raised", "escalated"]


async def test_a_quiet_decision_on_a_state_moved_on_writes_nothing_either(
    sessions: async_sessionmaker[AsyncSession], database_url: str, gateway_id: str
) -> None:
    """Heartbeats change no alert: their unlocked write is one guarded UPDATE of the subject's row."""
    clock = FakeClock()
    second_db = create_engine(database_url)
    try:
        one = make_engine(sessions, clock, RecordingPublisher())
        two = make_engine(session_factory(second_db), clock, RecordingPublisher())
        ingestor = Ingestor(sessions)
        birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
        await one.handle_outcome(await ingest(ingestor, birth, clock.now))  # version 1, remembered by one
        for worker in (one, two, one):  # one's remembered state is then two's version behind
            clock.advance(30)
            beat = gateway_status(gateway_id, "heartbeat", sent_at=clock.now)
            await worker.handle_outcome(await ingest(ingestor, beat, clock.now))
    finally:
        await second_db.dispose()
    assert (one.counters.unlocked_decisions, one.counters.unlocked_conflicts) == (1, 1)
    version, last_status = (
        await rows(
            sessions,
            "SELECT version, state->'gateways'->:gateway->>'last_status_sent_at' FROM escalation_subjects "
            "WHERE subject = :subject",
            gateway=gateway_id,
            subject=f"gateway:{gateway_id}",
        )
    )[0]
    assert version == 4  # every heartbeat was applied, the last one on the state two had written
    assert datetime.fromisoformat(last_status) == clock.now  # the last heartbeat's


async def _burst(database_url: str, gateway_id: str, *, unlocked: bool) -> tuple[list[Any], dict[str, float]]:
    """Six homes' births one by one, then one ingest transaction's outcomes: their heartbeats and a
    first assessment of a patient; the subjects and alerts written, and the engine's counters."""
    database = create_engine(database_url)
    try:
        sessions = session_factory(database)
        ingestor, clock = Ingestor(sessions), FakeClock()
        escalation = make_engine(sessions, clock, RecordingPublisher())
        escalation.unlocked_decisions = unlocked
        for n in range(6):
            birth = gateway_status(f"{gateway_id}-{n}", "birth", sent_at=clock.now)
            await escalation.handle_outcome(await ingest(ingestor, birth, clock.now))
        clock.advance(20)
        outcomes = [
            await ingest(
                ingestor, gateway_status(f"{gateway_id}-{n}", "heartbeat", sent_at=clock.now), clock.now
            )
            for n in range(6)
        ]
        high = news2_assessment(f"{gateway_id}-0", 0, patient_id="pt-burst", assessed_at=clock.now)
        outcomes.insert(3, await ingest(ingestor, high, clock.now))
        await escalation.handle_outcomes(outcomes)
        written = await rows(
            sessions,
            "SELECT subject, version, next_due_at, state FROM escalation_subjects ORDER BY subject",
        )
        alerts = await rows(sessions, "SELECT patient_id, priority, tier, state FROM alerts")
        return [tuple(row) for row in written] + [
            tuple(row) for row in alerts
        ], escalation.counters.snapshot()
    finally:
        await database.dispose()


async def test_a_batchs_remembered_subjects_are_decided_unlocked_and_the_rest_together(
    database_url: str, second_postgres_url: str, gateway_id: str
) -> None:
    unlocked, counters = await _burst(database_url, gateway_id, unlocked=True)
    locked, locked_counters = await _burst(second_postgres_url, gateway_id, unlocked=False)
    assert unlocked == locked
    assert counters["unlocked_decisions"] == 6  # the heartbeats; the new patient needed its lock
    assert locked_counters["unlocked_decisions"] == 0
    assert counters["inputs"] == locked_counters["inputs"] == 6 + 7
    assert ("pt-burst", "high", 2, "open") in unlocked
