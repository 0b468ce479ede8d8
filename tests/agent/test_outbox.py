"""The SQLite outbox: durability, message formation, drain order, quota eviction, recovery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, OutboxOptions
from edge_agent.protocol import (
    NEWS2_PARAMETERS,
    AssessmentContent,
    BatteryLevel,
    EventContent,
    Observation,
    decode_gateway_message,
)
from edge_agent.protocol import Assessment as AssessmentMessage
from edge_agent.protocol import Event as EventMessage
from edge_agent.protocol import ObservationBatch as Batch

GATEWAY = "gw-outbox"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def observation(index: int, *, vital: str = "heart_rate", unit: str = "/min") -> Observation:
    return Observation.model_validate(
        {
            "patient_id": "pt-1",
            "vital": vital,
            "value": 60 + index % 100,
            "unit": unit,
            "measured_at": datetime.fromtimestamp(1_800_000_000 + index, UTC),
            "time_source": "device",
            "device_id": "hr-1",
        }
    )


def assessment() -> AssessmentContent:
    return AssessmentContent(
        patient_id="pt-1",
        assessed_at=datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
        total=3,
        components=dict.fromkeys(NEWS2_PARAMETERS, 0) | {"pulse": 3},
        risk="low-medium",
        complete=True,
        input_ages_s={"heart_rate": 0.0},
        spo2_scale=1,
        on_oxygen=False,
        consciousness="A",
    )


def battery_event() -> EventContent:
    return EventContent(
        occurred_at=datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
        detail=BatteryLevel(kind="battery", device_id="hr-1", battery_pct=9),
    )


async def test_formed_messages_validate_and_carry_every_observation(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", GATEWAY) as outbox:
        await outbox.put_observations([observation(i) for i in range(1200)])
        formed = await outbox.form()
    assert [m.items for m in formed] == [1000, 200]
    assert [m.seq for m in formed] == [0, 1]
    values = []
    for message in formed:
        where, batch = decode_gateway_message(message.topic, message.payload)
        assert isinstance(batch, Batch)
        assert str(batch.message_id) == message.message_id
        assert batch.seq == message.seq
        assert where.gateway_id == GATEWAY
        values += [o.value for o in batch.observations]
    assert values == [60 + i % 100 for i in range(1200)]


async def test_assessments_and_events_drain_before_observations(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", GATEWAY) as outbox:
        await outbox.put_observations([observation(0)])
        await outbox.put_assessment(assessment())
        await outbox.put_event(battery_event())
        formed = await outbox.form()
    assert [m.channel for m in formed] == ["score", "event", "obs"]
    _, score = decode_gateway_message(formed[0].topic, formed[0].payload)
    _, event = decode_gateway_message(formed[1].topic, formed[1].payload)
    assert isinstance(score, AssessmentMessage)
    assert score.total == 3
    assert isinstance(event, EventMessage)
    assert event.detail.kind == "battery"


async def test_unacknowledged_messages_survive_reopen_byte_for_byte_and_seq_continues(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, GATEWAY) as outbox:
        await outbox.put_observations([observation(i) for i in range(10)])
        first = await outbox.form()
        await outbox.put_observations([observation(i) for i in range(10, 15)])
    async with Outbox(path, GATEWAY) as outbox:
        assert await outbox.formed() == first
        await outbox.acknowledge([m.seq for m in first])
        assert await outbox.formed() == []
        second = await outbox.form()
        backlog = await outbox.backlog()
    assert [m.seq for m in second] == [first[-1].seq + 1]
    assert second[0].items == 5
    assert backlog.messages == 1
    assert backlog.items == 0


async def test_backlog_is_marked_historical_and_live_data_goes_first(tmp_path: Path) -> None:
    clock = FakeClock()
    options = OutboxOptions(clock=clock, historical_after_s=60, max_batch=10)
    async with Outbox(tmp_path / "o.db", GATEWAY, options) as outbox:
        await outbox.put_observations([observation(i) for i in range(25)])  # the backlog
        clock.now += 3600
        await outbox.put_observations([observation(100 + i) for i in range(3)])  # live
        formed = await outbox.form(max_messages=1)
    _, batch = decode_gateway_message(formed[0].topic, formed[0].payload)
    assert isinstance(batch, Batch)
    flags = [(o.value, o.historical) for o in batch.observations]
    assert flags[:3] == [(60.0, False), (61.0, False), (62.0, False)]  # 100..102 % 100
    assert all(historical for _, historical in flags[3:])
    assert [v for v, _ in flags[3:]] == [60.0 + i for i in range(7)]


async def test_quota_evicts_oldest_observations_never_assessments_or_events(tmp_path: Path) -> None:
    options = OutboxOptions(quota_bytes=400 * 1024)
    async with Outbox(tmp_path / "o.db", GATEWAY, options) as outbox:
        await outbox.put_assessment(assessment())
        await outbox.put_event(battery_event())
        for start in range(0, 6000, 500):
            await outbox.put_observations([observation(i) for i in range(start, start + 500)])
        backlog = await outbox.backlog()
        formed = await outbox.form(max_messages=100)
    assert backlog.evicted_total > 0
    assert backlog.used_bytes <= options.quota_bytes
    channels = [m.channel for m in formed]
    assert channels.count("score") == 1
    kept: list[int] = []
    eviction_events = []
    for message in formed:
        _, decoded = decode_gateway_message(message.topic, message.payload)
        if isinstance(decoded, Batch):
            kept += [int(o.measured_at.timestamp()) - 1_800_000_000 for o in decoded.observations]
        elif isinstance(decoded, EventMessage) and decoded.detail.kind == "outbox_eviction":
            eviction_events.append(decoded.detail)
    assert "battery" in [
        decoded.detail.kind
        for decoded in (decode_gateway_message(m.topic, m.payload)[1] for m in formed)
        if isinstance(decoded, EventMessage)
    ]
    # what survives is the newest contiguous tail; what was evicted is the oldest
    assert kept == list(range(6000 - len(kept), 6000))
    assert sum(e.evicted_observations for e in eviction_events) == 6000 - len(kept) == backlog.evicted_total


async def test_concurrent_puts_are_group_committed_and_all_durable(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, GATEWAY) as outbox:
        await asyncio.gather(*(outbox.put_observations([observation(i)]) for i in range(300)))
    async with Outbox(path, GATEWAY) as outbox:
        assert (await outbox.backlog()).items == 300


async def test_session_numbers_increase_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, GATEWAY) as outbox:
        assert [await outbox.next_session(), await outbox.next_session()] == [1, 2]
        await outbox.save_setting("spo2_scale", "2")
    async with Outbox(path, GATEWAY) as outbox:
        assert await outbox.next_session() == 3
        assert await outbox.load_settings() == {"spo2_scale": "2"}


async def test_a_corrupt_database_is_moved_aside_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    garbage = b"SQLite format 3\x00" + b"\xde\xad" * 4000
    path.write_bytes(garbage)
    async with Outbox(path, GATEWAY) as outbox:
        assert outbox.moved_corrupt_to is not None
        assert outbox.moved_corrupt_to.read_bytes() == garbage
        await outbox.put_observations([observation(1)])
        assert (await outbox.backlog()).items == 1
    assert "failed its integrity check" in caplog.text


async def test_a_healthy_database_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, GATEWAY) as outbox:
        await outbox.put_observations([observation(1)])
    async with Outbox(path, GATEWAY) as outbox:
        assert outbox.moved_corrupt_to is None
        assert (await outbox.backlog()).items == 1
