"""Simulated home devices against the real drivers, without an agent: a serial oximeter unplugged and
plugged in again, a BLE glucose meter that hands over its records when asked."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.reading import Reading
from drivers.transport import Connected, Disconnected
from edge_agent.config import DeviceConfig
from edge_agent.protocol import VitalCode
from simulators.clock import SimClock
from simulators.home import SimulatedBle, SimulatedSerial
from simulators.physiology import DeviceKind, Patient
from simulators.physiology.faults import FaultKind
from simulators.physiology.patient import DEFAULT_START
from simulators.physiology.scenarios import SEPSIS_COURSE, Expectation, Scenario, fault

OXIMETER = DeviceKind.PULSE_OXIMETER_CONTINUOUS
METER = DeviceKind.GLUCOSE_METER


async def test_unplugging_a_serial_oximeter_closes_its_pty_and_the_driver_reconnects_at_the_same_path(
    tmp_path: Path,
) -> None:
    # "disconnects": the oximeter is out from 0.5 h to 0.52 h (72 s); join 36 s before, at 60x
    patient = Patient("disconnects", seed=3, start=DEFAULT_START)
    [unplugged_s] = [
        (e.start_s, e.end_s) for e in patient.faults if e.device_kind is OXIMETER and e.start_s == 1800
    ]
    clock = SimClock.starting_now(speed=60, sim_start=DEFAULT_START + timedelta(seconds=1764))
    device = DeviceConfig(id="masimo-1", kind="masimo", patient="pt-1", path="/dev/ttyUSB0")
    link = tmp_path / "masimo-1.tty"
    oximeter = SimulatedSerial(device, patient, OXIMETER, clock, link)
    events: list[Connected | Disconnected] = []
    readings: list[tuple[int, Reading]] = []
    link_present_when_lost: bool | None = None
    async with asyncio.timeout(30), contextlib.aclosing(oximeter.readings()) as stream:
        async for item in stream:
            if isinstance(item, Connected | Disconnected):
                events.append(item)
                if isinstance(item, Disconnected):
                    link_present_when_lost = os.path.lexists(link)
            elif isinstance(item, Reading):
                readings.append((round((item.measured_at - patient.start).total_seconds()), item))
            after = [t for t, _ in readings if t >= unplugged_s[1]]
            if len(events) >= 3 and len(after) >= 20:
                break
    assert not os.path.lexists(link)  # closing the stream unplugs the device

    # plugged in, unplugged (a real read error on the closed pty, not silence), plugged in again
    assert [type(e) for e in events] == [Connected, Disconnected, Connected]
    lost = events[1]
    assert isinstance(lost, Disconnected)
    assert "read failed" in lost.reason or "end of file" in lost.reason, lost.reason
    assert link_present_when_lost is False  # the device node was gone
    assert oximeter.unplugs == 1 and oximeter.replugs == 1
    assert oximeter.transport is not None and oximeter.transport.parse_errors == 0

    # readings before and after, none while unplugged, each with the value the device measured
    times = sorted({t for t, _ in readings})
    assert any(t < unplugged_s[0] for t in times)
    assert not any(unplugged_s[0] <= t < unplugged_s[1] for t in times)
    assert len([t for t in times if t >= unplugged_s[1]]) >= 10
    measured = {s.t_s: s for s in patient.device_samples(OXIMETER, times[0], times[-1] + 1)}
    for t, reading in readings:
        assert reading.value == measured[t].values[VitalCode(reading.vital.value)], (t, reading)


async def test_glucose_meter_records_reach_the_real_driver_once_each_through_record_access() -> None:
    # sepsis physiology (glucose rising), a meter used 4 times a day, out of range from 30 h to 40 h
    out_of_range = (30 * 3600, 40 * 3600)
    scenario = Scenario(
        "glucose_test",
        "glucose meter test",
        SEPSIS_COURSE,
        Expectation("test"),
        devices=(METER,),
        faults=(fault(FaultKind.DEVICE_DISCONNECT, 30, 40, METER, reason="out of range"),),
    )
    patient = Patient(scenario, seed=2, start=DEFAULT_START)
    clock = SimClock.starting_now(speed=43200, sim_start=DEFAULT_START + timedelta(hours=26))
    device = DeviceConfig(id="glucose-1", kind="ble_glucose", patient="pt-1", address="02:00:00:00:00:07")
    meter = SimulatedBle(device, patient, METER, clock)
    arrivals: list[tuple[int, float, float]] = []  # (t of the test, mg/dL, t of arrival)
    async with asyncio.timeout(30), contextlib.aclosing(meter.readings()) as stream:
        async for item in stream:
            if isinstance(item, Reading):
                assert item.vital.value == "blood_glucose" and item.unit == "mg/dL"
                t = round((item.measured_at - patient.start).total_seconds())
                arrivals.append((t, item.value, (clock.now() - patient.start).total_seconds()))
                if t > 46 * 3600:
                    break

    # every test from the one before joining (the meter's memory) to the last, each once, value exact
    joined = 26 * 3600
    before = list(patient.device_samples(METER, joined - 24 * 3600, joined))
    tests = [before[-1], *patient.device_samples(METER, joined, arrivals[-1][0] + 1)]
    assert [t for t, _, _ in arrivals] == [s.t_s for s in tests]
    for (_, value, _), sample in zip(arrivals, tests, strict=True):
        assert value == pytest.approx(round(sample.values[VitalCode.BLOOD_GLUCOSE]))
    # tests made out of range were kept and delivered when the meter was next used in reach
    held = [(t, at) for t, _, at in arrivals if out_of_range[0] <= t < out_of_range[1]]
    assert len(held) >= 2
    assert all(at >= out_of_range[1] for _, at in held)
    # the gateway asked for all records first, then for those after the last one it had
    assert meter.record_requests[0] == bytes([0x01, 0x01])
    later = [int.from_bytes(r[3:5], "little") for r in meter.record_requests[1:] if r[:3] == b"\x01\x03\x01"]
    assert later and later == sorted(later) and later[0] == 1 and later[-1] < len(arrivals)
    assert meter.transport.parse_errors == 0


async def test_a_cuff_out_of_range_keeps_its_reading_and_sends_it_at_its_next_use_in_reach() -> None:
    # "disconnects": the cuff is out of range from 5 h to 9 h; it is used at 08:00, 14:00, 20:00 local
    patient = Patient("disconnects", seed=1, start=DEFAULT_START)
    cuff = DeviceKind.BLOOD_PRESSURE
    clock = SimClock.starting_now(speed=43200, sim_start=DEFAULT_START + timedelta(hours=4))
    device = DeviceConfig(id="cuff-1", kind="ble_blood_pressure", patient="pt-1", address="02:00:00:00:00:03")
    simulated = SimulatedBle(device, patient, cuff, clock)
    arrivals: dict[int, float] = {}  # t of the measurement -> t of arrival
    async with asyncio.timeout(30), contextlib.aclosing(simulated.readings()) as stream:
        async for item in stream:
            if isinstance(item, Reading) and item.vital.value == "systolic_bp":
                t = round((item.measured_at - patient.start).total_seconds())
                arrivals[t] = (clock.now() - patient.start).total_seconds()
                if t > 10 * 3600:
                    break
    [held] = [s.t_s for s in patient.device_samples(cuff, 5 * 3600, 9 * 3600)]
    assert held in arrivals and arrivals[held] >= 9 * 3600  # delivered after the outage, not lost
    assert sorted(arrivals) == [s.t_s for s in patient.device_samples(cuff, min(arrivals), max(arrivals) + 1)]
