"""Regressions found by the fuzzer (bench/fuzz, issue 9) on the ingest path."""

from __future__ import annotations

import json

import pytest
from server_support import assessment, topic_for

from edge_agent import protocol
from server import ingest as ingest_module
from server.ingest import DeadLetterReason, Ingestor, OutcomeKind


async def test_a_timestamp_outside_the_calendar_in_utc_is_a_dead_letter(ingestor: Ingestor) -> None:
    # decode() raised a bare OverflowError here, which escaped ingest_many and stopped the MQTT consumer;
    # the broker redelivered the message on every reconnect.
    message = assessment("gw-fuzz", 0)
    document = json.loads(protocol.encode(message)) | {"sent_at": "0001-01-01T00:00:00+05:00"}
    outcome = await ingestor.ingest(topic_for(message), json.dumps(document).encode())
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD_LETTER, DeadLetterReason.SCHEMA_VIOLATION)
    assert "sent_at" in outcome.detail


async def test_a_decoder_bug_is_an_internal_error_dead_letter_not_a_crash(
    ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(topic: str, raw: bytes) -> object:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(ingest_module, "decode_gateway_message", broken)
    message = assessment("gw-fuzz", 0)
    [outcome] = await ingestor.ingest_many([(topic_for(message), protocol.encode(message))])
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD_LETTER, DeadLetterReason.INTERNAL_ERROR)
    assert outcome.detail == "OverflowError: date value out of range"
    assert ingestor.counters.dead_letters["internal_error"] == 1


async def test_values_postgresql_refuses_are_dead_lettered_not_retried_for_ever(
    fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server_support import status

    from server.settings import IngestSettings
    from server.storage import create_engine, session_factory

    # asyncpg reports "invalid byte sequence for encoding UTF8: 0x00" as a plain DBAPIError, which
    # ingest took for database trouble: retried, then StorageUnavailable, the message never acknowledged.
    valid = status("gw-fuzz", "birth", session=1, sent=0)
    with_nul = valid.model_copy(update={"software_version": "0.1\x00"})  # past the contract's check
    monkeypatch.setattr(
        ingest_module,
        "decode_gateway_message",
        lambda topic, raw: (protocol.parse_gateway_topic(topic), with_nul),
    )
    engine = create_engine(fresh_postgres_url)
    try:
        ingestor = Ingestor(session_factory(engine), IngestSettings(storage_attempts=3), retry_delay_s=0.001)
        outcome = await ingestor.ingest(topic_for(valid), protocol.encode(valid))
    finally:
        await engine.dispose()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD_LETTER, DeadLetterReason.STORAGE_REJECTED)
    assert "0x00" in outcome.detail and ingestor.counters.storage_retries == 0
