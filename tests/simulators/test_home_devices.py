"""Simulated home devices against the real drivers, without an agent: unplugging a serial oximeter."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from pathlib import Path

from drivers.reading import Reading
from drivers.transport import Connected, Disconnected
from edge_agent.config import DeviceConfig
from edge_agent.protocol import VitalCode
from simulators.clock import SimClock
from simulators.home import SimulatedSerial
from simulators.physiology import DeviceKind, Patient
from simulators.physiology.patient import DEFAULT_START

OXIMETER = DeviceKind.PULSE_OXIMETER_CONTINUOUS


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
