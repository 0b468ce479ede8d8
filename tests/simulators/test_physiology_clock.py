"""simulators.clock: simulated time at --speed F, shared between processes, driven by a fake real time."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.clock import (
    ENV_VAR,
    Clock,
    ClockError,
    ClockSpec,
    SimClock,
    add_clock_arguments,
    clock_from_arguments,
    parse_speed,
)
from simulators.physiology import Patient

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


class FakeRealTime:
    """Real time that moves only when told to; its sleep advances it instead of waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_simulated_time_runs_at_speed() -> None:
    real = FakeRealTime()
    clock = SimClock(ClockSpec(START, speed=60, real_anchor=real.now), real_time=real)
    assert clock.now() == START
    real.now += 30
    assert clock.now() == START + timedelta(minutes=30)
    assert clock.elapsed() == 1800
    assert clock.speed == 60


@given(
    speed=st.floats(min_value=0.01, max_value=100_000),
    real=st.floats(min_value=-1e4, max_value=1e4),
    anchor=st.floats(min_value=1e9, max_value=2e9),
)
def test_spec_conversions_are_inverse(speed: float, real: float, anchor: float) -> None:
    spec = ClockSpec(START, speed=speed, real_anchor=anchor)
    when = spec.sim_time(anchor + real)
    assert spec.real_time(when) == pytest.approx(anchor + real, abs=1e-3)
    # Unix times near 1e9 carry ~1e-7 s of float resolution, magnified by the speed.
    assert spec.sim_elapsed(anchor + real) == pytest.approx(speed * real, abs=speed * 1e-6)
    assert spec.real_duration(speed * 10) == pytest.approx(10)


@given(
    speed=st.floats(min_value=0.001, max_value=1_000_000, allow_nan=False),
    anchor=st.floats(min_value=0, max_value=4e9),
    minutes=st.integers(min_value=-(10**6), max_value=10**6),
)
def test_spec_round_trips_through_its_string(speed: float, anchor: float, minutes: int) -> None:
    spec = ClockSpec(START + timedelta(minutes=minutes), speed=speed, real_anchor=anchor)
    assert ClockSpec.from_string(spec.to_string()) == spec


def test_time_beyond_the_calendar_is_a_clock_error() -> None:
    spec = ClockSpec(START, speed=1_000_000, real_anchor=0)
    with pytest.raises(ClockError, match="out of range"):
        spec.sim_time(1e9)


def test_spec_normalises_to_utc() -> None:
    local = datetime(2026, 1, 5, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    spec = ClockSpec(local, speed=2)
    assert spec.sim_start == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert spec.sim_start.tzinfo is UTC
    assert "start=2026-01-05T08:00:00Z" in spec.to_string()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected"),
        ("start=2026-01-05T08:00:00Z;speed=2", "lacks anchor"),
        ("start=2026-01-05T08:00:00Z;speed=fast;anchor=0", "fast"),
        ("start=2026-01-05T08:00:00;speed=2;anchor=0", "timezone-aware"),
        ("start=2026-01-05T08:00:00Z;speed=0;anchor=0", "speed must be > 0"),
        ("start=2026-01-05T08:00:00Z;speed=inf;anchor=0", "finite"),
        ("start=2026-01-05T08:00:00Z;speed=2;anchor=0;colour=red", "expected"),
        ("start=2026-01-05T08:00:00Z;speed=2;speed=3;anchor=0", "expected"),
    ],
)
def test_bad_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ClockError, match=message):
        ClockSpec.from_string(text)


def test_never_goes_backwards_when_the_wall_clock_steps_back() -> None:
    real = FakeRealTime()
    clock = SimClock(ClockSpec(START, speed=10, real_anchor=real.now), real_time=real)
    real.now += 100
    ahead = clock.now()
    real.now -= 50  # NTP steps the wall clock back
    assert clock.now() == ahead
    real.now += 60
    assert clock.now() == ahead + timedelta(seconds=100)


def test_changing_speed_does_not_jump() -> None:
    real = FakeRealTime()
    clock = SimClock(ClockSpec(START, speed=10, real_anchor=real.now), real_time=real)
    real.now += 6
    before = clock.now()
    clock.set_speed(600)
    assert clock.now() == before
    real.now += 1
    assert clock.now() == before + timedelta(minutes=10)
    assert clock.speed == 600


async def test_sleep_waits_simulated_seconds_in_real_seconds_divided_by_speed() -> None:
    real = FakeRealTime()
    clock = SimClock(ClockSpec(START, speed=120, real_anchor=real.now), real_time=real, real_sleep=real.sleep)
    await clock.sleep(3600)
    assert real.slept == [pytest.approx(30)]
    assert clock.now() == START + timedelta(hours=1)
    await clock.sleep_until(START)  # in the past: returns at once
    assert len(real.slept) == 1


async def test_sleep_until_rechecks_after_a_short_wake() -> None:
    real = FakeRealTime()

    async def short_sleep(seconds: float) -> None:  # wakes after half the time asked for
        real.slept.append(seconds)
        real.now += seconds / 2

    clock = SimClock(ClockSpec(START, speed=60, real_anchor=real.now), real_time=real, real_sleep=short_sleep)
    target = START + timedelta(minutes=60)
    await clock.sleep_until(target)
    assert clock.now() >= target
    assert len(real.slept) > 1


async def test_sleep_with_the_real_asyncio_sleep_at_high_speed() -> None:
    clock = SimClock.starting_now(speed=100_000, sim_start=START)
    await asyncio.wait_for(clock.sleep(100), timeout=5)  # 100 simulated seconds = 1 ms real
    assert clock.now() >= START + timedelta(seconds=100)


def test_a_sim_clock_satisfies_the_clock_protocol() -> None:
    clock: Clock = SimClock.starting_now(speed=1)
    assert clock.now().tzinfo is UTC


def test_from_env_shares_the_time_line_and_defaults_to_real_time() -> None:
    real = FakeRealTime()
    parent = SimClock.starting_now(speed=60, sim_start=START, real_time=real)
    real.now += 10
    child = SimClock.from_env(parent.environ(), real_time=real)
    assert child.now() == parent.now() == START + timedelta(minutes=10)
    plain = SimClock.from_env({}, real_time=real)
    assert plain.speed == 1
    assert plain.now() == datetime.fromtimestamp(real.now, UTC)
    with pytest.raises(ClockError, match=ENV_VAR):
        SimClock.from_env({ENV_VAR: "nonsense"})


def test_a_child_process_agrees_on_simulated_time() -> None:
    """Two processes, one wall clock: the child's simulated now lies between the parent's before and after."""
    parent = SimClock.starting_now(speed=3600, sim_start=START)
    before = parent.now()
    script = "from simulators.clock import SimClock; print(SimClock.from_env().now().isoformat())"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **parent.environ()},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    after = parent.now()
    child = datetime.fromisoformat(result.stdout.strip())
    assert before <= child <= after
    assert child - START < timedelta(hours=3600 * 60)  # sanity: anchored, not "now at speed 3600 since 1970"


@pytest.mark.parametrize("bad", ["0", "-2", "nan", "inf", "fast", "1e7"])
def test_speed_option_refuses_nonsense(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--speed"):
        parse_speed(bad)


def test_command_line_options_build_a_clock() -> None:
    parser = argparse.ArgumentParser()
    add_clock_arguments(parser)
    real = FakeRealTime()
    args = parser.parse_args(["--speed", "60", "--sim-start", "2026-01-05T08:00:00Z"])
    clock = clock_from_arguments(args, real_time=real)
    real.now += 60
    assert clock.now() == START + timedelta(hours=1)
    defaults = parser.parse_args([])
    assert defaults.speed == 1.0 and defaults.sim_start is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--sim-start", "2026-01-05T08:00:00"])  # no offset


def test_a_patient_on_the_simulated_time_line() -> None:
    """The recipe in docs/scenarios.md: place a scenario's hour 0 at the clock's start."""
    real = FakeRealTime()
    clock = SimClock(ClockSpec(START, speed=3600, real_anchor=real.now), real_time=real)
    patient = Patient("sepsis", seed=1, start=clock.spec.sim_start)
    real.now += 16  # 16 simulated hours
    t = patient.seconds_at(clock.now())
    assert t == 16 * 3600
    assert patient.vitals_at(clock.now()) == patient.vitals_at(t)
