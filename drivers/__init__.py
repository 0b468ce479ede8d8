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

__all__ = [
    "AdapterUnavailableError",
    "ConnectionFailedError",
    "DeviceNotFoundError",
    "DriverError",
    "ParseError",
    "Quality",
    "Reading",
    "TimeSource",
    "Vital",
]
