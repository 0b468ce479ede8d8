"""The scenarios: each a course of physiology, a kit of devices, timed faults and its expected course.

The expected course is data too (``Expectation``): tests score the patient's true vitals every minute
with the project's NEWS2 scorer and check it, and docs/scenarios.md describes the same numbers in words.
Expectations hold for every seed and every start time of day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from edge_agent.protocol import Consciousness, Risk, VitalCode

from .cadence import DeviceKind
from .course import Course
from .errors import ScenarioError, UnknownScenarioError
from .faults import FaultEvent, FaultKind

RISK_ORDER: Final = (Risk.LOW, Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH)

NEWS2_KIT: Final = (
    DeviceKind.PULSE_OXIMETER_CONTINUOUS,
    DeviceKind.RESPIRATION_MONITOR,
    DeviceKind.BLOOD_PRESSURE,
    DeviceKind.THERMOMETER,
)
"""The devices that together give every NEWS2 input (consciousness is entered by a clinician)."""

SEPSIS_KIT: Final = (*NEWS2_KIT, DeviceKind.GLUCOSE_METER)
"""The NEWS2 kit and a glucose meter: sepsis raises blood glucose (stress hyperglycaemia), which the
patient checks a few times a day; glucose is stored and forwarded, not scored."""


@dataclass(frozen=True, slots=True)
class RiskBand:
    """Between ``from_h`` and ``to_h``, at least ``fraction`` of minute-by-minute NEWS2 assessments of
    the true vitals have a risk in ``lowest..highest``."""

    from_h: float
    to_h: float
    lowest: Risk = Risk.LOW
    highest: Risk = Risk.HIGH
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.from_h < self.to_h:
            raise ScenarioError("a risk band needs 0 <= from_h < to_h")
        if RISK_ORDER.index(self.lowest) > RISK_ORDER.index(self.highest):
            raise ScenarioError("a risk band's lowest risk is above its highest")
        if not 0 < self.fraction <= 1:
            raise ScenarioError("a risk band's fraction must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Expectation:
    summary: str
    bands: tuple[RiskBand, ...] = ()
    first_high_h: tuple[float, float] | None = None
    """The first minute at which NEWS2 risk is high falls in this window (hours since the start)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    course: Course
    expected: Expectation
    duration_h: float = 48.0
    devices: tuple[DeviceKind, ...] = NEWS2_KIT
    faults: tuple[FaultEvent, ...] = ()

    def __post_init__(self) -> None:
        if self.duration_h <= 0:
            raise ScenarioError(f"scenario {self.name}: duration_h must be > 0")
        for band in self.expected.bands:
            if band.to_h > self.duration_h:
                raise ScenarioError(f"scenario {self.name}: a risk band ends after the scenario")
        for fault in self.faults:
            if fault.device_kind is not None and fault.device_kind not in self.devices:
                raise ScenarioError(f"scenario {self.name}: fault on {fault.device_kind}, not in its kit")


def fault(
    kind: FaultKind,
    start_h: float,
    end_h: float,
    device_kind: DeviceKind | None = None,
    *,
    artefacts_per_min: float = 0.0,
    flagged_fraction: float = 0.0,
    perfusion_index: float = 0.0,
    from_pct: float = 0.0,
    to_pct: float = 0.0,
    reason: str = "",
) -> FaultEvent:
    """A fault event with its times given in hours."""
    return FaultEvent(
        kind,
        start_h * 3600.0,
        end_h * 3600.0,
        device_kind,
        artefacts_per_min=artefacts_per_min,
        flagged_fraction=flagged_fraction,
        perfusion_index=perfusion_index,
        from_pct=from_pct,
        to_pct=to_pct,
        reason=reason,
    )


_HR = VitalCode.HEART_RATE
_RR = VitalCode.RESPIRATORY_RATE
_SPO2 = VitalCode.SPO2
_SBP = VitalCode.SYSTOLIC_BP
_DBP = VitalCode.DIASTOLIC_BP
_TEMP = VitalCode.BODY_TEMPERATURE
_GLUCOSE = VitalCode.BLOOD_GLUCOSE
_OXI = DeviceKind.PULSE_OXIMETER_CONTINUOUS

STABLE_COURSE: Final = Course()

SEPSIS_COURSE: Final = Course(
    keyframes={
        _HR: ((0, 78), (8, 82), (14, 104), (18, 118), (24, 126), (48, 128)),
        _RR: ((0, 15.5), (8, 16.5), (14, 21), (18, 24), (24, 26), (48, 27)),
        _SPO2: ((0, 97), (8, 96.6), (14, 95.4), (18, 94.5), (24, 93.8), (48, 93.5)),
        _SBP: ((0, 126), (8, 122), (14, 108), (18, 98), (24, 92), (48, 90)),
        _DBP: ((0, 78), (8, 74), (14, 62), (18, 56), (24, 52), (48, 50)),
        _TEMP: ((0, 37.0), (8, 37.5), (14, 38.5), (18, 39.0), (24, 39.3), (48, 39.4)),
        _GLUCOSE: ((0, 105), (12, 130), (24, 160), (48, 165)),
    },
    circadian_scale=0.6,
    consciousness=((0.0, Consciousness.ALERT), (24.0, Consciousness.CONFUSION)),
)

COPD_COURSE: Final = Course(
    keyframes={
        _HR: ((0, 76), (12, 78), (20, 96), (26, 110), (48, 114)),
        _RR: ((0, 17), (12, 17.5), (20, 23), (26, 27), (48, 28)),
        _SPO2: ((0, 89.5), (12, 89.5), (20, 88), (26, 85), (48, 84.5)),
        _SBP: ((0, 138), (12, 136), (26, 132), (48, 130)),
        _DBP: ((0, 82), (48, 80)),
        _TEMP: ((0, 36.8), (12, 36.9), (26, 37.8), (48, 37.9)),
    },
    on_oxygen=True,
    spo2_scale=2,
)

BLEED_COURSE: Final = Course(
    keyframes={
        _HR: ((0, 76), (4, 78), (10, 96), (16, 118), (20, 124), (48, 126)),
        _RR: ((0, 15), (4, 15), (10, 18), (16, 22.5), (20, 24), (48, 25)),
        _SPO2: ((0, 97.2), (10, 96.5), (16, 95.5), (20, 95), (48, 94.8)),
        _SBP: ((0, 130), (4, 128), (10, 116), (16, 96), (20, 88), (48, 86)),
        _DBP: ((0, 80), (4, 79), (10, 70), (16, 58), (20, 52), (48, 50)),
        _TEMP: ((0, 36.8), (20, 36.4), (48, 36.3)),
    },
    circadian_scale=0.5,
    consciousness=((0.0, Consciousness.ALERT), (22.0, Consciousness.CONFUSION)),
)

AF_COURSE: Final = Course(
    keyframes={
        _HR: ((0, 76), (3, 76), (3.2, 146), (48, 146)),
        _RR: ((0, 15), (3, 15), (3.5, 18.5), (48, 18.5)),
        _SBP: ((0, 132), (3, 132), (3.5, 116), (48, 116)),
        _DBP: ((0, 80), (3, 80), (3.5, 74), (48, 74)),
        _SPO2: ((0, 97.3), (3, 97.3), (3.5, 96.8), (48, 96.8)),
    },
    hr_irregularity=((0, 0), (3, 0), (3.2, 12), (48, 12)),
    circadian_scale=0.5,
)

HYPOTHERMIA_COURSE: Final = Course(
    keyframes={
        _TEMP: ((0, 36.4), (4, 36.2), (12, 35.0), (18, 34.2), (24, 33.8), (48, 33.6)),
        _HR: ((0, 70), (4, 68), (12, 58), (18, 49), (24, 45), (48, 44)),
        _RR: ((0, 14.5), (4, 14), (12, 12), (18, 10), (24, 9), (48, 9)),
        _SBP: ((0, 132), (12, 120), (18, 108), (24, 102), (48, 100)),
        _DBP: ((0, 80), (12, 74), (18, 66), (24, 62), (48, 60)),
        _SPO2: ((0, 97), (18, 96), (48, 95.8)),
    },
    circadian_scale=0.4,
    consciousness=((0.0, Consciousness.ALERT), (16.0, Consciousness.CONFUSION)),
)

_ARTEFACTS: Final = (
    fault(FaultKind.PROBE_OFF, 1.0, 1.25, _OXI),
    fault(FaultKind.PROBE_OFF, 9.5, 9.55, _OXI),
    fault(FaultKind.PROBE_OFF, 30.0, 31.0, _OXI),
    fault(FaultKind.MOTION, 2.0, 3.0, _OXI, artefacts_per_min=1.0, flagged_fraction=0.5),
    fault(FaultKind.MOTION, 12.0, 12.5, _OXI, artefacts_per_min=2.0, flagged_fraction=0.3),
    fault(FaultKind.MOTION, 26.0, 28.0, _OXI, artefacts_per_min=0.5, flagged_fraction=0.0),
    fault(FaultKind.LOW_PERFUSION, 18.0, 19.5, _OXI, perfusion_index=0.35),
    fault(FaultKind.LOW_PERFUSION, 40.0, 40.5, _OXI, perfusion_index=0.45),
)

_STABLE_EXPECTATION: Final = Expectation(
    "NEWS2 low (0-4, no single 3) at every minute: normal vitals with circadian variation and noise.",
    bands=(RiskBand(0, 48, highest=Risk.LOW),),
)

_SCENARIO_LIST: Final = (
    Scenario(
        "stable",
        "Stable patient",
        STABLE_COURSE,
        _STABLE_EXPECTATION,
    ),
    Scenario(
        "sepsis",
        "Sepsis: rising pulse, respiration and temperature, falling blood pressure",
        SEPSIS_COURSE,
        Expectation(
            "Well for 8 h, then infection takes hold: pulse, respiratory rate and temperature rise and blood "
            "pressure falls. Low for the first 8 h; NEWS2 high first between 10 h and 19.5 h (median "
            "~15 h); new confusion from 24 h, high at every minute from then on.",
            bands=(
                RiskBand(0, 8, highest=Risk.LOW),
                RiskBand(24, 48, lowest=Risk.HIGH),
            ),
            first_high_h=(10.0, 19.5),
        ),
        devices=SEPSIS_KIT,
    ),
    Scenario(
        "copd",
        "COPD exacerbation on SpO2 Scale 2 with home oxygen",
        COPD_COURSE,
        Expectation(
            "Known hypercapnic COPD, on home oxygen, target SpO2 88-92 % (Scale 2). Stable for 12 h "
            "(SpO2 ~89.5 % scores 0 on Scale 2; oxygen adds 2: low in at least 90 % of minutes), then an "
            "exacerbation: respiratory rate to 27, pulse to 110, SpO2 to 85 %. NEWS2 high first between "
            "16.5 h and 25.5 h (median ~21.5 h), high in at least 90 % of minutes from 30 h on. On "
            "Scale 1 the same patient mostly scores SpO2 3 and is medium or worse from the first minute.",
            bands=(
                RiskBand(0, 12, highest=Risk.LOW, fraction=0.9),
                RiskBand(30, 48, lowest=Risk.HIGH, fraction=0.9),
            ),
            first_high_h=(16.5, 25.5),
        ),
    ),
    Scenario(
        "bleed",
        "Hypotension from a slow gastrointestinal bleed",
        BLEED_COURSE,
        Expectation(
            "Bleeding from 4 h: blood pressure falls to the high 80s, pulse rises to 125, respiratory rate "
            "to 24. Low for the first 8 h; NEWS2 high first between 11 h and 20 h (median ~15 h), high at "
            "every minute from 22 h on; new confusion from 22 h.",
            bands=(
                RiskBand(0, 8, highest=Risk.LOW),
                RiskBand(22, 48, lowest=Risk.HIGH),
            ),
            first_high_h=(11.0, 20.0),
        ),
    ),
    Scenario(
        "af_fast",
        "Atrial fibrillation with fast ventricular rate",
        AF_COURSE,
        Expectation(
            "Sinus rhythm at ~76/min until 3 h, then paroxysmal AF: an irregular rate around 146/min "
            "(beat-to-beat spread 12/min). Low before 3 h; from 4 h at least low-medium (pulse >= 131 "
            "scores 3) in at least 75 % of minutes, and at most medium in at least 97 %.",
            bands=(
                RiskBand(0, 3, highest=Risk.LOW),
                RiskBand(4, 48, lowest=Risk.LOW_MEDIUM, fraction=0.75),
                RiskBand(4, 48, highest=Risk.MEDIUM, fraction=0.97),
            ),
        ),
    ),
    Scenario(
        "hypothermia",
        "Accidental hypothermia in a cold home",
        HYPOTHERMIA_COURSE,
        Expectation(
            "Temperature falls from 36.4 °C to below 34 °C, with slowing pulse and breathing. Low for the "
            "first 6 h; low-medium or worse at every minute from 15 h (temperature <= 35.0 °C scores 3); "
            "NEWS2 high first between 9.5 h and 18 h (usually at 16 h, when new confusion adds 3), high "
            "in at least 90 % of minutes from 20 h on.",
            bands=(
                RiskBand(0, 6, highest=Risk.LOW),
                RiskBand(15, 48, lowest=Risk.LOW_MEDIUM),
                RiskBand(20, 48, lowest=Risk.HIGH, fraction=0.9),
            ),
            first_high_h=(9.5, 18.0),
        ),
    ),
    Scenario(
        "artefacts",
        "Stable patient with probe-off, motion artefacts and low perfusion",
        STABLE_COURSE,
        Expectation(
            "Physiology of the stable scenario, so the true risk stays low. The oximeter's samples contain "
            "probe-off intervals, single-sample motion outliers (SpO2 dropped 6-18 points, pulse up "
            "25-60/min; only some flagged) and low-perfusion intervals (PI < 0.6 %, flagged, noisier). "
            "The agent's chart (quality filter, 60 s rolling median of SpO2 and pulse) stays low.",
            bands=(RiskBand(0, 48, highest=Risk.LOW),),
        ),
        faults=_ARTEFACTS,
    ),
    Scenario(
        "battery_drain",
        "Stable patient whose oximeter battery runs out",
        STABLE_COURSE,
        _STABLE_EXPECTATION,
        faults=(
            fault(FaultKind.BATTERY_DRAIN, 2, 10, _OXI, from_pct=60, to_pct=5),
            fault(FaultKind.BATTERY_DRAIN, 10, 11, _OXI, from_pct=5, to_pct=1),
            fault(FaultKind.BATTERY_EMPTY, 11, 14, _OXI),
            fault(FaultKind.BATTERY_DRAIN, 0, 48, DeviceKind.BLOOD_PRESSURE, from_pct=40, to_pct=25),
        ),
    ),
    Scenario(
        "disconnects",
        "Stable patient with devices dropping out of range",
        STABLE_COURSE,
        _STABLE_EXPECTATION,
        faults=(
            fault(FaultKind.DEVICE_DISCONNECT, 0.5, 0.52, _OXI, reason="out of range"),
            fault(FaultKind.DEVICE_DISCONNECT, 3.0, 3.25, _OXI, reason="out of range"),
            fault(FaultKind.DEVICE_DISCONNECT, 5.0, 9.0, DeviceKind.BLOOD_PRESSURE, reason="out of range"),
            fault(FaultKind.DEVICE_DISCONNECT, 12.0, 20.0, DeviceKind.THERMOMETER, reason="bond lost"),
            fault(
                FaultKind.DEVICE_DISCONNECT, 22.0, 22.1, DeviceKind.RESPIRATION_MONITOR, reason="out of range"
            ),
        ),
    ),
    Scenario(
        "uplink_loss",
        "Sepsis while the gateway has no uplink for 10 hours",
        SEPSIS_COURSE,
        Expectation(
            "The sepsis course, with the gateway's uplink down from 10 h to 20 h. NEWS2 is high first "
            "between 10 h and 19.5 h, i.e. while the gateway is offline: the agent must score and alert "
            "locally, keep every reading, and deliver the backlog when the uplink returns at 20 h.",
            bands=(
                RiskBand(0, 8, highest=Risk.LOW),
                RiskBand(24, 48, lowest=Risk.HIGH),
            ),
            first_high_h=(10.0, 19.5),
        ),
        devices=SEPSIS_KIT,
        faults=(fault(FaultKind.UPLINK_DOWN, 10, 20),),
    ),
)

SCENARIOS: Final[Mapping[str, Scenario]] = {scenario.name: scenario for scenario in _SCENARIO_LIST}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenarioError(name, sorted(SCENARIOS)) from None
