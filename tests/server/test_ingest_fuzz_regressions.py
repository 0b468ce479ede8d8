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
