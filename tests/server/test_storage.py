"""Storage against real SQLite and real PostgreSQL: migrations, the audit guard, constraints, retention."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from server_support import at, obs_topic, observation_batch, scalar
from sqlalchemy import Connection, delete, inspect, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.ingest import Ingestor
from server.settings import DatabaseSettings, RetentionSettings
from server.storage import create_engine, current_revision, head_revision, migrate, purge_expired
from server.storage.migrate import downgrade
from server.storage.models import (
    Alert,
    AlertEventRecord,
    DeadLetter,
    Gateway,
    SequenceGap,
    import_model_modules,
)

OWN_TABLES = {
    "alembic_version",
    "alert_events",
    "alerts",
    "assessments",
    "commands",
    "dead_letters",
    "gateway_events",
    "gateways",
    "observations",
    "patients",
    "received_messages",
    "sequence_gaps",
}


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migrations_upgrade_an_empty_database_to_head(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        assert await _table_names(engine) == set()
        assert await current_revision(engine) is None

        await migrate(empty_database_url)

        assert await current_revision(engine) == head_revision()
        tables = await _table_names(engine)
        assert tables >= OWN_TABLES
        assert tables == {*import_model_modules().tables, "alembic_version"}
        await migrate(engine)  # already at head: nothing to do, nothing fails
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, import_model_modules()))


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    """The migrated schema is what the models declare, in every module that declares tables (else
    autogenerate would produce a migration)."""
    async with engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    await downgrade(database_url, revision="base")
    engine = create_engine(database_url)
    try:
        assert await _table_names(engine) == {"alembic_version"}
        await migrate(engine)
        assert await _table_names(engine) >= OWN_TABLES
    finally:
        await engine.dispose()


async def test_migration_0004_sets_probe_watch_from_the_policy_states(empty_database_url: str) -> None:
    """A gateway whose stored policy state follows a probe that is off is marked; the others are not."""
    await migrate(empty_database_url, revision="0003")
    engine = create_engine(empty_database_url)
    now = datetime(2026, 11, 23, tzinfo=UTC)

    def gateway_state(gateway_id: str, **device: object) -> str:
        return json.dumps({"gateways": {gateway_id: {"devices": {"ox-1": device}}}})

    try:
        async with engine.begin() as connection:
            for gateway_id in ("gw-off", "gw-confirming", "gw-fine", "gw-no-state"):
                await connection.execute(
                    text(
                        "INSERT INTO gateways (gateway_id, first_seen_at, last_seen_at, online) "
                        "VALUES (:gateway_id, :now, :now, false)"
                    ),
                    {"gateway_id": gateway_id, "now": now},
                )
            states = {
                "gw-off": gateway_state("gw-off", probe_off_since=now.isoformat()),
                "gw-confirming": gateway_state("gw-confirming", probe_confirm_at=now.isoformat()),
                "gw-fine": gateway_state("gw-fine", probe_off_since=None, probe_confirm_at=None),
            }
            for gateway_id, state in states.items():
                await connection.execute(
                    text(
                        "INSERT INTO escalation_subjects (subject, state, updated_at, version) "
                        "VALUES (:subject, :state, :now, 1)"
                    ),
                    {"subject": f"gateway:{gateway_id}", "state": state, "now": now},
                )
        await migrate(engine)
        async with engine.connect() as connection:
            marked = dict(
                (await connection.execute(text("SELECT gateway_id, probe_watch FROM gateways"))).all()
            )
    finally:
        await engine.dispose()
    assert marked == {"gw-off": True, "gw-confirming": True, "gw-fine": False, "gw-no-state": False}


async def test_workers_migrating_at_once_do_not_collide(empty_database_url: str, backend: str) -> None:
    await asyncio.gather(*(migrate(empty_database_url) for _ in range(3)))
    engine = create_engine(empty_database_url)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_engines_opening_one_new_sqlite_file_at_once_all_switch_it_to_wal(tmp_path: Path) -> None:
    """Two connections switching a new file to WAL at once: SQLite refuses one of them at once (not
    through the busy handler), about once in 40 starts of four engines; the refused one tries again."""

    async def journal_mode(engine: AsyncEngine) -> str:
        async with engine.connect() as connection:
            return str((await connection.execute(text("PRAGMA journal_mode"))).scalar())

    for attempt in range(150):
        engines = [create_engine(f"sqlite+aiosqlite:///{tmp_path / f'new-{attempt}.db'}") for _ in range(4)]
        try:
            modes = await asyncio.gather(*(journal_mode(engine) for engine in engines))
        finally:
            for engine in engines:
                await engine.dispose()
        assert modes == ["wal"] * 4


async def _alert_with_event(sessions: async_sessionmaker[AsyncSession]) -> tuple[uuid.UUID, uuid.UUID]:
    alert_id, event_id = uuid.uuid4(), protocol.new_message_id()
    async with sessions() as session, session.begin():
        session.add(Gateway(gateway_id="gw-audit", first_seen_at=at(0), last_seen_at=at(0), online=True))
        await session.flush()
        session.add(
            Alert(
                id=alert_id,
                category="technical",
                condition="gateway_offline",
                subject="gateway:gw-audit",
                gateway_id="gw-audit",
                state="open",
                priority="medium",
                tier=1,
                reason="no heartbeat for 45 s",
                raised_at=at(0),
                updated_at=at(0),
            )
        )
        await session.flush()
        session.add(
            AlertEventRecord(
                message_id=event_id,
                alert_id=alert_id,
                action="raised",
                actor=None,
                reason="no heartbeat for 45 s",
                priority="medium",
                tier=1,
                at=at(0),
            )
        )
    return alert_id, event_id


async def test_audit_log_rejects_update_and_delete(
    sessions: async_sessionmaker[AsyncSession], backend: str
) -> None:
    alert_id, event_id = await _alert_with_event(sessions)

    changes = [
        update(AlertEventRecord).where(AlertEventRecord.message_id == event_id).values(actor="mallory"),
        delete(AlertEventRecord).where(AlertEventRecord.message_id == event_id),
    ]
    for change in changes:
        with pytest.raises(DBAPIError, match="append-only"):
            async with sessions() as session, session.begin():
                await session.execute(change)
    if backend == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            async with sessions() as session, session.begin():
                await session.execute(text("TRUNCATE alert_events CASCADE"))

    # Appending stays allowed, and the original row is untouched.
    async with sessions() as session, session.begin():
        session.add(
            AlertEventRecord(
                message_id=protocol.new_message_id(),
                alert_id=alert_id,
                action="acknowledged",
                actor="nurse-7",
                reason="called the patient",
                priority="medium",
                tier=1,
                at=at(60),
            )
        )
    assert await scalar(sessions, "SELECT count(*) FROM alert_events") == 2
    assert await scalar(sessions, "SELECT count(*) FROM alert_events WHERE actor IS NULL") == 1


async def test_one_unresolved_alert_per_subject_and_condition(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    alert_id, _ = await _alert_with_event(sessions)

    def duplicate() -> Alert:
        return Alert(
            id=uuid.uuid4(),
            category="technical",
            condition="gateway_offline",
            subject="gateway:gw-audit",
            state="open",
            priority="medium",
            tier=1,
            reason="again",
            raised_at=at(5),
            updated_at=at(5),
        )

    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(duplicate())
    async with sessions() as session, session.begin():
        await session.execute(update(Alert).where(Alert.id == alert_id).values(state="resolved"))
    async with sessions() as session, session.begin():
        session.add(duplicate())  # the old one is resolved: a new alert may open
    assert await scalar(sessions, "SELECT count(*) FROM alerts") == 2


async def test_naive_timestamps_are_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with sessions() as session, session.begin():
            session.add(
                DeadLetter(
                    topic="t",
                    reason="x",
                    detail="",
                    payload=b"",
                    payload_size=0,
                    received_at=at(0).replace(tzinfo=None),
                )
            )


async def test_retention_deletes_old_rows_in_batches_and_keeps_open_gaps(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    old, new = at(0), at(0) + timedelta(days=100)
    for seq in (0, 1, 2, 5):  # an open gap 3..4, detected long ago
        received = old if seq < 5 else old + timedelta(seconds=1)
        batch = observation_batch(gateway_id, seq, count=3)
        await ingestor.ingest(obs_topic(gateway_id), protocol.encode(batch), received)
    batch = observation_batch(gateway_id, 6, count=3)
    await ingestor.ingest(obs_topic(gateway_id), protocol.encode(batch), new)
    await ingestor.ingest(obs_topic(gateway_id), b"not json", old)
    async with sessions() as session, session.begin():
        session.add(
            SequenceGap(
                gateway_id=gateway_id, first_missing=100, last_missing=100, detected_at=old, filled_at=old
            )
        )

    settings = RetentionSettings(
        observations_days=30,
        assessments_days=30,
        events_days=30,
        received_messages_days=60,
        dead_letters_days=30,
        filled_gaps_days=30,
        batch_size=2,
    )
    report = await purge_expired(sessions, settings, now=new)

    assert report.deleted["observations"] == 12
    assert report.deleted["received_messages"] == 4
    assert report.deleted["dead_letters"] == 1
    assert report.deleted["sequence_gaps"] == 1  # the filled one; the open gap stays
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 3
    assert await scalar(sessions, "SELECT count(*) FROM received_messages") == 1
    assert await scalar(sessions, "SELECT count(*) FROM sequence_gaps WHERE filled_at IS NULL") == 1

    again = await purge_expired(sessions, settings, now=new)
    assert again.total == 0


async def test_retention_none_keeps_forever(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    batch = observation_batch(gateway_id, 0)
    await ingestor.ingest(obs_topic(gateway_id), protocol.encode(batch), at(0))
    keep_all = RetentionSettings(
        observations_days=None,
        assessments_days=None,
        events_days=None,
        received_messages_days=None,
        dead_letters_days=None,
        filled_gaps_days=None,
    )
    report = await purge_expired(sessions, keep_all, now=at(0) + timedelta(days=10_000))
    assert report.total == 0
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # only this backend has it
async def test_sqlite_reader_does_not_hold_the_write_lock(
    database_url: str, backend: str, gateway_id: str
) -> None:
    """A read-only session left open never blocks ingest; an open write transaction would (busy timeout)."""
    from server.settings import IngestSettings
    from server.storage import StorageUnavailable
    from server.storage.engine import READ_ONLY, session_factory

    reader_engine = create_engine(database_url)
    writer_engine = create_engine(database_url, busy_timeout_s=0.2)
    readers = session_factory(reader_engine)
    ingestor = Ingestor(
        session_factory(writer_engine), IngestSettings(storage_attempts=1), retry_delay_s=0.001
    )
    payload = protocol.encode(observation_batch(gateway_id, 0))
    try:
        async with readers() as reading:
            await reading.connection(execution_options=READ_ONLY)
            await reading.execute(text("SELECT count(*) FROM observations"))
            outcome = await ingestor.ingest(obs_topic(gateway_id), payload, at(0))
            assert outcome.kind.value == "stored"
        async with readers() as writing:
            await writing.execute(text("SELECT count(*) FROM observations"))  # BEGIN IMMEDIATE
            with pytest.raises(StorageUnavailable):
                await ingestor.ingest(
                    obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 1)), at(1)
                )
    finally:
        await reader_engine.dispose()
        await writer_engine.dispose()


async def test_periodic_purge_runs_until_cancelled(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    from server.storage import purge_periodically

    await ingestor.ingest(obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)), at(0))
    later = at(0) + timedelta(days=500)
    rounds: list[float] = []
    stop = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:  # the loop's pause, observed instead of waited out
        rounds.append(seconds)
        if len(rounds) == 2:
            stop.set()
            await asyncio.Event().wait()  # park until cancelled

    task = asyncio.create_task(
        purge_periodically(
            sessions, RetentionSettings(), clock=lambda: later, interval_s=60, sleep=fake_sleep
        )
    )
    await stop.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds == [60, 60]
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_connection_the_server_closed_is_replaced_when_it_leaves_the_pool(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pre-ping on every checkout (two round trips per transaction): a pooled connection the server
    terminated is replaced for free, and one idle for IDLE_PING_S is pinged first."""
    import asyncpg
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    import server.storage.engine as storage_engine

    url = make_url(database_url)
    database = create_engine(database_url, pool_size=1)
    statements: list[str] = []
    event.listen(database.sync_engine, "before_cursor_execute", lambda *a: statements.append(str(a[2])))
    pings: list[object] = []
    real_ping = database.sync_engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(database.sync_engine.dialect, "do_ping", counted_ping)
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database="postgres")
    try:
        async with database.connect() as connection:
            before = await connection.scalar(text("SELECT pg_backend_pid()"))
            driver = (await connection.get_raw_connection()).driver_connection
        statements.clear()
        async with database.connect() as connection:  # just used: no ping, no extra statement
            assert await connection.scalar(text("SELECT pg_backend_pid()")) == before
        assert statements == ["SELECT pg_backend_pid()"] and pings == []

        closed = asyncio.Event()
        driver.add_termination_listener(lambda _connection: closed.set())
        await admin.execute("SELECT pg_terminate_backend($1)", before)
        await asyncio.wait_for(closed.wait(), 10)  # the driver sees the server close the socket
        async with database.connect() as connection:  # no error: a new connection
            after = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert after != before and pings == []

        monkeypatch.setattr(storage_engine, "IDLE_PING_S", 0.0)
        async with database.connect() as connection:  # "idle" at once now: pinged, and alive
            assert await connection.scalar(text("SELECT pg_backend_pid()")) == after
        assert len(pings) == 1
    finally:
        await admin.close()
        await database.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_worker_keeps_pool_size_connections_and_closes_only_the_overflow(database_url: str) -> None:
    """A busy worker must not open and close connections all the time (each is a new PostgreSQL process
    and a few round trips of set-up): pool_size stay open, max_overflow more come and go at peaks."""

    async def backends(count: int) -> set[int]:
        async with contextlib.AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(database.connect()) for _ in range(count)]
            return {await c.scalar(text("SELECT pg_backend_pid()")) for c in connections}

    database = create_engine(database_url, pool_size=3, max_overflow=2)
    try:
        first_burst = await backends(5)
        kept = await backends(3)
        second_burst = await backends(5)
        assert len(first_burst) == len(second_burst) == 5
        assert kept < first_burst and kept < second_burst  # the same three served both bursts
        assert len(first_burst & second_burst) == 3  # the two overflow connections were new each time
        assert await backends(3) < second_burst
    finally:
        await database.dispose()
    settings = DatabaseSettings()
    assert (settings.pool_size, settings.max_overflow) == (16, 4)  # 20 at most, as before
