"""Which vital signs each kind of home device measures, how precisely, and how often — as data.

Continuous devices sample on a fixed period from the start of the scenario (an oximeter at 1 Hz).
Spot devices are used by the patient at set local times of day (blood pressure three times a day),
each use shifted by a seeded, bounded jitter so that the readings do not land on the hour exactly.

``noise_sd`` is the device's own measurement error (added to the patient's true value) and
``resolution`` what the device displays and transmits (an oximeter reports whole percent, a thermometer
tenths of a degree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from edge_agent.protocol import QualityFlag, VitalCode

from .errors import ScenarioError

MAX_USES_PER_DAY: Final = 64
"""Spot devices: the jitter of use ``j`` on day ``d`` is noise lattice point ``64 d + j``."""


class DeviceKind(StrEnum):
    PULSE_OXIMETER_CONTINUOUS = "pulse_oximeter_continuous"
    """Wrist or finger oximeter streaming SpO2, pulse rate and perfusion index (BLE PLX, Masimo, Contec)."""
    PULSE_OXIMETER_SPOT = "pulse_oximeter_spot"
    """Finger oximeter the patient clips on for a spot check."""
    HEART_RATE_MONITOR = "heart_rate_monitor"
    """Chest strap or patch streaming heart rate (BLE Heart Rate Service)."""
    RESPIRATION_MONITOR = "respiration_monitor"
    """Wearable patch reporting respiratory rate once a minute (no Bluetooth SIG profile carries it)."""
    BLOOD_PRESSURE = "blood_pressure"
    """Upper-arm oscillometric cuff: systolic, diastolic, mean pressure and pulse."""
    THERMOMETER = "thermometer"
    """Tympanic or oral thermometer (BLE Health Thermometer)."""
    WEIGHT_SCALE = "weight_scale"
    """Bathroom scale (BLE Weight Scale)."""
    GLUCOSE_METER = "glucose_meter"
    """Capillary blood glucose meter (BLE Glucose)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One vital sign a device reports."""

    vital: VitalCode
    noise_sd: float
    """Standard deviation of the device's measurement error, in the vital's unit."""
    resolution: float
    """Reported values are rounded to a multiple of this."""


@dataclass(frozen=True, slots=True)
class Cadence:
    """How one kind of device measures: what, how precisely, and when."""

    kind: DeviceKind
    measures: tuple[Measurement, ...]
    period_s: int | None = None
    """Continuous sampling period; the device samples at 0, period, 2·period … seconds."""
    times_of_day_h: tuple[float, ...] = ()
    """Spot devices: local hours of the day at which the patient takes a reading."""
    jitter_s: int = 0
    """Spot devices: standard deviation of the shift from the scheduled time (bounded to ±2·jitter)."""
    reports_perfusion: bool = False
    probe_off_flag: QualityFlag = QualityFlag.PROBE_OFF
    """The flag the device raises when it has no contact with the patient."""

    def __post_init__(self) -> None:
        if (self.period_s is None) == (not self.times_of_day_h):
            raise ScenarioError(f"cadence {self.kind}: give either period_s or times_of_day_h, not both")
        if self.period_s is not None and self.period_s < 1:
            raise ScenarioError(f"cadence {self.kind}: period_s must be a whole number of seconds >= 1")
        hours = self.times_of_day_h
        if len(hours) > MAX_USES_PER_DAY:
            raise ScenarioError(f"cadence {self.kind}: at most {MAX_USES_PER_DAY} uses a day")
        if any(not 0 <= h < 24 for h in hours) or list(hours) != sorted(set(hours)):
            raise ScenarioError(f"cadence {self.kind}: times_of_day_h must be ascending and in [0, 24)")
        if hours:
            gaps = [b - a for a, b in zip(hours, (*hours[1:], hours[0] + 24), strict=True)]
            if 4 * self.jitter_s >= min(gaps) * 3600:
                raise ScenarioError(
                    f"cadence {self.kind}: jitter_s is too large for the gap between readings"
                )
        if not self.measures:
            raise ScenarioError(f"cadence {self.kind}: measures nothing")

    @property
    def continuous(self) -> bool:
        return self.period_s is not None

    @property
    def vitals(self) -> tuple[VitalCode, ...]:
        return tuple(m.vital for m in self.measures)


_PULSE = Measurement(VitalCode.HEART_RATE, noise_sd=1.0, resolution=1)
_SPO2 = Measurement(VitalCode.SPO2, noise_sd=0.7, resolution=1)

CADENCES: Final[Mapping[DeviceKind, Cadence]] = {
    cadence.kind: cadence
    for cadence in (
        Cadence(
            DeviceKind.PULSE_OXIMETER_CONTINUOUS,
            (_SPO2, _PULSE),
            period_s=1,
            reports_perfusion=True,
        ),
        Cadence(
            DeviceKind.PULSE_OXIMETER_SPOT,
            (_SPO2, _PULSE),
            times_of_day_h=(8.0, 12.0, 16.0, 20.0),
            jitter_s=900,
            reports_perfusion=True,
        ),
        Cadence(
            DeviceKind.HEART_RATE_MONITOR,
            (Measurement(VitalCode.HEART_RATE, noise_sd=1.5, resolution=1),),
            period_s=1,
            probe_off_flag=QualityFlag.NO_SENSOR_CONTACT,
        ),
        Cadence(
            DeviceKind.RESPIRATION_MONITOR,
            (Measurement(VitalCode.RESPIRATORY_RATE, noise_sd=0.8, resolution=1),),
            period_s=60,
            probe_off_flag=QualityFlag.NO_SENSOR_CONTACT,
        ),
        Cadence(
            DeviceKind.BLOOD_PRESSURE,
            (
                Measurement(VitalCode.SYSTOLIC_BP, noise_sd=4.0, resolution=1),
                Measurement(VitalCode.DIASTOLIC_BP, noise_sd=3.0, resolution=1),
                Measurement(VitalCode.MEAN_ARTERIAL_PRESSURE, noise_sd=3.0, resolution=1),
                Measurement(VitalCode.HEART_RATE, noise_sd=2.0, resolution=1),
            ),
            times_of_day_h=(8.0, 14.0, 20.0),
            jitter_s=1200,
        ),
        Cadence(
            DeviceKind.THERMOMETER,
            (Measurement(VitalCode.BODY_TEMPERATURE, noise_sd=0.1, resolution=0.1),),
            times_of_day_h=(2.0, 6.0, 10.0, 14.0, 18.0, 22.0),
            jitter_s=600,
        ),
        Cadence(
            DeviceKind.WEIGHT_SCALE,
            (Measurement(VitalCode.BODY_WEIGHT, noise_sd=0.1, resolution=0.1),),
            times_of_day_h=(7.5,),
            jitter_s=900,
        ),
        Cadence(
            DeviceKind.GLUCOSE_METER,
            (Measurement(VitalCode.BLOOD_GLUCOSE, noise_sd=5.0, resolution=1),),
            times_of_day_h=(7.75, 12.75, 18.75, 22.0),
            jitter_s=900,
        ),
    )
}
"""Default cadence of every device kind (docs/scenarios.md has the table)."""
