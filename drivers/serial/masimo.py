"""Masimo Radical-7 / Rad-8 / Rad-97 "ASCII 1" serial output: one text line per second.

Example (Rad-8)::

    02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=--
    PIDELTA=+-- ALARM=0000 EXC=000800

(one line, CR LF terminated). The line starts with the device's date (MM/DD/YY) and time; then
``KEY=VALUE`` fields separated by spaces. A value made of dashes means "no value" and parses to None.
SPO2, BPM, ALARM and EXC must be present; PI is optional (older Radical-5 lines have it, some firmware
omit it); other known fields are checked for form but not returned; fields this parser does not know
(for example EXC1 on some Rad-8 firmware, PVI on the Radical-7) are ignored so long as they look like
``KEY=VALUE``. ALARM and EXC are hexadecimal bit fields (see :data:`EXCEPTION_QUALITY`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import IntFlag
from typing import Final

from drivers.errors import ParseError
from drivers.reading import Quality, Reading, Vital, measurement_time, reading

MAX_LINE_BYTES: Final = 512


class MasimoException(IntFlag):
    """Bits of the EXC field (Masimo Radical serial interface)."""

    NO_SENSOR = 0x000001
    DEFECTIVE_SENSOR = 0x000002
    LOW_PERFUSION = 0x000004
    PULSE_SEARCH = 0x000008
    INTERFERENCE = 0x000010
    SENSOR_OFF = 0x000020
    AMBIENT_LIGHT = 0x000040
    UNRECOGNIZED_SENSOR = 0x000080
    INCOMPATIBLE_SENSOR = 0x000100
    LOW_SIGNAL_IQ = 0x000400
    MASIMO_SET = 0x000800
    """Informational: a Masimo SET sensor is in use (set on normal readings)."""
    NO_CABLE = 0x001000
    CABLE_LIFE_EXPIRED = 0x002000
    INCOMPATIBLE_CABLE = 0x004000
    UNRECOGNIZED_CABLE = 0x008000
    DEFECTIVE_CABLE = 0x010000
    SENSOR_CALIBRATING = 0x020000
    SENSOR_LIFE_EXPIRED = 0x040000
    EMITTER_TEMPERATURE_OUT_OF_RANGE = 0x080000
    SENSOR_CURRENT_LIMIT_EXCEEDED = 0x100000


PROBE_OFF_EXCEPTIONS: Final = (
    MasimoException.NO_SENSOR | MasimoException.SENSOR_OFF | MasimoException.NO_CABLE
)

EXCEPTION_QUALITY: Final[Mapping[MasimoException, Quality]] = {
    MasimoException.NO_SENSOR: Quality.PROBE_OFF,
    MasimoException.SENSOR_OFF: Quality.PROBE_OFF,
    MasimoException.NO_CABLE: Quality.PROBE_OFF,
    MasimoException.LOW_PERFUSION: Quality.LOW_PERFUSION,
    MasimoException.INTERFERENCE: Quality.MOTION,
    MasimoException.LOW_SIGNAL_IQ: Quality.MOTION,
    MasimoException.AMBIENT_LIGHT: Quality.IMPLAUSIBLE,
    MasimoException.PULSE_SEARCH: Quality.IMPLAUSIBLE,
    MasimoException.SENSOR_CALIBRATING: Quality.IMPLAUSIBLE,
    MasimoException.DEFECTIVE_SENSOR: Quality.DEVICE_ERROR,
    MasimoException.UNRECOGNIZED_SENSOR: Quality.DEVICE_ERROR,
    MasimoException.INCOMPATIBLE_SENSOR: Quality.DEVICE_ERROR,
    MasimoException.CABLE_LIFE_EXPIRED: Quality.DEVICE_ERROR,
    MasimoException.INCOMPATIBLE_CABLE: Quality.DEVICE_ERROR,
    MasimoException.UNRECOGNIZED_CABLE: Quality.DEVICE_ERROR,
    MasimoException.DEFECTIVE_CABLE: Quality.DEVICE_ERROR,
    MasimoException.SENSOR_LIFE_EXPIRED: Quality.DEVICE_ERROR,
    MasimoException.EMITTER_TEMPERATURE_OUT_OF_RANGE: Quality.DEVICE_ERROR,
    MasimoException.SENSOR_CURRENT_LIMIT_EXCEEDED: Quality.DEVICE_ERROR,
}
"""How the EXC bits the wire contract can express map to quality flags. Interference and low signal IQ
(artefact, most often motion) map to ``motion``: the contract has no separate artefact flag."""


@dataclass(frozen=True, slots=True)
class MasimoReading:
    timestamp: datetime
    """The device's wall-clock time (naive; the Radical has no zone setting)."""
    spo2_pct: int | None
    pulse_bpm: int | None
    perfusion_index: float | None
    alarm: int
    exceptions: int
    serial_number: str | None = None

    def quality(self) -> frozenset[str]:
        return frozenset(q for bit, q in EXCEPTION_QUALITY.items() if self.exceptions & bit)

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        at = measurement_time(self.timestamp, received_at, device_tz)
        quality = self.quality()
        pi = self.perfusion_index
        return reading(
            Vital.SPO2,
            self.spo2_pct,
            measured_at=at,
            device_id=device_id,
            quality=quality,
            perfusion_index=pi,
        ) + reading(
            Vital.HEART_RATE,
            self.pulse_bpm,
            measured_at=at,
            device_id=device_id,
            quality=quality,
            perfusion_index=pi,
        )


_HEAD: Final = re.compile(rb"(\d\d)/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)")
_FIELD: Final = re.compile(rb"([A-Z][A-Z0-9]*)=(\S+)")
_ABSENT: Final = re.compile(rb"[+-]?-+(?:\.-+)?%?")

# Known fields: the pattern a present value must match (group 1 is the number).
_VALUE_PATTERNS: Final[Mapping[bytes, re.Pattern[bytes]]] = {
    b"SN": re.compile(rb"([0-9A-Za-z]{1,16})"),
    b"SPO2": re.compile(rb"(\d{1,3})%"),
    b"BPM": re.compile(rb"(\d{1,3})"),
    b"PI": re.compile(rb"(\d{1,3}\.\d{1,3})%"),
    b"SPCO": re.compile(rb"(\d{1,3}\.\d)%"),
    b"SPMET": re.compile(rb"(\d{1,3}\.\d)%"),
    b"DESAT": re.compile(rb"(\d{1,3})"),
    b"PIDELTA": re.compile(rb"([+-]?\d{1,3})"),
    b"PVI": re.compile(rb"(\d{1,3})"),
    b"ALARM": re.compile(rb"([0-9A-Fa-f]{1,8})"),
    b"EXC": re.compile(rb"([0-9A-Fa-f]{1,8})"),
}
_REQUIRED: Final = (b"SPO2", b"BPM", b"ALARM", b"EXC")
_NEVER_ABSENT: Final = frozenset({b"ALARM", b"EXC", b"SN"})


def parse_line(line: bytes | bytearray | memoryview) -> MasimoReading:
    """One ASCII 1 line (with or without its CR LF) -> MasimoReading, or ParseError."""
    frame = bytes(line)
    if len(frame) > MAX_LINE_BYTES:
        raise ParseError(f"Masimo line longer than {MAX_LINE_BYTES} bytes", frame)
    text = frame.strip(b"\r\n\x00 ")
    head = _HEAD.match(text)
    if head is None:
        raise ParseError("Masimo line does not start with 'MM/DD/YY HH:MM:SS'", frame)
    month, day, year, hour, minute, second = (int(part) for part in head.groups())
    try:
        timestamp = datetime(2000 + year, month, day, hour, minute, second)
    except ValueError:
        raise ParseError("Masimo line has an impossible date or time", frame) from None

    found: dict[bytes, bytes | None] = {}
    rest = text[head.end() :]
    if rest and not rest.startswith(b" "):
        raise ParseError("Masimo line: no space after the time", frame)
    for token in rest.split():
        match = _FIELD.fullmatch(token)
        if match is None:
            raise ParseError(f"Masimo line: {token!r} is not KEY=VALUE", frame)
        key, value = match.groups()
        if key in found:
            raise ParseError(f"Masimo line: field {key.decode()} repeated", frame)
        pattern = _VALUE_PATTERNS.get(key)
        if pattern is None:
            found[key] = value  # a field this parser does not know: ignored
            continue
        if key not in _NEVER_ABSENT and _ABSENT.fullmatch(value):
            found[key] = None
            continue
        number = pattern.fullmatch(value)
        if number is None:
            raise ParseError(
                f"Masimo line: {key.decode()}={value.decode(errors='replace')} is malformed", frame
            )
        found[key] = number.group(1)
    missing = [key.decode() for key in _REQUIRED if key not in found]
    if missing:
        raise ParseError(f"Masimo line lacks {', '.join(missing)}", frame)

    spo2 = _optional_int(found.get(b"SPO2"))
    if spo2 is not None and spo2 > 100:
        raise ParseError(f"Masimo line: SPO2 {spo2} % is above 100", frame)
    pi_raw = found.get(b"PI")
    serial = found.get(b"SN")
    return MasimoReading(
        timestamp=timestamp,
        spo2_pct=spo2,
        pulse_bpm=_optional_int(found.get(b"BPM")),
        perfusion_index=None if pi_raw is None else float(pi_raw),
        alarm=int(found[b"ALARM"] or b"0", 16),
        exceptions=int(found[b"EXC"] or b"0", 16),
        serial_number=None if serial is None else serial.decode(),
    )


def _optional_int(value: bytes | None) -> int | None:
    return None if value is None else int(value)
