"""Ingest against real SQLite and real PostgreSQL: storage, dedup, gaps, dead letters, status sessions."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from server_support import (
    assessment,
    at,
    obs_topic,
    observation_batch,
    probe_off_event,
    rows,
    scalar,
    status,
    topic_for,
)
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from support.processes import wait_until

from edge_agent import protocol
from server.ingest import DeadLetterReason, Ingestor, IngestOutcome, OutcomeKind, subscription_filters
from server.settings import IngestSettings
from server.storage import create_engine, repository, session_factory
from server.storage.models import CommandRecord, Patient, ReceivedMessage
from server.storage.repository import SeqRange

RECEIVED = at(60)


async def test_observation_batch_is_stored_with_every_field(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    batch = observation_batch(gateway_id, 0, count=3)

    outcome = await ingestor.ingest(obs_topic(gateway_id), protocol.encode(batch), RECEIVED)

    assert outcome.kind is OutcomeKind.STORED
    assert outcome.message == batch
    async with sessions() as session:
        stored = await repository.observations_for_patient(session, "pt-0001")
    assert [(o.vital, o.value, o.unit, o.measured_at, o.position) for o in stored] == [
        (item.vital.value, item.value, item.unit, item.measured_at, position)
        for position, item in enumerate(batch.observations)
    ]
    first = stored[0]
    assert first.message_id == batch.message_id
    assert first.measured_at.utcoffset() is not None  # aware UTC on both backends
    assert first.received_at == RECEIVED
    assert stored[1].quality == ["motion"]
    assert first.perfusion_index == 1.5 and stored[1].perfusion_index is None
    assert first.time_source == "device" and first.historical is False
    assert (
        await scalar(sessions, "SELECT gateway_id FROM patients WHERE patient_id = 'pt-0001'") == gateway_id
    )
    assert ingestor.counters.snapshot()["observations_stored"] == 3
    assert ingestor.counters.snapshot()["stored.obs"] == 1


async def test_assessment_and_event_are_stored(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    score = assessment(gateway_id, 0, patient_id="pt-0002")
    event = probe_off_event(gateway_id, 1, patient_id="pt-0002")

    for message in (score, event):
        outcome = await ingestor.ingest(topic_for(message), protocol.encode(message), RECEIVED)
        assert outcome.kind is OutcomeKind.STORED

    async with sessions() as session:
        latest = await repository.latest_assessment(session, "pt-0002")
    assert latest is not None
    assert (latest.total, latest.risk, latest.components["respiration"]) == (3, "low-medium", 3)
    assert latest.input_ages_s == {"respiratory_rate": 12.0, "spo2": None}
    (kind, device, patient, detail) = (
        await rows(sessions, "SELECT kind, device_id, patient_id, detail FROM gateway_events")
    )[0]
    assert (kind, device, patient) == ("probe_off", "oximeter-1", "pt-0002")
    assert "probe_off" in str(detail)


async def test_replayed_batch_is_stored_once(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    batches = [observation_batch(gateway_id, seq, count=4) for seq in range(5)]
    payloads = [protocol.encode(batch) for batch in batches]

    first = [await ingestor.ingest(obs_topic(gateway_id), p, RECEIVED) for p in payloads]
    replay = [await ingestor.ingest(obs_topic(gateway_id), p, at(120)) for p in payloads]

    assert {o.kind for o in first} == {OutcomeKind.STORED}
    assert {o.kind for o in replay} == {OutcomeKind.DUPLICATE}
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 20
    assert await scalar(sessions, "SELECT count(*) FROM received_messages") == 5
    assert await scalar(sessions, "SELECT count(*) FROM sequence_gaps") == 0
    assert ingestor.counters.duplicates == 5


async def test_two_concurrent_ingesters_store_each_message_once(
    database_url: str, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """Two workers (own engines, own connection pools) receive every message at the same time."""
    engines = [create_engine(database_url) for _ in range(2)]
    workers = [Ingestor(session_factory(e), retry_delay_s=0.01) for e in engines]
    try:
        batches = [observation_batch(gateway_id, seq, count=3) for seq in range(15)]
        outcomes = []
        for batch in batches:
            payload = protocol.encode(batch)
            outcomes.append(
                await asyncio.gather(*(w.ingest(obs_topic(gateway_id), payload, RECEIVED) for w in workers))
            )
    finally:
        for e in engines:
            await e.dispose()

    for pair in outcomes:
        assert sorted(o.kind for o in pair) == [OutcomeKind.DUPLICATE, OutcomeKind.STORED]
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 45
    assert await scalar(sessions, "SELECT count(DISTINCT message_id) FROM observations") == len(batches)
    assert await scalar(sessions, "SELECT count(*) FROM sequence_gaps") == 0


async def test_many_messages_in_parallel_are_all_stored(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """Out-of-order completion within one worker never loses a message; gaps close as numbers arrive."""
    payloads = [protocol.encode(observation_batch(gateway_id, seq)) for seq in range(30)]

    outcomes = await asyncio.gather(*(ingestor.ingest(obs_topic(gateway_id), p, RECEIVED) for p in payloads))

    assert {o.kind for o in outcomes} == {OutcomeKind.STORED}
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 60
    async with sessions() as session:
        assert await repository.open_gaps(session, gateway_id) == []


async def test_sequence_gap_is_recorded_and_filled_by_late_arrivals(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    messages = {seq: observation_batch(gateway_id, seq) for seq in range(12)}

    async def deliver(seq: int, seconds: float) -> None:
        outcome = await ingestor.ingest(obs_topic(gateway_id), protocol.encode(messages[seq]), at(seconds))
        assert outcome.kind is OutcomeKind.STORED  # nothing waits for a gap

    async def gaps() -> list[tuple[int, int]]:
        async with sessions() as session:
            return [
                (g.first_missing, g.last_missing) for g in await repository.open_gaps(session, gateway_id)
            ]

    for seq in (0, 1, 2):
        await deliver(seq, seq)
    outcome = await ingestor.ingest(obs_topic(gateway_id), protocol.encode(messages[6]), at(10))
    assert outcome.gap_opened == SeqRange(3, 5)
    assert await gaps() == [(3, 5)]

    await deliver(4, 20)  # splits the gap
    assert await gaps() == [(3, 3), (5, 5)]
    await deliver(3, 21)
    assert await gaps() == [(5, 5)]
    await deliver(7, 22)
    await deliver(5, 23)
    assert await gaps() == []

    await deliver(11, 30)
    await deliver(8, 31)
    assert await gaps() == [(9, 10)]

    filled = await rows(
        sessions,
        "SELECT first_missing, last_missing, detected_at, filled_at FROM sequence_gaps "
        "WHERE filled_at IS NOT NULL ORDER BY first_missing",
    )
    assert [(r[0], r[1]) for r in filled] == [(3, 3), (5, 5)]
    assert await scalar(sessions, "SELECT highest_seq FROM gateways") == 11
    counters = ingestor.counters.snapshot()
    assert counters["gaps_opened"] == 2
    assert counters["missing_messages"] == 6
    assert counters["gaps_filled"] == 4  # 4, 3, 5 and 8 arrived late
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 2 * 10


async def test_sequence_is_shared_by_obs_score_and_event(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    for message in (
        observation_batch(gateway_id, 0),
        assessment(gateway_id, 1),
        probe_off_event(gateway_id, 2),
        observation_batch(gateway_id, 4),
    ):
        await ingestor.ingest(topic_for(message), protocol.encode(message), RECEIVED)
    async with sessions() as session:
        gaps = await repository.open_gaps(session, gateway_id)
    assert [(g.first_missing, g.last_missing) for g in gaps] == [(3, 3)]


def _bad_payloads(gateway_id: str) -> list[tuple[str, str, bytes, DeadLetterReason]]:
    good = observation_batch(gateway_id, 0)
    data = good.model_dump(mode="json")
    wrong_value = {**data, "observations": [{**data["observations"][0], "value": 140.0}]}
    extra_field = {**data, "patient_name": "Jane Doe"}
    import json

    other = observation_batch("gw-someone-else", 0)
    topic = obs_topic(gateway_id)
    return [
        ("invalid-json", topic, b'{"message_id": ', DeadLetterReason.INVALID_JSON),
        ("not-utf8", topic, b"\xff\xfe\x00garbage", DeadLetterReason.INVALID_JSON),
        ("schema-range", topic, json.dumps(wrong_value).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        ("schema-extra-field", topic, json.dumps(extra_field).encode(), DeadLetterReason.SCHEMA_VIOLATION),
        ("schema-not-object", topic, b"[1, 2, 3]", DeadLetterReason.SCHEMA_VIOLATION),
        ("oversize", topic, b"{" + b" " * 300_000 + b"}", DeadLetterReason.OVERSIZE),
        ("gateway-mismatch", topic, protocol.encode(other), DeadLetterReason.GATEWAY_MISMATCH),
        (
            "status-for-another-gateway",
            protocol.gateway_topic(gateway_id, "status"),
            protocol.encode(status("gw-someone-else", "death", session=9, sent=0)),
            DeadLetterReason.GATEWAY_MISMATCH,
        ),
        ("bad-topic", "wardwatch/v1/gw/bad+id/obs", protocol.encode(good), DeadLetterReason.BAD_TOPIC),
        ("foreign-topic", "elsewhere/obs", protocol.encode(good), DeadLetterReason.BAD_TOPIC),
        ("unknown-channel", f"wardwatch/v1/gw/{gateway_id}/telemetry", b"{}", DeadLetterReason.BAD_TOPIC),
        (
            "command-channel",
            f"wardwatch/v1/gw/{gateway_id}/cmd/set_oxygen",
            b"{}",
            DeadLetterReason.UNEXPECTED_CHANNEL,
        ),
    ]


BAD_CASES = [case[0] for case in _bad_payloads("gw-x")]


@pytest.mark.parametrize("case", BAD_CASES)
async def test_bad_payload_goes_to_dead_letters(
    case: str,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, topic, payload, reason = next(c for c in _bad_payloads(gateway_id) if c[0] == case)
    caplog.set_level(logging.WARNING, logger="server.ingest")

    outcome = await ingestor.ingest(topic, payload, RECEIVED)

    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.reason is reason
    letters = await rows(
        sessions, "SELECT topic, reason, detail, payload, payload_size, received_at FROM dead_letters"
    )
    assert len(letters) == 1
    stored_topic, stored_reason, detail, stored_payload, size, _received = letters[0]
    assert (stored_topic, stored_reason, size) == (topic, reason.value, len(payload))
    assert bytes(stored_payload) == payload[:1024]  # kept up to dead_letter_payload_bytes
    assert detail
    assert ingestor.counters.snapshot()[f"dead_letters.{reason.value}"] == 1
    assert any(reason.value in record.getMessage() for record in caplog.records)
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 0
    assert await scalar(sessions, "SELECT count(*) FROM received_messages") == 0
    assert await scalar(sessions, "SELECT count(*) FROM gateways") == 0


async def test_dead_letter_log_does_not_carry_the_payload(
    ingestor: Ingestor, gateway_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    payload = b'{"patient_name": "Jane Doe", "x": ' + b"1" * 50
    await ingestor.ingest(obs_topic(gateway_id), payload, RECEIVED)
    assert "Jane Doe" not in caplog.text


async def test_ingest_keeps_going_after_dead_letters(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    for _, topic, payload, _reason in _bad_payloads(gateway_id):
        await ingestor.ingest(topic, payload, RECEIVED)
    good = await ingestor.ingest(
        obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)), RECEIVED
    )
    assert good.kind is OutcomeKind.STORED
    assert await scalar(sessions, "SELECT count(*) FROM dead_letters") == len(BAD_CASES)


async def test_status_follows_sessions_and_ignores_stale_deaths(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    async def send(message: protocol.GatewayStatus, seconds: float) -> OutcomeKind:
        outcome = await ingestor.ingest(topic_for(message), protocol.encode(message), at(seconds))
        return outcome.kind

    async def state() -> tuple[bool, int, str, int]:
        (row,) = await rows(
            sessions,
            "SELECT online, session, status_state, backlog FROM gateways WHERE gateway_id = :g",
            g=gateway_id,
        )
        return (bool(row[0]), row[1], row[2], row[3])

    birth = await ingestor.ingest(
        topic_for(status(gateway_id, "birth", session=5, sent=0)),
        protocol.encode(status(gateway_id, "birth", session=5, sent=0)),
        at(1),
    )
    assert birth.kind is OutcomeKind.STORED and birth.connectivity == "online"
    assert await state() == (True, 5, "birth", 0)

    assert (
        await send(status(gateway_id, "heartbeat", session=5, sent=30, backlog=7), 31) is OutcomeKind.STORED
    )
    assert await state() == (True, 5, "heartbeat", 7)

    # The will of an earlier connection, delivered late: must not mark the gateway offline.
    assert await send(status(gateway_id, "death", session=4, sent=-100), 32) is OutcomeKind.STALE
    assert await state() == (True, 5, "heartbeat", 7)

    # A heartbeat of the same session sent before the stored one (stored out of order by another worker).
    assert (
        await send(status(gateway_id, "heartbeat", session=5, sent=20, backlog=99), 33) is OutcomeKind.STALE
    )
    assert await state() == (True, 5, "heartbeat", 7)

    death = status(gateway_id, "death", session=5, sent=40)
    outcome = await ingestor.ingest(topic_for(death), protocol.encode(death), at(41))
    assert outcome.kind is OutcomeKind.STORED and outcome.connectivity == "offline"
    assert await state() == (False, 5, "death", 0)
    assert await scalar(sessions, "SELECT offline_since FROM gateways") is not None

    # Nothing of session 5 revives a gateway whose session 5 ended.
    assert await send(status(gateway_id, "heartbeat", session=5, sent=50), 51) is OutcomeKind.STALE
    assert await state() == (False, 5, "death", 0)

    reborn = status(gateway_id, "birth", session=6, sent=60)
    outcome = await ingestor.ingest(topic_for(reborn), protocol.encode(reborn), at(61))
    assert outcome.connectivity == "online"
    assert await state() == (True, 6, "birth", 0)
    assert await scalar(sessions, "SELECT offline_since FROM gateways") is None
    assert ingestor.counters.stale_statuses == 3


async def test_a_batchs_statuses_are_applied_in_order_with_one_statement(
    ingestor: Ingestor, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """A thousand gateways' heartbeats are tens a second: the batch's statuses update their gateways'
    rows together, with the effect of applying them one by one (a gateway's second status sees its
    first)."""
    other = f"{gateway_id}-b"
    batch = [
        status(gateway_id, "birth", session=1, sent=0),
        status(other, "birth", session=1, sent=0),
        status(gateway_id, "heartbeat", session=1, sent=30, backlog=7),
        status(other, "death", session=1, sent=40),
        status(gateway_id, "heartbeat", session=1, sent=20, backlog=99),  # older than the one before
    ]
    updates: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE GATEWAYS"):
            updates.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        outcomes = await ingestor.ingest_many(
            [(topic_for(message), protocol.encode(message)) for message in batch], RECEIVED
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)

    assert [(o.kind, o.connectivity) for o in outcomes] == [
        (OutcomeKind.STORED, "online"),
        (OutcomeKind.STORED, "online"),
        (OutcomeKind.STORED, None),
        (OutcomeKind.STORED, "offline"),
        (OutcomeKind.STALE, None),
    ]
    async with sessions() as session:
        stored = {
            gateway.gateway_id: (gateway.online, gateway.status_state, gateway.backlog, gateway.offline_since)
            for gateway in await repository.list_gateways(session)
        }
    assert stored == {
        gateway_id: (True, "heartbeat", 7, None),
        other: (False, "death", 0, RECEIVED),
    }
    assert len(updates) == 1, updates


async def test_death_of_an_unseen_newer_session_marks_offline(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    for message, seconds in (
        (status(gateway_id, "birth", session=1, sent=0), 1),
        (status(gateway_id, "death", session=2, sent=10), 11),  # birth of 2 was never seen
    ):
        await ingestor.ingest(topic_for(message), protocol.encode(message), at(seconds))
    (row,) = await rows(sessions, "SELECT online, session FROM gateways")
    assert (bool(row[0]), row[1]) == (False, 2)


async def test_retained_status_redelivered_changes_nothing(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    birth = status(gateway_id, "birth", session=3, sent=0)
    first = await ingestor.ingest(topic_for(birth), protocol.encode(birth), at(1))
    again = await ingestor.ingest(topic_for(birth), protocol.encode(birth), at(500))
    assert (first.kind, again.kind) == (OutcomeKind.STORED, OutcomeKind.STALE)
    async with sessions() as session:
        (gateway,) = await repository.list_gateways(session)
    assert gateway.status_received_at == at(1)


async def test_command_acknowledgement_is_tracked(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    await ingestor.ingest(obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)), at(0))
    command = protocol.Command(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        patient_id="pt-0001",
        issued_at=at(5),
        issued_by="nurse-7",
        body=protocol.SetOxygen(command="set_oxygen", on_oxygen=True),
    )
    async with sessions() as session, session.begin():
        await repository.record_command(session, command)
        await repository.mark_command_sent(session, command.message_id, sent_at=at(6))

    def ack(command_id: uuid.UUID) -> protocol.CommandAck:
        return protocol.CommandAck(
            message_id=protocol.new_message_id(),
            gateway_id=gateway_id,
            command_id=command_id,
            ok=True,
            detail="oxygen on",
            acked_at=at(7),
        )

    first = ack(command.message_id)
    assert (await ingestor.ingest(topic_for(first), protocol.encode(first), at(8))).kind is OutcomeKind.STORED
    async with sessions() as session:
        record = await session.get(CommandRecord, command.message_id)
    assert record is not None
    assert (record.state, record.ack_ok, record.ack_detail) == ("acknowledged", True, "oxygen on")
    assert (record.sent_at, record.acked_at, record.ack_received_at) == (at(6), at(7), at(8))

    replay = await ingestor.ingest(topic_for(first), protocol.encode(first), at(9))
    assert replay.kind is OutcomeKind.DUPLICATE
    second = ack(command.message_id)
    assert (await ingestor.ingest(topic_for(second), protocol.encode(second), at(10))).kind is (
        OutcomeKind.DUPLICATE
    )
    unknown = ack(uuid.uuid4())
    outcome = await ingestor.ingest(topic_for(unknown), protocol.encode(unknown), at(11))
    assert outcome.reason is DeadLetterReason.UNKNOWN_COMMAND
    async with sessions() as session:
        assert await session.get(ReceivedMessage, unknown.message_id) is None  # rolled back with it


async def test_storage_unavailable_raises_instead_of_acknowledging(gateway_id: str) -> None:
    """A database that cannot be reached is not the message's fault: raise, so MQTT does not PUBACK."""
    import socket

    from server.storage import StorageUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere")
    worker = Ingestor(session_factory(engine), IngestSettings(storage_attempts=2), retry_delay_s=0.001)
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await worker.ingest(obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)))
        with pytest.raises(StorageUnavailable):
            await worker.ingest(obs_topic(gateway_id), b"not json")  # nor can a dead letter be written
    finally:
        await engine.dispose()
    assert raised.value.attempts == 2
    assert worker.counters.storage_retries == 2
    assert worker.counters.storage_failures == 2


def test_subscription_filters_use_the_shared_group() -> None:
    assert subscription_filters("ingest") == [
        "$share/ingest/wardwatch/v1/gw/+/status",
        "$share/ingest/wardwatch/v1/gw/+/obs",
        "$share/ingest/wardwatch/v1/gw/+/score",
        "$share/ingest/wardwatch/v1/gw/+/event",
        "$share/ingest/wardwatch/v1/gw/+/cmd-ack",
    ]
    assert subscription_filters(None)[1] == "wardwatch/v1/gw/+/obs"


async def test_a_server_bug_dead_letters_the_message_instead_of_stopping_ingest(
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in the observation writer")

    monkeypatch.setattr(repository, "write_content", broken)
    outcome = await ingestor.ingest(
        obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)), RECEIVED
    )
    assert outcome.reason is DeadLetterReason.INTERNAL_ERROR
    assert "bug in the observation writer" in caplog.text  # logged with its traceback
    assert await scalar(sessions, "SELECT count(*) FROM received_messages") == 0  # rolled back
    monkeypatch.undo()
    again = await ingestor.ingest(
        obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 1)), RECEIVED
    )
    assert again.kind is OutcomeKind.STORED


async def test_first_message_above_zero_opens_a_gap_from_zero(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    outcome = await ingestor.ingest(
        obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 3)), RECEIVED
    )
    assert outcome.gap_opened == SeqRange(0, 2)
    await ingestor.ingest(obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)), RECEIVED)
    async with sessions() as session:
        gaps = await repository.open_gaps(session, gateway_id)
    assert [(g.first_missing, g.last_missing) for g in gaps] == [(1, 2)]


async def test_a_batch_is_stored_in_one_transaction_with_outcomes_in_order(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    other = f"{gateway_id}-b"
    first, second = observation_batch(gateway_id, 0), observation_batch(gateway_id, 1)
    birth = status(other, "birth", session=1, sent=0)
    messages = [
        (obs_topic(gateway_id), protocol.encode(second)),  # ahead of seq 0: a gap, then filled
        (obs_topic(other), protocol.encode(observation_batch(other, 0))),
        (obs_topic(gateway_id), protocol.encode(first)),
        (obs_topic(gateway_id), protocol.encode(second)),  # the same message twice in one batch
        (topic_for(birth), protocol.encode(birth)),
        (obs_topic(gateway_id), b"{"),
    ]

    outcomes = await ingestor.ingest_many(messages, RECEIVED)

    assert [o.kind for o in outcomes] == [
        OutcomeKind.STORED,
        OutcomeKind.STORED,
        OutcomeKind.STORED,
        OutcomeKind.DUPLICATE,
        OutcomeKind.STORED,
        OutcomeKind.DEAD_LETTER,
    ]
    assert outcomes[0].gap_opened == SeqRange(0, 0) and outcomes[2].gap_filled
    assert outcomes[4].connectivity == "online"
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 6
    async with sessions() as session:
        assert await repository.open_gaps(session) == []
    snapshot = ingestor.counters.snapshot()
    assert (snapshot["received"], snapshot["stored.obs"], snapshot["duplicates"]) == (6, 3, 1)
    assert snapshot["dead_letters.invalid_json"] == 1


async def test_a_batch_writing_every_kind_of_content_at_once_stores_each_row(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """Sequence numbers, a gap, new patients, readings, an assessment and an event in one transaction
    (one statement on PostgreSQL: a reading's and an event's new patient are inserted by the same
    statement that inserts them)."""
    other = f"{gateway_id}-b"
    messages: list[protocol.WireModel] = [
        observation_batch(gateway_id, 0, patient_id="pt-content-1", count=3),
        observation_batch(gateway_id, 3, patient_id="pt-content-1", count=1),  # 1..2 missing
        assessment(other, 0, patient_id="pt-content-2"),
        probe_off_event(other, 1, patient_id="pt-content-3"),
    ]

    outcomes = await ingestor.ingest_many([(topic_for(m), protocol.encode(m)) for m in messages], RECEIVED)

    assert [o.kind for o in outcomes] == [OutcomeKind.STORED] * 4
    assert outcomes[1].gap_opened == SeqRange(1, 2)
    assert await rows(sessions, "SELECT gateway_id, highest_seq FROM gateways ORDER BY gateway_id") == [
        (gateway_id, 3),
        (other, 1),
    ]
    async with sessions() as session:
        (gap,) = await repository.open_gaps(session)
    assert (gap.gateway_id, gap.first_missing, gap.last_missing, gap.detected_at) == (
        gateway_id, 1, 2, RECEIVED,
    )  # fmt: skip
    async with sessions() as session:
        patients = (await session.scalars(select(Patient).order_by(Patient.patient_id))).all()
    assert [(p.patient_id, p.gateway_id, p.first_seen_at) for p in patients] == [
        ("pt-content-1", gateway_id, RECEIVED),
        ("pt-content-2", other, RECEIVED),
        ("pt-content-3", other, RECEIVED),
    ]
    readings = await rows(
        sessions, "SELECT seq, position, patient_id, vital, value FROM observations ORDER BY seq, position"
    )
    assert readings == [
        (0, 0, "pt-content-1", "spo2", 94.0),
        (0, 1, "pt-content-1", "heart_rate", 81.0),
        (0, 2, "pt-content-1", "spo2", 92.0),
        (3, 0, "pt-content-1", "spo2", 94.0),
    ]
    assert await rows(sessions, "SELECT gateway_id, seq, patient_id, total FROM assessments") == [
        (other, 0, "pt-content-2", 3)
    ]
    assert await rows(sessions, "SELECT gateway_id, seq, kind, patient_id FROM gateway_events") == [
        (other, 1, "probe_off", "pt-content-3")
    ]


async def test_a_batch_with_a_message_the_database_refuses_stores_the_rest(
    ingestor: Ingestor, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    unknown_ack = protocol.CommandAck(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        command_id=uuid.uuid4(),
        ok=True,
        detail="",
        acked_at=at(0),
    )
    batches = [observation_batch(gateway_id, seq) for seq in range(3)]
    messages = [(obs_topic(gateway_id), protocol.encode(b)) for b in batches]
    messages.insert(1, (topic_for(unknown_ack), protocol.encode(unknown_ack)))

    outcomes = await ingestor.ingest_many(messages, RECEIVED)

    assert [o.kind for o in outcomes] == [
        OutcomeKind.STORED,
        OutcomeKind.DEAD_LETTER,
        OutcomeKind.STORED,
        OutcomeKind.STORED,
    ]
    assert outcomes[1].reason is DeadLetterReason.UNKNOWN_COMMAND
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 6
    assert await scalar(sessions, "SELECT count(*) FROM received_messages") == 3
    assert ingestor.counters.snapshot()["stored.obs"] == 3


async def test_two_workers_with_overlapping_batches_store_each_message_once(
    database_url: str, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """Batches spanning several gateways, in different orders on each worker: no message twice, no
    deadlock that is not retried, no gap left open."""
    import random

    gateways = [f"{gateway_id}-{n}" for n in range(4)]
    messages = [
        (obs_topic(gw), protocol.encode(observation_batch(gw, seq, count=1)))
        for seq in range(10)
        for gw in gateways
    ]
    engines = [create_engine(database_url) for _ in range(2)]
    workers = [
        Ingestor(session_factory(e), IngestSettings(storage_attempts=10), retry_delay_s=0.005)
        for e in engines
    ]
    rng = random.Random(7)
    try:
        plans = []
        for _ in workers:
            shuffled = messages[:]
            rng.shuffle(shuffled)
            plans.append([shuffled[i : i + 8] for i in range(0, len(shuffled), 8)])

        async def run(worker: Ingestor, plan: list[list[tuple[str, bytes]]]) -> list[IngestOutcome]:
            results = []
            for chunk in plan:
                results += await worker.ingest_many(chunk, RECEIVED)
            return results

        outcomes = await asyncio.gather(*(run(w, p) for w, p in zip(workers, plans, strict=True)))
    finally:
        for e in engines:
            await e.dispose()

    kinds = [o.kind for worker_outcomes in outcomes for o in worker_outcomes]
    assert kinds.count(OutcomeKind.STORED) == len(messages)
    assert kinds.count(OutcomeKind.DUPLICATE) == len(messages)
    assert await scalar(sessions, "SELECT count(*) FROM observations") == len(messages)
    async with sessions() as session:
        assert await repository.open_gaps(session) == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # only this backend has it
async def test_ingest_survives_postgresql_dropping_its_connections(
    database_url: str, backend: str, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """As when PostgreSQL restarts: every server connection is killed between two messages."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = create_engine(database_url, pool_size=2)
    worker = Ingestor(session_factory(engine), retry_delay_s=0.01)
    try:
        first = await worker.ingest(obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 0)))
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": make_url(database_url).database},
            )
        second = await worker.ingest(obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, 1)))
    finally:
        await engine.dispose()
    assert (first.kind, second.kind) == (OutcomeKind.STORED, OutcomeKind.STORED)
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 4


async def test_long_lists_are_split_into_several_transactions(
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import server.ingest

    monkeypatch.setattr(server.ingest, "MAX_MESSAGES_PER_TRANSACTION", 3)
    unknown_ack = protocol.CommandAck(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        command_id=uuid.uuid4(),
        ok=False,
        detail="no such command",
        acked_at=at(0),
    )
    messages = [
        (obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, seq))) for seq in range(7)
    ]
    messages.insert(4, (topic_for(unknown_ack), protocol.encode(unknown_ack)))  # in the second chunk

    outcomes = await ingestor.ingest_many(messages, RECEIVED)

    assert [o.kind for o in outcomes].count(OutcomeKind.STORED) == 7
    assert outcomes[4].reason is DeadLetterReason.UNKNOWN_COMMAND
    assert [o.message.seq for o in outcomes if o.kind is OutcomeKind.STORED] == list(range(7))  # type: ignore[union-attr]
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 14
    async with sessions() as session:
        assert await repository.open_gaps(session) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the backend whose lock outlived it
async def test_cancelling_ingest_mid_statement_ends_the_transaction_and_frees_the_database(
    database_url: str, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """A worker stopping cancels ingest, perhaps in the middle of a statement. The transaction must end
    (here: commit, its message unacknowledged) rather than leave SQLite's write lock to the GC, which made
    every other writer of the process wait out its busy timeout and fail."""
    from sqlalchemy import text

    engine = create_engine(database_url, busy_timeout_s=1.0)
    worker = Ingestor(session_factory(engine), retry_delay_s=0.01)
    written = asyncio.Event()
    real_apply_all = worker._apply_all

    async def slow_apply_all(session: AsyncSession, **kwargs: object) -> list[IngestOutcome]:
        outcomes = await real_apply_all(session, **kwargs)  # type: ignore[arg-type]
        written.set()  # the write lock is held from here to the end of the transaction
        await session.execute(  # a statement still running in SQLite's thread when the cancel comes
            text(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
                "SELECT count(*) FROM c"
            )
        )
        return outcomes

    worker._apply_all = slow_apply_all  # type: ignore[method-assign]
    messages = [
        (obs_topic(gateway_id), protocol.encode(observation_batch(gateway_id, seq))) for seq in (0, 1)
    ]
    try:
        ingesting = asyncio.create_task(worker.ingest_many(messages))
        await written.wait()
        ingesting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ingesting
        async with sessions() as session, session.begin():  # another writer: BEGIN IMMEDIATE
            stored = await session.scalar(text("SELECT count(*) FROM observations"))
    finally:
        await engine.dispose()
    assert stored == 4  # the transaction ran to its end: stored, not acknowledged, a duplicate next time


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite has one writer at a time
async def test_one_statement_locks_the_gateways_before_it_claims_a_message_id(
    database_url: str, backend: str, sessions: async_sessionmaker[AsyncSession], gateway_id: str
) -> None:
    """Every ingest transaction locks its gateways first, then claims message ids, so that two workers
    with overlapping batches wait for each other instead of deadlocking. The lock and the claim are one
    statement on PostgreSQL: while it waits for a gateway another worker holds, it must hold no claim."""
    from sqlalchemy import text

    batch = observation_batch(gateway_id, 0)
    claim = {
        "message_id": batch.message_id,
        "gateway_id": gateway_id,
        "channel": "obs",
        "seq": 0,
        "received_at": RECEIVED,
    }
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def lock_and_claim() -> tuple[dict[str, repository.GatewayRow], set[uuid.UUID]]:
        async with sessions() as waiting, waiting.begin():
            pid.set_result((await waiting.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            return await repository.lock_gateways_and_claim(
                waiting, [gateway_id], [claim], received_at=RECEIVED
            )

    async with sessions() as holder, sessions() as probe:
        await repository.lock_gateways(holder, [gateway_id], received_at=RECEIVED)  # another worker's batch
        task = asyncio.create_task(lock_and_claim())
        waiting_pid = await pid
        await wait_until(  # the statement waits for the gateway's row
            lambda: scalar(
                sessions, "SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted", pid=waiting_pid
            ),
            limit_s=10,
            what="the second transaction waiting for the gateway",
            poll_s=0.01,
        )
        await probe.execute(text("SET LOCAL lock_timeout = '2s'"))
        # had the waiting statement claimed the id already, this would wait for it and time out
        assert await repository.claim_messages(probe, [claim]) == {batch.message_id}
        await probe.rollback()
        await holder.rollback()
        gateways, claimed = await task
    assert list(gateways) == [gateway_id] and claimed == {batch.message_id}
