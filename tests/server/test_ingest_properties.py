"""Property tests: whatever order, however often and in whatever batches messages arrive, each is stored
once and the open gaps are exactly the sequence numbers below the highest received that are still
missing. Runs on SQLite (a fresh gateway per example)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import at, obs_topic, observation_batch

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


@settings(max_examples=40)
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
