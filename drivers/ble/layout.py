"""Flag-driven GATT characteristic layouts described as data, and the one bounds-checked reader for them.

A Bluetooth SIG health measurement starts with a flags field; each optional field is present when its
flag bit says so, and present fields follow in the order the specification lists them. A
:class:`Layout` is that list: groups of fields, each with the flag condition that makes it present.
:func:`read_layout` walks it over the bytes, checks every length before reading, and raises
:class:`~drivers.errors.ParseError` (never IndexError or struct.error) when the frame is too short for
its flags or has bytes left over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum, auto
from typing import Final

from drivers.ble.ieee11073 import decode_float, decode_sfloat
from drivers.errors import ParseError


class Kind(Enum):
    """Wire types of GATT fields (sizes in :data:`SIZES`)."""

    UINT8 = auto()
    UINT16 = auto()
    UINT24 = auto()
    SINT16 = auto()
    SFLOAT = auto()
    FLOAT = auto()
    DATE_TIME = auto()
    UINT16_LIST = auto()
    """Zero or more uint16 values filling the rest of the frame (heart-rate RR intervals)."""


SIZES: Final = {
    Kind.UINT8: 1,
    Kind.UINT16: 2,
    Kind.UINT24: 3,
    Kind.SINT16: 2,
    Kind.SFLOAT: 2,
    Kind.FLOAT: 4,
    Kind.DATE_TIME: 7,
}


@dataclass(frozen=True, slots=True)
class Group:
    """Fields that are present together: always (``mask == 0``) or when ``flags & mask`` is (not) zero."""

    fields: tuple[tuple[str, Kind], ...]
    mask: int = 0
    when_set: bool = True

    def present(self, flags: int) -> bool:
        return self.mask == 0 or bool(flags & self.mask) == self.when_set


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    groups: tuple[Group, ...]
    flags_kind: Kind = Kind.UINT8


Value = int | float | None | datetime | list[int]


def decode_date_time(raw: bytes, frame: bytes, what: str = "date-time") -> datetime | None:
    """Bluetooth SIG Date Time (year u16, month, day, hours, minutes, seconds), naive device time.

    Year, month or day 0 means "not known" and gives None; any other out-of-range part is a ParseError
    whose message starts with ``what`` (the characteristic and field, e.g. "glucose measurement:
    base_time").
    """
    year = int.from_bytes(raw[0:2], "little")
    month, day, hours, minutes, seconds = raw[2], raw[3], raw[4], raw[5], raw[6]
    if year == 0 or month == 0 or day == 0:
        return None
    if not 1582 <= year <= 9999:
        raise ParseError(f"{what}: year {year} is outside 1582..9999", frame)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ParseError(f"{what}: {hours:02}:{minutes:02}:{seconds:02} is not a time of day", frame)
    try:
        return datetime(year, month, day, hours, minutes, seconds)
    except ValueError:
        raise ParseError(f"{what}: {year:04}-{month:02}-{day:02} is not a date", frame) from None


def read_layout(layout: Layout, data: bytes | bytearray | memoryview) -> tuple[int, dict[str, Value]]:
    """(flags, {field name: value}) for every field present in ``data``; absent fields are left out."""
    frame = bytes(data)
    size = SIZES[layout.flags_kind]
    if len(frame) < size:
        raise ParseError(f"{layout.name}: empty frame, no flags", frame)
    flags = int.from_bytes(frame[:size], "little")
    offset = size
    values: dict[str, Value] = {}
    for group in layout.groups:
        if not group.present(flags):
            continue
        for name, kind in group.fields:
            if kind is Kind.UINT16_LIST:
                rest = frame[offset:]
                if len(rest) == 0 or len(rest) % 2:
                    raise ParseError(
                        f"{layout.name}: {name} needs a non-empty whole number of uint16 values, "
                        f"got {len(rest)} bytes",
                        frame,
                    )
                values[name] = [int.from_bytes(rest[i : i + 2], "little") for i in range(0, len(rest), 2)]
                offset = len(frame)
                continue
            width = SIZES[kind]
            if offset + width > len(frame):
                raise ParseError(
                    f"{layout.name}: frame of {len(frame)} bytes ends inside {name} "
                    f"(needs bytes {offset}..{offset + width - 1}) for flags 0x{flags:02x}",
                    frame,
                )
            raw = frame[offset : offset + width]
            offset += width
            values[name] = _decode(kind, raw, frame, f"{layout.name}: {name}")
    if offset != len(frame):
        raise ParseError(
            f"{layout.name}: {len(frame) - offset} unexpected trailing bytes for flags 0x{flags:02x}", frame
        )
    return flags, values


def _decode(kind: Kind, raw: bytes, frame: bytes, what: str) -> Value:
    if kind is Kind.SFLOAT:
        return decode_sfloat(int.from_bytes(raw, "little"))
    if kind is Kind.FLOAT:
        return decode_float(int.from_bytes(raw, "little"))
    if kind is Kind.DATE_TIME:
        return decode_date_time(raw, frame, what)
    return int.from_bytes(raw, "little", signed=kind is Kind.SINT16)
