"""Encoders for Bluetooth SIG health characteristics, as a peripheral would send them.

Numbers: IEEE 11073-20601 SFLOAT (4-bit exponent, 12-bit mantissa) and FLOAT (8-bit exponent, 24-bit
mantissa), little-endian. A value is encoded with the smallest exponent that represents it exactly
(decimal), or with the exponent given. ``None`` in a measurement field is the NaN special value.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

Special = Literal["nan", "nres", "+inf", "-inf", "reserved"]
SFLOAT_SPECIAL: Final[dict[str, int]] = {
    "nan": 0x07FF,
    "nres": 0x0800,
    "+inf": 0x07FE,
    "-inf": 0x0802,
    "reserved": 0x0801,
}
FLOAT_SPECIAL: Final[dict[str, int]] = {
    "nan": 0x007FFFFF,
    "nres": 0x00800000,
    "+inf": 0x007FFFFE,
    "-inf": 0x00800002,
    "reserved": 0x00800001,
}
SFLOAT_MANTISSA_MAX: Final = 2045
"""Largest mantissa magnitude that is never a special value, whatever the exponent."""
FLOAT_MANTISSA_MAX: Final = 8_388_605

Number = float | int | Decimal


def _mantissa_exponent(
    value: Number, exponent: int | None, mantissa_max: int, exponent_range: range
) -> tuple[int, int]:
    exact = Decimal(str(value)) if not isinstance(value, Decimal) else value
    natural = exact.as_tuple().exponent
    natural = natural if isinstance(natural, int) else 0
    # The exponent the decimal is written with first (138 -> 138e0, 18.9 -> 189e-1), then its neighbours.
    by_distance = sorted(exponent_range, key=lambda e: (abs(e - natural), e))
    candidates = [exponent] if exponent is not None else by_distance
    for candidate in candidates:
        scaled = exact.scaleb(-candidate)
        if scaled == scaled.to_integral_value() and abs(scaled) <= mantissa_max:
            return int(scaled), candidate
    if exponent is not None:
        scaled = exact.scaleb(-exponent).to_integral_value()
        if abs(scaled) <= mantissa_max:
            return int(scaled), exponent
    raise ValueError(f"{value} does not fit the number format")


def sfloat(value: Number | Special | None, exponent: int | None = None) -> bytes:
    """Two bytes, little-endian. ``None`` encodes NaN."""
    if value is None:
        value = "nan"
    if isinstance(value, str):
        return SFLOAT_SPECIAL[value].to_bytes(2, "little")
    mantissa, exp = _mantissa_exponent(value, exponent, SFLOAT_MANTISSA_MAX, range(-8, 8))
    raw = ((exp & 0x0F) << 12) | (mantissa & 0x0FFF)
    return raw.to_bytes(2, "little")


def float32(value: Number | Special | None, exponent: int | None = None) -> bytes:
    """Four bytes, little-endian IEEE 11073 FLOAT. ``None`` encodes NaN."""
    if value is None:
        value = "nan"
    if isinstance(value, str):
        return FLOAT_SPECIAL[value].to_bytes(4, "little")
    mantissa, exp = _mantissa_exponent(value, exponent, FLOAT_MANTISSA_MAX, range(-128, 128))
    return ((mantissa & 0xFFFFFF) | ((exp & 0xFF) << 24)).to_bytes(4, "little")


def date_time(value: datetime | None) -> bytes:
    """Seven bytes of Date Time; ``None`` is the all-unknown value (year, month, day 0)."""
    if value is None:
        return bytes(7)
    return struct.pack("<HBBBBB", value.year, value.month, value.day, value.hour, value.minute, value.second)


def heart_rate_measurement(
    bpm: int,
    *,
    sensor_contact: bool | None = None,
    energy_expended_kj: int | None = None,
    rr_intervals_1024: Sequence[int] = (),
    wide: bool | None = None,
) -> bytes:
    """0x2A37. ``sensor_contact`` None: contact detection not supported. ``wide`` forces uint16 bpm."""
    use_wide = bpm > 255 if wide is None else wide
    flags = 0x01 if use_wide else 0x00
    if sensor_contact is not None:
        flags |= 0x04 | (0x02 if sensor_contact else 0x00)
    body = struct.pack("<H", bpm) if use_wide else struct.pack("<B", bpm)
    if energy_expended_kj is not None:
        flags |= 0x08
        body += struct.pack("<H", energy_expended_kj)
    if rr_intervals_1024:
        flags |= 0x10
        body += b"".join(struct.pack("<H", rr) for rr in rr_intervals_1024)
    return bytes([flags]) + body


def blood_pressure_measurement(
    systolic: Number | None,
    diastolic: Number | None,
    mean_arterial: Number | None,
    *,
    kpa: bool = False,
    timestamp: datetime | Literal["unknown"] | None = None,
    pulse_bpm: Number | Literal["absent"] | None = "absent",
    user_id: int | None = None,
    status: int | None = None,
) -> bytes:
    """0x2A35, pressures in kPa when ``kpa`` else mmHg. ``timestamp="unknown"`` sends year 0."""
    flags = 0x01 if kpa else 0x00
    body = sfloat(systolic) + sfloat(diastolic) + sfloat(mean_arterial)
    if timestamp is not None:
        flags |= 0x02
        body += date_time(None if timestamp == "unknown" else timestamp)
    if pulse_bpm != "absent":
        flags |= 0x04
        body += sfloat(pulse_bpm)
    if user_id is not None:
        flags |= 0x08
        body += bytes([user_id])
    if status is not None:
        flags |= 0x10
        body += struct.pack("<H", status)
    return bytes([flags]) + body


def temperature_measurement(
    value: Number | None,
    *,
    fahrenheit: bool = False,
    timestamp: datetime | None = None,
    site: int | None = None,
) -> bytes:
    """0x2A1C (the Health Thermometer's Temperature Measurement)."""
    flags = (0x01 if fahrenheit else 0x00) | (0x02 if timestamp else 0x00) | (0x04 if site is not None else 0)
    body = float32(value)
    if timestamp is not None:
        body += date_time(timestamp)
    if site is not None:
        body += bytes([site])
    return bytes([flags]) + body


def plx_spot_check(
    spo2: Number | None,
    pulse_bpm: Number | None,
    *,
    timestamp: datetime | None = None,
    measurement_status: int | None = None,
    device_status: int | None = None,
    pulse_amplitude_index: Number | Literal["absent"] | None = "absent",
    clock_not_set: bool = False,
) -> bytes:
    """0x2A5E PLX Spot-Check Measurement."""
    flags = 0x10 if clock_not_set else 0x00
    body = sfloat(spo2) + sfloat(pulse_bpm)
    if timestamp is not None:
        flags |= 0x01
        body += date_time(timestamp)
    if measurement_status is not None:
        flags |= 0x02
        body += struct.pack("<H", measurement_status)
    if device_status is not None:
        flags |= 0x04
        body += (device_status & 0xFFFFFF).to_bytes(3, "little")
    if pulse_amplitude_index != "absent":
        flags |= 0x08
        body += sfloat(pulse_amplitude_index)
    return bytes([flags]) + body


def plx_continuous(
    spo2: Number | None,
    pulse_bpm: Number | None,
    *,
    fast: tuple[Number | None, Number | None] | None = None,
    slow: tuple[Number | None, Number | None] | None = None,
    measurement_status: int | None = None,
    device_status: int | None = None,
    pulse_amplitude_index: Number | Literal["absent"] | None = "absent",
) -> bytes:
    """0x2A5F PLX Continuous Measurement (SpO2PR-Normal, optional -Fast and -Slow)."""
    flags = 0
    body = sfloat(spo2) + sfloat(pulse_bpm)
    if fast is not None:
        flags |= 0x01
        body += sfloat(fast[0]) + sfloat(fast[1])
    if slow is not None:
        flags |= 0x02
        body += sfloat(slow[0]) + sfloat(slow[1])
    if measurement_status is not None:
        flags |= 0x04
        body += struct.pack("<H", measurement_status)
    if device_status is not None:
        flags |= 0x08
        body += (device_status & 0xFFFFFF).to_bytes(3, "little")
    if pulse_amplitude_index != "absent":
        flags |= 0x10
        body += sfloat(pulse_amplitude_index)
    return bytes([flags]) + body


def weight_measurement(
    weight: Number | None,
    *,
    pounds: bool = False,
    timestamp: datetime | None = None,
    user_id: int | None = None,
    bmi: Number | None = None,
    height: Number | None = None,
) -> bytes:
    """0x2A9D. ``weight`` in kg (0.005 kg steps) or lb (0.01 lb steps); None = measurement unsuccessful.
    ``height`` in metres (0.001 m steps) or inches (0.1 in steps); ``bmi`` in 0.1 steps; give both or
    neither."""
    flags = 0x01 if pounds else 0x00
    if weight is None:
        raw = 0xFFFF
    else:
        raw = int(
            (Decimal(str(weight)) / (Decimal("0.01") if pounds else Decimal("0.005"))).to_integral_value()
        )
    body = struct.pack("<H", raw)
    if timestamp is not None:
        flags |= 0x02
        body += date_time(timestamp)
    if user_id is not None:
        flags |= 0x04
        body += bytes([user_id])
    if bmi is not None and height is not None:
        flags |= 0x08
        height_step = Decimal("0.1") if pounds else Decimal("0.001")
        body += struct.pack(
            "<HH",
            int((Decimal(str(bmi)) * 10).to_integral_value()),
            int((Decimal(str(height)) / height_step).to_integral_value()),
        )
    return bytes([flags]) + body


def glucose_measurement(
    sequence_number: int,
    base_time: datetime | None,
    *,
    time_offset_min: int | None = None,
    concentration: Number | Literal["absent"] | None = "absent",
    molar: bool = False,
    sample_type: int = 1,
    sample_location: int = 1,
    sensor_status: int | None = None,
    context_follows: bool = False,
) -> bytes:
    """0x2A18. ``concentration`` in kg/L, or mol/L when ``molar``."""
    flags = (0x04 if molar else 0x00) | (0x10 if context_follows else 0x00)
    body = struct.pack("<H", sequence_number) + date_time(base_time)
    if time_offset_min is not None:
        flags |= 0x01
        body += struct.pack("<h", time_offset_min)
    if concentration != "absent":
        flags |= 0x02
        body += sfloat(concentration) + bytes([(sample_location << 4) | (sample_type & 0x0F)])
    if sensor_status is not None:
        flags |= 0x08
        body += struct.pack("<H", sensor_status)
    return bytes([flags]) + body


RACP_RESPONSE_CODE: Final = 0x06
RACP_SUCCESS: Final = 0x01
RACP_OPCODE_NOT_SUPPORTED: Final = 0x02
RACP_OPERATOR_NOT_SUPPORTED: Final = 0x04
RACP_NO_RECORDS_FOUND: Final = 0x06


def racp_response(request_opcode: int, response_code: int) -> bytes:
    """0x2A52 Record Access Control Point indication: Response Code, operator Null, the request's op code
    and the result (``RACP_SUCCESS``, ``RACP_NO_RECORDS_FOUND`` ...)."""
    return bytes([RACP_RESPONSE_CODE, 0x00, request_opcode & 0xFF, response_code])


def battery_level(percent: int) -> bytes:
    return bytes([percent])
