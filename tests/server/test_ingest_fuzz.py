"""Hostile input on every ingest path: ingest never raises, and never half-writes a message.

A small slice runs in ``make test`` on both backends; raise ``WARDWATCH_FUZZ_EXAMPLES`` for a long run.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_support import assessment, observation_batch, probe_off_event, status, topic_for

from edge_agent import protocol
from server.ingest import Ingestor, IngestOutcome, OutcomeKind
from server.settings import IngestSettings
from server.storage import create_engine, session_factory

EXAMPLES = int(os.environ.get("WARDWATCH_FUZZ_EXAMPLES", "15"))
GATEWAY = "gw-fuzz"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _valid_messages() -> list[protocol.WireModel]:
    return [
        observation_batch(GATEWAY, 0),
        assessment(GATEWAY, 1),
        probe_off_event(GATEWAY, 2),
        status(GATEWAY, "birth", session=1, sent=0),
    ]


@st.composite
def hostile_message(draw: st.DrawFn) -> tuple[str, bytes]:
    base = draw(st.sampled_from(_valid_messages()))
    topic = draw(
        st.sampled_from([topic_for(base)] * 4 + ["wardwatch/v1/gw/gw-other/obs", "x/y", "wardwatch/v1/gw/"])
        | st.text(max_size=40)
    )
    document: dict[str, Any] = json.loads(protocol.encode(base))
    how = draw(st.sampled_from(["replace", "drop", "add", "bytes", "flip", "as-is"]))
    if how == "replace":
        key = draw(st.sampled_from(sorted(document)))
        document[key] = draw(json_values)
    elif how == "drop":
        document.pop(draw(st.sampled_from(sorted(document))))
    elif how == "add":
        document[draw(st.text(max_size=10))] = draw(json_values)
    if how == "bytes":
        return topic, draw(st.binary(max_size=200))
    payload = json.dumps(document).encode()
    if how == "flip" and payload:
        index = draw(st.integers(0, len(payload) - 1))
        payload = payload[:index] + bytes([draw(st.integers(0, 255))]) + payload[index + 1 :]
    return topic, payload


async def _run(url: str, messages: list[tuple[str, bytes]]) -> list[IngestOutcome]:
    engine = create_engine(url)
    try:
        ingestor = Ingestor(session_factory(engine), IngestSettings(storage_attempts=1))
        return [await ingestor.ingest(topic, payload) for topic, payload in messages]
    finally:
        await engine.dispose()


async def _consistent(url: str) -> None:
    """Every stored row belongs to a message in the dedup ledger, and the reverse."""
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            orphans = await connection.scalar(
                text(
                    "SELECT count(*) FROM observations o WHERE NOT EXISTS "
                    "(SELECT 1 FROM received_messages r WHERE r.message_id = o.message_id)"
                )
            )
            ledger = await connection.scalar(text("SELECT count(*) FROM received_messages"))
            content = await connection.scalar(
                text(
                    "SELECT (SELECT count(DISTINCT message_id) FROM observations)"
                    " + (SELECT count(*) FROM assessments) + (SELECT count(*) FROM gateway_events)"
                )
            )
    finally:
        await engine.dispose()
    assert orphans == 0
    assert ledger == content


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(hostile_message(), min_size=1, max_size=8))
def test_hostile_messages_never_raise_and_never_half_write(
    database_url: str, messages: list[tuple[str, bytes]]
) -> None:
    outcomes = asyncio.run(_run(database_url, messages))
    assert len(outcomes) == len(messages)
    for outcome in outcomes:
        assert outcome.kind in set(OutcomeKind)
        if outcome.kind is OutcomeKind.DEAD_LETTER:
            assert outcome.reason is not None and outcome.detail
    asyncio.run(_consistent(database_url))


@pytest.mark.parametrize("topic", ["wardwatch/v1/gw/gw-a/obs\x00", "wardwatch/v1/gw/\udcff/obs", "\x00" * 3])
def test_unprintable_topics_are_dead_lettered(database_url: str, topic: str) -> None:
    (outcome,) = asyncio.run(_run(database_url, [(topic, b"{}")]))
    assert outcome.kind is OutcomeKind.DEAD_LETTER
