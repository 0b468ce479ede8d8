"""Golden vectors for the Masimo ASCII 1 line parser and the Contec CMS50D+ packet decoder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers import ParseError, Quality, TimeSource, Vital
from drivers.serial.contec import ContecDecoder, decode_packet
from drivers.serial.masimo import MasimoException, parse_line

RAD8 = (
    b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% "
    b"DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
)
# The examples in MD PnP's poxrad_discrete.h (Radical-7 and Radical-5 serial output).
RADICAL7 = (
    b"12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% SPCO=01.0% SPMET=00.5% "
    b"DESAT=01 PIDELTA=-02 PVI=027 ALARM=0000 EXC=000820\r\n"
)
RADICAL5 = b"09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=20 EXC=800\r\n"


def test_masimo_rad8_line() -> None:
    m = parse_line(RAD8)
    assert m.timestamp == datetime(2016, 2, 22, 22, 47, 45)
    assert (m.spo2_pct, m.pulse_bpm, m.perfusion_index) == (98, 97, 3.60)
    assert (m.alarm, m.exceptions, m.serial_number) == (0, 0x800, "0000056661")
    assert m.quality() == frozenset()


def test_masimo_radical7_line() -> None:
    m = parse_line(RADICAL7)
    assert (m.spo2_pct, m.pulse_bpm, m.perfusion_index) == (98, 240, 20.0)
    assert m.exceptions == MasimoException.MASIMO_SET | MasimoException.SENSOR_OFF
    assert m.quality() == {Quality.PROBE_OFF}


def test_masimo_radical5_line() -> None:
    m = parse_line(RADICAL5)
    assert m.timestamp == datetime(2010, 9, 15, 15, 10, 29)
    assert (m.spo2_pct, m.pulse_bpm, m.perfusion_index, m.alarm, m.exceptions) == (97, 64, 11.82, 0x20, 0x800)
    assert m.serial_number is None


def test_masimo_dashes_are_none_and_no_readings() -> None:
    line = (
        b"02/22/16 22:47:45 SN=0000056661 SPO2=---% BPM=--- PI=--.--% SPCO=--.-% SPMET=--.-% "
        b"DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000021"
    )
    m = parse_line(line)
    assert (m.spo2_pct, m.pulse_bpm, m.perfusion_index) == (None, None, None)
    assert m.exceptions == MasimoException.NO_SENSOR | MasimoException.SENSOR_OFF
    assert m.to_readings("rad8", datetime(2016, 2, 22, 22, 48, tzinfo=UTC)) == []


def test_masimo_to_readings_uses_the_device_clock() -> None:
    received = datetime(2016, 2, 22, 22, 47, 46, tzinfo=UTC)
    spo2, pulse = parse_line(RAD8).to_readings("rad8-1", received)
    assert (spo2.vital, spo2.value, spo2.unit, spo2.perfusion_index) == (Vital.SPO2, 98.0, "%", 3.6)
    assert (pulse.vital, pulse.value, pulse.unit) == (Vital.HEART_RATE, 97.0, "/min")
    assert spo2.measured_at == datetime(2016, 2, 22, 22, 47, 45, tzinfo=UTC)
    assert spo2.time_source is TimeSource.DEVICE


def test_masimo_low_perfusion_and_low_signal_iq() -> None:
    m = parse_line(RAD8.replace(b"EXC=000800", b"EXC=000C04"))
    assert m.quality() == {Quality.LOW_PERFUSION, Quality.MOTION}


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        RAD8.replace(b"SPO2=098%", b"SPO2=098"),  # missing percent sign
        RAD8.replace(b"SPO2=098%", b"SPO2=1O1%"),  # letter O
        RAD8.replace(b"SPO2=098%", b"SPO2=101%"),  # above 100
        RAD8.replace(b"BPM=097 ", b""),  # required field missing
        RAD8.replace(b"ALARM=0000", b"ALARM=----"),  # bit fields are never dashes
        RAD8.replace(b"EXC=000800", b"EXC=00080G"),
        RAD8.replace(b"02/22/16", b"02/30/16"),  # 30 February
        RAD8.replace(b"22:47:45", b"25:47:45"),
        RAD8.replace(b" SN=", b" SN =", 1),
        RAD8.replace(b"PI=03.60%", b"PI=03.60% PI=03.60%"),  # repeated field
        RAD8[:40],  # cut short
        b"x" * 600,
    ],
)
def test_masimo_malformed_lines(line: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_line(line)
    assert line[:8].hex(" ") in str(caught.value)


def test_masimo_unknown_fields_are_ignored() -> None:
    m = parse_line(RAD8.replace(b"EXC=000800", b"EXC=000800 EXC1=000000"))
    assert m.spo2_pct == 98


# --------------------------------------------------------------------------------------------------
# Contec CMS50D+


def test_contec_packet_fields() -> None:
    # byte0: sync | beep | strength 5; pleth 0x40; byte2: pulse bit 7 set, bar 3; pulse low 0x05; SpO2 97
    sample = decode_packet(bytes([0xC5, 0x40, 0x43, 0x05, 0x61]))
    assert (sample.spo2_pct, sample.pulse_bpm, sample.finger_out) == (97, 133, False)
    assert (sample.beep, sample.signal_strength, sample.pleth, sample.bar_graph) == (True, 5, 0x40, 3)
    assert not (sample.searching or sample.probe_error or sample.spo2_dropping)


def test_contec_finger_out_is_returned_not_dropped() -> None:
    [sample] = ContecDecoder().feed(bytes([0x90, 0x00, 0x40, 0x7F, 0x7F]))
    assert sample.finger_out
    assert (sample.spo2_pct, sample.pulse_bpm) == (None, None)  # 127 and 255: no value
    assert sample.quality() == {Quality.PROBE_OFF}
    assert sample.to_readings("cms50", datetime(2026, 1, 1, tzinfo=UTC)) == []


def test_contec_readings_use_gateway_time() -> None:
    received = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    [sample] = ContecDecoder().feed(bytes([0x88, 0x20, 0x05, 0x48, 0x60]))
    spo2, pulse = sample.to_readings("cms50", received)
    assert (spo2.vital, spo2.value, pulse.vital, pulse.value) == (Vital.SPO2, 96.0, Vital.HEART_RATE, 72.0)
    assert spo2.measured_at == received and spo2.time_source is TimeSource.GATEWAY


def test_contec_resynchronises_after_garbage_and_split_reads() -> None:
    packet = bytes([0x88, 0x20, 0x05, 0x48, 0x60])
    decoder = ContecDecoder()
    stream = b"\x01\x02\x7f" + packet + bytes([0x88, 0x20]) + packet + packet
    samples = []
    for i in range(0, len(stream), 3):  # split at every third byte
        samples += decoder.feed(stream[i : i + 3])
    assert len(samples) == 3
    assert all((s.spo2_pct, s.pulse_bpm) == (96, 72) for s in samples)
    assert decoder.discarded_bytes == 3 + 2


def test_contec_empty_feed() -> None:
    assert ContecDecoder().feed(b"") == []
