"""Reading validation, measurement time rules and the serial line framer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from drivers import Reading, TimeSource, Vital
from drivers.reading import MAX_DEVICE_CLOCK_AHEAD, measurement_time
from drivers.serial.framing import LineFramer

RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_reading_is_normalised_to_utc_and_validated() -> None:
    plus_one = timezone(timedelta(hours=1))
    reading = Reading(
        vital=Vital.SPO2,
        value=97,
        unit="%",
        measured_at=datetime(2026, 5, 1, 13, 0, tzinfo=plus_one),
        time_source=TimeSource.DEVICE,
        device_id="ox",
    )
    assert reading.measured_at == RECEIVED and reading.measured_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="unit"):
        Reading(Vital.SPO2, 97, "percent", RECEIVED, TimeSource.DEVICE, "ox")
    with pytest.raises(ValueError, match="aware"):
        Reading(Vital.SPO2, 97, "%", RECEIVED.replace(tzinfo=None), TimeSource.DEVICE, "ox")
    with pytest.raises(ValueError, match="finite"):
        Reading(Vital.SPO2, float("nan"), "%", RECEIVED, TimeSource.DEVICE, "ox")
    with pytest.raises(ValueError, match="quality"):
        Reading(Vital.SPO2, 97, "%", RECEIVED, TimeSource.DEVICE, "ox", frozenset({"wet"}))


def test_measurement_time_rules() -> None:
    assert measurement_time(None, RECEIVED) == (RECEIVED, TimeSource.GATEWAY)
    earlier = datetime(2026, 5, 1, 11, 0)
    assert measurement_time(earlier, RECEIVED) == (earlier.replace(tzinfo=UTC), TimeSource.DEVICE)
    slightly_ahead = (RECEIVED + MAX_DEVICE_CLOCK_AHEAD).replace(tzinfo=None)
    assert measurement_time(slightly_ahead, RECEIVED)[1] is TimeSource.DEVICE
    too_far = slightly_ahead + timedelta(seconds=1)
    assert measurement_time(too_far, RECEIVED) == (RECEIVED, TimeSource.GATEWAY)
    with pytest.raises(ValueError, match="aware"):
        measurement_time(None, RECEIVED.replace(tzinfo=None))


def test_line_framer_splits_joins_and_bounds_lines() -> None:
    framer = LineFramer(max_line_bytes=16)
    assert framer.feed(b"first li") == []
    assert framer.feed(b"ne\r\nsecond\n\r") == [b"first line", b"second"]  # CR LF and LF CR both work
    assert framer.feed(b"x" * 40) == []  # no newline and already too long: dropped
    assert framer.feed(b"yyy\nok\n") == [b"ok"]
    assert framer.feed(b"z" * 17 + b"\nfine\n") == [b"fine"]
    assert framer.overlong_lines == 2


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_device_time_in_the_gateway_local_zone_by_default() -> None:
    winter = datetime(2026, 1, 15, 9, 0)  # EST, UTC-5
    summer = datetime(2026, 7, 15, 9, 0)  # EDT, UTC-4
    assert measurement_time(winter, datetime(2026, 1, 15, 14, 1, tzinfo=UTC), None) == (
        datetime(2026, 1, 15, 14, 0, tzinfo=UTC),
        TimeSource.DEVICE,
    )
    assert measurement_time(summer, datetime(2026, 7, 15, 13, 1, tzinfo=UTC), None)[0] == datetime(
        2026, 7, 15, 13, 0, tzinfo=UTC
    )
