"""Targets for the device parsers: every GATT characteristic, IEEE-11073 SFLOAT/FLOAT, the Masimo line
parser and line framer, and the Contec stream decoder.

Oracle: a parser returns a measurement or raises ``drivers.ParseError`` whose message names the format
(what) and shows the frame (where); whatever parses converts to readings without error (finite values in
the contract's unit, aware UTC times no more than five minutes ahead); frames built by the independent
encoders in ``simulators.devices`` parse back to the values they encode; the stream decoders give the
same result however the stream is split into reads.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from bench.fuzz.harness import Target, no_setup, require
from bench.fuzz.mutation import mutate_bytes, mutated_bytes, random_bytes
from drivers import ParseError
from drivers.ble import gatt
from drivers.ble.ieee11073 import FLOAT_SPECIALS, SFLOAT_SPECIALS, decode_float, decode_sfloat
from drivers.reading import MAX_DEVICE_CLOCK_AHEAD, UNITS, Reading
from drivers.serial import contec, masimo
from drivers.serial.framing import LineFramer
from simulators.devices import gatt_encoders as enc
from simulators.devices import serial_encoders

RECEIVED_AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Frame:
    """One case for a byte parser: the bytes, how they were made, and (for unmutated encoder output)
    the attribute values the parser must return."""

    origin: str
    data: bytes
    expected: Mapping[str, Any] | None = None
    tz_minutes: int | None = 0

    def __repr__(self) -> str:
        return (
            f"Frame(origin={self.origin!r}, data=bytes.fromhex({self.data.hex()!r}), "
            f"expected={self.expected!r}, tz_minutes={self.tz_minutes})"
        )


# --------------------------------------------------------------------------------------------------
# Values the encoders take

sfloat_values = st.builds(
    lambda m, e: Decimal(m).scaleb(e),
    st.integers(-enc.SFLOAT_MANTISSA_MAX, enc.SFLOAT_MANTISSA_MAX),
    st.integers(-8, 7),
)
float_values = st.builds(
    lambda m, e: Decimal(m).scaleb(e),
    st.integers(-enc.FLOAT_MANTISSA_MAX, enc.FLOAT_MANTISSA_MAX),
    st.integers(-128, 127),
)
EDGE_TIMES = (
    datetime(1582, 1, 1),
    datetime(1582, 1, 1, 0, 0, 1),
    datetime(2000, 2, 29, 23, 59, 59),
    datetime(9999, 12, 31, 23, 59, 59),
    datetime(9999, 12, 31, 0, 0),
    datetime(9999, 12, 1, 12, 0),
)
"""Calendar edges: a device clock can say anything its fields can hold."""
device_times = st.one_of(
    st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.sampled_from(EDGE_TIMES),
)
time_zones = st.none() | st.integers(-14 * 60, 14 * 60)


def _number(value: Decimal, factor: Decimal = Decimal(1)) -> float:
    return float(value * factor)


# Each generator returns (bytes, expected attributes) for one characteristic.
def _heart_rate() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        bpm = draw(st.integers(0, 0xFFFF))
        contact = draw(st.none() | st.booleans())
        energy = draw(st.none() | st.integers(0, 0xFFFF))
        rr = draw(st.lists(st.integers(0, 0xFFFF), max_size=9))
        data = enc.heart_rate_measurement(
            bpm, sensor_contact=contact, energy_expended_kj=energy, rr_intervals_1024=rr
        )
        expected = {
            "bpm": bpm,
            "sensor_contact": contact,
            "energy_expended_kj": energy,
            "rr_intervals_s": [r / 1024 for r in rr],
        }
        return data, expected

    return build()


def _blood_pressure() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        pressures = [draw(st.none() | sfloat_values) for _ in range(3)]
        kpa = draw(st.booleans())
        timestamp = draw(st.none() | device_times)
        pulse = draw(st.sampled_from(["absent", None]) | sfloat_values)
        user = draw(st.none() | st.integers(0, 255))
        status = draw(st.none() | st.integers(0, 0xFFFF))
        data = enc.blood_pressure_measurement(
            *pressures, kpa=kpa, timestamp=timestamp, pulse_bpm=pulse, user_id=user, status=status
        )
        factor = Decimal(760) / Decimal("101.325") if kpa else Decimal(1)
        names = ("systolic_mmhg", "diastolic_mmhg", "mean_arterial_mmhg")
        expected: dict[str, Any] = {
            name: None if p is None else _number(p, factor) for name, p in zip(names, pressures, strict=True)
        }
        expected |= {
            "pulse_bpm": None if pulse in ("absent", None) else _number(pulse),  # type: ignore[arg-type]
            "timestamp": timestamp,
            "user_id": user,
            "unit": "kPa" if kpa else "mmHg",
        }
        return data, expected

    return build()


def _temperature() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        value = draw(st.none() | float_values)
        fahrenheit = draw(st.booleans())
        timestamp = draw(st.none() | device_times)
        site = draw(st.none() | st.integers(0, 255))
        data = enc.temperature_measurement(value, fahrenheit=fahrenheit, timestamp=timestamp, site=site)
        celsius = None
        if value is not None:
            celsius = (float(value) - 32) * 5 / 9 if fahrenheit else float(value)
        return data, {"celsius": celsius, "timestamp": timestamp, "site": site}

    return build()


def _plx_spot() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        spo2, pulse = draw(st.none() | sfloat_values), draw(st.none() | sfloat_values)
        timestamp = draw(st.none() | device_times)
        measurement = draw(st.none() | st.integers(0, 0xFFFF))
        device = draw(st.none() | st.integers(0, 0xFFFFFF))
        pai = draw(st.sampled_from(["absent", None]) | sfloat_values)
        clock_not_set = draw(st.booleans())
        data = enc.plx_spot_check(
            spo2,
            pulse,
            timestamp=timestamp,
            measurement_status=measurement,
            device_status=device,
            pulse_amplitude_index=pai,
            clock_not_set=clock_not_set,
        )
        expected = {
            "spo2_pct": None if spo2 is None else float(spo2),
            "pulse_bpm": None if pulse is None else float(pulse),
            "timestamp": timestamp,
            "measurement_status": measurement,
            "device_status": device,
            "pulse_amplitude_index": None if pai in ("absent", None) else float(pai),  # type: ignore[arg-type]
            "device_clock_not_set": clock_not_set,
        }
        return data, expected

    return build()


def _plx_continuous() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    pair = st.tuples(st.none() | sfloat_values, st.none() | sfloat_values)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        normal = draw(pair)
        fast, slow = draw(st.none() | pair), draw(st.none() | pair)
        measurement = draw(st.none() | st.integers(0, 0xFFFF))
        device = draw(st.none() | st.integers(0, 0xFFFFFF))
        pai = draw(st.sampled_from(["absent", None]) | sfloat_values)
        data = enc.plx_continuous(
            *normal,
            fast=fast,
            slow=slow,
            measurement_status=measurement,
            device_status=device,
            pulse_amplitude_index=pai,
        )

        def f(value: Decimal | None) -> float | None:
            return None if value is None else float(value)

        expected = {
            "spo2_pct": f(normal[0]),
            "pulse_bpm": f(normal[1]),
            "spo2_fast_pct": f(fast[0]) if fast else None,
            "pulse_fast_bpm": f(fast[1]) if fast else None,
            "spo2_slow_pct": f(slow[0]) if slow else None,
            "pulse_slow_bpm": f(slow[1]) if slow else None,
            "measurement_status": measurement,
            "device_status": device,
            "pulse_amplitude_index": None if pai in ("absent", None) else float(pai),  # type: ignore[arg-type]
        }
        return data, expected

    return build()


def _weight() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        raw = draw(st.none() | st.integers(0, 0xFFFE))
        pounds = draw(st.booleans())
        timestamp = draw(st.none() | device_times)
        user = draw(st.none() | st.integers(0, 255))
        bmi_height = draw(st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)))
        step = Decimal("0.01") if pounds else Decimal("0.005")
        weight = None if raw is None else raw * step
        bmi = height = None
        if bmi_height is not None:
            bmi = Decimal(bmi_height[0]) / 10
            height = bmi_height[1] * (Decimal("0.1") if pounds else Decimal("0.001"))
        data = enc.weight_measurement(
            weight, pounds=pounds, timestamp=timestamp, user_id=user, bmi=bmi, height=height
        )
        expected = {
            "kg": None if weight is None else float(weight) * (gatt.KG_PER_POUND if pounds else 1),
            "timestamp": timestamp,
            "user_id": user,
            "bmi": None if bmi is None else float(bmi),
            "height_m": None if height is None else float(height) * (gatt.METRES_PER_INCH if pounds else 1),
        }
        return data, expected

    return build()


def _glucose() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
        sequence = draw(st.integers(0, 0xFFFF))
        base = draw(st.none() | device_times)
        offset = draw(st.none() | st.integers(-(2**15), 2**15 - 1))
        concentration = draw(st.sampled_from(["absent", None]) | sfloat_values)
        molar = draw(st.booleans())
        sample_type, location = draw(st.integers(0, 15)), draw(st.integers(0, 15))
        status = draw(st.none() | st.integers(0, 0xFFFF))
        data = enc.glucose_measurement(
            sequence,
            base,
            time_offset_min=offset,
            concentration=concentration,
            molar=molar,
            sample_type=sample_type,
            sample_location=location,
            sensor_status=status,
        )
        timestamp = base
        if base is not None and offset is not None:
            try:
                timestamp = base + timedelta(minutes=offset)
            except OverflowError:  # not a date any more: the parser must say so with a ParseError
                return data, {"_parse_error": "time offset"}
        present = concentration != "absent"
        factor = Decimal("18015.6") if molar else Decimal(100_000)
        expected = {
            "sequence_number": sequence,
            "timestamp": timestamp,
            "time_offset_min": offset,
            "concentration_mg_dl": None
            if concentration in ("absent", None)
            else _number(concentration, factor),  # type: ignore[arg-type]
            "sample_type": sample_type if present else None,
            "sample_location": location if present else None,
            "sensor_status": status,
            "unit": "mol/L" if molar else "kg/L",
        }
        return data, expected

    return build()


def _battery() -> st.SearchStrategy[tuple[bytes, dict[str, Any]]]:
    return st.integers(0, 100).map(lambda pct: (enc.battery_level(pct), {"_value": pct}))


@dataclass(frozen=True)
class Characteristic:
    name: str
    parse: Callable[[bytes], Any]
    what: str
    """Text every ParseError message of this parser contains."""
    valid: Callable[[], st.SearchStrategy[tuple[bytes, dict[str, Any]]]]


CHARACTERISTICS = (
    Characteristic("gatt_heart_rate", gatt.parse_heart_rate_measurement, "heart rate", _heart_rate),
    Characteristic(
        "gatt_blood_pressure", gatt.parse_blood_pressure_measurement, "blood pressure", _blood_pressure
    ),
    Characteristic("gatt_temperature", gatt.parse_temperature_measurement, "temperature", _temperature),
    Characteristic("gatt_plx_spot_check", gatt.parse_plx_spot_check, "PLX spot-check", _plx_spot),
    Characteristic("gatt_plx_continuous", gatt.parse_plx_continuous, "PLX continuous", _plx_continuous),
    Characteristic("gatt_weight", gatt.parse_weight_measurement, "weight", _weight),
    Characteristic("gatt_glucose", gatt.parse_glucose_measurement, "glucose", _glucose),
    Characteristic("gatt_battery_level", gatt.parse_battery_level, "battery level", _battery),
)


def frames(valid: st.SearchStrategy[tuple[bytes, dict[str, Any]]]) -> st.SearchStrategy[Frame]:
    """Arbitrary bytes, any flags with any body, encoder output as is, and encoder output mutated."""
    arbitrary = st.builds(Frame, st.just("bytes"), st.binary(max_size=64), st.none(), time_zones)
    flagged = st.builds(
        Frame,
        st.just("flags+body"),
        st.builds(lambda f, body: bytes([f]) + body, st.integers(0, 255), st.binary(max_size=40)),
        st.none(),
        time_zones,
    )
    encoded = st.builds(lambda pair, tz: Frame("encoded", pair[0], pair[1], tz), valid, time_zones)
    mutated = valid.flatmap(
        lambda pair: st.builds(
            lambda data, tz: Frame("encoded+mutated", data, None, tz), mutated_bytes(pair[0]), time_zones
        )
    )
    return st.one_of(arbitrary, flagged, encoded, encoded, mutated, mutated)


def _close(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


def check_readings(readings: list[Reading], frame: Frame) -> None:
    for item in readings:
        require(item.unit == UNITS[item.vital], f"{item.vital} reading in {item.unit}")
        require(math.isfinite(item.value), f"{item.vital} reading is not finite: {item.value}")
        require(item.measured_at.utcoffset() == timedelta(0), "measured_at is not UTC")
        require(
            item.measured_at <= RECEIVED_AT + MAX_DEVICE_CLOCK_AHEAD,
            f"measured_at {item.measured_at} is ahead of the gateway by more than allowed",
        )


def _device_tz(minutes: int | None) -> timezone | None:
    return None if minutes is None else timezone(timedelta(minutes=minutes))


def gatt_check(characteristic: Characteristic) -> Callable[[Frame], str]:
    def check(frame: Frame) -> str:
        expected = frame.expected or {}
        try:
            measurement = characteristic.parse(frame.data)
        except ParseError as exc:
            message = str(exc)
            require(characteristic.what in message, f"ParseError does not name {characteristic.what!r}")
            require("frame: [" in message, "ParseError does not show the frame")
            require(exc.frame == frame.data, "ParseError.frame is not the input")
            require(
                frame.expected is None or "_parse_error" in expected,
                f"encoder output refused: {message}",
            )
            return "ParseError"
        require("_parse_error" not in expected, f"accepted, but expected a ParseError: {expected}")
        if characteristic.parse is gatt.parse_battery_level:
            require(isinstance(measurement, int) and 0 <= measurement <= 100, f"battery {measurement}")
            if frame.expected is not None:
                require(measurement == expected["_value"], f"battery {measurement} != {expected}")
            return "accepted"
        for name, want in expected.items():
            got = getattr(measurement, name)
            require(_close(got, want), f"{name}: parsed {got!r}, encoded {want!r}")
        check_readings(
            measurement.to_readings("fuzz-device", RECEIVED_AT, device_tz=_device_tz(frame.tz_minutes)),
            frame,
        )
        return "accepted" if frame.expected is None else "round-trip"

    return check


# --------------------------------------------------------------------------------------------------
# IEEE 11073 numbers


@dataclass(frozen=True)
class Number:
    width: int
    raw: int
    encoded_from: Decimal | None = None


def _reference(raw: int, width: int) -> Decimal | None:
    """Mantissa * 10 ** exponent, computed independently with Decimal; None for a special value."""
    if width == 16:
        if raw in SFLOAT_SPECIALS:
            return None
        mantissa, exponent = raw & 0x0FFF, raw >> 12
        mantissa -= (mantissa & 0x800) << 1
        exponent -= (exponent & 0x8) << 1
    else:
        if raw in FLOAT_SPECIALS:
            return None
        mantissa, exponent = raw & 0xFFFFFF, raw >> 24
        mantissa -= (mantissa & 0x800000) << 1
        exponent -= (exponent & 0x80) << 1
    return Decimal(mantissa).scaleb(exponent)


ieee_numbers = st.one_of(
    st.builds(Number, st.just(16), st.integers(0, 0xFFFF)),
    st.builds(Number, st.just(32), st.integers(0, 0xFFFFFFFF)),
    sfloat_values.map(lambda v: Number(16, int.from_bytes(enc.sfloat(v), "little"), v)),
    float_values.map(lambda v: Number(32, int.from_bytes(enc.float32(v), "little"), v)),
    st.builds(Number, st.just(16), st.sampled_from(sorted(SFLOAT_SPECIALS))),
    st.builds(Number, st.just(32), st.sampled_from(sorted(FLOAT_SPECIALS))),
)


def ieee_check(number: Number) -> str:
    decoded = decode_sfloat(number.raw) if number.width == 16 else decode_float(number.raw)
    reference = _reference(number.raw, number.width)
    if reference is None:
        require(decoded is None, f"special value 0x{number.raw:x} decoded as {decoded}")
        return "special"
    require(decoded is not None and math.isfinite(decoded), f"0x{number.raw:x} decoded as {decoded}")
    assert decoded is not None
    require(
        math.isclose(decoded, float(reference), rel_tol=1e-15, abs_tol=0),
        f"0x{number.raw:x}: decoded {decoded!r}, reference {reference}",
    )
    if number.encoded_from is not None:
        require(
            math.isclose(decoded, float(number.encoded_from), rel_tol=1e-15, abs_tol=0),
            f"encoded {number.encoded_from}, decoded {decoded!r}",
        )
        return "round-trip"
    return "number"


# --------------------------------------------------------------------------------------------------
# Masimo

MASIMO_TOKENS = (
    "junk",
    "SN=0000056661",
    "SN=",
    "SPO2=098%",
    "SPO2=---%",
    "SPO2=101%",
    "BPM=097",
    "BPM=---",
    "PI=03.60%",
    "PI=--.--%",
    "ALARM=0000",
    "ALARM=----",
    "EXC=000800",
    "EXC=FFFFFFFF",
    "EXC1=00000000",
    "PVI=---",
    "SPCO=--.-%",
    "DESAT=--",
    "PIDELTA=+--",
    "=",
    "%",
    "--",
    "\t",
    "\x00",
    "02/22/16 22:47:45",
    "02/30/16 22:47:45",
    "\r\n",
)


@st.composite
def masimo_valid(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    timestamp = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
    timestamp = timestamp.replace(microsecond=0)
    spo2 = draw(st.none() | st.integers(0, 100))
    bpm = draw(st.none() | st.integers(0, 999))
    pi = draw(st.none() | st.integers(0, 9999).map(lambda h: h / 100))
    alarm, exceptions = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFFFF))
    line = serial_encoders.masimo_line(
        timestamp, spo2=spo2, bpm=bpm, pi=pi, alarm=alarm, exceptions=exceptions
    )
    expected = {
        "timestamp": timestamp,
        "spo2_pct": spo2,
        "pulse_bpm": bpm,
        "perfusion_index": pi,
        "alarm": alarm,
        "exceptions": exceptions,
    }
    return line, expected


@st.composite
def masimo_token_soup(draw: st.DrawFn) -> bytes:
    tokens = draw(st.lists(st.sampled_from(MASIMO_TOKENS) | st.text(max_size=8), max_size=14))
    separator = draw(st.sampled_from([" ", "  ", "\t", ""]))
    return separator.join(tokens).encode("utf-8", "surrogatepass")


@st.composite
def masimo_token_edit(draw: st.DrawFn) -> bytes:
    line, _ = draw(masimo_valid())
    tokens = line.rstrip(b"\r\n").split(b" ")
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(tokens) - 1))
        operation = draw(st.sampled_from(["drop", "duplicate", "replace", "swap"]))
        if operation == "drop" and len(tokens) > 1:
            del tokens[index]
        elif operation == "duplicate":
            tokens.insert(index, tokens[index])
        elif operation == "replace":
            tokens[index] = draw(st.sampled_from(MASIMO_TOKENS)).encode()
        elif operation == "swap":
            other = draw(st.integers(0, len(tokens) - 1))
            tokens[index], tokens[other] = tokens[other], tokens[index]
    return b" ".join(tokens) + draw(st.sampled_from([b"\r\n", b"\n", b""]))


masimo_lines = st.one_of(
    st.builds(Frame, st.just("bytes"), st.binary(max_size=160), st.none(), time_zones),
    st.builds(Frame, st.just("token soup"), masimo_token_soup(), st.none(), time_zones),
    st.builds(Frame, st.just("token edit"), masimo_token_edit(), st.none(), time_zones),
    st.builds(lambda pair, tz: Frame("encoded", pair[0], pair[1], tz), masimo_valid(), time_zones),
    masimo_valid().flatmap(
        lambda pair: st.builds(
            lambda data, tz: Frame("encoded+mutated", data, None, tz), mutated_bytes(pair[0]), time_zones
        )
    ),
    st.builds(Frame, st.just("overlong"), st.binary(min_size=500, max_size=700), st.none(), time_zones),
)


def masimo_check(frame: Frame) -> str:
    try:
        measurement = masimo.parse_line(frame.data)
    except ParseError as exc:
        require("Masimo" in str(exc) and "frame: [" in str(exc), f"unhelpful ParseError: {exc}")
        require(frame.expected is None, f"encoder output refused: {exc}")
        return "ParseError"
    for name, want in (frame.expected or {}).items():
        got = getattr(measurement, name)
        require(_close(got, want), f"{name}: parsed {got!r}, encoded {want!r}")
    require(measurement.spo2_pct is None or 0 <= measurement.spo2_pct <= 100, "SpO2 above 100 accepted")
    check_readings(
        measurement.to_readings("fuzz-masimo", RECEIVED_AT, device_tz=_device_tz(frame.tz_minutes)), frame
    )
    return "accepted" if frame.expected is None else "round-trip"


# --------------------------------------------------------------------------------------------------
# Streams split at arbitrary points


@dataclass(frozen=True)
class Stream:
    origin: str
    data: bytes
    cuts: tuple[int, ...]
    """Read boundaries (offsets into data, sorted)."""
    expected: tuple[Any, ...] | None = None

    def chunks(self) -> list[bytes]:
        edges = [0, *self.cuts, len(self.data)]
        return [self.data[a:b] for a, b in itertools.pairwise(edges)]

    def __repr__(self) -> str:
        return (
            f"Stream(origin={self.origin!r}, data=bytes.fromhex({self.data.hex()!r}), cuts={self.cuts!r}, "
            f"expected={self.expected!r})"
        )


def _split(origin: str, data: bytes, expected: tuple[Any, ...] | None) -> st.SearchStrategy[Stream]:
    cuts = st.lists(st.integers(0, len(data)), max_size=12).map(lambda c: tuple(sorted(c)))
    return st.builds(lambda c: Stream(origin, data, c, expected), cuts)


@st.composite
def contec_packets(draw: st.DrawFn) -> tuple[bytes, tuple[Any, ...]]:
    samples = draw(
        st.lists(
            st.tuples(
                st.none() | st.integers(1, 100),
                st.none() | st.integers(1, 254),
                st.booleans(),
                st.booleans(),
                st.booleans(),
            ),
            max_size=24,
        )
    )
    data = b"".join(
        serial_encoders.contec_packet(spo2=s, pulse=p, finger_out=f, searching=q, probe_error=e)
        for s, p, f, q, e in samples
    )
    return data, tuple(samples)


@st.composite
def contec_streams(draw: st.DrawFn) -> Stream:
    how = draw(st.sampled_from(["bytes", "packets", "packets+garbage", "packets+mutated"]))
    if how == "bytes":
        return draw(st.binary(max_size=200).flatmap(lambda d: _split(how, d, None)))
    data, samples = draw(contec_packets())
    if how == "packets":
        return draw(_split(how, data, samples))
    if how == "packets+garbage":  # garbage without sync bits in front: every packet survives
        garbage = bytes(b & 0x7F for b in draw(st.binary(max_size=12)))
        return draw(_split(how, garbage + data, samples))
    return draw(mutated_bytes(data, rounds=5).flatmap(lambda d: _split(how, d, None)))


def _contec_sample(sample: contec.ContecSample) -> tuple[Any, ...]:
    return (sample.spo2_pct, sample.pulse_bpm, sample.finger_out, sample.searching, sample.probe_error)


def contec_check(stream: Stream) -> str:
    whole = contec.ContecDecoder()
    reference = whole.feed(stream.data)
    split = contec.ContecDecoder()
    samples: list[contec.ContecSample] = []
    for chunk in stream.chunks():
        samples += split.feed(chunk)
        require(len(split._pending) < contec.PACKET_BYTES, f"decoder keeps {len(split._pending)} bytes")
    require(samples == reference, "samples depend on where the stream was split")
    require(split.discarded_bytes == whole.discarded_bytes, "discarded bytes depend on the split")
    accounted = split.discarded_bytes + contec.PACKET_BYTES * len(samples) + len(split._pending)
    require(accounted == len(stream.data), f"{accounted} bytes accounted for, {len(stream.data)} fed")
    for sample in samples:
        require(sample.spo2_pct is None or 0 < sample.spo2_pct <= 100, f"SpO2 {sample.spo2_pct}")
        require(sample.pulse_bpm is None or 0 < sample.pulse_bpm < 255, f"pulse {sample.pulse_bpm}")
        check_readings(sample.to_readings("fuzz-contec", RECEIVED_AT), Frame("contec", b""))
    if stream.expected is not None:
        require(
            tuple(_contec_sample(s) for s in samples) == stream.expected,
            "encoded packets did not decode back",
        )
        return "round-trip"
    return f"{min(len(samples), 3)}{'+' if len(samples) >= 3 else ''} samples"


MAX_LINE = masimo.MAX_LINE_BYTES


@st.composite
def masimo_streams(draw: st.DrawFn) -> Stream:
    how = draw(st.sampled_from(["bytes", "lines", "lines+garbage", "lines+mutated", "overlong"]))
    if how == "bytes":
        alphabet = st.sampled_from(b"\r\n \x00AZ09=%") | st.integers(0, 255)
        data = bytes(draw(st.lists(alphabet, max_size=300)))
        return draw(_split(how, data, None))
    lines = draw(st.lists(masimo_valid(), max_size=6))
    data = b"".join(line for line, _ in lines)
    expected = tuple(expected["timestamp"] for _, expected in lines)
    if how == "lines":
        return draw(_split(how, data, expected))
    if how == "lines+garbage":  # whole garbage lines in between: every valid line survives
        parts: list[bytes] = []
        for line, _ in lines:
            if draw(st.booleans()):
                parts.append(draw(st.binary(max_size=40)).replace(b"\n", b"") + b"\n")
            parts.append(line)
        return draw(_split(how, b"".join(parts), None))
    if how == "overlong":
        long_line = draw(st.binary(min_size=MAX_LINE - 2, max_size=MAX_LINE + 40)).replace(b"\n", b"")
        tail = draw(st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b""]))
        return draw(_split(how, long_line + tail + data, None))
    return draw(mutated_bytes(data, rounds=6).flatmap(lambda d: _split(how, d, None)))


def masimo_stream_check(stream: Stream) -> str:
    whole = LineFramer(MAX_LINE)
    reference = whole.feed(stream.data)
    framer = LineFramer(MAX_LINE)
    lines: list[bytes] = []
    for chunk in stream.chunks():
        lines += framer.feed(chunk)
        require(len(framer._pending) <= 2 * MAX_LINE, f"framer keeps {len(framer._pending)} bytes")
    for line in lines:
        require(b"\n" not in line and len(line) <= MAX_LINE, f"framer returned {line!r}")
    require(lines == reference, "lines depend on where the stream was split")
    require(framer.overlong_lines == whole.overlong_lines, "overlong count depends on the split")
    parsed = []
    labels = set()
    for line in lines:
        label = masimo_check(Frame("framed line", line))
        labels.add(label)
        if label != "ParseError":
            parsed.append(masimo.parse_line(line).timestamp)
    if stream.expected is not None:
        require(tuple(parsed) == stream.expected, "encoded lines did not come back")
        return "round-trip"
    if not lines:
        return "no lines"
    return "lines: " + "+".join(sorted(labels))


FANOUT = 20


def derive_frame(frame: Frame, rnd: random.Random) -> Frame:
    """Mutations of the example's bytes (mostly) or fresh random bytes."""
    if rnd.random() < 0.15:
        return Frame("random", random_bytes(rnd, 64), None, frame.tz_minutes)
    return Frame(frame.origin + "+derived", mutate_bytes(frame.data, rnd), None, frame.tz_minutes)


def derive_number(number: Number, rnd: random.Random) -> Number:
    return Number(number.width, rnd.getrandbits(number.width))


def derive_stream(stream: Stream, rnd: random.Random) -> Stream:
    """Same bytes split elsewhere (the expected result still holds), or mutated bytes split anywhere."""
    cuts = tuple(sorted(rnd.randint(0, len(stream.data)) for _ in range(rnd.randint(0, 16))))
    if rnd.random() < 0.5:
        return Stream(stream.origin + "+resplit", stream.data, cuts, stream.expected)
    data = mutate_bytes(stream.data, rnd, rounds=6)
    cuts = tuple(sorted(rnd.randint(0, len(data)) for _ in range(rnd.randint(0, 16))))
    return Stream(stream.origin + "+derived", data, cuts, None)


def targets() -> list[Target]:
    found = [
        Target(
            c.name,
            "drivers",
            frames(c.valid()),
            no_setup(gatt_check(c)),
            doc=f"{c.parse.__name__}: any bytes, encoder output, mutated encoder output",
            derive=derive_frame,
            fanout=FANOUT,
        )
        for c in CHARACTERISTICS
    ]
    found += [
        Target(
            "ieee11073",
            "drivers",
            ieee_numbers,
            no_setup(ieee_check),
            doc="SFLOAT and FLOAT decode",
            derive=derive_number,
            fanout=FANOUT,
        ),
        Target(
            "masimo_line",
            "drivers",
            masimo_lines,
            no_setup(masimo_check),
            doc="masimo.parse_line",
            derive=derive_frame,
            fanout=FANOUT,
        ),
        Target(
            "masimo_stream",
            "drivers",
            masimo_streams(),
            no_setup(masimo_stream_check),
            doc="LineFramer + parse_line on a stream split at arbitrary points",
            derive=derive_stream,
            fanout=FANOUT,
        ),
        Target(
            "contec_stream",
            "drivers",
            contec_streams(),
            no_setup(contec_check),
            doc="ContecDecoder on a stream split at arbitrary points",
            derive=derive_stream,
            fanout=FANOUT,
        ),
    ]
    return found
