"""Serial port settings per device kind, and finding a port by path or USB VID:PID.

================  ======  =========  ======  ====  ===============================================
kind              baud    data bits  parity  stop  source
================  ======  =========  ======  ====  ===============================================
masimo (ASCII 1)  9600    8          none    1     Masimo Rad-8 operator's manual, serial output
                                                   section; matches masimo-datacapture (9600 8N1,
                                                   no flow control)
contec (CMS50D+)  19200   8          odd     1     atbrask/CMS50Dplus and other public drivers
================  ======  =========  ======  ====  ===============================================

No flow control for either: the Contec stream is binary, so XON/XOFF would swallow data bytes 0x11 and
0x13 (atbrask's driver enables it; we deliberately do not). See docs/drivers.md for the sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from drivers.errors import DeviceNotFoundError


class SerialKind(StrEnum):
    MASIMO = "masimo"
    CONTEC = "contec"


@dataclass(frozen=True, slots=True)
class PortSettings:
    baudrate: int
    bytesize: int
    parity: str
    """pyserial parity letter: "N", "O" or "E"."""
    stopbits: float
    xonxoff: bool = False
    rtscts: bool = False


PORT_SETTINGS: Final[Mapping[SerialKind, PortSettings]] = {
    SerialKind.MASIMO: PortSettings(baudrate=9600, bytesize=8, parity="N", stopbits=1),
    SerialKind.CONTEC: PortSettings(baudrate=19200, bytesize=8, parity="O", stopbits=1),
}


class PortInfo(Protocol):
    """What we use of pyserial's ``ListPortInfo``."""

    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None


@dataclass(frozen=True, slots=True)
class UsbId:
    vid: int
    pid: int
    serial_number: str | None = None

    @classmethod
    def parse(cls, text: str) -> UsbId:
        """``"10c4:ea60"`` or ``"10c4:ea60:SERIAL"`` (hex VID and PID, as ``lsusb`` prints them)."""
        match = re.fullmatch(r"([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})(?::(\S+))?", text.strip())
        if match is None:
            raise ValueError(f"USB id {text!r} is not VID:PID in hex, e.g. 10c4:ea60")
        return cls(int(match[1], 16), int(match[2], 16), match[3])

    def __str__(self) -> str:
        suffix = f":{self.serial_number}" if self.serial_number else ""
        return f"{self.vid:04x}:{self.pid:04x}{suffix}"


def _list_ports() -> Iterable[PortInfo]:
    from serial.tools import list_ports

    ports: Iterable[PortInfo] = list_ports.comports()
    return ports


def find_usb_port(usb_id: UsbId, list_ports: Callable[[], Iterable[PortInfo]] = _list_ports) -> str:
    """The device path of the one serial port with this USB VID:PID (and serial number, if given)."""
    matches = sorted(
        port.device
        for port in list_ports()
        if port.vid == usb_id.vid
        and port.pid == usb_id.pid
        and (usb_id.serial_number is None or port.serial_number == usb_id.serial_number)
    )
    if not matches:
        raise DeviceNotFoundError(f"no serial port with USB id {usb_id} is plugged in")
    if len(matches) > 1:
        raise DeviceNotFoundError(
            f"{len(matches)} serial ports have USB id {usb_id} ({', '.join(matches)}); "
            "add the serial number (VID:PID:SERIAL) or use the port path"
        )
    return matches[0]
