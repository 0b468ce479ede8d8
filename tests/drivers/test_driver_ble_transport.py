"""The BLE transport driven by a fake bleak-style client that emits real notification bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from drivers import Reading, Vital
from drivers.ble import gatt
from drivers.ble.transport import BleDevice, GattClient
from drivers.errors import ConnectionFailedError, DeviceNotFoundError
from drivers.transport import Backoff, BatteryLevel, Connected, DeviceEvent, Disconnected
from simulators.devices import gatt_encoders as enc

FAST = Backoff(base_s=0.01, cap_s=0.05)
NORDIC_BP_FULL = bytes.fromhex("1e8a00580078000000041114293b3c00012700")


@dataclass
class FakeCharacteristic:
    uuid: str
    properties: Sequence[str]


@dataclass
class FakeServices:
    characteristics: dict[str, FakeCharacteristic]

    def get_characteristic(self, specifier: str) -> FakeCharacteristic | None:
        return self.characteristics.get(specifier)


@dataclass
class FakeBleakClient:
    """Behaves like a connected bleak client of a blood-pressure cuff with a battery service."""

    on_disconnect: Callable[[], None]
    battery: int = 87
    services: FakeServices = field(
        default_factory=lambda: FakeServices(
            {
                gatt.BLOOD_PRESSURE_MEASUREMENT: FakeCharacteristic(
                    gatt.BLOOD_PRESSURE_MEASUREMENT, ["indicate"]
                ),
                gatt.BATTERY_LEVEL: FakeCharacteristic(gatt.BATTERY_LEVEL, ["read", "notify"]),
                # present but not notifiable: must not be subscribed
                gatt.HEART_RATE_MEASUREMENT: FakeCharacteristic(gatt.HEART_RATE_MEASUREMENT, ["read"]),
            }
        )
    )
    callbacks: dict[str, Callable[[Any, bytearray], None]] = field(default_factory=dict)
    connected: bool = True
    disconnect_calls: int = 0
    writes: list[tuple[str, bytes]] = field(default_factory=list)

    async def start_notify(self, char_specifier: str, callback: Callable[[Any, bytearray], None]) -> None:
        assert self.connected, "a client was used after it disconnected"
        self.callbacks[char_specifier] = callback

    async def read_gatt_char(self, char_specifier: str) -> bytearray:
        assert self.connected, "a client was used after it disconnected"
        assert char_specifier == gatt.BATTERY_LEVEL
        return bytearray([self.battery])

    async def write_gatt_char(self, char_specifier: str, data: bytes, response: bool) -> None:
        assert self.connected, "a client was used after it disconnected"
        self.writes.append((char_specifier, bytes(data)))

    async def disconnect(self) -> None:
        self.disconnect_calls += 1
        self.connected = False

    def notify(self, uuid: str, data: bytes) -> None:
        """What bleak does when a notification or indication arrives."""
        self.callbacks[uuid](self.services.get_characteristic(uuid), bytearray(data))

    def drop_link(self) -> None:
        """The peripheral went away: bleak calls the disconnected callback."""
        self.connected = False
        self.on_disconnect()


class FakeFactory:
    """A ClientFactory: each call is a new connection with a new client (failures scripted first)."""

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        self.failures = list(failures)
        self.clients: list[FakeBleakClient] = []
        self.connected = asyncio.Event()

    async def __call__(self, on_disconnect: Callable[[], None]) -> GattClient:
        if self.failures:
            raise self.failures.pop(0)
        client = FakeBleakClient(on_disconnect)
        self.clients.append(client)
        self.connected.set()
        return client


async def next_item(items: AsyncIterator[Reading | DeviceEvent]) -> Reading | DeviceEvent:
    async with asyncio.timeout(5):
        return await anext(items)


async def test_blood_pressure_cuff_session_and_reconnect() -> None:
    factory = FakeFactory(failures=[DeviceNotFoundError("not advertising"), ConnectionFailedError("timeout")])
    device = BleDevice(device_id="cuff-1", client_factory=factory, device_kind="blood_pressure", backoff=FAST)
    async with contextlib.aclosing(device.readings()) as items:
        connected = await next_item(items)
        assert isinstance(connected, Connected) and connected.device_kind == "blood_pressure"
        battery = await next_item(items)
        assert isinstance(battery, BatteryLevel) and battery.battery_pct == 87
        first = factory.clients[0]
        assert set(first.callbacks) == {gatt.BATTERY_LEVEL, gatt.BLOOD_PRESSURE_MEASUREMENT}

        first.notify(gatt.BLOOD_PRESSURE_MEASUREMENT, b"\x03\x01")  # malformed: skipped and counted
        first.notify(gatt.BLOOD_PRESSURE_MEASUREMENT, NORDIC_BP_FULL)
        first.notify(gatt.BATTERY_LEVEL, b"\x50")
        # A second measurement arrives and the link drops right after: it must still come out.
        first.notify(
            gatt.BLOOD_PRESSURE_MEASUREMENT, enc.blood_pressure_measurement(150, 95, 113, pulse_bpm=88)
        )
        first.drop_link()

        values = [await next_item(items) for _ in range(5)]
        assert [(r.vital, r.value) for r in values[:4] if isinstance(r, Reading)] == [
            (Vital.SYSTOLIC_BP, 138.0),
            (Vital.DIASTOLIC_BP, 88.0),
            (Vital.MEAN_ARTERIAL_PRESSURE, 120.0),
            (Vital.HEART_RATE, 60.0),
        ]
        assert isinstance(values[4], BatteryLevel) and values[4].battery_pct == 80
        second_measurement = [await next_item(items) for _ in range(4)]
        assert [r.value for r in second_measurement if isinstance(r, Reading)] == [150, 95, 113, 88]
        lost = await next_item(items)
        assert isinstance(lost, Disconnected)
        assert first.disconnect_calls == 1
        assert device.parse_errors == 1

        assert isinstance(await next_item(items), Connected)
        second = factory.clients[1]
        assert second is not first  # a new client for every connection
        assert isinstance(await next_item(items), BatteryLevel)
        second.notify(gatt.BLOOD_PRESSURE_MEASUREMENT, NORDIC_BP_FULL)
        reading = await next_item(items)
        assert isinstance(reading, Reading) and reading.value == 138.0
    assert second.disconnect_calls == 1  # closing the iterator disconnects the live client
    assert device.connections == 2


async def test_failure_while_subscribing_is_a_disconnect() -> None:
    class BrokenClient(FakeBleakClient):
        async def start_notify(self, char_specifier: str, callback: Callable[[Any, bytearray], None]) -> None:
            raise OSError("le-connection-abort-by-local")

    made: list[BrokenClient] = []
    third_attempt = asyncio.Event()

    async def factory(on_disconnect: Callable[[], None]) -> GattClient:
        client = BrokenClient(on_disconnect)
        made.append(client)
        if len(made) == 3:
            third_attempt.set()
        return client

    device = BleDevice(device_id="cuff-2", client_factory=factory, backoff=FAST)
    seen: list[Reading | DeviceEvent] = []

    async def consume() -> None:
        async for item in device.readings():
            seen.append(item)

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consume(), name="consume cuff-2")
        async with asyncio.timeout(5):
            await third_attempt.wait()
        task.cancel()
    assert seen == []  # a connection that could not be set up is not reported as connected
    assert all(client.disconnect_calls == 1 for client in made[:2])
    assert len({id(client) for client in made}) == len(made)  # a new client every time


async def test_cancelling_the_consumer_disconnects() -> None:
    factory = FakeFactory()
    device = BleDevice(device_id="hr-1", client_factory=factory, backoff=FAST)
    seen: list[Reading | DeviceEvent] = []

    async def consume() -> None:
        async for item in device.readings():
            seen.append(item)

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consume(), name="consume hr-1")
        await factory.connected.wait()
        await asyncio.sleep(0.01)
        task.cancel()
    assert factory.clients[0].disconnect_calls == 1
    assert isinstance(seen[0], Connected)


def test_unknown_characteristic_is_refused() -> None:
    async def factory(on_disconnect: Callable[[], None]) -> GattClient:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="no parser"):
        BleDevice(device_id="x", client_factory=factory, characteristics=[gatt.sig_uuid(0x2A00)])


def test_backoff_is_capped_and_jittered() -> None:
    import random

    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) == len(delays)
    assert max(delays[:1]) <= 1.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0


async def test_real_factory_without_an_adapter_raises_adapter_unavailable() -> None:
    from drivers.ble.transport import BleakClientFactory
    from drivers.errors import AdapterUnavailableError

    factory = BleakClientFactory(address="AA:BB:CC:DD:EE:FF", scan_timeout_s=0.5)
    outcome: Exception | None = None
    try:
        await factory(lambda: None)
    except (AdapterUnavailableError, DeviceNotFoundError) as exc:
        outcome = exc
    if isinstance(outcome, DeviceNotFoundError):
        pytest.skip("this machine has a Bluetooth adapter")
    assert isinstance(outcome, AdapterUnavailableError)
    assert "Bluetooth is not available" in str(outcome)


def test_transports_implement_the_device_protocol(tmp_path: object) -> None:
    from drivers.serial.transport import SerialDevice
    from drivers.transport import Device

    async def factory(on_disconnect: Callable[[], None]) -> GattClient:
        raise AssertionError("never called")

    devices: list[Device] = [
        BleDevice(device_id="ble-1", client_factory=factory),
        SerialDevice(device_id="ser-1", kind="masimo", port="/dev/null"),
    ]
    assert all(isinstance(device, Device) for device in devices)
    assert [device.device_id for device in devices] == ["ble-1", "ser-1"]


def glucose_meter_services() -> FakeServices:
    return FakeServices(
        {
            gatt.GLUCOSE_MEASUREMENT: FakeCharacteristic(gatt.GLUCOSE_MEASUREMENT, ["notify"]),
            gatt.RECORD_ACCESS_CONTROL_POINT: FakeCharacteristic(
                gatt.RECORD_ACCESS_CONTROL_POINT, ["write", "indicate"]
            ),
        }
    )


async def test_glucose_meter_is_asked_for_records_after_the_last_one_seen() -> None:
    clients: list[FakeBleakClient] = []

    async def factory(on_disconnect: Callable[[], None]) -> GattClient:
        client = FakeBleakClient(on_disconnect, services=glucose_meter_services())
        clients.append(client)
        return client

    device = BleDevice(device_id="meter-1", client_factory=factory, backoff=FAST)
    stamp = datetime(2026, 3, 30, 7, 15)
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        first = clients[0]
        assert first.writes == [(gatt.RECORD_ACCESS_CONTROL_POINT, bytes([0x01, 0x01]))]  # all records
        for sequence, value in ((6, 0.00105), (7, 0.00142)):
            first.notify(
                gatt.GLUCOSE_MEASUREMENT, enc.glucose_measurement(sequence, stamp, concentration=value)
            )
        first.notify(gatt.RECORD_ACCESS_CONTROL_POINT, bytes([0x06, 0x00, 0x01, 0x01]))  # success
        first.drop_link()
        glucose = [await next_item(items), await next_item(items)]
        assert [(r.vital, r.value) for r in glucose if isinstance(r, Reading)] == [
            (Vital.BLOOD_GLUCOSE, pytest.approx(105.0)),
            (Vital.BLOOD_GLUCOSE, pytest.approx(142.0)),
        ]
        assert isinstance(await next_item(items), Disconnected)
        assert isinstance(await next_item(items), Connected)
        # records after sequence 7 only: opcode 1, operator ">=", filter "sequence number", 8
        assert clients[1].writes == [
            (gatt.RECORD_ACCESS_CONTROL_POINT, bytes([0x01, 0x03, 0x01, 0x08, 0x00]))
        ]
    assert device.last_glucose_sequence == 7


async def test_mock_peripheral_drives_the_transport() -> None:
    from drivers.ble.mock import MockPeripheral

    peripheral = MockPeripheral({gatt.PLX_CONTINUOUS_MEASUREMENT: ("notify",)}, battery_level=64)
    device = BleDevice(device_id="ox-1", client_factory=peripheral.connect, backoff=FAST)
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        battery = await next_item(items)
        assert isinstance(battery, BatteryLevel) and battery.battery_pct == 64
        await peripheral.wait_until_subscribed(gatt.PLX_CONTINUOUS_MEASUREMENT)
        assert peripheral.notify(gatt.PLX_CONTINUOUS_MEASUREMENT, enc.plx_continuous(93, 104))
        spo2, pulse = await next_item(items), await next_item(items)
        assert isinstance(spo2, Reading) and (spo2.vital, spo2.value) == (Vital.SPO2, 93.0)
        assert isinstance(pulse, Reading) and pulse.value == 104.0
        assert peripheral.set_battery_level(63)
        battery = await next_item(items)
        assert isinstance(battery, BatteryLevel) and battery.battery_pct == 63

        peripheral.advertising = False  # walks out of range
        peripheral.drop_link()
        assert isinstance(await next_item(items), Disconnected)
        assert not peripheral.notify(gatt.PLX_CONTINUOUS_MEASUREMENT, enc.plx_continuous(93, 104))
        reconnect = asyncio.ensure_future(next_item(items))
        await asyncio.sleep(0.1)
        assert not reconnect.done()  # still out of range: retrying with backoff
        peripheral.advertising = True
        assert isinstance(await reconnect, Connected)
        assert peripheral.connections == 2


async def test_cancelled_during_set_up_still_disconnects() -> None:
    reading_battery = asyncio.Event()
    made: list[FakeBleakClient] = []

    class SlowBatteryClient(FakeBleakClient):
        async def read_gatt_char(self, char_specifier: str) -> bytearray:
            reading_battery.set()
            await asyncio.Event().wait()  # the device never answers
            raise AssertionError("unreachable")

    async def factory(on_disconnect: Callable[[], None]) -> GattClient:
        client = SlowBatteryClient(on_disconnect)
        made.append(client)
        return client

    device = BleDevice(device_id="cuff-3", client_factory=factory, backoff=FAST)

    async def consume() -> None:
        async for _ in device.readings():
            pass

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consume(), name="consume cuff-3")
        await reading_battery.wait()
        task.cancel()
    assert [client.disconnect_calls for client in made] == [1]


async def test_device_clock_is_set_when_asked() -> None:
    from datetime import UTC, timedelta, timezone

    from drivers.ble.mock import MockPeripheral

    peripheral = MockPeripheral(
        {gatt.BLOOD_PRESSURE_MEASUREMENT: ("indicate",), gatt.CURRENT_TIME: ("read", "write", "notify")},
        battery_level=None,
    )
    frozen = datetime(2026, 3, 29, 23, 30, 15, 500_000, tzinfo=UTC)  # a Sunday in UTC
    device = BleDevice(
        device_id="cuff-4",
        client_factory=peripheral.connect,
        backoff=FAST,
        now=lambda: frozen,
        device_tz=timezone(timedelta(hours=2)),
        set_device_clock=True,
    )
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
    # 2026-03-30 01:30:15 local (UTC+2), Monday (1), 128/256 s, adjust reason "external reference"
    assert peripheral.writes == [(gatt.CURRENT_TIME, bytes.fromhex("ea07031e011e0f018002"))]


async def test_device_clock_is_left_alone_by_default() -> None:
    from drivers.ble.mock import MockPeripheral

    peripheral = MockPeripheral({gatt.CURRENT_TIME: ("read", "write")}, battery_level=None)
    device = BleDevice(device_id="cuff-5", client_factory=peripheral.connect, backoff=FAST)
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
    assert peripheral.writes == []
