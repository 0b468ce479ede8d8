"""A simulated home: the real edge agent, reading simulated devices that speak the real protocols.

::

    run_home(config, scenario="sepsis", seed=7, speed=60)

For every ``[[devices]]`` entry of the gateway's configuration, a device simulator follows the patient's
physiology (``simulators.physiology``) on a shared simulated clock and speaks to the real driver:

- BLE kinds: an in-memory peripheral (``drivers.ble.mock.MockPeripheral``) behind the real
  ``BleDevice`` transport, notifying exact Bluetooth SIG characteristic bytes from
  ``simulators.devices.gatt_encoders``; battery level and disconnects follow the scenario's faults;
- ``masimo`` and ``contec``: a real pseudo-terminal whose slave the real ``SerialDevice`` opens by path,
  fed with ASCII 1 lines or CMS50D+ packets from ``simulators.devices.serial_encoders``;
- ``respiration_patch``: no Bluetooth SIG profile carries respiratory rate, so the patch is simulated at
  the driver interface (it yields ``Reading``s directly).

The agent (``edge_agent.service.Agent``) runs unchanged with the simulated clock, its outbox and uplink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from drivers.ble import gatt
from drivers.ble.mock import MockPeripheral
from drivers.ble.transport import BleDevice
from drivers.reading import Reading, TimeSource, Vital
from drivers.serial.transport import SerialDevice
from drivers.transport import Backoff as DriverBackoff
from drivers.transport import Connected, Device, DeviceEvent, Disconnected
from edge_agent.backoff import Backoff
from edge_agent.config import DeviceConfig, GatewayConfig
from edge_agent.devices import BLE_CHARACTERISTICS
from edge_agent.protocol import VITALS, QualityFlag, VitalCode
from edge_agent.service import Agent
from edge_agent.systemd import Notifier
from edge_agent.uplink import UplinkOptions
from simulators.clock import SimClock
from simulators.devices import gatt_encoders, serial_encoders
from simulators.physiology import CADENCES, Cadence, DeviceKind, Patient, Sample, get_scenario
from simulators.uplink import UplinkChange, UplinkRelay, follow_uplink, is_loopback, uplink_outages

log = logging.getLogger(__name__)

PHYSIOLOGY_KIND: Final[dict[str, DeviceKind]] = {
    "ble_plx_continuous": DeviceKind.PULSE_OXIMETER_CONTINUOUS,
    "ble_plx_spot": DeviceKind.PULSE_OXIMETER_SPOT,
    "ble_heart_rate": DeviceKind.HEART_RATE_MONITOR,
    "ble_blood_pressure": DeviceKind.BLOOD_PRESSURE,
    "ble_thermometer": DeviceKind.THERMOMETER,
    "ble_scale": DeviceKind.WEIGHT_SCALE,
    "ble_glucose": DeviceKind.GLUCOSE_METER,
    "masimo": DeviceKind.PULSE_OXIMETER_CONTINUOUS,
    "contec": DeviceKind.PULSE_OXIMETER_CONTINUOUS,
    "respiration_patch": DeviceKind.RESPIRATION_MONITOR,
}
"""Which simulated physiology device each configured driver kind stands for."""

CONFIG_KIND: Final[dict[DeviceKind, str]] = {
    DeviceKind.PULSE_OXIMETER_CONTINUOUS: "ble_plx_continuous",
    DeviceKind.PULSE_OXIMETER_SPOT: "ble_plx_spot",
    DeviceKind.HEART_RATE_MONITOR: "ble_heart_rate",
    DeviceKind.BLOOD_PRESSURE: "ble_blood_pressure",
    DeviceKind.THERMOMETER: "ble_thermometer",
    DeviceKind.WEIGHT_SCALE: "ble_scale",
    DeviceKind.GLUCOSE_METER: "ble_glucose",
    DeviceKind.RESPIRATION_MONITOR: "respiration_patch",
}

SPOT_LOOKBACK_S: Final = 24 * 3600
_PLX_PROBE_OFF: Final = 1 << 11  # PLX device and sensor status: sensor unconnected to user
_PLX_LOW_PERFUSION: Final = 1 << 5
_PLX_ERRATIC: Final = 1 << 6
_GLUCOSE_CAPILLARY_WHOLE_BLOOD: Final = 1
_GLUCOSE_FINGER: Final = 1
_RACP_REPORT_STORED_RECORDS: Final = 0x01
_RACP_ALL_RECORDS: Final = 0x01
_RACP_GREATER_OR_EQUAL: Final = 0x03
_RACP_SEQUENCE_NUMBER: Final = 0x01
MIN_REAL_BACKOFF_S: Final = 0.05
MIN_REAL_RECEIPT_WAIT_S: Final = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFaults:
    """Faults injected on the wire of every simulated device, deterministic for ``seed``.

    ``garbage_rate``: share of frames replaced by random bytes; ``truncate_rate``: share of frames cut
    short; ``clock_drift_s_per_h``: how far the device's own clock runs ahead (+) or behind (-) per
    simulated hour, applied to the timestamps the device sends. Unplug/replug, silence and battery
    come from the scenario's fault events (``simulators.physiology``).
    """

    garbage_rate: float = 0.0
    truncate_rate: float = 0.0
    clock_drift_s_per_h: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("garbage_rate", "truncate_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")

    def rng(self, device_id: str) -> random.Random:
        return random.Random(f"{self.seed}/{device_id}")

    def damage(self, frame: bytes, rng: random.Random) -> bytes:
        """The frame as it arrives: intact, replaced by garbage, or truncated."""
        draw = rng.random()
        if draw < self.garbage_rate:
            return bytes(rng.randrange(256) for _ in range(max(1, len(frame))))
        if draw < self.garbage_rate + self.truncate_rate and len(frame) > 1:
            return frame[: rng.randrange(1, len(frame))]
        return frame

    def device_time(self, sample: Sample) -> datetime:
        return sample.measured_at + timedelta(seconds=self.clock_drift_s_per_h * sample.t_s / 3600)


NO_FAULTS: Final = DeviceFaults()


class SimulatedHome:
    """The devices of one home on a simulated clock; ``device_factory`` plugs into the agent."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        scenario: str,
        seed: int,
        clock: SimClock,
        start_h: float = 0,
        faults: DeviceFaults = NO_FAULTS,
        cadences: Mapping[DeviceKind, Cadence] | None = None,
    ) -> None:
        get_scenario(scenario)  # fail early on a typo
        self.config = config
        self.clock = clock
        self.faults = faults
        self.devices: dict[str, SimulatedBle | SimulatedSerial | SimulatedPatch] = {}
        # Join the scenario start_h hours in; hour 0 on a whole second, as device clocks count.
        start = (clock.now() - timedelta(hours=start_h)).replace(microsecond=0)
        self.patients = {
            patient.id: Patient(scenario, seed=seed + index, start=start, cadences=cadences or CADENCES)
            for index, patient in enumerate(config.patients)
        }
        self.uplink: UplinkRelay | None = None
        """The relay the agent reaches its broker through, when the scenario takes the uplink down."""
        self.uplink_changes: list[UplinkChange] = []
        """When the simulated uplink went down and came back (simulated instants)."""
        self._scratch = Path(tempfile.mkdtemp(prefix="wardwatch-home-"))

    def device_factory(self, device: DeviceConfig) -> Device:
        patient = self.patients[device.patient]
        kind = PHYSIOLOGY_KIND.get(device.kind)
        if kind is None:
            raise ValueError(f"no simulator for device kind {device.kind}")
        simulated: SimulatedBle | SimulatedSerial | SimulatedPatch
        if device.kind in BLE_CHARACTERISTICS:
            simulated = SimulatedBle(device, patient, kind, self.clock, self.faults)
        elif device.kind in ("masimo", "contec"):
            link = self._scratch / f"{device.id}.tty"
            simulated = SimulatedSerial(device, patient, kind, self.clock, link, self.faults)
        else:
            simulated = SimulatedPatch(device, patient, kind, self.clock)
        self.devices[device.id] = simulated
        return simulated


def _t(patient: Patient, clock: SimClock) -> float:
    return (clock.now() - patient.start).total_seconds()


async def _samples_in_time(patient: Patient, kind: DeviceKind, clock: SimClock) -> AsyncIterator[Sample]:
    """The device's samples, each released when the simulated clock reaches it.

    A device joined mid-scenario first hands over the last measurement it took before (a cuff or
    thermometer its stored record, as real ones do when the gateway connects; a streaming device its
    current value).
    """
    t0 = max(0.0, _t(patient, clock))
    if t0 > 0:
        period = patient.cadences[kind].period_s
        lookback = SPOT_LOOKBACK_S if period is None else period
        earlier = list(patient.device_samples(kind, max(0.0, t0 - lookback), t0))
        if earlier:
            yield earlier[-1]
    for sample in patient.device_samples(kind, t0):
        wait = sample.t_s - _t(patient, clock)
        if wait > 0:
            await clock.sleep(wait)
        yield sample


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def encode_gatt(
    kind: DeviceKind, sample: Sample, device_time: datetime | None = None, *, sequence: int = 0
) -> tuple[str, bytes] | None:
    """The characteristic and bytes a real peripheral of this kind would notify for this sample
    (``sequence``: a glucose meter's record number)."""
    # SIG Date Time is naive; the simulated devices keep UTC (the transports are told device_tz=UTC).
    at = (device_time or sample.measured_at).replace(tzinfo=None, microsecond=0)
    values = sample.values
    if kind is DeviceKind.PULSE_OXIMETER_CONTINUOUS:
        status = 0
        if QualityFlag.PROBE_OFF in sample.quality:
            status |= _PLX_PROBE_OFF
        if QualityFlag.LOW_PERFUSION in sample.quality:
            status |= _PLX_LOW_PERFUSION
        if QualityFlag.MOTION in sample.quality:
            status |= _PLX_ERRATIC
        data = gatt_encoders.plx_continuous(
            _int(values.get(VitalCode.SPO2)), _int(values.get(VitalCode.HEART_RATE)), device_status=status
        )
        return gatt.PLX_CONTINUOUS_MEASUREMENT, data
    if kind is DeviceKind.PULSE_OXIMETER_SPOT:
        data = gatt_encoders.plx_spot_check(
            _int(values.get(VitalCode.SPO2)), _int(values.get(VitalCode.HEART_RATE)), timestamp=at
        )
        return gatt.PLX_SPOT_CHECK_MEASUREMENT, data
    if kind is DeviceKind.HEART_RATE_MONITOR:
        bpm = _int(values.get(VitalCode.HEART_RATE))
        if bpm is None:
            return None
        return gatt.HEART_RATE_MEASUREMENT, gatt_encoders.heart_rate_measurement(bpm, sensor_contact=True)
    if kind is DeviceKind.BLOOD_PRESSURE:
        pulse = _int(values.get(VitalCode.HEART_RATE))
        data = gatt_encoders.blood_pressure_measurement(
            _int(values.get(VitalCode.SYSTOLIC_BP)),
            _int(values.get(VitalCode.DIASTOLIC_BP)),
            _int(values.get(VitalCode.MEAN_ARTERIAL_PRESSURE)),
            timestamp=at,
            pulse_bpm=pulse if pulse is not None else "absent",
        )
        return gatt.BLOOD_PRESSURE_MEASUREMENT, data
    if kind is DeviceKind.THERMOMETER:
        celsius = values.get(VitalCode.BODY_TEMPERATURE)
        data = gatt_encoders.temperature_measurement(
            None if celsius is None else round(celsius, 1), timestamp=at, site=3
        )
        return gatt.TEMPERATURE_MEASUREMENT, data
    if kind is DeviceKind.WEIGHT_SCALE:
        kg = values.get(VitalCode.BODY_WEIGHT)
        weight = None if kg is None else round(kg * 200) / 200
        return gatt.WEIGHT_MEASUREMENT, gatt_encoders.weight_measurement(weight, timestamp=at)
    if kind is DeviceKind.GLUCOSE_METER:
        mg_dl = values.get(VitalCode.BLOOD_GLUCOSE)
        # Glucose Measurement carries kg/L: 1 mg/dL = 1e-5 kg/L, exact in decimal.
        kg_l = None if mg_dl is None else Decimal(round(mg_dl)).scaleb(-5)
        data = gatt_encoders.glucose_measurement(
            sequence % 0x10000,
            at,
            concentration=kg_l,
            sample_type=_GLUCOSE_CAPILLARY_WHOLE_BLOOD,
            sample_location=_GLUCOSE_FINGER,
        )
        return gatt.GLUCOSE_MEASUREMENT, data
    return None


class SimulatedBle:
    """A BLE peripheral following the patient, read through the real ``BleDevice`` transport.

    A glucose meter keeps every test in its memory as a numbered record and sends records only when the
    gateway asks through the Record Access Control Point (all of them, or those from a sequence number
    on), as real meters do. After each new test it ends the connection (a meter wakes for a test and
    sleeps after the transfer); the gateway reconnects and asks for the records after the last it has.
    Tests made while the meter is out of range are delivered at the next connection.
    """

    def __init__(
        self,
        device: DeviceConfig,
        patient: Patient,
        kind: DeviceKind,
        clock: SimClock,
        faults: DeviceFaults = NO_FAULTS,
    ) -> None:
        self.device_id = device.id
        self._patient, self._kind, self._clock, self._faults = patient, kind, clock, faults
        self._rng = faults.rng(device.id)
        characteristics = BLE_CHARACTERISTICS[device.kind]
        properties: dict[str, tuple[str, ...]] = {uuid: ("notify", "indicate") for uuid in characteristics}
        self.records: list[bytes] = []
        """A glucose meter's stored records; record n has sequence number n (mod 65536)."""
        self.record_requests: list[bytes] = []
        """Record Access Control Point requests the gateway wrote (a glucose meter)."""
        if kind is DeviceKind.GLUCOSE_METER:
            properties[gatt.RECORD_ACCESS_CONTROL_POINT] = ("write", "indicate")
        self.peripheral = MockPeripheral(
            properties,
            battery_level=round(patient.battery_pct(kind, _t(patient, clock))),
            on_write=self._written if kind is DeviceKind.GLUCOSE_METER else None,
        )
        self.transport = BleDevice(
            device_id=device.id,
            client_factory=self.peripheral.connect,
            device_kind=device.kind,
            characteristics=characteristics,
            device_tz=UTC,
            backoff=sim_device_backoff(clock, base_s=0.5, cap_s=10.0),
            now=clock.now,
        )
        self._uuid = characteristics[0]

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        feeder = asyncio.create_task(self._feed(), name=f"sim-feed:{self.device_id}")
        try:
            async with contextlib.aclosing(self.transport.readings()) as stream:
                async for item in stream:
                    yield item
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder

    async def _feed(self) -> None:
        patient, kind, peripheral = self._patient, self._kind, self.peripheral
        meter = kind is DeviceKind.GLUCOSE_METER
        spot = patient.cadences[kind].period_s is None
        held: list[Sample] = []
        await peripheral.wait_until_subscribed(self._uuid)
        async for sample in _samples_in_time(patient, kind, self._clock):
            t = sample.t_s
            if meter:  # kept in the meter's memory whether or not the gateway is in reach
                frame = encode_gatt(
                    kind, sample, self._faults.device_time(sample), sequence=len(self.records)
                )
                if frame is not None:
                    self.records.append(frame[1])
            connected = patient.device_connected(kind, t) and patient.device_powered(kind, t)
            if not connected:
                if peripheral.advertising:
                    peripheral.advertising = False
                    peripheral.drop_link()
                if spot and not meter:
                    held.append(sample)  # a cuff or thermometer keeps the reading in its memory
                continue
            if not peripheral.advertising:
                peripheral.advertising = True
                await peripheral.wait_until_subscribed(self._uuid)
            battery = round(patient.battery_pct(kind, t))
            if battery != peripheral.battery_level:
                peripheral.set_battery_level(battery)
            if meter:
                peripheral.drop_link()  # the test is done: the meter ends its session, the gateway asks again
                continue
            for taken in (*held, sample):  # stored readings first, with the times they were taken
                frame = encode_gatt(kind, taken, self._faults.device_time(taken))
                if frame is not None:
                    uuid, data = frame
                    peripheral.notify(uuid, self._faults.damage(data, self._rng))
            held.clear()

    def _written(self, uuid: str, request: bytes) -> None:
        """The gateway wrote a Record Access Control Point request: send the records, then the response."""
        if uuid != gatt.RECORD_ACCESS_CONTROL_POINT:
            return
        self.record_requests.append(request)
        opcode = request[0] if request else 0
        first: int | None = None
        if opcode != _RACP_REPORT_STORED_RECORDS:
            code = gatt_encoders.RACP_OPCODE_NOT_SUPPORTED
        elif request[1:2] == bytes([_RACP_ALL_RECORDS]) and len(request) == 2:
            first, code = 0, gatt_encoders.RACP_SUCCESS
        elif request[1:3] == bytes([_RACP_GREATER_OR_EQUAL, _RACP_SEQUENCE_NUMBER]) and len(request) == 5:
            first, code = int.from_bytes(request[3:5], "little"), gatt_encoders.RACP_SUCCESS
        else:
            code = gatt_encoders.RACP_OPERATOR_NOT_SUPPORTED
        if first is not None:
            wanted = [record for number, record in enumerate(self.records) if number % 0x10000 >= first]
            if not wanted:
                code = gatt_encoders.RACP_NO_RECORDS_FOUND
            for record in wanted:
                self.peripheral.notify(gatt.GLUCOSE_MEASUREMENT, self._faults.damage(record, self._rng))
        self.peripheral.notify(gatt.RECORD_ACCESS_CONTROL_POINT, gatt_encoders.racp_response(opcode, code))


class SimulatedSerial:
    """A serial oximeter on a real pseudo-terminal, read through the real ``SerialDevice`` by path.

    The gateway's configuration names a stable path (a symlink in the home's scratch directory, like a
    udev ``/dev/serial/by-id`` link) that points at the current pty's slave. While the scenario says the
    device is disconnected it is unplugged: the link disappears and the pty is closed, so the driver's
    read fails (EIO) and its reopen attempts find no device; on replug a new pty appears behind the same
    path and the driver reconnects by itself. Bytes are written without blocking the event loop; when
    the gateway does not read, the device waits for room in the pty (nothing is dropped).
    """

    def __init__(
        self,
        device: DeviceConfig,
        patient: Patient,
        kind: DeviceKind,
        clock: SimClock,
        link: Path,
        faults: DeviceFaults = NO_FAULTS,
    ) -> None:
        self.device_id = device.id
        self._device, self._patient, self._kind, self._clock, self._link = device, patient, kind, clock, link
        self._faults = faults
        self.transport: SerialDevice | None = None
        self.unplugs = 0
        self.replugs = 0
        self._pty: tuple[int, int] | None = None

    @property
    def link(self) -> Path:
        """The stable path the driver opens (it exists only while the device is plugged in)."""
        return self._link

    @property
    def plugged(self) -> bool:
        return self._pty is not None

    def plug(self) -> None:
        """A new pseudo-terminal appears behind the stable path."""
        if self._pty is not None:
            return
        master, slave = os.openpty()
        os.set_blocking(master, False)
        fresh = self._link.with_name(f".{self._link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()
        fresh.symlink_to(os.ttyname(slave))
        fresh.replace(self._link)  # atomic: the path never points at a closed pty
        self._pty = (master, slave)

    def unplug(self) -> None:
        """The device node disappears and the pty closes: the driver's next read fails."""
        if self._pty is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()
        master, slave = self._pty
        self._pty = None
        os.close(master)
        os.close(slave)

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        self.plug()
        transport = self.transport = SerialDevice(
            device_id=self.device_id,
            kind=self._device.kind,
            port=str(self._link),
            device_tz=UTC,
            backoff=sim_device_backoff(self._clock, base_s=1.0, cap_s=60.0),
            now=self._clock.now,
        )
        feeder = asyncio.create_task(self._feed(), name=f"sim-feed:{self.device_id}")
        try:
            async with contextlib.aclosing(transport.readings()) as stream:
                async for item in stream:
                    yield item
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            self.unplug()

    async def _feed(self) -> None:
        masimo = self._device.kind == "masimo"
        rng = self._faults.rng(self.device_id)
        async for sample in _samples_in_time(self._patient, self._kind, self._clock):
            if not self._patient.device_connected(self._kind, sample.t_s):
                if self.plugged:
                    self.unplug()
                    self.unplugs += 1
                    log.info("%s: unplugged at scenario hour %.3f", self.device_id, sample.t_s / 3600)
                continue
            if not self.plugged:
                self.plug()
                self.replugs += 1
                log.info("%s: plugged in again at scenario hour %.3f", self.device_id, sample.t_s / 3600)
            spo2 = _int(sample.values.get(VitalCode.SPO2))
            pulse = _int(sample.values.get(VitalCode.HEART_RATE))
            if masimo:
                data = serial_encoders.masimo_line(
                    self._faults.device_time(sample).replace(tzinfo=None),
                    spo2=spo2,
                    bpm=pulse,
                    pi=sample.perfusion_index,
                )
            else:
                finger_out = QualityFlag.PROBE_OFF in sample.quality
                data = serial_encoders.contec_packet(spo2=spo2, pulse=pulse, finger_out=finger_out)
            await self._write(self._faults.damage(data, rng))

    async def _write(self, data: bytes) -> None:
        """Write all of ``data`` to the pty master, waiting (not blocking the loop) while it is full."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view and self._pty is not None:
            master = self._pty[0]
            try:
                written = os.write(master, view)
            except BlockingIOError:
                room: asyncio.Future[None] = loop.create_future()
                loop.add_writer(master, _resolve, room)
                try:
                    await room
                finally:
                    loop.remove_writer(master)
                continue
            view = view[written:]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def sim_device_backoff(clock: SimClock, *, base_s: float, cap_s: float) -> DriverBackoff:
    """A driver's reconnect backoff (``base_s`` .. ``cap_s`` on a real gateway) in simulated time: the
    real waits shrink with the clock's speed, to no less than ``MIN_REAL_BACKOFF_S``."""
    speed = clock.speed
    return DriverBackoff(
        base_s=max(base_s / speed, MIN_REAL_BACKOFF_S), cap_s=max(cap_s / speed, 10 * MIN_REAL_BACKOFF_S)
    )


class SimulatedPatch:
    """A respiration patch simulated at the driver interface: it yields ``Reading``s itself."""

    def __init__(self, device: DeviceConfig, patient: Patient, kind: DeviceKind, clock: SimClock) -> None:
        self.device_id = device.id
        self._patient, self._kind, self._clock = patient, kind, clock

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        yield Connected(self.device_id, "respiration_patch", self._clock.now())
        connected = True
        async for sample in _samples_in_time(self._patient, self._kind, self._clock):
            if not self._patient.device_connected(self._kind, sample.t_s):
                if connected:
                    connected = False
                    yield Disconnected(self.device_id, "out of range", sample.measured_at)
                continue
            if not connected:
                connected = True
                yield Connected(self.device_id, "respiration_patch", sample.measured_at)
            for vital, value in sample.values.items():
                yield Reading(
                    Vital(vital.value),
                    value,
                    VITALS[vital].ucum,
                    sample.measured_at,
                    TimeSource.DEVICE,
                    self.device_id,
                    frozenset(str(flag) for flag in sample.quality),
                )


def home_config(
    gateway_id: str,
    *,
    broker_url: str,
    scenario: str,
    outbox_path: Path,
    patient_id: str | None = None,
    heartbeat_interval_s: float = 30,
    tls: dict[str, str] | None = None,
) -> GatewayConfig:
    """A gateway configuration with one device per device of the scenario's kit (for demos and tests)."""
    kit = get_scenario(scenario).devices
    patient = patient_id or f"pt-{gateway_id}"
    devices = []
    for index, kind in enumerate(kit):
        config_kind = CONFIG_KIND[kind]
        entry: dict[str, object] = {"id": f"{config_kind}-{index}", "kind": config_kind, "patient": patient}
        if config_kind.startswith("ble_"):
            entry["address"] = f"02:00:00:00:{index // 256:02X}:{index % 256:02X}"
        elif config_kind != "respiration_patch":
            entry["path"] = f"/dev/sim-{index}"
        devices.append(entry)
    broker: dict[str, object] = {"url": broker_url, "allow_plaintext": broker_url.startswith("mqtt://")}
    broker.update(tls or {})
    return GatewayConfig.model_validate(
        {
            "gateway_id": gateway_id,
            "broker": broker,
            "patients": [{"id": patient, **_scenario_settings(scenario)}],
            "devices": devices,
            "outbox": {"path": str(outbox_path)},
            "heartbeat_interval_s": heartbeat_interval_s,
        }
    )


def _scenario_settings(scenario: str) -> dict[str, object]:
    course = get_scenario(scenario).course
    return {"spo2_scale": course.spo2_scale, "on_oxygen": course.on_oxygen}


def sim_uplink_options(config: GatewayConfig, clock: SimClock) -> UplinkOptions:
    """The agent's uplink timings with the waits that matter kept in simulated time.

    A real gateway reconnects after 1 to 60 s and republishes a message whose receipt is 60 s late. The
    agent waits for reconnects in real seconds, so at ``speed`` F the home scales them to 1/F to 60/F real
    seconds (at least ``MIN_REAL_BACKOFF_S``): an outage of hours ends for the agent seconds after the
    uplink returns, as it would at speed 1. The receipt timeout is measured on the simulated clock; it is
    at least ``MIN_REAL_RECEIPT_WAIT_S`` real seconds, so a server's receipt (sent every 0.2 real seconds)
    arrives before the message is republished. At speed 1 both equal the agent's defaults.
    """
    speed = clock.speed
    return UplinkOptions(
        heartbeat_interval_s=config.heartbeat_interval_s,
        clock=lambda: clock.now().timestamp(),
        sleep=clock.sleep,  # heartbeats and the look for overdue receipts keep simulated time
        backoff=Backoff(
            initial_s=max(1.0 / speed, MIN_REAL_BACKOFF_S),
            maximum_s=max(60.0 / speed, 10 * MIN_REAL_BACKOFF_S),
        ),
        receipt_timeout_s=max(60.0, MIN_REAL_RECEIPT_WAIT_S * speed),
    )


def uplink_relay_problem(url: str) -> str | None:
    """Why the agent's connection to the broker at ``url`` cannot go through the loopback uplink relay
    (a TLS broker elsewhere: its certificate names its own host, not loopback), or None."""
    parts = urlsplit(url)
    if parts.scheme == "mqtts" and not is_loopback(parts.hostname or ""):
        return (
            f"broker {url}: a scenario with uplink outages relays the agent's connection through "
            "loopback, so the broker's TLS certificate must name localhost or a loopback address; "
            "run the home against a local broker, or pick a scenario without uplink faults"
        )
    return None


def _relay_for(url: str) -> tuple[UplinkRelay, str, str | None]:
    """A relay to the broker at ``url``, the URL scheme, and the host name the agent must use (for TLS)."""
    problem = uplink_relay_problem(url)
    if problem is not None:
        raise ValueError(problem)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    agent_host = host if parts.scheme == "mqtts" else None
    listen = "::1" if ":" in host else "127.0.0.1"
    return UplinkRelay(host, port, listen_host=listen), parts.scheme, agent_host


async def run_home(
    config: GatewayConfig,
    *,
    scenario: str,
    seed: int,
    speed: float = 1.0,
    start_h: float = 0,
    clock: SimClock | None = None,
    faults: DeviceFaults = NO_FAULTS,
    cadences: Mapping[DeviceKind, Cadence] | None = None,
    on_agent: Callable[[Agent], None] | None = None,
    on_home: Callable[[SimulatedHome], None] | None = None,
) -> None:
    """Run a real agent against simulated devices until cancelled, ``start_h`` hours into the scenario.

    When the scenario takes the uplink down, the agent reaches its broker through an
    :class:`~simulators.uplink.UplinkRelay` that the home cuts for each outage (``home.uplink``).
    ``cadences`` overrides how often devices measure (e.g. an oximeter once a minute for fast runs).
    """
    clock = clock or SimClock.starting_now(speed=speed)
    home = SimulatedHome(
        config,
        scenario=scenario,
        seed=seed,
        clock=clock,
        start_h=start_h,
        faults=faults,
        cadences=cadences,
    )
    patient = next(iter(home.patients.values()))
    relay: UplinkRelay | None = None
    if uplink_outages(patient):
        relay, scheme, agent_host = _relay_for(config.broker.url)
    async with contextlib.AsyncExitStack() as stack:
        agent_config = config
        if relay is not None:
            await stack.enter_async_context(relay)
            home.uplink = relay
            broker = config.broker.model_copy(update={"url": relay.url(scheme, agent_host)})
            agent_config = config.model_copy(update={"broker": broker})
        if on_home is not None:
            on_home(home)
        agent = Agent(
            agent_config,
            device_factory=home.device_factory,
            clock=clock.now,
            sleep=clock.sleep,  # re-assessment and the offline local alert wait in simulated time
            reassess_interval_s=max(30.0, 0.5 * clock.speed),  # at most twice a real second
            uplink_options=sim_uplink_options(config, clock),
            notifier=Notifier(address=""),
        )
        if on_agent is not None:
            on_agent(agent)
        log.info(
            "simulated home %s: scenario %s, seed %d, speed %g%s",
            config.gateway_id,
            scenario,
            seed,
            clock.speed,
            f", uplink through relay port {relay.port}" if relay is not None else "",
        )
        async with asyncio.TaskGroup() as tasks:
            if relay is not None:
                tasks.create_task(
                    follow_uplink(patient, clock, relay, on_change=home.uplink_changes),
                    name=f"uplink-faults:{config.gateway_id}",
                )
            tasks.create_task(agent.run(), name=f"agent:{config.gateway_id}")
