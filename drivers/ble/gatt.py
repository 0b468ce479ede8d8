"""Pure parsers for the Bluetooth SIG health characteristics: bytes in, typed measurements out.

Each ``parse_*`` function takes the value of one notification or indication and returns a frozen
dataclass, or raises :class:`drivers.ParseError` (a ValueError) whose message shows the frame as hex.
Nothing here does I/O or reads a clock. Field layouts are tables (:mod:`drivers.ble.layout`); units are
converted to the wire contract's (mmHg, Celsius, kg, mg/dL); IEEE-11073 special values (NaN, NRes,
+/-INF, reserved) become None.

======  ==============================  =====================================================
UUID    characteristic                  parser
======  ==============================  =====================================================
0x2A37  Heart Rate Measurement          :func:`parse_heart_rate_measurement`
0x2A35  Blood Pressure Measurement      :func:`parse_blood_pressure_measurement`
0x2A1C  Temperature Measurement         :func:`parse_temperature_measurement`
0x2A5E  PLX Spot-Check Measurement      :func:`parse_plx_spot_check`
0x2A5F  PLX Continuous Measurement      :func:`parse_plx_continuous`
0x2A9D  Weight Measurement              :func:`parse_weight_measurement`
0x2A18  Glucose Measurement             :func:`parse_glucose_measurement`
0x2A19  Battery Level                   :func:`parse_battery_level`
======  ==============================  =====================================================

Timestamps are returned as the device sent them: naive wall-clock datetimes (the Date Time
characteristic carries no zone). ``to_readings`` interprets them in ``device_tz``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import IntEnum, IntFlag
from typing import Final, Literal

from drivers.ble.layout import Group, Kind, Layout, Value, read_layout
from drivers.errors import ParseError
from drivers.reading import Measurement, Quality, Reading, TimeSource, Vital, measurement_time, reading


def sig_uuid(short: int) -> str:
    """The 128-bit form of a 16-bit Bluetooth SIG UUID, lower case as bleak reports it."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


HEART_RATE_MEASUREMENT: Final = sig_uuid(0x2A37)
BLOOD_PRESSURE_MEASUREMENT: Final = sig_uuid(0x2A35)
TEMPERATURE_MEASUREMENT: Final = sig_uuid(0x2A1C)
PLX_SPOT_CHECK_MEASUREMENT: Final = sig_uuid(0x2A5E)
PLX_CONTINUOUS_MEASUREMENT: Final = sig_uuid(0x2A5F)
WEIGHT_MEASUREMENT: Final = sig_uuid(0x2A9D)
GLUCOSE_MEASUREMENT: Final = sig_uuid(0x2A18)
BATTERY_LEVEL: Final = sig_uuid(0x2A19)
RECORD_ACCESS_CONTROL_POINT: Final = sig_uuid(0x2A52)
CURRENT_TIME: Final = sig_uuid(0x2A2B)

HEALTH_SERVICES: Final[Mapping[str, str]] = {
    sig_uuid(0x180D): "Heart Rate",
    sig_uuid(0x1810): "Blood Pressure",
    sig_uuid(0x1809): "Health Thermometer",
    sig_uuid(0x1822): "Pulse Oximeter",
    sig_uuid(0x181D): "Weight Scale",
    sig_uuid(0x1808): "Glucose",
}
"""Services a health device advertises, by 128-bit UUID."""

MMHG_PER_KPA: Final = 760 / 101.325
KG_PER_POUND: Final = 0.45359237
METRES_PER_INCH: Final = 0.0254
MG_DL_PER_KG_L: Final = 100_000.0
MG_DL_PER_MOL_L: Final = 18_015.6
"""Glucose, molar mass 180.156 g/mol: 1 mmol/L = 18.0156 mg/dL."""


def _int(values: Mapping[str, Value], name: str) -> int | None:
    value = values.get(name)
    return value if isinstance(value, int) else None


def _float(values: Mapping[str, Value], name: str) -> float | None:
    value = values.get(name)
    return float(value) if isinstance(value, int | float) else None


def _time(values: Mapping[str, Value], name: str) -> datetime | None:
    value = values.get(name)
    return value if isinstance(value, datetime) else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


# --------------------------------------------------------------------------------------------------
# Heart Rate Measurement (0x2A37)

HEART_RATE_LAYOUT: Final = Layout(
    "heart rate measurement",
    (
        Group((("bpm", Kind.UINT8),), mask=0x01, when_set=False),
        Group((("bpm", Kind.UINT16),), mask=0x01),
        Group((("energy_expended_kj", Kind.UINT16),), mask=0x08),
        Group((("rr_intervals", Kind.UINT16_LIST),), mask=0x10),
    ),
)


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    bpm: int
    sensor_contact: bool | None
    """None when the sensor does not support contact detection."""
    energy_expended_kj: int | None
    rr_intervals_s: list[float] = field(default_factory=list)
    """RR intervals in seconds (1/1024 s resolution), oldest first."""

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        flags: set[str] = set()
        if self.sensor_contact is False:
            flags.add(Quality.NO_SENSOR_CONTACT)
        if self.bpm == 0:
            flags.add(Quality.IMPLAUSIBLE)  # heart-rate sensors send 0 when they have lost the signal
        quality = frozenset(flags)
        return reading(
            Vital.HEART_RATE,
            self.bpm,
            measured_at=measurement_time(None, received_at, device_tz),
            device_id=device_id,
            quality=quality,
        )


def parse_heart_rate_measurement(data: bytes | bytearray | memoryview) -> HeartRateMeasurement:
    flags, values = read_layout(HEART_RATE_LAYOUT, data)
    contact_bits = (flags >> 1) & 0b11
    rr = values.get("rr_intervals")
    return HeartRateMeasurement(
        bpm=_int(values, "bpm") or 0,
        sensor_contact=None if contact_bits < 0b10 else contact_bits == 0b11,
        energy_expended_kj=_int(values, "energy_expended_kj"),
        rr_intervals_s=[ticks / 1024 for ticks in rr] if isinstance(rr, list) else [],
    )


# --------------------------------------------------------------------------------------------------
# Blood Pressure Measurement (0x2A35)

BLOOD_PRESSURE_LAYOUT: Final = Layout(
    "blood pressure measurement",
    (
        Group((("systolic", Kind.SFLOAT), ("diastolic", Kind.SFLOAT), ("mean_arterial", Kind.SFLOAT))),
        Group((("timestamp", Kind.DATE_TIME),), mask=0x02),
        Group((("pulse", Kind.SFLOAT),), mask=0x04),
        Group((("user_id", Kind.UINT8),), mask=0x08),
        Group((("status", Kind.UINT16),), mask=0x10),
    ),
)


class PulseRateRange(IntEnum):
    """Bits 3-4 of the blood pressure measurement status."""

    WITHIN_RANGE = 0
    EXCEEDS_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2
    RESERVED = 3


@dataclass(frozen=True, slots=True)
class BloodPressureStatus:
    raw: int
    body_movement: bool
    cuff_too_loose: bool
    irregular_pulse: bool
    pulse_rate_range: PulseRateRange
    improper_position: bool

    @classmethod
    def from_raw(cls, raw: int) -> BloodPressureStatus:
        return cls(
            raw=raw,
            body_movement=bool(raw & 0x01),
            cuff_too_loose=bool(raw & 0x02),
            irregular_pulse=bool(raw & 0x04),
            pulse_rate_range=PulseRateRange((raw >> 3) & 0b11),
            improper_position=bool(raw & 0x20),
        )

    def quality(self) -> frozenset[str]:
        flags = set()
        if self.body_movement:
            flags.add(Quality.MOTION)
        if self.cuff_too_loose:
            flags.add(Quality.NO_SENSOR_CONTACT)
        if self.improper_position:
            flags.add(Quality.IMPLAUSIBLE)
        return frozenset(flags)


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    systolic_mmhg: float | None
    diastolic_mmhg: float | None
    mean_arterial_mmhg: float | None
    pulse_bpm: float | None
    timestamp: datetime | None
    """Device wall-clock time; None when absent or when the device says the date is unknown (year 0)."""
    user_id: int | None
    """255 means "unknown user"."""
    status: BloodPressureStatus | None
    unit: Literal["mmHg", "kPa"]
    """The unit the device sent; the ``*_mmhg`` values are always in mmHg."""

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        at = measurement_time(self.timestamp, received_at, device_tz)
        quality = self.status.quality() if self.status is not None else frozenset()
        pairs = (
            (Vital.SYSTOLIC_BP, self.systolic_mmhg),
            (Vital.DIASTOLIC_BP, self.diastolic_mmhg),
            (Vital.MEAN_ARTERIAL_PRESSURE, self.mean_arterial_mmhg),
            (Vital.HEART_RATE, self.pulse_bpm),
        )
        out: list[Reading] = []
        for vital, value in pairs:
            out += reading(vital, value, measured_at=at, device_id=device_id, quality=quality)
        return out


def parse_blood_pressure_measurement(data: bytes | bytearray | memoryview) -> BloodPressureMeasurement:
    flags, values = read_layout(BLOOD_PRESSURE_LAYOUT, data)
    factor = MMHG_PER_KPA if flags & 0x01 else 1.0
    status = _int(values, "status")
    return BloodPressureMeasurement(
        systolic_mmhg=_scaled(_float(values, "systolic"), factor),
        diastolic_mmhg=_scaled(_float(values, "diastolic"), factor),
        mean_arterial_mmhg=_scaled(_float(values, "mean_arterial"), factor),
        pulse_bpm=_float(values, "pulse"),
        timestamp=_time(values, "timestamp"),
        user_id=_int(values, "user_id"),
        status=None if status is None else BloodPressureStatus.from_raw(status),
        unit="kPa" if flags & 0x01 else "mmHg",
    )


# --------------------------------------------------------------------------------------------------
# Temperature Measurement (0x2A1C)

TEMPERATURE_LAYOUT: Final = Layout(
    "temperature measurement",
    (
        Group((("temperature", Kind.FLOAT),)),
        Group((("timestamp", Kind.DATE_TIME),), mask=0x02),
        Group((("site", Kind.UINT8),), mask=0x04),
    ),
)

TEMPERATURE_SITES: Final[Mapping[int, str]] = {
    1: "armpit",
    2: "body (general)",
    3: "ear (usually earlobe)",
    4: "finger",
    5: "gastro-intestinal tract",
    6: "mouth",
    7: "rectum",
    8: "toe",
    9: "tympanum (ear drum)",
}


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    celsius: float | None
    timestamp: datetime | None
    site: int | None
    """Temperature Type code (see TEMPERATURE_SITES), None when the device does not say."""

    @property
    def site_name(self) -> str | None:
        return None if self.site is None else TEMPERATURE_SITES.get(self.site, f"reserved ({self.site})")

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        return reading(
            Vital.BODY_TEMPERATURE,
            self.celsius,
            measured_at=measurement_time(self.timestamp, received_at, device_tz),
            device_id=device_id,
        )


def parse_temperature_measurement(data: bytes | bytearray | memoryview) -> TemperatureMeasurement:
    flags, values = read_layout(TEMPERATURE_LAYOUT, data)
    value = _float(values, "temperature")
    if value is not None and flags & 0x01:
        value = (value - 32) * 5 / 9
    return TemperatureMeasurement(
        celsius=value, timestamp=_time(values, "timestamp"), site=_int(values, "site")
    )


# --------------------------------------------------------------------------------------------------
# Pulse oximetry: PLX Spot-Check (0x2A5E) and PLX Continuous (0x2A5F)


class PlxMeasurementStatus(IntFlag):
    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    FROM_MEASUREMENT_STORAGE = 1 << 9
    FOR_DEMONSTRATION = 1 << 10
    FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT = 1 << 14
    INVALID_MEASUREMENT = 1 << 15


class PlxDeviceStatus(IntFlag):
    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NONPULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


PLX_MEASUREMENT_QUALITY: Final[Mapping[PlxMeasurementStatus, Quality]] = {
    PlxMeasurementStatus.FOR_DEMONSTRATION: Quality.IMPLAUSIBLE,
    PlxMeasurementStatus.FOR_TESTING: Quality.IMPLAUSIBLE,
    PlxMeasurementStatus.CALIBRATION_ONGOING: Quality.IMPLAUSIBLE,
    PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE: Quality.IMPLAUSIBLE,
    PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT: Quality.IMPLAUSIBLE,
    PlxMeasurementStatus.INVALID_MEASUREMENT: Quality.IMPLAUSIBLE,
}
PLX_DEVICE_QUALITY: Final[Mapping[PlxDeviceStatus, Quality]] = {
    PlxDeviceStatus.EQUIPMENT_MALFUNCTION: Quality.DEVICE_ERROR,
    PlxDeviceStatus.SIGNAL_PROCESSING_IRREGULARITY: Quality.IMPLAUSIBLE,
    PlxDeviceStatus.INADEQUATE_SIGNAL: Quality.IMPLAUSIBLE,
    PlxDeviceStatus.POOR_SIGNAL: Quality.IMPLAUSIBLE,
    PlxDeviceStatus.LOW_PERFUSION: Quality.LOW_PERFUSION,
    PlxDeviceStatus.ERRATIC_SIGNAL: Quality.MOTION,
    PlxDeviceStatus.NONPULSATILE_SIGNAL: Quality.IMPLAUSIBLE,
    PlxDeviceStatus.QUESTIONABLE_PULSE: Quality.IMPLAUSIBLE,
    PlxDeviceStatus.SENSOR_INTERFERENCE: Quality.MOTION,
    PlxDeviceStatus.SENSOR_UNCONNECTED_TO_USER: Quality.PROBE_OFF,
    PlxDeviceStatus.UNKNOWN_SENSOR_CONNECTED: Quality.DEVICE_ERROR,
    PlxDeviceStatus.SENSOR_DISPLACED: Quality.PROBE_OFF,
    PlxDeviceStatus.SENSOR_MALFUNCTIONING: Quality.DEVICE_ERROR,
    PlxDeviceStatus.SENSOR_DISCONNECTED: Quality.PROBE_OFF,
}


def _plx_quality(measurement: PlxMeasurementStatus | None, device: PlxDeviceStatus | None) -> frozenset[str]:
    flags: set[str] = set()
    for bit, quality in PLX_MEASUREMENT_QUALITY.items():
        if measurement is not None and bit in measurement:
            flags.add(quality)
    for device_bit, quality in PLX_DEVICE_QUALITY.items():
        if device is not None and device_bit in device:
            flags.add(quality)
    return frozenset(flags)


def _oximetry_readings(
    spo2: float | None,
    pulse: float | None,
    pai: float | None,
    measured_at: tuple[datetime, TimeSource],
    device_id: str,
    quality: frozenset[str],
) -> list[Reading]:
    out: list[Reading] = []
    for vital, value in ((Vital.SPO2, spo2), (Vital.HEART_RATE, pulse)):
        out += reading(
            vital,
            value,
            measured_at=measured_at,
            device_id=device_id,
            quality=quality,
            perfusion_index=pai,
        )
    return out


PLX_SPOT_CHECK_LAYOUT: Final = Layout(
    "PLX spot-check measurement",
    (
        Group((("spo2", Kind.SFLOAT), ("pulse", Kind.SFLOAT))),
        Group((("timestamp", Kind.DATE_TIME),), mask=0x01),
        Group((("measurement_status", Kind.UINT16),), mask=0x02),
        Group((("device_status", Kind.UINT24),), mask=0x04),
        Group((("pulse_amplitude_index", Kind.SFLOAT),), mask=0x08),
    ),
)


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    spo2_pct: float | None
    pulse_bpm: float | None
    timestamp: datetime | None
    measurement_status: PlxMeasurementStatus | None
    device_status: PlxDeviceStatus | None
    pulse_amplitude_index: float | None
    """Pulse amplitude index in percent (the perfusion index)."""
    device_clock_not_set: bool
    """Flag bit 4: the timestamp is not from a set clock, so it is not used."""

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        timestamp = None if self.device_clock_not_set else self.timestamp
        return _oximetry_readings(
            self.spo2_pct,
            self.pulse_bpm,
            self.pulse_amplitude_index,
            measurement_time(timestamp, received_at, device_tz),
            device_id,
            _plx_quality(self.measurement_status, self.device_status),
        )


def parse_plx_spot_check(data: bytes | bytearray | memoryview) -> PlxSpotCheck:
    flags, values = read_layout(PLX_SPOT_CHECK_LAYOUT, data)
    measurement = _int(values, "measurement_status")
    device = _int(values, "device_status")
    return PlxSpotCheck(
        spo2_pct=_float(values, "spo2"),
        pulse_bpm=_float(values, "pulse"),
        timestamp=_time(values, "timestamp"),
        measurement_status=None if measurement is None else PlxMeasurementStatus(measurement),
        device_status=None if device is None else PlxDeviceStatus(device),
        pulse_amplitude_index=_float(values, "pulse_amplitude_index"),
        device_clock_not_set=bool(flags & 0x10),
    )


PLX_CONTINUOUS_LAYOUT: Final = Layout(
    "PLX continuous measurement",
    (
        Group((("spo2", Kind.SFLOAT), ("pulse", Kind.SFLOAT))),
        Group((("spo2_fast", Kind.SFLOAT), ("pulse_fast", Kind.SFLOAT)), mask=0x01),
        Group((("spo2_slow", Kind.SFLOAT), ("pulse_slow", Kind.SFLOAT)), mask=0x02),
        Group((("measurement_status", Kind.UINT16),), mask=0x04),
        Group((("device_status", Kind.UINT24),), mask=0x08),
        Group((("pulse_amplitude_index", Kind.SFLOAT),), mask=0x10),
    ),
)


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    spo2_pct: float | None
    """SpO2PR-Normal: the value the device displays."""
    pulse_bpm: float | None
    spo2_fast_pct: float | None
    pulse_fast_bpm: float | None
    spo2_slow_pct: float | None
    pulse_slow_bpm: float | None
    measurement_status: PlxMeasurementStatus | None
    device_status: PlxDeviceStatus | None
    pulse_amplitude_index: float | None

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        return _oximetry_readings(
            self.spo2_pct,
            self.pulse_bpm,
            self.pulse_amplitude_index,
            measurement_time(None, received_at, device_tz),
            device_id,
            _plx_quality(self.measurement_status, self.device_status),
        )


def parse_plx_continuous(data: bytes | bytearray | memoryview) -> PlxContinuous:
    _, values = read_layout(PLX_CONTINUOUS_LAYOUT, data)
    measurement = _int(values, "measurement_status")
    device = _int(values, "device_status")
    return PlxContinuous(
        spo2_pct=_float(values, "spo2"),
        pulse_bpm=_float(values, "pulse"),
        spo2_fast_pct=_float(values, "spo2_fast"),
        pulse_fast_bpm=_float(values, "pulse_fast"),
        spo2_slow_pct=_float(values, "spo2_slow"),
        pulse_slow_bpm=_float(values, "pulse_slow"),
        measurement_status=None if measurement is None else PlxMeasurementStatus(measurement),
        device_status=None if device is None else PlxDeviceStatus(device),
        pulse_amplitude_index=_float(values, "pulse_amplitude_index"),
    )


# --------------------------------------------------------------------------------------------------
# Weight Measurement (0x2A9D)

WEIGHT_LAYOUT: Final = Layout(
    "weight measurement",
    (
        Group((("weight", Kind.UINT16),)),
        Group((("timestamp", Kind.DATE_TIME),), mask=0x02),
        Group((("user_id", Kind.UINT8),), mask=0x04),
        Group((("bmi", Kind.UINT16), ("height", Kind.UINT16)), mask=0x08),
    ),
)
WEIGHT_UNSUCCESSFUL: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    kg: float | None
    """None when the scale reports "measurement unsuccessful" (0xFFFF)."""
    timestamp: datetime | None
    user_id: int | None
    bmi: float | None
    height_m: float | None

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        return reading(
            Vital.BODY_WEIGHT,
            self.kg,
            measured_at=measurement_time(self.timestamp, received_at, device_tz),
            device_id=device_id,
        )


def parse_weight_measurement(data: bytes | bytearray | memoryview) -> WeightMeasurement:
    flags, values = read_layout(WEIGHT_LAYOUT, data)
    imperial = bool(flags & 0x01)
    raw = _int(values, "weight")
    kg: float | None = None
    if raw is not None and raw != WEIGHT_UNSUCCESSFUL:
        kg = raw / 100 * KG_PER_POUND if imperial else raw * 5 / 1000
    bmi = _int(values, "bmi")
    height = _int(values, "height")
    height_m: float | None = None
    if height is not None:
        height_m = height / 10 * METRES_PER_INCH if imperial else height / 1000
    return WeightMeasurement(
        kg=kg,
        timestamp=_time(values, "timestamp"),
        user_id=_int(values, "user_id"),
        bmi=None if bmi is None else bmi / 10,
        height_m=height_m,
    )


# --------------------------------------------------------------------------------------------------
# Glucose Measurement (0x2A18)

GLUCOSE_LAYOUT: Final = Layout(
    "glucose measurement",
    (
        Group((("sequence_number", Kind.UINT16), ("base_time", Kind.DATE_TIME))),
        Group((("time_offset", Kind.SINT16),), mask=0x01),
        Group((("concentration", Kind.SFLOAT), ("type_location", Kind.UINT8)), mask=0x02),
        Group((("sensor_status", Kind.UINT16),), mask=0x08),
    ),
)


class GlucoseSampleType(IntEnum):
    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class GlucoseSampleLocation(IntEnum):
    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class GlucoseSensorStatus(IntFlag):
    DEVICE_BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_TOO_HIGH = 1 << 5
    RESULT_TOO_LOW = 1 << 6
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 7
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 8
    SENSOR_READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


GLUCOSE_QUALITY: Final[Mapping[GlucoseSensorStatus, Quality]] = {
    GlucoseSensorStatus.SENSOR_MALFUNCTION: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.SAMPLE_SIZE_INSUFFICIENT: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.STRIP_INSERTION_ERROR: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.STRIP_TYPE_INCORRECT: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.RESULT_TOO_HIGH: Quality.IMPLAUSIBLE,
    GlucoseSensorStatus.RESULT_TOO_LOW: Quality.IMPLAUSIBLE,
    GlucoseSensorStatus.SENSOR_TEMPERATURE_TOO_HIGH: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.SENSOR_TEMPERATURE_TOO_LOW: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.SENSOR_READ_INTERRUPTED: Quality.DEVICE_ERROR,
    GlucoseSensorStatus.GENERAL_DEVICE_FAULT: Quality.DEVICE_ERROR,
}


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    sequence_number: int
    timestamp: datetime | None
    """Base time plus time offset, device wall clock; None when the base time is unknown."""
    time_offset_min: int | None
    concentration_mg_dl: float | None
    sample_type: int | None
    """GlucoseSampleType code (an int, since reserved codes are passed through)."""
    sample_location: int | None
    """GlucoseSampleLocation code."""
    sensor_status: GlucoseSensorStatus | None
    unit: Literal["kg/L", "mol/L"]
    context_follows: bool

    @property
    def control_solution(self) -> bool:
        return (
            self.sample_type == GlucoseSampleType.CONTROL_SOLUTION
            or self.sample_location == GlucoseSampleLocation.CONTROL_SOLUTION
        )

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        flags: set[str] = set()
        if self.control_solution:
            flags.add(Quality.IMPLAUSIBLE)  # a control-solution test, not the patient's blood
        for bit, quality in GLUCOSE_QUALITY.items():
            if self.sensor_status is not None and bit in self.sensor_status:
                flags.add(quality)
        return reading(
            Vital.BLOOD_GLUCOSE,
            self.concentration_mg_dl,
            measured_at=measurement_time(self.timestamp, received_at, device_tz),
            device_id=device_id,
            quality=frozenset(flags),
        )


def parse_glucose_measurement(data: bytes | bytearray | memoryview) -> GlucoseMeasurement:
    flags, values = read_layout(GLUCOSE_LAYOUT, data)
    molar = bool(flags & 0x04)
    base = _time(values, "base_time")
    offset = _int(values, "time_offset")
    timestamp = base
    if base is not None and offset is not None:
        try:
            timestamp = base + timedelta(minutes=offset)
        except OverflowError:  # e.g. 9999-12-31 plus a positive offset: no longer a date
            raise ParseError(
                f"glucose measurement: base time {base:%Y-%m-%d %H:%M} plus {offset} minutes is not a date",
                data,
            ) from None
    type_location = _int(values, "type_location")
    status = _int(values, "sensor_status")
    return GlucoseMeasurement(
        sequence_number=_int(values, "sequence_number") or 0,
        timestamp=timestamp,
        time_offset_min=offset,
        concentration_mg_dl=_scaled(
            _float(values, "concentration"), MG_DL_PER_MOL_L if molar else MG_DL_PER_KG_L
        ),
        sample_type=None if type_location is None else type_location & 0x0F,
        sample_location=None if type_location is None else type_location >> 4,
        sensor_status=None if status is None else GlucoseSensorStatus(status),
        unit="mol/L" if molar else "kg/L",
        context_follows=bool(flags & 0x10),
    )


# --------------------------------------------------------------------------------------------------
# Battery Level (0x2A19)


def parse_battery_level(data: bytes | bytearray | memoryview) -> int:
    frame = bytes(data)
    if len(frame) != 1:
        raise ParseError(f"battery level must be 1 byte, got {len(frame)}", frame)
    if frame[0] > 100:
        raise ParseError(f"battery level {frame[0]} is above 100 %", frame)
    return frame[0]


CURRENT_TIME_EXTERNAL_REFERENCE: Final = 0x02
"""Current Time "adjust reason" bit 1: set from an external reference (the gateway's NTP clock)."""


def encode_current_time(local_time: datetime) -> bytes:
    """Current Time (0x2A2B) value setting a device's clock to ``local_time`` (its wall-clock time).

    Exact Time 256 (Date Time, day of week 1 = Monday, 1/256 s fractions) then the adjust reason.
    """
    if not 1582 <= local_time.year <= 9999:
        raise ValueError(f"year {local_time.year} cannot be sent as a Bluetooth Date Time")
    return local_time.year.to_bytes(2, "little") + bytes(
        [
            local_time.month,
            local_time.day,
            local_time.hour,
            local_time.minute,
            local_time.second,
            local_time.isoweekday(),
            local_time.microsecond * 256 // 1_000_000,
            CURRENT_TIME_EXTERNAL_REFERENCE,
        ]
    )


MEASUREMENT_PARSERS: Final[Mapping[str, Callable[[bytes], Measurement]]] = {
    HEART_RATE_MEASUREMENT: parse_heart_rate_measurement,
    BLOOD_PRESSURE_MEASUREMENT: parse_blood_pressure_measurement,
    TEMPERATURE_MEASUREMENT: parse_temperature_measurement,
    PLX_SPOT_CHECK_MEASUREMENT: parse_plx_spot_check,
    PLX_CONTINUOUS_MEASUREMENT: parse_plx_continuous,
    WEIGHT_MEASUREMENT: parse_weight_measurement,
    GLUCOSE_MEASUREMENT: parse_glucose_measurement,
}
"""Characteristic UUID -> parser, for every measurement characteristic the BLE transport subscribes to."""
