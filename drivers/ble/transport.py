"""Bluetooth LE health devices through bleak and bleak-retry-connector.

:class:`BleDevice` implements :class:`drivers.transport.Device`. One connection at a time:

1. the client factory finds the device (by address or advertised service UUID) and connects with
   ``bleak_retry_connector.establish_connection``; every connection gets a new client, and a client is
   never used again after it disconnects;
2. the battery level (0x2A19) is read, and subscribed to when the device notifies it;
3. every known measurement characteristic the device has (:data:`~drivers.ble.gatt.MEASUREMENT_PARSERS`)
   is subscribed to (bleak enables notifications or indications, whichever the characteristic has); a
   the device clock is set through the Current Time Service when asked (``set_device_clock``); a
   glucose meter is then asked for its stored records through the Record Access Control Point;
4. notification bytes go, with their receive time, into a queue in arrival order; the disconnect
   callback puts a marker behind them, so everything received before a disconnect is still parsed and
   yielded before :class:`~drivers.transport.Disconnected`;
5. after a disconnect (or a failed connect) the device waits a capped, jittered backoff and starts over.

The client factory is the seam: tests and simulators pass one that returns a bleak-style fake client
emitting real notification bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Protocol

from drivers.ble.gatt import (
    BATTERY_LEVEL,
    CURRENT_TIME,
    GLUCOSE_MEASUREMENT,
    MEASUREMENT_PARSERS,
    RECORD_ACCESS_CONTROL_POINT,
    GlucoseMeasurement,
    encode_current_time,
    parse_battery_level,
)
from drivers.errors import (
    AdapterUnavailableError,
    ConnectionFailedError,
    DeviceNotFoundError,
    DriverError,
    ParseError,
)
from drivers.reading import Reading
from drivers.transport import Backoff, BatteryLevel, Connected, DeviceEvent, Disconnected

logger = logging.getLogger(__name__)

DISCONNECT_TIMEOUT_S: Final = 10.0
RACP_REPORT_STORED_RECORDS: Final = 0x01
RACP_ALL_RECORDS: Final = 0x01
RACP_GREATER_OR_EQUAL: Final = 0x03
RACP_FILTER_SEQUENCE_NUMBER: Final = 0x01
NOTIFY_PROPERTIES: Final = frozenset({"notify", "indicate"})


class GattCharacteristicLike(Protocol):
    @property
    def uuid(self) -> str: ...

    @property
    def properties(self) -> Sequence[str]: ...


class GattServicesLike(Protocol):
    def get_characteristic(self, specifier: str) -> GattCharacteristicLike | None: ...


NotifyCallback = Callable[[Any, bytearray], None]


class GattClient(Protocol):
    """The part of ``bleak.BleakClient`` the transport uses (a connected client)."""

    @property
    def services(self) -> GattServicesLike: ...

    async def start_notify(self, char_specifier: str, callback: NotifyCallback) -> None: ...

    async def read_gatt_char(self, char_specifier: str) -> bytearray: ...

    async def write_gatt_char(self, char_specifier: str, data: bytes, response: bool) -> None: ...

    async def disconnect(self) -> None: ...


ClientFactory = Callable[[Callable[[], None]], Awaitable[GattClient]]
"""Given the callback to run when the link drops, find the device and return a new connected client.
Raises a :class:`~drivers.errors.DriverError` when it cannot."""


class BleakClientFactory:
    """The real :data:`ClientFactory`: BleakScanner to find the device, bleak-retry-connector to connect."""

    def __init__(
        self,
        *,
        address: str | None = None,
        service_uuid: str | None = None,
        name: str = "wardwatch",
        scan_timeout_s: float = 10.0,
        pair: bool = False,
    ) -> None:
        if (address is None) == (service_uuid is None):
            raise ValueError("give exactly one of address or service_uuid")
        self._address = address
        self._service_uuid = service_uuid.lower() if service_uuid else None
        self._name = name
        self._scan_timeout_s = scan_timeout_s
        self._pair = pair

    async def __call__(self, on_disconnect: Callable[[], None]) -> GattClient:
        from bleak import BleakScanner
        from bleak.backends.device import BLEDevice
        from bleak.backends.scanner import AdvertisementData
        from bleak.exc import BleakBluetoothNotAvailableError, BleakError
        from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

        service_uuid = self._service_uuid

        def advertises_service(_: BLEDevice, advertisement: AdvertisementData) -> bool:
            return service_uuid in {uuid.lower() for uuid in advertisement.service_uuids}

        try:
            if self._address is not None:
                device = await BleakScanner.find_device_by_address(
                    self._address, timeout=self._scan_timeout_s
                )
            else:
                device = await BleakScanner.find_device_by_filter(
                    advertises_service, timeout=self._scan_timeout_s
                )
        except (BleakBluetoothNotAvailableError, FileNotFoundError) as exc:
            raise AdapterUnavailableError(f"Bluetooth is not available: {exc}") from exc
        except (BleakError, OSError, EOFError) as exc:
            raise ConnectionFailedError(f"scanning failed: {exc}") from exc
        if device is None:
            wanted = self._address or f"a device advertising {self._service_uuid}"
            raise DeviceNotFoundError(f"{wanted} not seen within {self._scan_timeout_s:g} s")
        try:
            client: GattClient = await establish_connection(
                BleakClientWithServiceCache,
                device,
                self._name,
                disconnected_callback=lambda _client: on_disconnect(),
                pair=self._pair,
            )
        except (BleakError, OSError, EOFError, TimeoutError) as exc:
            raise ConnectionFailedError(f"connecting to {device.address} failed: {exc}") from exc
        return client


class _Disconnect:
    """Queue marker: the link dropped after everything queued before it."""


_DISCONNECT: Final = _Disconnect()
_Notification = tuple[str, bytes, datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BleDevice:
    """A Bluetooth LE health device; implements :class:`drivers.transport.Device`.

    ``device_tz`` is the zone the device's clock is set in; the default ``None`` is the gateway's local
    zone (daylight saving included). Readings from a device without a clock use the receive time.
    ``set_device_clock=True`` writes the gateway's time (in ``device_tz``) to the device's Current Time
    characteristic on every connection, where it is writable; only enable it on an NTP-synchronised
    gateway.
    """

    def __init__(
        self,
        *,
        device_id: str,
        client_factory: ClientFactory,
        device_kind: str = "ble",
        characteristics: Iterable[str] | None = None,
        device_tz: tzinfo | None = None,
        backoff: Backoff | None = None,
        now: Callable[[], datetime] = _utc_now,
        last_glucose_sequence: int | None = None,
        set_device_clock: bool = False,
    ) -> None:
        self._device_id = device_id
        self._factory = client_factory
        self.device_kind = device_kind
        wanted = set(MEASUREMENT_PARSERS) if characteristics is None else {c.lower() for c in characteristics}
        unknown = wanted - set(MEASUREMENT_PARSERS)
        if unknown:
            raise ValueError(f"no parser for characteristics {', '.join(sorted(unknown))}")
        self._characteristics = sorted(wanted)
        self._device_tz = device_tz
        self._set_device_clock = set_device_clock
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=10.0)
        self._now = now
        self.parse_errors = 0
        """Notifications that could not be parsed (each logged at DEBUG with its bytes in hex)."""
        self.connections = 0
        self.last_glucose_sequence: int | None = last_glucose_sequence
        """Sequence number of the newest glucose record received; the next connection asks for later ones."""

    @property
    def device_id(self) -> str:
        return self._device_id

    async def readings(self) -> AsyncGenerator[Reading | DeviceEvent, None]:
        loop = asyncio.get_running_loop()
        while True:
            queue: asyncio.Queue[_Notification | _Disconnect] = asyncio.Queue()

            def on_disconnect(queue: asyncio.Queue[_Notification | _Disconnect] = queue) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, _DISCONNECT)

            try:
                client = await self._factory(on_disconnect)
            except DriverError as exc:
                delay = self._backoff.next_delay()
                logger.info("%s: not connected (%s); retrying in %.1f s", self._device_id, exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                # Subscribe before the first yield: what the device sends while the consumer is busy
                # elsewhere waits in the queue instead of being missed.
                battery_event = await self._set_up(client, queue)
            except ConnectionFailedError as exc:
                await _disconnect_quietly(client)
                del client  # never reused
                delay = self._backoff.next_delay()
                logger.info("%s: %s; retrying in %.1f s", self._device_id, exc, delay)
                await asyncio.sleep(delay)
                continue
            except BaseException:  # cancelled while setting up: still let go of the link
                await _disconnect_quietly(client)
                raise
            self.connections += 1
            try:
                yield Connected(self._device_id, self.device_kind, self._now())
                if battery_event is not None:
                    yield battery_event
                async with contextlib.aclosing(self._notifications(queue)) as notifications:
                    async for item in notifications:
                        yield item
            finally:
                await _disconnect_quietly(client)
                del client  # never reused: the next connection gets a new client from the factory
            logger.info("%s: device disconnected", self._device_id)
            yield Disconnected(self._device_id, "device disconnected", self._now())
            await asyncio.sleep(self._backoff.next_delay())

    async def _set_up(
        self, client: GattClient, queue: asyncio.Queue[_Notification | _Disconnect]
    ) -> BatteryLevel | None:
        """Read the battery, subscribe to every measurement, ask a glucose meter for its records."""

        loop = asyncio.get_running_loop()

        def enqueue(uuid: str) -> NotifyCallback:
            # Through call_soon_threadsafe, like the disconnect marker, so arrival order is kept even on
            # backends that call back from another thread.
            def callback(_sender: Any, data: bytearray) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (uuid, bytes(data), self._now()))

            return callback

        battery_event: BatteryLevel | None = None
        try:
            battery = client.services.get_characteristic(BATTERY_LEVEL)
            if battery is not None:
                battery_event = self._battery_event(
                    bytes(await client.read_gatt_char(BATTERY_LEVEL)), self._now()
                )
                if NOTIFY_PROPERTIES & set(battery.properties):
                    await client.start_notify(BATTERY_LEVEL, enqueue(BATTERY_LEVEL))
            subscribed = []
            for uuid in self._characteristics:
                characteristic = client.services.get_characteristic(uuid)
                if characteristic is None or not NOTIFY_PROPERTIES & set(characteristic.properties):
                    continue
                await client.start_notify(uuid, enqueue(uuid))
                subscribed.append(uuid)
            if self._set_device_clock:
                await self._write_current_time(client)
            if GLUCOSE_MEASUREMENT in subscribed:
                await self._request_glucose_records(client, enqueue)
        except Exception as exc:  # bleak raises BleakError, OSError, EOFError, TimeoutError, KeyError...
            raise ConnectionFailedError(f"setting up the connection failed: {exc!r}") from exc
        if not subscribed:
            logger.warning("%s: device has none of the measurement characteristics we read", self._device_id)
        else:
            logger.debug("%s: subscribed to %s", self._device_id, ", ".join(subscribed))
        return battery_event

    async def _notifications(
        self, queue: asyncio.Queue[_Notification | _Disconnect]
    ) -> AsyncGenerator[Reading | DeviceEvent, None]:
        """Parsed notifications in arrival order, until the disconnect marker."""
        while True:
            item = await queue.get()
            if isinstance(item, _Disconnect):
                return
            uuid, data, received_at = item
            if uuid == RECORD_ACCESS_CONTROL_POINT:
                logger.debug("%s: record access control point: %s", self._device_id, data.hex(" "))
                continue
            if uuid == BATTERY_LEVEL:
                event = self._battery_event(data, received_at)
                if event is not None:
                    yield event
                continue
            try:
                measurement = MEASUREMENT_PARSERS[uuid](data)
            except ParseError as exc:
                self.parse_errors += 1
                logger.debug("%s: %s: %s", self._device_id, uuid, exc)
                continue
            self._backoff.reset()
            if isinstance(measurement, GlucoseMeasurement):
                self.last_glucose_sequence = measurement.sequence_number
            for reading in measurement.to_readings(self._device_id, received_at, device_tz=self._device_tz):
                yield reading

    async def _write_current_time(self, client: GattClient) -> None:
        """Set the device's clock (Current Time Service) to the gateway's time in ``device_tz``.

        Only devices whose Current Time characteristic is writable; a refusal is logged, not fatal.
        """
        characteristic = client.services.get_characteristic(CURRENT_TIME)
        if characteristic is None or "write" not in characteristic.properties:
            return
        now = self._now()
        local = now.astimezone() if self._device_tz is None else now.astimezone(self._device_tz)
        try:
            await client.write_gatt_char(CURRENT_TIME, encode_current_time(local.replace(tzinfo=None)), True)
        except Exception as exc:  # a device may refuse (e.g. not bonded): keep the connection
            logger.warning("%s: setting the device clock failed: %r", self._device_id, exc)
        else:
            logger.info("%s: device clock set to %s", self._device_id, local.isoformat(timespec="seconds"))

    async def _request_glucose_records(
        self, client: GattClient, enqueue: Callable[[str], NotifyCallback]
    ) -> None:
        """Ask a glucose meter for its stored records (Record Access Control Point, 0x2A52).

        Glucose meters send measurements only when asked: "report stored records", all of them on the
        first connection, then those after the last sequence number seen.
        """
        racp = client.services.get_characteristic(RECORD_ACCESS_CONTROL_POINT)
        if racp is None or "indicate" not in racp.properties:
            return
        await client.start_notify(RECORD_ACCESS_CONTROL_POINT, enqueue(RECORD_ACCESS_CONTROL_POINT))
        last = self.last_glucose_sequence
        if last is None or last >= 0xFFFF:
            request = bytes([RACP_REPORT_STORED_RECORDS, RACP_ALL_RECORDS])
        else:
            request = bytes(
                [RACP_REPORT_STORED_RECORDS, RACP_GREATER_OR_EQUAL, RACP_FILTER_SEQUENCE_NUMBER]
            ) + (last + 1).to_bytes(2, "little")
        await client.write_gatt_char(RECORD_ACCESS_CONTROL_POINT, request, True)

    def _battery_event(self, data: bytes, at: datetime) -> BatteryLevel | None:
        try:
            return BatteryLevel(self._device_id, parse_battery_level(data), at)
        except ParseError as exc:
            self.parse_errors += 1
            logger.debug("%s: battery level: %s", self._device_id, exc)
            return None


async def _disconnect_quietly(client: GattClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.disconnect()
