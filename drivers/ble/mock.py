"""An in-memory BLE peripheral behind the transport's client-factory seam (the mock to bleak's real one).

Simulators and tests use it to drive :class:`drivers.ble.transport.BleDevice` with real characteristic
bytes and no radio::

    peripheral = MockPeripheral({BLOOD_PRESSURE_MEASUREMENT: ("indicate",)}, battery_level=90)
    device = BleDevice(device_id="cuff-1", client_factory=peripheral.connect)
    ...
    await peripheral.wait_until_subscribed(BLOOD_PRESSURE_MEASUREMENT)
    peripheral.notify(BLOOD_PRESSURE_MEASUREMENT, frame_bytes)
    peripheral.drop_link()              # the transport reports Disconnected and reconnects
    peripheral.advertising = False      # ...and keeps failing with DeviceNotFoundError until it is back

Like bleak, every connection gets a new client object, and a client is dead after its link drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from drivers.ble.gatt import BATTERY_LEVEL
from drivers.ble.transport import GattClient, NotifyCallback
from drivers.errors import ConnectionFailedError, DeviceNotFoundError


@dataclass(frozen=True, slots=True)
class MockCharacteristic:
    uuid: str
    properties: Sequence[str]


class _MockServices:
    def __init__(self, characteristics: Mapping[str, MockCharacteristic]) -> None:
        self._characteristics = characteristics

    def get_characteristic(self, specifier: str) -> MockCharacteristic | None:
        return self._characteristics.get(specifier.lower())


class _MockClient:
    def __init__(self, peripheral: MockPeripheral, on_disconnect: Callable[[], None]) -> None:
        self._peripheral = peripheral
        self._on_disconnect = on_disconnect
        self.services = _MockServices(peripheral.characteristics)
        self.callbacks: dict[str, NotifyCallback] = {}
        self.connected = True

    def _check(self) -> None:
        if not self.connected:
            raise ConnectionFailedError("client used after its link dropped")

    async def start_notify(self, char_specifier: str, callback: NotifyCallback) -> None:
        self._check()
        uuid = char_specifier.lower()
        characteristic = self._peripheral.characteristics.get(uuid)
        if characteristic is None or not {"notify", "indicate"} & set(characteristic.properties):
            raise ConnectionFailedError(f"{uuid} cannot notify")
        self.callbacks[uuid] = callback
        self._peripheral._subscribed(uuid)

    async def read_gatt_char(self, char_specifier: str) -> bytearray:
        self._check()
        uuid = char_specifier.lower()
        if uuid == BATTERY_LEVEL and self._peripheral.battery_level is not None:
            return bytearray([self._peripheral.battery_level])
        value = self._peripheral.values.get(uuid)
        if value is None:
            raise ConnectionFailedError(f"{uuid} cannot be read")
        return bytearray(value)

    async def write_gatt_char(self, char_specifier: str, data: bytes, response: bool) -> None:
        self._check()
        self._peripheral.writes.append((char_specifier.lower(), bytes(data)))
        if self._peripheral.on_write is not None:
            self._peripheral.on_write(char_specifier.lower(), bytes(data))

    async def disconnect(self) -> None:
        self.connected = False
        self._peripheral._gone(self)

    def deliver(self, uuid: str, data: bytes) -> bool:
        callback = self.callbacks.get(uuid)
        if not self.connected or callback is None:
            return False
        callback(self.services.get_characteristic(uuid), bytearray(data))
        return True

    def drop(self) -> None:
        if self.connected:
            self.connected = False
            self._on_disconnect()


class MockPeripheral:
    """A peripheral with the given characteristics (UUID -> properties) and an optional battery service."""

    def __init__(
        self,
        characteristics: Mapping[str, Sequence[str]],
        *,
        battery_level: int | None = 100,
        on_write: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.characteristics: dict[str, MockCharacteristic] = {
            uuid.lower(): MockCharacteristic(uuid.lower(), tuple(props))
            for uuid, props in characteristics.items()
        }
        if battery_level is not None and BATTERY_LEVEL not in self.characteristics:
            self.characteristics[BATTERY_LEVEL] = MockCharacteristic(BATTERY_LEVEL, ("read", "notify"))
        self.battery_level = battery_level
        self.values: dict[str, bytes] = {}
        """Values returned by reads of characteristics other than the battery level."""
        self.on_write = on_write
        self.writes: list[tuple[str, bytes]] = []
        self.advertising = True
        """False: the next connection attempts fail with DeviceNotFoundError (out of range, switched off)."""
        self.connections = 0
        self._client: _MockClient | None = None
        self._subscriptions: dict[str, asyncio.Event] = {}

    async def connect(self, on_disconnect: Callable[[], None]) -> GattClient:
        """The client factory: a new client for every connection."""
        if not self.advertising:
            raise DeviceNotFoundError("mock peripheral is not advertising")
        if self._client is not None and self._client.connected:
            raise ConnectionFailedError("mock peripheral is already connected")
        self._forget_subscriptions()
        self._client = _MockClient(self, on_disconnect)
        self.connections += 1
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def notify(self, uuid: str, data: bytes) -> bool:
        """Send a notification or indication; False when nobody is connected and subscribed to ``uuid``."""
        return self._client is not None and self._client.deliver(uuid.lower(), data)

    def set_battery_level(self, percent: int) -> bool:
        self.battery_level = percent
        return self.notify(BATTERY_LEVEL, bytes([percent]))

    def drop_link(self) -> None:
        """The radio link is lost: the transport's disconnect callback runs."""
        if self._client is not None:
            self._client.drop()

    async def wait_until_subscribed(self, uuid: str) -> None:
        """Until the current (or next) connection has subscribed to ``uuid``."""
        await self._subscription_event(uuid.lower()).wait()

    def _subscription_event(self, uuid: str) -> asyncio.Event:
        return self._subscriptions.setdefault(uuid, asyncio.Event())

    def _subscribed(self, uuid: str) -> None:
        self._subscription_event(uuid).set()

    def _gone(self, client: _MockClient) -> None:
        if client is self._client:
            self._forget_subscriptions()

    def _forget_subscriptions(self) -> None:
        # Clear rather than replace the events: a wait_until_subscribed() begun while disconnected must
        # be woken by the next connection's subscription.
        for event in self._subscriptions.values():
            event.clear()
