"""Exceptions raised by the device drivers, all in one tree.

::

    DriverError                      base of everything the drivers raise on purpose
     ├── ParseError (also ValueError) a frame or line that does not follow its format;
     │                                 .frame holds the bytes, the message shows them as hex
     ├── AdapterUnavailableError       no Bluetooth adapter (or no BlueZ / D-Bus) on this machine
     ├── DeviceNotFoundError           no device matched the configured address, service or VID:PID
     └── ConnectionFailedError         the device was found but connecting or subscribing failed

Parsers raise only :class:`ParseError`; transports catch it, log the frame at DEBUG, count it and keep
reading. Errors of the libraries underneath (bleak, pyserial, OSError) are translated at the transport
boundary (``raise DeviceNotFoundError(...) from exc``) or handled there by reconnecting.
"""

from __future__ import annotations

from typing import Final

_MAX_HEX_BYTES: Final = 128


class DriverError(Exception):
    """Base class of the drivers' own exceptions."""


class ParseError(DriverError, ValueError):
    """A frame does not follow its format. ``frame`` is the offending input, ``reason`` the problem."""

    def __init__(self, reason: str, frame: bytes | bytearray | memoryview) -> None:
        self.reason = reason
        self.frame = bytes(frame)
        shown = self.frame[:_MAX_HEX_BYTES].hex(" ")
        if len(self.frame) > _MAX_HEX_BYTES:
            shown += f" … ({len(self.frame)} bytes)"
        super().__init__(f"{reason}; frame: [{shown}]")


class AdapterUnavailableError(DriverError):
    """Bluetooth cannot be used on this machine (no adapter, BlueZ not running, no system D-Bus)."""


class DeviceNotFoundError(DriverError):
    """No device matched what the configuration asked for."""


class ConnectionFailedError(DriverError):
    """The device was found but connecting to it, or subscribing to its characteristics, failed."""
