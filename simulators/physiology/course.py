"""A patient's course as data: where each vital sign is heading, and how it varies around that.

The true value of a vital sign at simulated time ``t`` is the sum of

1. the **trajectory**: straight lines between keyframes ``(hour, value)`` (the value before the first
   keyframe is the first value, after the last the last value);
2. **circadian variation**: a cosine over the local time of day with the amplitude and peak hour in
   ``CIRCADIAN`` (lower pulse, pressure and temperature in the small hours), scaled by the course's
   ``circadian_scale``;
3. **physiological variability**: seeded smooth noise at three time scales (``VARIABILITY``), scaled by
   ``noise_scale``;
4. for glucose, a rise after each meal (``MEALS_H``); for a fast irregular rhythm (atrial fibrillation),
   rough beat-to-beat noise following ``hr_irregularity``;

clipped to ``LIMITS`` (what a living patient can show, well inside the wire contract's ranges).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from edge_agent.protocol import VITALS, Consciousness, VitalCode

from .errors import ScenarioError

Keyframes = tuple[tuple[float, float], ...]

MODELLED: Final = (
    VitalCode.HEART_RATE,
    VitalCode.RESPIRATORY_RATE,
    VitalCode.SPO2,
    VitalCode.SYSTOLIC_BP,
    VitalCode.DIASTOLIC_BP,
    VitalCode.BODY_TEMPERATURE,
    VitalCode.BODY_WEIGHT,
    VitalCode.BLOOD_GLUCOSE,
)
"""Vitals with their own trajectory; mean arterial pressure is derived (DBP + (SBP − DBP) / 3)."""


@dataclass(frozen=True, slots=True)
class Circadian:
    amplitude: float
    peak_hour: float
    """Local hour of the day at which the rhythm adds ``amplitude`` (it subtracts it 12 h later)."""


CIRCADIAN: Final[Mapping[VitalCode, Circadian]] = {
    VitalCode.HEART_RATE: Circadian(5.0, 15.0),
    VitalCode.RESPIRATORY_RATE: Circadian(0.8, 15.0),
    VitalCode.SPO2: Circadian(0.4, 14.0),
    VitalCode.SYSTOLIC_BP: Circadian(7.0, 14.0),
    VitalCode.DIASTOLIC_BP: Circadian(5.0, 14.0),
    VitalCode.BODY_TEMPERATURE: Circadian(0.3, 17.0),
    VitalCode.BODY_WEIGHT: Circadian(0.4, 20.0),
    VitalCode.BLOOD_GLUCOSE: Circadian(0.0, 0.0),
}

VARIABILITY_SPACING_S: Final = (4 * 3600.0, 1800.0, 120.0)
"""Lattice spacing of the slow, medium and fast components of physiological variability."""

VARIABILITY: Final[Mapping[VitalCode, tuple[float, float, float]]] = {
    VitalCode.HEART_RATE: (3.0, 2.0, 1.0),
    VitalCode.RESPIRATORY_RATE: (0.7, 0.5, 0.4),
    VitalCode.SPO2: (0.35, 0.3, 0.25),
    VitalCode.SYSTOLIC_BP: (4.0, 3.0, 1.5),
    VitalCode.DIASTOLIC_BP: (3.0, 2.0, 1.0),
    VitalCode.BODY_TEMPERATURE: (0.07, 0.05, 0.02),
    VitalCode.BODY_WEIGHT: (0.2, 0.05, 0.0),
    VitalCode.BLOOD_GLUCOSE: (8.0, 5.0, 2.0),
}
"""Standard deviation of each component (slow, medium, fast), in the vital's unit."""

PERFUSION_VARIABILITY: Final = (0.25, 0.15, 0.1)
"""Standard deviation of the components of log(perfusion index)."""

MEALS_H: Final = (8.0, 13.0, 19.0)
MEAL_RISE_MG_DL: Final = 35.0
MEAL_PEAK_S: Final = 50 * 60.0
"""Glucose rises by MEAL_RISE_MG_DL at MEAL_PEAK_S after a meal (a gamma-shaped bump, gone in ~5 h)."""

LIMITS: Final[Mapping[VitalCode, tuple[float, float]]] = {
    VitalCode.HEART_RATE: (25.0, 240.0),
    VitalCode.RESPIRATORY_RATE: (4.0, 60.0),
    VitalCode.SPO2: (50.0, 100.0),
    VitalCode.SYSTOLIC_BP: (50.0, 250.0),
    VitalCode.DIASTOLIC_BP: (25.0, 150.0),
    VitalCode.MEAN_ARTERIAL_PRESSURE: (30.0, 180.0),
    VitalCode.BODY_TEMPERATURE: (30.0, 43.0),
    VitalCode.BODY_WEIGHT: (20.0, 300.0),
    VitalCode.BLOOD_GLUCOSE: (20.0, 600.0),
}
PERFUSION_LIMITS: Final = (0.02, 20.0)
MIN_PULSE_PRESSURE: Final = 10.0
"""Diastolic pressure is kept at least this far below systolic."""

BASELINE: Final[Mapping[VitalCode, float]] = {
    VitalCode.HEART_RATE: 74.0,
    VitalCode.RESPIRATORY_RATE: 15.0,
    VitalCode.SPO2: 97.3,
    VitalCode.SYSTOLIC_BP: 127.0,
    VitalCode.DIASTOLIC_BP: 78.0,
    VitalCode.BODY_TEMPERATURE: 36.75,
    VitalCode.BODY_WEIGHT: 78.0,
    VitalCode.BLOOD_GLUCOSE: 100.0,
}
"""An adult at rest before circadian variation and noise: every NEWS2 parameter scores 0."""


def _check_limits() -> None:
    for vital, (low, high) in LIMITS.items():
        spec = VITALS[vital]
        assert spec.minimum <= low < high <= spec.maximum, vital


_check_limits()


@dataclass(frozen=True, slots=True)
class Course:
    """The physiology of a scenario. Vitals without keyframes stay at ``BASELINE``."""

    keyframes: Mapping[VitalCode, Keyframes] = field(default_factory=dict)
    noise_scale: float = 1.0
    circadian_scale: float = 1.0
    hr_irregularity: Keyframes = ((0.0, 0.0),)
    """Keyframes ``(hour, sd)`` of the beat-to-beat irregularity of the heart rate (atrial fibrillation),
    standard deviation in /min; 0 for a regular rhythm."""
    perfusion_index: float = 3.0
    """Median perfusion index in percent when no fault lowers it."""
    consciousness: tuple[tuple[float, Consciousness], ...] = ((0.0, Consciousness.ALERT),)
    """Steps ``(hour, ACVPU level)``; each level holds until the next step."""
    on_oxygen: bool = False
    spo2_scale: Literal[1, 2] = 1

    def __post_init__(self) -> None:
        for vital, frames in self.keyframes.items():
            if vital not in MODELLED:
                raise ScenarioError(f"{vital} has no trajectory of its own (it is derived)")
            hours = [h for h, _ in frames]
            if not frames or hours != sorted(hours) or hours[0] < 0:
                raise ScenarioError(f"keyframes of {vital} must be non-empty, start at >= 0 h and ascend")
            low, high = LIMITS[vital]
            if any(not (math.isfinite(v) and low <= v <= high) for _, v in frames):
                raise ScenarioError(f"keyframes of {vital} must lie within {low:g}..{high:g}")
        steps = [h for h, _ in self.consciousness]
        if not steps or steps[0] != 0.0 or steps != sorted(steps):
            raise ScenarioError("consciousness steps must start at hour 0 and ascend")
        if self.noise_scale < 0 or self.circadian_scale < 0:
            raise ScenarioError("noise_scale and circadian_scale must be >= 0")
        hours = [h for h, _ in self.hr_irregularity]
        if not hours or hours != sorted(hours) or any(not 0 <= sd <= 40 for _, sd in self.hr_irregularity):
            raise ScenarioError("hr_irregularity keyframes must ascend, with sd within 0..40 /min")
        if not PERFUSION_LIMITS[0] <= self.perfusion_index <= PERFUSION_LIMITS[1]:
            raise ScenarioError(f"perfusion_index must lie within {PERFUSION_LIMITS}")

    def frames(self, vital: VitalCode) -> Keyframes:
        return self.keyframes.get(vital, ((0.0, BASELINE[vital]),))
