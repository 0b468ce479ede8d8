"""Golden vectors for the GATT health parsers: hex literal -> exact values.

Vectors marked "Nordic" are the frames in Nordic Semiconductor's Android-BLE-Common-Library unit tests
(ble-common/src/test/java/no/nordicsemi/android/ble/common/callback/...), with the values those tests
assert; the others are built by hand from the Bluetooth SIG specifications.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from drivers import ParseError, Quality, TimeSource, Vital
from drivers.ble.gatt import (
    MMHG_PER_KPA,
    GlucoseSensorStatus,
    PlxDeviceStatus,
    PlxMeasurementStatus,
    PulseRateRange,
    parse_battery_level,
    parse_blood_pressure_measurement,
    parse_glucose_measurement,
    parse_heart_rate_measurement,
    parse_plx_continuous,
    parse_plx_spot_check,
    parse_temperature_measurement,
    parse_weight_measurement,
)
from drivers.ble.ieee11073 import decode_float, decode_sfloat

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

# --------------------------------------------------------------------------------------------------
# IEEE 11073 numbers


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0x0072, 114.0),
        (0xF0BD, 18.9),  # mantissa 189, exponent -1
        (0xFFFF, -0.1),  # mantissa -1, exponent -1
        (0x0800 | 0x1000, -20480.0),  # mantissa -2048, exponent 1: not special (exponent is not 0)
        (0x07FF, None),  # NaN
        (0x0800, None),  # NRes
        (0x07FE, None),  # +INF
        (0x0802, None),  # -INF
        (0x0801, None),  # reserved
        (0x27FF, 204700.0),  # exponent 2 makes 0x7FF an ordinary mantissa
    ],
)
def test_sfloat(raw: int, value: float | None) -> None:
    assert decode_sfloat(raw) == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0xFE000EB0, 37.6),  # mantissa 3760, exponent -2
        (0xFF000175, 37.3),
        (0x00FFFFFF, -1.0),
        (0x007FFFFF, None),
        (0x00800000, None),
        (0x007FFFFE, None),
        (0x00800002, None),
        (0x00800001, None),
    ],
)
def test_float(raw: int, value: float | None) -> None:
    assert decode_float(raw) == value


# --------------------------------------------------------------------------------------------------
# Blood pressure (0x2A35)


def test_nordic_blood_pressure_full() -> None:
    m = parse_blood_pressure_measurement(bytes.fromhex("1e8a00580078000000041114293b3c00012700"))
    assert (m.systolic_mmhg, m.diastolic_mmhg, m.mean_arterial_mmhg) == (138.0, 88.0, 120.0)
    assert m.unit == "mmHg"
    assert m.pulse_bpm == 60.0
    assert m.user_id == 1
    assert m.timestamp is None  # year 0: date unknown, although month/day/time are sent
    assert m.status is not None
    assert m.status.raw == 0b100111
    assert m.status.body_movement and m.status.cuff_too_loose and m.status.irregular_pulse
    assert m.status.pulse_rate_range is PulseRateRange.WITHIN_RANGE
    assert m.status.improper_position


def test_nordic_blood_pressure_some_in_kpa() -> None:
    m = parse_blood_pressure_measurement(bytes.fromhex("15bdf00b009ff03c001200"))
    assert m.unit == "kPa"
    assert m.systolic_mmhg == pytest.approx(18.9 * MMHG_PER_KPA)
    assert m.systolic_mmhg == pytest.approx(141.76, abs=0.01)
    assert m.diastolic_mmhg == pytest.approx(11.0 * MMHG_PER_KPA)
    assert m.mean_arterial_mmhg == pytest.approx(15.9 * MMHG_PER_KPA)
    assert m.pulse_bpm == 60.0
    assert m.user_id is None and m.timestamp is None
    assert m.status is not None
    assert not m.status.body_movement and m.status.cuff_too_loose and not m.status.irregular_pulse
    assert m.status.pulse_rate_range is PulseRateRange.BELOW_LOWER_LIMIT
    assert not m.status.improper_position


def test_nordic_blood_pressure_minimal() -> None:
    m = parse_blood_pressure_measurement(bytes.fromhex("00bdf00b009ff0"))
    assert m.unit == "mmHg"
    assert m.systolic_mmhg == pytest.approx(18.9)
    assert m.diastolic_mmhg == 11.0
    assert m.mean_arterial_mmhg == pytest.approx(15.9)
    assert (m.pulse_bpm, m.user_id, m.status, m.timestamp) == (None, None, None, None)


@pytest.mark.parametrize("frame", ["010203040506", "03020304050607"])
def test_nordic_blood_pressure_invalid(frame: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_blood_pressure_measurement(bytes.fromhex(frame))
    assert " ".join(frame[i : i + 2] for i in range(0, len(frame), 2)) in str(caught.value)


def test_blood_pressure_with_timestamp_and_nan_mean() -> None:
    # flags 0x06: timestamp + pulse; MAP is NaN (0x07FF) as many cuffs send it
    m = parse_blood_pressure_measurement(bytes.fromhex("0679005000ff07ea07031e091e004800"))
    assert (m.systolic_mmhg, m.diastolic_mmhg, m.mean_arterial_mmhg) == (121.0, 80.0, None)
    assert m.timestamp == datetime(2026, 3, 30, 9, 30, 0)
    assert m.pulse_bpm == 72.0
    readings = m.to_readings("cuff-1", datetime(2026, 3, 30, 9, 31, tzinfo=UTC))
    assert [(r.vital, r.value, r.unit) for r in readings] == [
        (Vital.SYSTOLIC_BP, 121.0, "mm[Hg]"),
        (Vital.DIASTOLIC_BP, 80.0, "mm[Hg]"),
        (Vital.HEART_RATE, 72.0, "/min"),
    ]
    assert {r.time_source for r in readings} == {TimeSource.DEVICE}
    assert {r.measured_at for r in readings} == {datetime(2026, 3, 30, 9, 30, tzinfo=UTC)}


def test_blood_pressure_device_time_zone_and_clock_ahead() -> None:
    m = parse_blood_pressure_measurement(bytes.fromhex("0279005000ff07ea07031e091e00"))
    plus_two = timezone(timedelta(hours=2))
    received = datetime(2026, 3, 30, 7, 31, tzinfo=UTC)
    readings = m.to_readings("cuff-1", received, device_tz=plus_two)
    assert readings[0].measured_at == datetime(2026, 3, 30, 7, 30, tzinfo=UTC)
    assert readings[0].time_source is TimeSource.DEVICE
    # The same frame read as UTC is two hours in the future: the device clock is not trusted.
    ahead = m.to_readings("cuff-1", received)
    assert ahead[0].measured_at == received and ahead[0].time_source is TimeSource.GATEWAY


def test_blood_pressure_status_maps_to_quality() -> None:
    m = parse_blood_pressure_measurement(bytes.fromhex("10790050005d002300"))
    flags = m.to_readings("cuff", RECEIVED)[0].quality
    assert flags == {Quality.MOTION, Quality.NO_SENSOR_CONTACT, Quality.IMPLAUSIBLE}


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ("02790050005d00ea070d1e091e00", "not a date"),  # month 13
        ("02790050005d00ea07021e091e00", "not a date"),  # 30 February
        ("02790050005d00ea07031e181e00", "time of day"),  # 24:30
        ("00790050005d0000", "trailing"),
    ],
)
def test_blood_pressure_bad_fields(frame: str, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        parse_blood_pressure_measurement(bytes.fromhex(frame))


# --------------------------------------------------------------------------------------------------
# Heart rate (0x2A37)


def test_nordic_heart_rate_simple() -> None:
    m = parse_heart_rate_measurement(bytes([0, 85]))
    assert (m.bpm, m.sensor_contact, m.energy_expended_kj, m.rr_intervals_s) == (85, None, None, [])


def test_nordic_heart_rate_no_contact() -> None:
    m = parse_heart_rate_measurement(bytes([0x04, 0xFF]))
    assert (m.bpm, m.sensor_contact) == (255, False)
    [reading] = m.to_readings("hr", RECEIVED)
    assert reading.quality == {Quality.NO_SENSOR_CONTACT}
    assert reading.time_source is TimeSource.GATEWAY and reading.measured_at == RECEIVED


def test_heart_rate_zero_is_flagged_implausible() -> None:
    [reading] = parse_heart_rate_measurement(bytes([0x00, 0])).to_readings("hr", RECEIVED)
    assert (reading.value, reading.quality) == (0.0, {Quality.IMPLAUSIBLE})


def test_nordic_heart_rate_uint8() -> None:
    m = parse_heart_rate_measurement(bytes([0b11110, 85, 50, 0, 33, 0]))
    assert (m.bpm, m.sensor_contact, m.energy_expended_kj) == (85, True, 50)
    assert m.rr_intervals_s == [33 / 1024]


def test_nordic_heart_rate_uint16() -> None:
    m = parse_heart_rate_measurement(bytes([0b11111, 1, 1, 50, 1, 1, 0, 2, 1, 0xFF, 0xFF]))
    assert (m.bpm, m.sensor_contact, m.energy_expended_kj) == (257, True, 306)
    assert m.rr_intervals_s == [1 / 1024, 258 / 1024, 65535 / 1024]


def test_nordic_heart_rate_invalid() -> None:
    # RR-interval flag set but no interval follows
    with pytest.raises(ParseError):
        parse_heart_rate_measurement(bytes([0b10111, 1, 1]))


@pytest.mark.parametrize("frame", [b"", b"\x01\x50", b"\x10\x50\x00\x04\x01"])
def test_heart_rate_malformed(frame: bytes) -> None:
    with pytest.raises(ParseError):
        parse_heart_rate_measurement(frame)


def test_heart_rate_odd_rr_byte() -> None:
    with pytest.raises(ParseError, match=r"RR|rr_intervals"):
        parse_heart_rate_measurement(bytes([0x10, 60, 0x00, 0x04, 0x01]))


def test_heart_rate_contact_supported_bit_only() -> None:
    assert parse_heart_rate_measurement(bytes([0x02, 60])).sensor_contact is None  # detected without support
    assert parse_heart_rate_measurement(bytes([0x06, 60])).sensor_contact is True


# --------------------------------------------------------------------------------------------------
# Temperature (0x2A1C)


def test_nordic_temperature() -> None:
    m = parse_temperature_measurement(bytes.fromhex("06b00e00fedc070c050b321b04"))
    assert m.celsius == 37.6
    assert m.timestamp == datetime(2012, 12, 5, 11, 50, 27)
    assert m.site == 4 and m.site_name == "finger"


def test_nordic_temperature_invalid() -> None:
    with pytest.raises(ParseError):
        parse_temperature_measurement(bytes.fromhex("06b00e00fedc070c050b321b"))


def test_temperature_fahrenheit_converted() -> None:
    m = parse_temperature_measurement(bytes.fromhex("01d50300ff"))  # 98.1 F
    assert m.celsius == pytest.approx((98.1 - 32) * 5 / 9)
    assert (m.timestamp, m.site) == (None, None)
    [reading] = m.to_readings("thermo", RECEIVED)
    assert reading.vital is Vital.BODY_TEMPERATURE and reading.unit == "Cel"
    assert reading.value == pytest.approx(36.7222, abs=1e-4)


def test_temperature_nan_gives_no_reading() -> None:
    m = parse_temperature_measurement(bytes.fromhex("00ffff7f00"))
    assert m.celsius is None
    assert m.to_readings("thermo", RECEIVED) == []


# --------------------------------------------------------------------------------------------------
# Pulse oximetry (0x2A5E, 0x2A5F)


def test_plx_spot_check_all_fields() -> None:
    frame = bytes.fromhex("0f61004800ea07031e091e0080002008001ef0")
    m = parse_plx_spot_check(frame)
    assert (m.spo2_pct, m.pulse_bpm) == (97.0, 72.0)
    assert m.timestamp == datetime(2026, 3, 30, 9, 30)
    assert m.measurement_status == PlxMeasurementStatus.VALIDATED_DATA
    assert m.device_status == PlxDeviceStatus.LOW_PERFUSION | PlxDeviceStatus.SENSOR_UNCONNECTED_TO_USER
    assert m.pulse_amplitude_index == 3.0
    assert not m.device_clock_not_set
    readings = m.to_readings("ox", datetime(2026, 3, 30, 9, 30, 5, tzinfo=UTC))
    assert [(r.vital, r.value, r.perfusion_index) for r in readings] == [
        (Vital.SPO2, 97.0, 3.0),
        (Vital.HEART_RATE, 72.0, 3.0),
    ]
    assert readings[0].quality == {Quality.LOW_PERFUSION, Quality.PROBE_OFF}
    assert readings[0].time_source is TimeSource.DEVICE


def test_plx_spot_check_clock_not_set_uses_gateway_time() -> None:
    m = parse_plx_spot_check(bytes.fromhex("1161004800d0070101000000"))
    assert m.device_clock_not_set and m.timestamp == datetime(2000, 1, 1)
    readings = m.to_readings("ox", RECEIVED)
    assert {(r.measured_at, r.time_source) for r in readings} == {(RECEIVED, TimeSource.GATEWAY)}


def test_plx_spot_check_minimal_and_short() -> None:
    m = parse_plx_spot_check(bytes.fromhex("006200ff07"))
    assert (m.spo2_pct, m.pulse_bpm, m.measurement_status, m.device_status) == (98.0, None, None, None)
    with pytest.raises(ParseError):
        parse_plx_spot_check(bytes.fromhex("04620048002000"))


def test_plx_continuous_all_fields() -> None:
    frame = bytes.fromhex("1f60004b005f004c0061004a0000800000000500")
    m = parse_plx_continuous(frame)
    assert (m.spo2_pct, m.pulse_bpm) == (96.0, 75.0)
    assert (m.spo2_fast_pct, m.pulse_fast_bpm, m.spo2_slow_pct, m.pulse_slow_bpm) == (95.0, 76.0, 97.0, 74.0)
    assert m.measurement_status == PlxMeasurementStatus.INVALID_MEASUREMENT
    assert m.device_status == PlxDeviceStatus(0)
    assert m.pulse_amplitude_index == 5.0
    readings = m.to_readings("ox", RECEIVED)
    assert readings[0].quality == {Quality.IMPLAUSIBLE}
    assert readings[0].time_source is TimeSource.GATEWAY


def test_plx_continuous_minimal() -> None:
    m = parse_plx_continuous(bytes.fromhex("0060004b00"))
    assert (m.spo2_pct, m.pulse_bpm, m.spo2_fast_pct, m.pulse_amplitude_index) == (96.0, 75.0, None, None)
    with pytest.raises(ParseError):
        parse_plx_continuous(bytes.fromhex("0160004b005f00"))


# --------------------------------------------------------------------------------------------------
# Weight (0x2A9D)


def test_weight_si_with_everything() -> None:
    # 0x36B0 * 0.005 kg = 70.0 kg; BMI 22.9; height 1.750 m
    m = parse_weight_measurement(bytes.fromhex("0eb036ea07031e091e0002e500d606"))
    assert m.kg == 70.0
    assert m.timestamp == datetime(2026, 3, 30, 9, 30)
    assert (m.user_id, m.bmi, m.height_m) == (2, 22.9, 1.75)


def test_weight_imperial_converted() -> None:
    m = parse_weight_measurement(bytes.fromhex("095c44e500bc02"))  # 175.00 lb, 70.0 in
    assert m.kg == pytest.approx(175 * 0.45359237)
    assert m.height_m == pytest.approx(70 * 0.0254)


def test_weight_unsuccessful() -> None:
    m = parse_weight_measurement(bytes.fromhex("00ffff"))
    assert m.kg is None
    assert m.to_readings("scale", RECEIVED) == []


def test_weight_short() -> None:
    with pytest.raises(ParseError):
        parse_weight_measurement(bytes.fromhex("08b036e500"))


# --------------------------------------------------------------------------------------------------
# Glucose (0x2A18)


def test_nordic_glucose() -> None:
    m = parse_glucose_measurement(
        bytes([0b011011, 1, 0, 0xE3, 0x07, 2, 27, 11, 10, 30, 0xFB, 0xFF, 30, 0, 0x12, 0b101, 0b1])
    )
    assert m.sequence_number == 1
    assert m.time_offset_min == -5
    assert m.timestamp == datetime(2019, 2, 27, 11, 5, 30)
    assert m.unit == "kg/L"
    assert m.concentration_mg_dl == 30 * 100_000  # the Nordic test's value: 30 kg/L
    assert (m.sample_type, m.sample_location) == (2, 1)  # capillary plasma, finger
    assert m.sensor_status is not None and m.sensor_status.value == 261
    assert GlucoseSensorStatus.DEVICE_BATTERY_LOW in m.sensor_status
    assert GlucoseSensorStatus.GENERAL_DEVICE_FAULT not in m.sensor_status
    assert m.context_follows


def test_nordic_glucose_invalid_missing_time_offset() -> None:
    with pytest.raises(ParseError):
        parse_glucose_measurement(
            bytes([0b011011, 0, 0, 0xE2, 0x07, 4, 26, 11, 9, 30, 30, 0, 0x12, 0b101, 0b1])
        )


def test_glucose_mg_dl_and_mmol() -> None:
    # 0xB06E: mantissa 110, exponent -5 kg/L = 110 mg/dL
    m = parse_glucose_measurement(bytes.fromhex("020700ea07031e091e006eb011"))
    assert m.concentration_mg_dl == pytest.approx(110.0)
    [reading] = m.to_readings("meter", datetime(2026, 3, 30, 10, tzinfo=UTC))
    assert (reading.vital, reading.unit, reading.quality) == (Vital.BLOOD_GLUCOSE, "mg/dL", frozenset())
    # 6.1 mmol/L = 0.0061 mol/L: mantissa 61, exponent -4 (0xC03D)
    molar = parse_glucose_measurement(bytes.fromhex("060800ea07031e091e003dc011"))
    assert molar.unit == "mol/L"
    assert molar.concentration_mg_dl == pytest.approx(6.1 * 18.0156)


def test_glucose_control_solution_is_flagged() -> None:
    m = parse_glucose_measurement(bytes.fromhex("020900ea07031e091e006eb04a"))
    assert m.control_solution
    assert m.to_readings("meter", datetime(2026, 3, 30, 10, tzinfo=UTC))[0].quality == {Quality.IMPLAUSIBLE}


# --------------------------------------------------------------------------------------------------
# Battery level (0x2A19)


def test_battery_level() -> None:
    assert parse_battery_level(b"\x57") == 87
    for bad in (b"", b"\x65", b"\x50\x00"):
        with pytest.raises(ParseError):
            parse_battery_level(bad)
