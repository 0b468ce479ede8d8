"""StreamLag, the worker's estimate of how far behind the gateways' traffic it is, and the engine using it:
a worker that is behind does not declare a gateway offline whose heartbeat is still queued for it."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

import pytest
from engine_support import FakeClock, RecordingPublisher, gateway_status, ingest, news2_assessment
from hypothesis import given
from hypothesis import strategies as st
from server_support import T0
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.engine import EscalationEngine
from server.engine.stream_lag import StreamLag
from server.ingest import Ingestor, IngestOutcome, OutcomeKind
from server.storage.models import Alert, AlertEventRecord


def stored(
    message: protocol.WireModel, received_at: datetime, kind: OutcomeKind = OutcomeKind.STORED
) -> IngestOutcome:
    return IngestOutcome(
        kind=kind, topic="wardwatch/v1/gw/gw-1/score", received_at=received_at, message=message
    )


def aged(seconds: float, received_at: datetime, seq: int = 0) -> IngestOutcome:
    """A stored assessment that was sent ``seconds`` before ``received_at``."""
    sent_at = received_at - timedelta(seconds=seconds)
    return stored(news2_assessment("gw-1", seq, patient_id="pt-1", assessed_at=sent_at), received_at)


def test_without_traffic_the_lag_is_zero_and_old_traffic_is_forgotten() -> None:
    clock = FakeClock()
    lag = StreamLag(clock, window_s=10)
    assert lag.current() == timedelta(0)
    lag.observe([aged(30, clock.now)])
    assert lag.current() == timedelta(seconds=30)
    clock.advance(10)
    assert lag.current() == timedelta(seconds=30)
    clock.advance(0.001)
    assert lag.current() == timedelta(0)


def test_a_transactions_value_is_its_fresh_traffic_not_its_replays() -> None:
    clock = FakeClock()
    lag = StreamLag(clock, quantile=0.1)
    fresh = [aged(2 + i / 10, clock.now, i) for i in range(27)]
    replays = [aged(3600, clock.now, 100 + i) for i in range(3)]  # an outbox replaying its backlog
    lag.observe(replays + fresh)  # 30 messages: the 3rd youngest
    assert lag.current() == timedelta(seconds=2.2)


def test_the_lag_is_the_median_of_the_windows_transactions() -> None:
    clock = FakeClock()
    lag = StreamLag(clock)
    for seconds in (1, 2, 500):  # one transaction holding only a gateway whose clock is far behind
        lag.observe([aged(seconds, clock.now)])
    assert lag.current() == timedelta(seconds=2)


def test_deaths_duplicates_and_clocks_ahead_say_nothing_about_the_queue() -> None:
    clock = FakeClock()
    lag = StreamLag(clock)
    will = gateway_status("gw-1", "death", sent_at=clock.now - timedelta(hours=5))  # stamped at connect
    lag.observe([stored(will, clock.now)])
    lag.observe([stored(aged(40, clock.now).message, clock.now, OutcomeKind.DUPLICATE)])
    lag.observe([IngestOutcome(kind=OutcomeKind.DEAD_LETTER, topic="t", received_at=clock.now)])
    assert lag.current() == timedelta(0)
    heartbeat = gateway_status("gw-1", "heartbeat", sent_at=clock.now - timedelta(seconds=12))
    lag.observe([stored(heartbeat, clock.now)])
    assert lag.current() == timedelta(seconds=12)
    for _ in range(2):
        lag.observe([aged(-30, clock.now)])  # a gateway clock ahead
    assert lag.current() == timedelta(seconds=0)  # median of 12, 0, 0


@given(
    st.lists(
        # (seconds passed, an age in microseconds: what a timedelta holds exactly)
        st.tuples(st.floats(0, 4), st.integers(-5_000_000, 120_000_000).map(lambda us: us / 1e6)),
        max_size=60,
    )
)
def test_the_lag_is_always_the_median_of_the_values_still_in_the_window(
    steps: list[tuple[float, float]],
) -> None:
    clock = FakeClock()
    lag = StreamLag(clock, window_s=10)
    seen: list[tuple[datetime, float]] = []
    for passed, age in steps:
        clock.advance(passed)
        lag.observe([aged(age, clock.now)])
        seen.append((clock.now, max(0.0, age)))
        clock.advance(passed / 2)
        window = [value for at, value in seen if at >= clock.now - timedelta(seconds=10)]
        expected = timedelta(seconds=statistics.median(window)) if window else timedelta(0)
        assert lag.current() == expected


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="window_s"):
        StreamLag(FakeClock(), window_s=0)
    with pytest.raises(ValueError, match="quantile"):
        StreamLag(FakeClock(), quantile=1.5)


async def test_a_worker_behind_the_traffic_waits_for_the_queued_heartbeat(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    """Gateway A's birth is stored at once; then the worker falls 40 s behind (another gateway's
    heartbeats reach it 40 s after they were sent). A's deadline (1.5 x 20 s) passes on the server's
    clock, but A's next heartbeat would be in the queue too: the alarm waits for the lag and, as A
    sends nothing more, is raised 40 s later with the deadline it was armed with."""
    clock = FakeClock()
    engine = EscalationEngine(sessions, publisher=RecordingPublisher(), clock=clock)
    other = f"{gateway_id}-b"
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now, heartbeat_interval_s=20)
    await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
    offline = (
        select(Alert.gateway_id, AlertEventRecord.at, AlertEventRecord.detail)
        .join(AlertEventRecord, AlertEventRecord.alert_id == Alert.id)
        .where(Alert.condition == "gateway_offline")
    )

    async def offline_alarms() -> list[tuple[str | None, datetime, dict[str, object] | None]]:
        async with sessions() as session:
            return [tuple(row) for row in (await session.execute(offline)).all()]

    while clock.now < T0 + timedelta(seconds=69):
        clock.advance(3)
        late = gateway_status(other, "heartbeat", sent_at=clock.now - timedelta(seconds=40))
        await engine.handle_outcome(await ingest(ingestor, late, clock.now))
        assert engine.stream_lag.current() >= timedelta(seconds=20)
        await engine.fire_due()
        assert await offline_alarms() == [], f"offline at {clock.now - T0}"
    clock.advance(1)  # T0 + 70 s: the deadline (30 s) plus the lag (40 s)
    assert engine.stream_lag.current() == timedelta(seconds=40)
    assert await engine.fire_due() == 1
    ((alarmed, raised_at, detail),) = await offline_alarms()
    assert (alarmed, raised_at) == (gateway_id, T0 + timedelta(seconds=70))
    assert detail is not None
    assert str(detail["due_at"]).startswith((T0 + timedelta(seconds=30)).isoformat()[:19])
