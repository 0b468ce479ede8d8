"""The edge agent's per-patient NEWS2 chart: readings in, an assessment out whenever the picture changes.

::

    chart = PatientChart("pt-0042", settings=ChartSettings(), spo2_scale=1, on_oxygen=False)
    assessment = chart.observe(reading, now=now)    # AssessmentContent, or None when nothing changed
    assessment = chart.reassess(now=now)            # call on a timer: values go stale without new readings
    assessment = chart.set_on_oxygen(True, now=now) # the server's commands are methods too

Pure: no clocks, files or tasks. ``now`` is passed in (an aware datetime) and every result is a
:class:`~edge_agent.protocol.AssessmentContent`, the ``…/score`` payload without its message head, which
the agent hands to the outbox as it is.

What happens to a reading (docs/scoring.md has the defaults and why):

1. **Quality.** A reading flagged probe-off, low perfusion, no sensor contact, implausible or device error,
   with a perfusion index below ``min_perfusion_index`` (0.6 %), outside the physiologically possible
   range for its vital, or measured more than ``max_clock_ahead_s`` in the future, is not scored
   (:func:`exclusion_reason` says why; :attr:`PatientChart.excluded` counts). The agent still keeps it in
   the record: the outbox sends every reading.
2. **Rolling median.** For the continuous vitals (SpO2 and pulse) the value scored is the median of the
   valid samples measured within ``median_window_s`` (60 s) of the newest one, so once a stream has three or
   more samples in the window one artefact sample cannot raise an alert; the median's time is the newest
   sample's. A lone spot reading is scored as it is.
3. **Latest and staleness.** Each vital keeps its newest valid value; a reading older than that does not
   replace it. A value older than its vital's staleness window counts as missing (component ``None``).
   Every assessment records every input's age.
4. **Scoring.** :func:`~edge_agent.scoring.news2.news2_one` (the same tables as ``news2``) with the
   patient's SpO2 scale, oxygen and consciousness (settings, not readings: they never go stale).
5. **Trend.** ``trend_rising`` is set while the score has risen by ``trend_rise`` points (2) or more within
   ``trend_window_s`` (6 h), counting only components present both then and now, so a component that
   comes back after going stale is not mistaken for a rise.
6. **Change.** An assessment is returned only when a component, the risk, a setting (scale, oxygen,
   consciousness) or ``trend_rising`` differs from the last one returned; identical readings return None.
"""

from __future__ import annotations

import math
import statistics
from bisect import insort
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.protocol import (
    NEWS2_PARAMETERS,
    AssessmentContent,
    Consciousness,
    QualityFlag,
    Risk,
    VitalCode,
)
from edge_agent.scoring.news2 import news2_one

__all__ = [
    "DEFAULT_EXCLUDED_FLAGS",
    "DEFAULT_PLAUSIBLE_RANGES",
    "DEFAULT_STALENESS_S",
    "NEWS2_VITALS",
    "ChartSettings",
    "ExclusionReason",
    "PatientChart",
    "ScorableReading",
    "exclusion_reason",
]

MINUTE: Final = 60.0
HOUR: Final = 3600.0
MAX_WINDOW_S: Final = 7 * 24 * HOUR

NEWS2_VITALS: Final[Mapping[VitalCode, str]] = {
    VitalCode.RESPIRATORY_RATE: "respiration",
    VitalCode.SPO2: "spo2",
    VitalCode.SYSTOLIC_BP: "systolic_bp",
    VitalCode.HEART_RATE: "pulse",
    VitalCode.BODY_TEMPERATURE: "temperature",
}
"""The vital signs NEWS2 scores, and the component each one feeds."""

DEFAULT_STALENESS_S: Final[Mapping[VitalCode, float]] = {
    # Continuous: a worn pulse oximeter sends every second or so. After 15 minutes without a valid
    # sample the probe is off or the device is gone, and the old value no longer describes the patient.
    VitalCode.SPO2: 15 * MINUTE,
    VitalCode.HEART_RATE: 15 * MINUTE,
    # Spot checks: taken by the patient or a visiting clinician, a few times a day. NEWS2's longest
    # monitoring interval is 12-hourly (aggregate 0), so a spot value is current for 12 hours.
    VitalCode.RESPIRATORY_RATE: 12 * HOUR,
    VitalCode.SYSTOLIC_BP: 12 * HOUR,
    VitalCode.BODY_TEMPERATURE: 12 * HOUR,
}

DEFAULT_PLAUSIBLE_RANGES: Final[Mapping[VitalCode, tuple[float, float]]] = {
    VitalCode.RESPIRATORY_RATE: (3.0, 80.0),
    VitalCode.SPO2: (50.0, 100.0),
    VitalCode.SYSTOLIC_BP: (40.0, 300.0),
    VitalCode.HEART_RATE: (20.0, 250.0),
    VitalCode.BODY_TEMPERATURE: (25.0, 45.0),
}
"""Readings outside these (inclusive) ranges are physiologically impossible in a monitored home patient
and are treated as artefacts; the wire contract's wider ``VITALS`` ranges only reject nonsense."""

DEFAULT_EXCLUDED_FLAGS: Final = frozenset(
    {
        QualityFlag.PROBE_OFF,
        QualityFlag.LOW_PERFUSION,
        QualityFlag.NO_SENSOR_CONTACT,
        QualityFlag.IMPLAUSIBLE,
        QualityFlag.DEVICE_ERROR,
    }
)
"""Motion is not excluded by default: the rolling median absorbs motion artefacts, and excluding every
motion-flagged sample would blind the chart in a restless (perhaps deteriorating) patient."""


class ScorableReading(Protocol):
    """What the chart needs from a reading: both ``drivers.Reading`` and ``protocol.Observation`` fit."""

    @property
    def vital(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def measured_at(self) -> datetime: ...
    @property
    def quality(self) -> Collection[str]: ...
    @property
    def perfusion_index(self) -> float | None: ...


class ExclusionReason(StrEnum):
    PROBE_OFF = "probe_off"
    LOW_PERFUSION = "low_perfusion"
    MOTION = "motion"
    NO_SENSOR_CONTACT = "no_sensor_contact"
    IMPLAUSIBLE = "implausible"
    DEVICE_ERROR = "device_error"
    FUTURE_TIMESTAMP = "future_timestamp"


PositiveWindow = Annotated[float, Field(gt=0, le=MAX_WINDOW_S)]


class ChartSettings(BaseModel):
    """How the chart treats readings; the defaults are documented in docs/scoring.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    staleness_s: dict[VitalCode, PositiveWindow] = Field(default_factory=lambda: dict(DEFAULT_STALENESS_S))
    """Seconds after which a vital's latest value counts as missing. Vitals not listed never go stale."""
    median_window_s: float = Field(default=60.0, ge=0, le=HOUR)
    """Rolling median span for ``median_vitals``; 0 scores every sample as it is."""
    median_vitals: frozenset[VitalCode] = frozenset({VitalCode.SPO2, VitalCode.HEART_RATE})
    median_max_samples: int = Field(default=600, ge=1, le=100_000)
    """Bound on the samples kept per vital for the median (the oldest go first)."""
    min_perfusion_index: float = Field(default=0.6, ge=0, le=100)
    """Readings with a perfusion index (percent) below this are not scored."""
    excluded_flags: frozenset[QualityFlag] = DEFAULT_EXCLUDED_FLAGS
    plausible_ranges: dict[VitalCode, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PLAUSIBLE_RANGES)
    )
    trend_window_s: PositiveWindow = 6 * HOUR
    trend_rise: int = Field(default=2, ge=1, le=20)
    max_clock_ahead_s: float = Field(default=300.0, ge=0, le=HOUR)
    """A reading measured further than this after ``now`` is not scored (a wrong device clock)."""

    @field_validator("plausible_ranges")
    @classmethod
    def _ordered_ranges(
        cls, value: dict[VitalCode, tuple[float, float]]
    ) -> dict[VitalCode, tuple[float, float]]:
        for vital, (low, high) in value.items():
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"plausible range for {vital} must be two finite numbers, low < high")
        return value


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def exclusion_reason(
    reading: ScorableReading, *, settings: ChartSettings, now: datetime
) -> ExclusionReason | None:
    """Why this reading must not be scored, or None when it may be."""
    for flag in sorted(str(flag) for flag in reading.quality):
        if flag in settings.excluded_flags:
            return ExclusionReason(flag)
    if reading.perfusion_index is not None and reading.perfusion_index < settings.min_perfusion_index:
        return ExclusionReason.LOW_PERFUSION
    value = reading.value
    plausible = settings.plausible_ranges.get(VitalCode(reading.vital))
    if not math.isfinite(value) or (plausible is not None and not plausible[0] <= value <= plausible[1]):
        return ExclusionReason.IMPLAUSIBLE
    if _seconds(reading.measured_at - now) > settings.max_clock_ahead_s:
        return ExclusionReason.FUTURE_TIMESTAMP
    return None


@dataclass(frozen=True, slots=True)
class ScoredValue:
    """The value the chart scores for one vital, and when it was measured."""

    value: float
    measured_at: datetime


@dataclass(frozen=True, slots=True)
class _Picture:
    """What decides whether an assessment is new."""

    components: tuple[int | None, ...]
    risk: Risk
    spo2_scale: Literal[1, 2]
    on_oxygen: bool
    consciousness: Consciousness
    trend_rising: bool


@dataclass(frozen=True, slots=True)
class _Evaluation:
    picture: _Picture
    now: datetime
    total: int
    complete: bool
    ages: dict[str, float | None]


class PatientChart:
    """One patient's NEWS2 state on the gateway. Not thread-safe; the agent owns one per patient."""

    def __init__(
        self,
        patient_id: str,
        *,
        settings: ChartSettings | None = None,
        spo2_scale: Literal[1, 2] = 1,
        on_oxygen: bool = False,
        consciousness: Consciousness = Consciousness.ALERT,
        settings_at: datetime | None = None,
    ) -> None:
        """``spo2_scale``, ``on_oxygen`` and ``consciousness`` are the patient's current settings (the
        server's last commands, as the agent stored them); ``settings_at`` is when they were set, or None
        when they are defaults nobody has entered (their input age is then reported as null)."""
        if settings_at is not None:
            _check_aware(settings_at)
        self.patient_id = patient_id
        self._settings = settings or ChartSettings()
        self._spo2_scale: Literal[1, 2] = spo2_scale
        self._on_oxygen = on_oxygen
        self._consciousness = Consciousness(consciousness)
        self._oxygen_set_at = settings_at
        self._consciousness_set_at = settings_at
        self._samples: dict[VitalCode, list[tuple[datetime, float]]] = {}
        self._latest: dict[VitalCode, ScoredValue] = {}
        self._history: list[tuple[datetime, tuple[int | None, ...]]] = []
        self._last_picture: _Picture | None = None
        self._last: AssessmentContent | None = None
        self.excluded: Counter[ExclusionReason] = Counter()
        """How many readings were not scored, by reason."""

    # ------------------------------------------------------------------ state the agent may read

    @property
    def settings(self) -> ChartSettings:
        return self._settings

    @property
    def latest(self) -> Mapping[VitalCode, ScoredValue]:
        """The value each vital is scored with (after the median), fresh or stale."""
        return dict(self._latest)

    @property
    def last_assessment(self) -> AssessmentContent | None:
        """The last assessment returned (by any method), or None before the first."""
        return self._last

    # ------------------------------------------------------------------ inputs

    def observe(self, reading: ScorableReading, *, now: datetime) -> AssessmentContent | None:
        """Take one reading; return a new assessment if it changed the picture, else None.

        Readings of vitals NEWS2 does not score (weight, glucose, diastolic BP...) are ignored.
        """
        _check_aware(now)
        try:
            vital = VitalCode(reading.vital)
        except ValueError:
            raise ValueError(f"unknown vital {reading.vital!r}") from None
        if vital not in NEWS2_VITALS:
            return None
        reason = exclusion_reason(reading, settings=self._settings, now=now)
        if reason is not None:
            self.excluded[reason] += 1
            return self.reassess(now=now)
        if vital in self._settings.median_vitals and self._settings.median_window_s > 0:
            self._add_sample(vital, reading.measured_at, float(reading.value))
        else:
            current = self._latest.get(vital)
            if current is None or reading.measured_at >= current.measured_at:
                self._latest[vital] = ScoredValue(float(reading.value), reading.measured_at)
        return self.reassess(now=now)

    def _add_sample(self, vital: VitalCode, measured_at: datetime, value: float) -> None:
        samples = self._samples.setdefault(vital, [])
        window = timedelta(seconds=self._settings.median_window_s)
        if samples and measured_at < samples[-1][0] - window:
            return  # too old to be part of the current median
        insort(samples, (measured_at, value))
        newest = samples[-1][0]
        keep_from = 0
        while keep_from < len(samples) and samples[keep_from][0] < newest - window:
            keep_from += 1
        keep_from = max(keep_from, len(samples) - self._settings.median_max_samples)
        del samples[:keep_from]
        self._latest[vital] = ScoredValue(statistics.median(value for _, value in samples), newest)

    def set_spo2_scale(self, scale: Literal[1, 2], *, now: datetime) -> AssessmentContent | None:
        """The server's ``set_spo2_scale`` command (Scale 2: hypercapnic respiratory failure)."""
        if scale not in (1, 2):
            raise ValueError(f"spo2_scale must be 1 or 2, got {scale!r}")
        self._spo2_scale = scale
        return self.reassess(now=now)

    def set_on_oxygen(self, on_oxygen: bool, *, now: datetime) -> AssessmentContent | None:
        """The server's ``set_oxygen`` command."""
        _check_aware(now)
        self._on_oxygen = bool(on_oxygen)
        self._oxygen_set_at = now
        return self.reassess(now=now)

    def set_consciousness(
        self, consciousness: Consciousness | str, *, now: datetime
    ) -> AssessmentContent | None:
        """The server's ``set_consciousness`` command (ACVPU entered by a clinician)."""
        _check_aware(now)
        self._consciousness = Consciousness(consciousness)
        self._consciousness_set_at = now
        return self.reassess(now=now)

    def set_staleness(
        self, windows_s: Mapping[VitalCode, float], *, now: datetime
    ) -> AssessmentContent | None:
        """The server's ``set_staleness`` command: replace the windows of the vitals named."""
        merged = {
            **self._settings.staleness_s,
            **{VitalCode(vital): window for vital, window in windows_s.items()},
        }
        self._settings = self._settings.model_copy(
            update={"staleness_s": ChartSettings(staleness_s=merged).staleness_s}
        )
        return self.reassess(now=now)

    # ------------------------------------------------------------------ outputs

    def reassess(self, *, now: datetime) -> AssessmentContent | None:
        """Score at ``now``; return the assessment if the picture changed since the last one returned."""
        evaluation = self._evaluate(now)
        if evaluation.picture == self._last_picture:
            return None
        return self._returned(evaluation)

    def assess(self, *, now: datetime) -> AssessmentContent:
        """Score at ``now`` and return the assessment whether or not it changed (it counts as returned)."""
        return self._returned(self._evaluate(now))

    def _returned(self, evaluation: _Evaluation) -> AssessmentContent:
        picture = evaluation.picture
        assessment = AssessmentContent(
            patient_id=self.patient_id,
            assessed_at=evaluation.now,
            total=evaluation.total,
            components=dict(zip(NEWS2_PARAMETERS, picture.components, strict=True)),
            risk=picture.risk,
            complete=evaluation.complete,
            input_ages_s=evaluation.ages,
            spo2_scale=picture.spo2_scale,
            on_oxygen=picture.on_oxygen,
            consciousness=picture.consciousness,
            trend_rising=picture.trend_rising,
        )
        self._last_picture = picture
        self._last = assessment
        return assessment

    def _evaluate(self, now: datetime) -> _Evaluation:
        _check_aware(now)
        values: dict[str, float] = {}
        ages: dict[str, float | None] = {}
        for vital, component in NEWS2_VITALS.items():
            scored = self._latest.get(vital)
            if scored is None:
                values[component] = math.nan
                ages[str(vital)] = None
                continue
            age = max(0.0, _seconds(now - scored.measured_at))
            ages[str(vital)] = age
            window = self._settings.staleness_s.get(vital)
            values[component] = math.nan if window is not None and age > window else scored.value
        for name, set_at in (
            ("on_oxygen", self._oxygen_set_at),
            ("consciousness", self._consciousness_set_at),
        ):
            ages[name] = None if set_at is None else max(0.0, _seconds(now - set_at))

        result = news2_one(
            respiratory_rate=values["respiration"],
            spo2=values["spo2"],
            systolic_bp=values["systolic_bp"],
            pulse=values["pulse"],
            temperature=values["temperature"],
            on_oxygen=self._on_oxygen,
            alert=self._consciousness is Consciousness.ALERT,
            spo2_scale=self._spo2_scale,
        )
        picture = _Picture(
            components=result.components,
            risk=result.risk,
            spo2_scale=self._spo2_scale,
            on_oxygen=self._on_oxygen,
            consciousness=self._consciousness,
            trend_rising=self._trend(now, result.components),
        )
        return _Evaluation(picture=picture, now=now, total=result.total, complete=result.complete, ages=ages)

    def _trend(self, now: datetime, scores: tuple[int | None, ...]) -> bool:
        """Whether the score rose by ``trend_rise`` within the window; records ``scores`` as of ``now``."""
        window_start = now - timedelta(seconds=self._settings.trend_window_s)
        # Keep the state in effect at the window's start (the last one before it) and everything after.
        while len(self._history) >= 2 and self._history[1][0] <= window_start:
            del self._history[0]
        rise = max((_rise(earlier, scores) for _, earlier in self._history), default=0)
        if not self._history or (self._history[-1][1] != scores and now >= self._history[-1][0]):
            self._history.append((now, scores))
        return rise >= self._settings.trend_rise


def _rise(earlier: tuple[int | None, ...], current: tuple[int | None, ...]) -> int:
    """How much the score rose, counting only the components present in both."""
    return sum(
        now - then for then, now in zip(earlier, current, strict=True) if then is not None and now is not None
    )
