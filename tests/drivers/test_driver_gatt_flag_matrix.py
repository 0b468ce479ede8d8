"""Every flag combination of every measurement characteristic, built from hex pieces by hand.

Each table lists, in specification order, the optional field groups of one characteristic: the flag bit
that announces the group, its bytes, and what the parser must return for it. For every subset of flags
the test concatenates the pieces, parses, and checks every attribute (present ones exact, absent ones
None). Unit bits are covered by their own tables (value pieces per unit).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from drivers import ParseError
from drivers.ble import gatt

STAMP_HEX = "ea07031e091e00"  # 2026-03-30 09:30:00
STAMP = datetime(2026, 3, 30, 9, 30, 0)


@dataclass(frozen=True)
class Piece:
    bit: int
    hex: str
    expect: Mapping[str, Any]
    absent: Mapping[str, Any]


@dataclass(frozen=True)
class Table:
    name: str
    parse: Callable[[bytes], Any]
    fixed_flags: int
    mandatory_hex: str
    mandatory_expect: Mapping[str, Any]
    pieces: Sequence[Piece]


TABLES = [
    Table(
        "blood pressure mmHg",
        gatt.parse_blood_pressure_measurement,
        0x00,
        "790050005d00",  # 121, 80, 93 mmHg
        {"systolic_mmhg": 121.0, "diastolic_mmhg": 80.0, "mean_arterial_mmhg": 93.0, "unit": "mmHg"},
        [
            Piece(0x02, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x04, "4800", {"pulse_bpm": 72.0}, {"pulse_bpm": None}),
            Piece(0x08, "03", {"user_id": 3}, {"user_id": None}),
            Piece(0x10, "0100", {"status.raw": 1}, {"status": None}),
        ],
    ),
    Table(
        "blood pressure kPa",
        gatt.parse_blood_pressure_measurement,
        0x01,
        "a0f0a0f0a0f0",  # 16.0 kPa each
        {"systolic_mmhg": pytest.approx(16 * 760 / 101.325), "unit": "kPa"},
        [
            Piece(0x02, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x04, "ff07", {"pulse_bpm": None}, {"pulse_bpm": None}),  # pulse present but NaN
            Piece(0x08, "ff", {"user_id": 255}, {"user_id": None}),
            Piece(0x10, "2000", {"status.improper_position": True}, {"status": None}),
        ],
    ),
    Table(
        "heart rate uint8",
        gatt.parse_heart_rate_measurement,
        0x00,
        "48",
        {"bpm": 72},
        [
            Piece(0x02, "", {}, {}),  # "detected" without "supported": contact stays None
            Piece(0x04, "", {}, {}),
            Piece(0x08, "2c01", {"energy_expended_kj": 300}, {"energy_expended_kj": None}),
            Piece(0x10, "00040002", {"rr_intervals_s": [1.0, 0.5]}, {"rr_intervals_s": []}),
        ],
    ),
    Table(
        "heart rate uint16",
        gatt.parse_heart_rate_measurement,
        0x01,
        "2c01",
        {"bpm": 300},
        [
            Piece(0x08, "0000", {"energy_expended_kj": 0}, {"energy_expended_kj": None}),
            Piece(0x10, "ffff", {"rr_intervals_s": [65535 / 1024]}, {"rr_intervals_s": []}),
        ],
    ),
    Table(
        "temperature Celsius",
        gatt.parse_temperature_measurement,
        0x00,
        "7101 00ff".replace(" ", ""),  # 369 x 10^-1 = 36.9
        {"celsius": 36.9},
        [
            Piece(0x02, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x04, "02", {"site": 2}, {"site": None}),
        ],
    ),
    Table(
        "temperature Fahrenheit",
        gatt.parse_temperature_measurement,
        0x01,
        "da0300ff",  # 98.6 F
        {"celsius": pytest.approx(37.0)},
        [
            Piece(0x02, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x04, "06", {"site": 6}, {"site": None}),
        ],
    ),
    Table(
        "PLX spot-check",
        gatt.parse_plx_spot_check,
        0x00,
        "61004800",
        {"spo2_pct": 97.0, "pulse_bpm": 72.0},
        [
            Piece(0x01, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x02, "0040", {"measurement_status": 0x4000}, {"measurement_status": None}),
            Piece(0x04, "000001", {"device_status": 0x010000}, {"device_status": None}),
            Piece(
                0x08, "f3f0", {"pulse_amplitude_index": pytest.approx(24.3)}, {"pulse_amplitude_index": None}
            ),
            Piece(0x10, "", {"device_clock_not_set": True}, {"device_clock_not_set": False}),
        ],
    ),
    Table(
        "PLX continuous",
        gatt.parse_plx_continuous,
        0x00,
        "60004b00",
        {"spo2_pct": 96.0, "pulse_bpm": 75.0},
        [
            Piece(0x01, "5f004c00", {"spo2_fast_pct": 95.0, "pulse_fast_bpm": 76.0}, {"spo2_fast_pct": None}),
            Piece(
                0x02, "61004a00", {"spo2_slow_pct": 97.0, "pulse_slow_bpm": 74.0}, {"pulse_slow_bpm": None}
            ),
            Piece(0x04, "2000", {"measurement_status": 0x20}, {"measurement_status": None}),
            Piece(0x08, "008000", {"device_status": 0x8000}, {"device_status": None}),
            Piece(0x10, "0800", {"pulse_amplitude_index": 8.0}, {"pulse_amplitude_index": None}),
        ],
    ),
    Table(
        "weight SI",
        gatt.parse_weight_measurement,
        0x00,
        "b036",
        {"kg": 70.0},
        [
            Piece(0x02, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x04, "01", {"user_id": 1}, {"user_id": None}),
            Piece(0x08, "e500d606", {"bmi": 22.9, "height_m": 1.75}, {"bmi": None, "height_m": None}),
        ],
    ),
    Table(
        "weight imperial",
        gatt.parse_weight_measurement,
        0x01,
        "5c44",  # 175.00 lb
        {"kg": pytest.approx(79.3786647)},
        [
            Piece(0x02, STAMP_HEX, {"timestamp": STAMP}, {"timestamp": None}),
            Piece(0x04, "02", {"user_id": 2}, {"user_id": None}),
            Piece(0x08, "e500bc02", {"bmi": 22.9, "height_m": pytest.approx(1.778)}, {"height_m": None}),
        ],
    ),
    Table(
        "glucose kg/L",
        gatt.parse_glucose_measurement,
        0x00,
        "2a00" + STAMP_HEX,
        {"sequence_number": 42, "unit": "kg/L"},
        [
            Piece(0x01, "1e00", {"time_offset_min": 30}, {"time_offset_min": None}),
            Piece(
                0x02,
                "6eb021",
                {"concentration_mg_dl": pytest.approx(110.0), "sample_type": 1, "sample_location": 2},
                {"concentration_mg_dl": None, "sample_type": None, "sample_location": None},
            ),
            Piece(0x08, "0004", {"sensor_status": 0x0400}, {"sensor_status": None}),
            Piece(0x10, "", {"context_follows": True}, {"context_follows": False}),
        ],
    ),
    Table(
        "glucose mol/L",
        gatt.parse_glucose_measurement,
        0x04,
        "2b00" + STAMP_HEX,
        {"sequence_number": 43, "unit": "mol/L"},
        [
            Piece(0x01, "f6ff", {"time_offset_min": -10}, {"time_offset_min": None}),
            Piece(
                0x02,
                "3dc011",
                {"concentration_mg_dl": pytest.approx(109.895, abs=1e-3)},
                {"sample_type": None},
            ),
            Piece(0x08, "0100", {"sensor_status": 1}, {"sensor_status": None}),
        ],
    ),
]


def _attribute(result: object, dotted: str) -> object:
    value = result
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


CASES = [
    pytest.param(
        table, subset, id=f"{table.name}-flags-{table.fixed_flags | sum(p.bit for p in subset):#04x}"
    )
    for table in TABLES
    for size in range(len(table.pieces) + 1)
    for subset in itertools.combinations(table.pieces, size)
]


@pytest.mark.parametrize(("table", "subset"), CASES)
def test_every_flag_combination(table: Table, subset: tuple[Piece, ...]) -> None:
    flags = table.fixed_flags | sum(piece.bit for piece in subset)
    body = table.mandatory_hex + "".join(piece.hex for piece in table.pieces if piece in subset)
    frame = bytes([flags]) + bytes.fromhex(body)
    result = table.parse(frame)
    expected: dict[str, Any] = dict(table.mandatory_expect)
    for piece in table.pieces:
        expected.update(piece.expect if piece in subset else piece.absent)
    if table.parse is gatt.parse_glucose_measurement:
        expected["timestamp"] = STAMP + timedelta(minutes=expected["time_offset_min"] or 0)
    if table.parse is gatt.parse_heart_rate_measurement:
        supported, detected = flags & 0x04, flags & 0x02
        expected["sensor_contact"] = None if not supported else bool(detected)
    for name, value in expected.items():
        assert _attribute(result, name) == value, name
    # One byte short of what the flags announce is always a ParseError; one byte extra too.
    with pytest.raises(ParseError):
        table.parse(frame[:-1])
    with pytest.raises(ParseError, match=r"trailing|whole number"):
        table.parse(frame + b"\x00")
