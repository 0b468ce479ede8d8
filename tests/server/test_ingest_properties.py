"""Property tests: whatever order, however often and in whatever batches messages arrive, each is stored
once and the open gaps are exactly the sequence numbers below the highest received that are still
missing. Runs on SQLite (a fresh gateway per example)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import at, obs_topic, observation_batch, topic_for

from edge_agent import protocol
from server.ingest import Ingestor, OutcomeKind
from server.storage import create_engine, repository, session_factory

_counter = iter(range(1_000_000))


@st.composite
def deliveries(draw: st.DrawFn) -> list[int]:
    """Sequence numbers as the server sees them: a subset of 0..n-1, shuffled, some delivered twice."""
    n = draw(st.integers(min_value=1, max_value=25))
    sent = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    replays = draw(st.lists(st.sampled_from(sent), max_size=5))
    return draw(st.permutations(sent + replays))


async def _scenario(url: str, order: list[int], chunk: int) -> None:
    gateway_id = f"gw-prop-{next(_counter)}"
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        ingestor = Ingestor(sessions)
        messages = {seq: observation_batch(gateway_id, seq, count=1) for seq in set(order)}
        kinds = []
        deliveries = [(obs_topic(gateway_id), protocol.encode(messages[seq])) for seq in order]
        for start in range(0, len(deliveries), chunk):  # chunk 1: one transaction per message
            outcomes = await ingestor.ingest_many(deliveries[start : start + chunk], at(start))
            kinds += [outcome.kind for outcome in outcomes]
        assert kinds.count(OutcomeKind.STORED) == len(messages)
        assert kinds.count(OutcomeKind.DUPLICATE) == len(order) - len(messages)

        async with sessions() as session:
            gaps = await repository.open_gaps(session, gateway_id)
            stored = await repository.observations_for_patient(session, "pt-0001", limit=10_000)
        missing = {n for gap in gaps for n in range(gap.first_missing, gap.last_missing + 1)}
        expected = {n for n in range(max(order)) if n not in messages}
        assert missing == expected
        assert sorted(o.seq for o in stored if o.gateway_id == gateway_id) == sorted(messages)
    finally:
        await engine.dispose()


@settings(max_examples=25)
@given(order=deliveries(), chunk=st.sampled_from([1, 1, 3, 8, 100]))
def test_each_message_stored_once_and_gaps_are_exactly_the_missing_numbers(
    sqlite_template: Path, order: list[int], chunk: int
) -> None:
    path = _database(sqlite_template)
    asyncio.run(_scenario(f"sqlite+aiosqlite:///{path}", order, chunk))


_copies: dict[Path, Path] = {}


def _database(template: Path) -> Path:
    """One copy of the migrated template for all examples (each example uses its own gateway id)."""
    if template not in _copies:
        copy = template.with_name("properties.db")
        shutil.copyfile(template, copy)
        _copies[template] = copy
    return _copies[template]


@st.composite
def status_histories(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """(session, state, sent second) for a few connections: births and heartbeats, at most one death each
    (the will of that connection), delivered in any order."""
    history = []
    for session in draw(st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True)):
        beats = draw(st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True))
        history += [(session, "birth" if i == 0 else "heartbeat", second) for i, second in enumerate(beats)]
        if draw(st.booleans()):
            history.append((session, "death", draw(st.integers(0, 50))))
    return draw(st.permutations(history))


async def _status_scenario(url: str, history: list[tuple[int, str, int]], chunk: int) -> None:
    from server_support import status

    gateway_id = f"gw-status-{next(_counter)}"
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        ingestor = Ingestor(sessions)
        messages = [
            (topic_for(message), protocol.encode(message))
            for message in (status(gateway_id, state, session=s, sent=t) for s, state, t in history)  # type: ignore[arg-type]
        ]
        for start in range(0, len(messages), chunk):
            await ingestor.ingest_many(messages[start : start + chunk])
        async with sessions() as session:
            (gateway,) = [g for g in await repository.list_gateways(session) if g.gateway_id == gateway_id]
    finally:
        await engine.dispose()
    # Order of delivery does not matter: the newest session wins, its death is final, else its latest.
    session_, state, second = max(history, key=lambda h: (h[0], h[1] == "death", h[2]))
    assert (gateway.session, gateway.status_state, gateway.status_sent_at) == (session_, state, at(second))
    assert gateway.online == (state != "death")


@settings(max_examples=20)
@given(history=status_histories(), chunk=st.sampled_from([1, 2, 50]))
def test_gateway_status_does_not_depend_on_delivery_order(
    sqlite_template: Path, history: list[tuple[int, str, int]], chunk: int
) -> None:
    path = _database(sqlite_template)
    asyncio.run(_status_scenario(f"sqlite+aiosqlite:///{path}", history, chunk))
