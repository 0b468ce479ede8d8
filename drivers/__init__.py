"""WardWatch device drivers: pure protocol parsers (BLE GATT, serial) and thin transports.

Nothing here imports the edge agent, the server or the simulators. Parsers turn bytes into typed
measurements (``drivers.ble.gatt``, ``drivers.serial.masimo``, ``drivers.serial.contec``); every
measurement converts to :class:`~drivers.reading.Reading` values with ``to_readings(device_id,
received_at)``; transports (``drivers.ble.transport``, ``drivers.serial.transport``) implement the
:class:`~drivers.transport.Device` protocol and yield readings and device events.
"""

from drivers.errors import (
    AdapterUnavailableError,
    ConnectionFailedError,
    DeviceNotFoundError,
    DriverError,
    ParseError,
)
from drivers.reading import Quality, Reading, TimeSource, Vital
from drivers.transport import BatteryLevel, Connected, Device, DeviceEvent, Disconnected, ProbeState

__all__ = [
    "AdapterUnavailableError",
    "BatteryLevel",
    "Connected",
    "ConnectionFailedError",
    "Device",
    "DeviceEvent",
    "DeviceNotFoundError",
    "Disconnected",
    "DriverError",
    "ParseError",
    "ProbeState",
    "Quality",
    "Reading",
    "TimeSource",
    "Vital",
]
