"""Property tests: any bytes give a result or ParseError, never another exception; encode -> parse
round trips with the independent encoders in simulators.devices."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import ParseError
from drivers.ble import gatt
from drivers.ble.ieee11073 import decode_float, decode_sfloat
from drivers.serial import contec, masimo
from simulators.devices import gatt_encoders as enc
from simulators.devices import serial_encoders

PARSERS: list[Callable[[bytes], object]] = [
    gatt.parse_heart_rate_measurement,
    gatt.parse_blood_pressure_measurement,
    gatt.parse_temperature_measurement,
    gatt.parse_plx_spot_check,
    gatt.parse_plx_continuous,
    gatt.parse_weight_measurement,
    gatt.parse_glucose_measurement,
    gatt.parse_battery_level,
    masimo.parse_line,
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@given(data=st.binary(max_size=64))
def test_random_bytes_raise_only_parse_error(parser: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parser(data)


@pytest.mark.parametrize("parser", PARSERS[:7], ids=lambda p: p.__name__)
@given(flags=st.integers(0, 255), rest=st.binary(max_size=40))
def test_any_flags_any_body_raise_only_parse_error(
    parser: Callable[[bytes], object], flags: int, rest: bytes
) -> None:
    with contextlib.suppress(ParseError):
        parser(bytes([flags]) + rest)


@given(
    st.lists(
        st.sampled_from(
            [
                "junk",
                "SN=0000056661",
                "SPO2=098%",
                "SPO2=---%",
                "BPM=097",
                "PI=03.60%",
                "ALARM=0000",
                "EXC=000800",
                "=",
                "%",
                "--",
                " ",
                "02/22/16 22:47:45",
                "\r\n",
            ]
        ),
        max_size=12,
    )
)
def test_masimo_token_soup_raises_only_parse_error(tokens: list[str]) -> None:
    try:
        parse_result = masimo.parse_line(" ".join(tokens).encode())
    except ParseError:
        return
    assert parse_result.alarm >= 0


@given(st.lists(st.binary(max_size=20), max_size=20))
def test_contec_decoder_never_raises_and_never_grows(chunks: list[bytes]) -> None:
    decoder = contec.ContecDecoder()
    for chunk in chunks:
        for sample in decoder.feed(chunk):
            assert sample.spo2_pct is None or 0 < sample.spo2_pct <= 100
            assert sample.pulse_bpm is None or 0 < sample.pulse_bpm < 255
        assert len(decoder._pending) < contec.PACKET_BYTES


# --------------------------------------------------------------------------------------------------
# Round trips

sfloat_values = st.builds(
    lambda m, e: Decimal(m).scaleb(e),
    st.integers(-enc.SFLOAT_MANTISSA_MAX, enc.SFLOAT_MANTISSA_MAX),
    st.integers(-8, 7),
)
float_values = st.builds(
    lambda m, e: Decimal(m).scaleb(e),
    st.integers(-enc.FLOAT_MANTISSA_MAX, enc.FLOAT_MANTISSA_MAX),
    st.integers(-20, 20),
)
datetimes = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


def approx(value: float | None, expected: Decimal) -> bool:
    return value is not None and abs(Decimal(repr(value)) - expected) <= abs(expected) * Decimal("1e-12")


@given(sfloat_values)
def test_sfloat_round_trip(value: Decimal) -> None:
    assert approx(decode_sfloat(int.from_bytes(enc.sfloat(value), "little")), value)


@given(float_values)
def test_float_round_trip(value: Decimal) -> None:
    assert approx(decode_float(int.from_bytes(enc.float32(value), "little")), value)


@given(
    bpm=st.integers(0, 65535),
    contact=st.none() | st.booleans(),
    energy=st.none() | st.integers(0, 65535),
    rr=st.lists(st.integers(0, 65535), max_size=8),
)
def test_heart_rate_round_trip(bpm: int, contact: bool | None, energy: int | None, rr: list[int]) -> None:
    m = gatt.parse_heart_rate_measurement(
        enc.heart_rate_measurement(
            bpm, sensor_contact=contact, energy_expended_kj=energy, rr_intervals_1024=rr
        )
    )
    assert (m.bpm, m.sensor_contact, m.energy_expended_kj) == (bpm, contact, energy)
    assert m.rr_intervals_s == [r / 1024 for r in rr]


@given(
    pressures=st.tuples(sfloat_values, sfloat_values, sfloat_values),
    kpa=st.booleans(),
    timestamp=st.none() | datetimes,
    pulse=st.none() | sfloat_values,
    user=st.none() | st.integers(0, 255),
    status=st.none() | st.integers(0, 0x3F),
)
def test_blood_pressure_round_trip(
    pressures: tuple[Decimal, Decimal, Decimal],
    kpa: bool,
    timestamp: datetime | None,
    pulse: Decimal | None,
    user: int | None,
    status: int | None,
) -> None:
    frame = enc.blood_pressure_measurement(
        *pressures,
        kpa=kpa,
        timestamp=timestamp,
        pulse_bpm="absent" if pulse is None else pulse,
        user_id=user,
        status=status,
    )
    m = gatt.parse_blood_pressure_measurement(frame)
    factor = Decimal(760) / Decimal("101.325") if kpa else Decimal(1)
    for got, sent in zip((m.systolic_mmhg, m.diastolic_mmhg, m.mean_arterial_mmhg), pressures, strict=True):
        assert got == pytest.approx(float(sent * factor), rel=1e-9, abs=1e-12)
    assert m.timestamp == timestamp
    assert m.pulse_bpm == (None if pulse is None else pytest.approx(float(pulse)))
    assert (m.user_id, None if m.status is None else m.status.raw) == (user, status)


@given(
    value=float_values,
    fahrenheit=st.booleans(),
    timestamp=st.none() | datetimes,
    site=st.none() | st.integers(0, 255),
)
def test_temperature_round_trip(
    value: Decimal, fahrenheit: bool, timestamp: datetime | None, site: int | None
) -> None:
    m = gatt.parse_temperature_measurement(
        enc.temperature_measurement(value, fahrenheit=fahrenheit, timestamp=timestamp, site=site)
    )
    expected = (float(value) - 32) * 5 / 9 if fahrenheit else float(value)
    assert m.celsius == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert (m.timestamp, m.site) == (timestamp, site)


@given(
    spo2=sfloat_values,
    pulse=sfloat_values,
    timestamp=st.none() | datetimes,
    measurement=st.none() | st.integers(0, 0xFFFF),
    device=st.none() | st.integers(0, 0xFFFFFF),
    pai=st.none() | sfloat_values,
    clock_not_set=st.booleans(),
)
def test_plx_spot_check_round_trip(
    spo2: Decimal,
    pulse: Decimal,
    timestamp: datetime | None,
    measurement: int | None,
    device: int | None,
    pai: Decimal | None,
    clock_not_set: bool,
) -> None:
    m = gatt.parse_plx_spot_check(
        enc.plx_spot_check(
            spo2,
            pulse,
            timestamp=timestamp,
            measurement_status=measurement,
            device_status=device,
            pulse_amplitude_index="absent" if pai is None else pai,
            clock_not_set=clock_not_set,
        )
    )
    assert approx(m.spo2_pct, spo2) and approx(m.pulse_bpm, pulse)
    assert m.timestamp == timestamp and m.device_clock_not_set == clock_not_set
    assert (m.measurement_status, m.device_status) == (measurement, device)
    assert (m.pulse_amplitude_index is None) == (pai is None)


@given(
    normal=st.tuples(sfloat_values, sfloat_values),
    fast=st.none() | st.tuples(sfloat_values, sfloat_values),
    slow=st.none() | st.tuples(sfloat_values, sfloat_values),
    measurement=st.none() | st.integers(0, 0xFFFF),
    device=st.none() | st.integers(0, 0xFFFFFF),
)
def test_plx_continuous_round_trip(
    normal: tuple[Decimal, Decimal],
    fast: tuple[Decimal, Decimal] | None,
    slow: tuple[Decimal, Decimal] | None,
    measurement: int | None,
    device: int | None,
) -> None:
    m = gatt.parse_plx_continuous(
        enc.plx_continuous(
            *normal, fast=fast, slow=slow, measurement_status=measurement, device_status=device
        )
    )
    assert approx(m.spo2_pct, normal[0]) and approx(m.pulse_bpm, normal[1])
    assert (m.spo2_fast_pct is None) == (fast is None) and (m.pulse_slow_bpm is None) == (slow is None)
    if fast is not None:
        assert approx(m.spo2_fast_pct, fast[0]) and approx(m.pulse_fast_bpm, fast[1])
    assert (m.measurement_status, m.device_status) == (measurement, device)


@given(
    raw=st.none() | st.integers(0, 0xFFFE),
    pounds=st.booleans(),
    timestamp=st.none() | datetimes,
    user=st.none() | st.integers(0, 255),
    bmi_height=st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
)
def test_weight_round_trip(
    raw: int | None,
    pounds: bool,
    timestamp: datetime | None,
    user: int | None,
    bmi_height: tuple[int, int] | None,
) -> None:
    step = Decimal("0.01") if pounds else Decimal("0.005")
    weight = None if raw is None else raw * step
    bmi = height = None
    if bmi_height is not None:
        bmi = Decimal(bmi_height[0]) / 10
        height = bmi_height[1] * (Decimal("0.1") if pounds else Decimal("0.001"))
    m = gatt.parse_weight_measurement(
        enc.weight_measurement(
            weight, pounds=pounds, timestamp=timestamp, user_id=user, bmi=bmi, height=height
        )
    )
    if weight is None:
        assert m.kg is None
    else:
        assert m.kg == pytest.approx(float(weight) * (0.45359237 if pounds else 1), rel=1e-9, abs=1e-12)
    assert (m.timestamp, m.user_id) == (timestamp, user)
    assert m.bmi == (None if bmi is None else pytest.approx(float(bmi)))
    if height is not None:
        assert m.height_m == pytest.approx(float(height) * (0.0254 if pounds else 1), rel=1e-9, abs=1e-12)


@given(
    sequence=st.integers(0, 0xFFFF),
    base=datetimes,
    offset=st.none() | st.integers(-(2**15), 2**15 - 1),
    concentration=st.none() | sfloat_values,
    molar=st.booleans(),
    sample_type=st.integers(0, 15),
    location=st.integers(0, 15),
    status=st.none() | st.integers(0, 0xFFFF),
)
def test_glucose_round_trip(
    sequence: int,
    base: datetime,
    offset: int | None,
    concentration: Decimal | None,
    molar: bool,
    sample_type: int,
    location: int,
    status: int | None,
) -> None:
    from datetime import timedelta

    m = gatt.parse_glucose_measurement(
        enc.glucose_measurement(
            sequence,
            base,
            time_offset_min=offset,
            concentration="absent" if concentration is None else concentration,
            molar=molar,
            sample_type=sample_type,
            sample_location=location,
            sensor_status=status,
        )
    )
    assert m.sequence_number == sequence
    assert m.timestamp == base + timedelta(minutes=offset or 0)
    assert m.sensor_status == status
    if concentration is None:
        assert (m.concentration_mg_dl, m.sample_type, m.sample_location) == (None, None, None)
    else:
        factor = 18_015.6 if molar else 100_000.0
        assert m.concentration_mg_dl == pytest.approx(float(concentration) * factor, rel=1e-9, abs=1e-9)
        assert (m.sample_type, m.sample_location) == (sample_type, location)


@given(
    timestamp=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    spo2=st.none() | st.integers(0, 100),
    bpm=st.none() | st.integers(0, 999),
    pi_hundredths=st.none() | st.integers(0, 9999),
    alarm=st.integers(0, 0xFFFF),
    exceptions=st.integers(0, 0xFFFFFF),
)
def test_masimo_round_trip(
    timestamp: datetime,
    spo2: int | None,
    bpm: int | None,
    pi_hundredths: int | None,
    alarm: int,
    exceptions: int,
) -> None:
    pi = None if pi_hundredths is None else pi_hundredths / 100
    line = serial_encoders.masimo_line(
        timestamp.replace(microsecond=0), spo2=spo2, bpm=bpm, pi=pi, alarm=alarm, exceptions=exceptions
    )
    m = masimo.parse_line(line)
    assert m.timestamp == timestamp.replace(microsecond=0)
    assert (m.spo2_pct, m.pulse_bpm, m.alarm, m.exceptions) == (spo2, bpm, alarm, exceptions)
    assert m.perfusion_index == pi


@given(
    packets=st.lists(
        st.tuples(
            st.none() | st.integers(1, 100), st.none() | st.integers(1, 254), st.booleans(), st.booleans()
        ),
        max_size=30,
    ),
    split=st.integers(1, 13),
    garbage=st.binary(max_size=6).map(lambda b: bytes(x & 0x7F for x in b)),
)
def test_contec_round_trip_with_garbage_and_splits(
    packets: list[tuple[int | None, int | None, bool, bool]], split: int, garbage: bytes
) -> None:
    stream = garbage + b"".join(
        serial_encoders.contec_packet(spo2=s, pulse=p, finger_out=f, searching=q) for s, p, f, q in packets
    )
    decoder = contec.ContecDecoder()
    samples = []
    for i in range(0, len(stream), split):
        samples += decoder.feed(stream[i : i + split])
    assert [(s.spo2_pct, s.pulse_bpm, s.finger_out, s.searching) for s in samples] == packets
    assert decoder.discarded_bytes == len(garbage)


@pytest.mark.parametrize("parser", [*PARSERS[:7], masimo.parse_line], ids=lambda p: p.__name__)
@given(
    data=st.binary(min_size=1, max_size=40),
    offset_minutes=st.none() | st.integers(-14 * 60, 14 * 60),
)
def test_whatever_parses_converts_to_readings(
    parser: Callable[[bytes], object], data: bytes, offset_minutes: int | None
) -> None:
    from datetime import UTC, timedelta, timezone

    try:
        measurement = parser(data)
    except ParseError:
        return
    tz = None if offset_minutes is None else timezone(timedelta(minutes=offset_minutes))
    received = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    for reading in measurement.to_readings("dev", received, device_tz=tz):  # type: ignore[attr-defined]
        assert reading.measured_at.tzinfo is not None
        assert reading.measured_at <= received + timedelta(minutes=5)


def test_extreme_device_dates_fall_back_to_gateway_time() -> None:
    from datetime import UTC, timedelta, timezone

    frame = enc.temperature_measurement(37.0, timestamp=datetime(9999, 12, 31, 23, 0))
    m = gatt.parse_temperature_measurement(frame)
    received = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    [reading] = m.to_readings("t", received, device_tz=timezone(timedelta(hours=-5)))
    assert reading.measured_at == received
