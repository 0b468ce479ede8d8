"""Regressions found by the fuzzer (bench/fuzz, issue 9): each input here once escaped as the wrong error
or gave a different answer depending on how the stream was read."""

from __future__ import annotations

from datetime import datetime

import pytest

from drivers import ParseError
from drivers.ble import gatt
from drivers.serial import masimo
from drivers.serial.framing import LineFramer
from simulators.devices import gatt_encoders as enc
from simulators.devices import serial_encoders


def test_glucose_base_time_plus_offset_beyond_year_9999_is_a_parse_error() -> None:
    frame = enc.glucose_measurement(
        1, datetime(9999, 12, 31, 23, 0), time_offset_min=32767, concentration=0.0001
    )
    with pytest.raises(
        ParseError, match=r"glucose measurement: base time 9999-12-31 23:00 plus 32767 minutes"
    ):
        gatt.parse_glucose_measurement(frame)
    # The same base time with an offset that stays inside the calendar still parses.
    assert gatt.parse_glucose_measurement(
        enc.glucose_measurement(1, datetime(9999, 12, 31, 23, 0), time_offset_min=59, concentration=0.0001)
    ).timestamp == datetime(9999, 12, 31, 23, 59)


@pytest.mark.parametrize(
    ("parser", "frame", "names"),
    [
        (
            gatt.parse_blood_pressure_measurement,
            "0200000000000000010101000000",
            "blood pressure measurement: timestamp",
        ),
        (
            gatt.parse_temperature_measurement,
            "020000000000010101000000",
            "temperature measurement: timestamp",
        ),
        (gatt.parse_weight_measurement, "02000000010101000000", "weight measurement: timestamp"),
        (gatt.parse_glucose_measurement, "00000000010101000000", "glucose measurement: base_time"),
        (gatt.parse_plx_spot_check, "0100ff07ff07d0070101000000", "PLX spot-check measurement: timestamp"),
    ],
)
def test_a_bad_date_time_names_the_characteristic_and_field(parser, frame: str, names: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as caught:
        parser(bytes.fromhex(frame))
    assert str(caught.value).startswith(names + ": year ")


@pytest.mark.parametrize("tail", [b"\r\n", b"\r\r\n"])
def test_a_full_length_line_is_kept_wherever_its_crlf_is_split(tail: bytes) -> None:
    line = b"A" * 512
    for cut in range(len(line), len(line) + len(tail)):
        stream = line + tail
        framer = LineFramer(512)
        lines = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert lines == [line], cut
        assert framer.overlong_lines == 0
    too_long = LineFramer(512)
    assert too_long.feed(b"A" * 513 + b"\r") == [] and too_long.feed(b"\n" + b"B\n") == [b"B"]
    assert too_long.overlong_lines == 1


def test_a_flood_of_carriage_returns_is_bounded() -> None:
    framer = LineFramer(512)
    for _ in range(10):
        assert framer.feed(b"\r" * 300) == []
        assert len(framer._pending) <= 1024
    real = serial_encoders.masimo_line(datetime(2026, 1, 1), spo2=97, bpm=70, pi=1.0)
    [line] = framer.feed(b"\n" + real)
    assert masimo.parse_line(line).spo2_pct == 97
