"""A simulated patient: true vital signs at any instant, and the samples their devices would take.

Everything is a pure function of ``(seed, scenario, start, t)``: no clocks, no sleeps, no hidden state.
``vitals_at(t)`` answers for any ``t`` in any order; ``samples(t0, t1)`` yields what the devices measure
in ``[t0, t1)`` in time order, and reading ``[t0, t1)`` in two pieces gives the same samples as reading it
at once.

Time ``t`` is in simulated seconds since ``start`` (the scenario's hour 0). Device sampling happens on
whole seconds, so every sample's ``t_s`` is an integer.

Samples are what the device *measures*. A device whose battery is empty measures nothing; a device that
is disconnected still measures (a spot device keeps the reading in its memory, a live stream is lost) —
whether and when a sample reaches the gateway is the device simulator's business, answered by
:meth:`Patient.device_connected`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from edge_agent.protocol import VITALS, Consciousness, Observation, QualityFlag, TimeSource, VitalCode

from . import faults as fault_queries
from .cadence import CADENCES, MAX_USES_PER_DAY, Cadence, DeviceKind
from .course import (
    CIRCADIAN,
    LIMITS,
    MEAL_PEAK_S,
    MEAL_RISE_MG_DL,
    MEALS_H,
    MIN_PULSE_PRESSURE,
    MODELLED,
    PERFUSION_LIMITS,
    PERFUSION_VARIABILITY,
    VARIABILITY,
    VARIABILITY_SPACING_S,
)
from .errors import ScenarioError
from .faults import FaultEvent, FaultKind, FaultTransition
from .noise import FloatArray, IntArray, lattice_normal, lattice_uniform, linear_noise, smooth_noise
from .scenarios import Scenario, get_scenario

DEFAULT_START: Final = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
"""Hour 0 of a scenario unless the caller gives another start: a Monday, 08:00 UTC."""

DAY_S: Final = 86400
_CHUNK_SAMPLES: Final = 3600
_IRREGULARITY_SPACING_S: Final = 3.0

MOTION_SPO2_DROP: Final = (6.0, 18.0)
"""A motion artefact drops SpO2 by a uniform amount in this range (percentage points)."""
MOTION_PULSE_SPIKE: Final = (25.0, 60.0)
"""… and raises the pulse by a uniform amount in this range (/min)."""
LOW_PERFUSION_NOISE_FACTOR: Final = 3.0
"""Measurement noise of SpO2 and pulse is this many times larger at low perfusion."""
LOW_PERFUSION_THRESHOLD: Final = 0.6
"""Devices flag LOW_PERFUSION when the perfusion index they report is below this (percent)."""

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Vitals:
    """The patient's true state at one instant (no measurement error, no artefacts)."""

    t_s: float
    heart_rate: float
    respiratory_rate: float
    spo2: float
    systolic_bp: float
    diastolic_bp: float
    mean_arterial_pressure: float
    body_temperature: float
    body_weight: float
    blood_glucose: float
    perfusion_index: float
    consciousness: Consciousness
    on_oxygen: bool
    spo2_scale: Literal[1, 2]

    def value(self, vital: VitalCode) -> float:
        value: float = getattr(self, vital.value)
        return value

    def as_mapping(self) -> dict[VitalCode, float]:
        return {vital: self.value(vital) for vital in VitalCode}


@dataclass(frozen=True, slots=True)
class VitalsSeries:
    """True vitals at many instants, as arrays aligned with ``t_s`` (ready for a vectorised scorer)."""

    t_s: FloatArray
    values: Mapping[VitalCode, FloatArray]
    perfusion_index: FloatArray
    consciousness: tuple[Consciousness, ...]
    on_oxygen: BoolArray
    spo2_scale: IntArray

    @property
    def alert(self) -> BoolArray:
        """NEWS2's consciousness input: True for A, False for new confusion, V, P or U."""
        return np.array([c is Consciousness.ALERT for c in self.consciousness], dtype=np.bool_)

    def __getitem__(self, vital: VitalCode) -> FloatArray:
        return self.values[vital]

    def __len__(self) -> int:
        return len(self.t_s)


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading a device takes, as the device would report it."""

    t_s: int
    """Simulated seconds since the scenario's start."""
    measured_at: datetime
    device_kind: DeviceKind
    values: Mapping[VitalCode, float]
    """Empty when the device could not measure (probe off)."""
    quality: frozenset[QualityFlag]
    perfusion_index: float | None = None

    def value(self, vital: VitalCode) -> float | None:
        return self.values.get(vital)

    def to_observations(
        self,
        *,
        patient_id: str,
        device_id: str,
        time_source: TimeSource = TimeSource.DEVICE,
        historical: bool = False,
    ) -> list[Observation]:
        """The sample as wire-contract observations, one per vital (none for a probe-off sample)."""
        return [
            Observation(
                patient_id=patient_id,
                vital=vital,
                value=value,
                unit=VITALS[vital].ucum,
                measured_at=self.measured_at,
                time_source=time_source,
                device_id=device_id,
                quality=sorted(self.quality),
                perfusion_index=self.perfusion_index,
                historical=historical,
            )
            for vital, value in self.values.items()
        ]


class Patient:
    """One simulated patient: a scenario, a seed and the wall-clock instant of the scenario's hour 0.

    ``utc_offset`` is the home's fixed offset from UTC; circadian rhythms, meals and the times at which
    the patient uses spot devices follow local time.
    """

    def __init__(
        self,
        scenario: Scenario | str,
        *,
        seed: int,
        start: datetime = DEFAULT_START,
        utc_offset: timedelta = timedelta(0),
        cadences: Mapping[DeviceKind, Cadence] = CADENCES,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ScenarioError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ScenarioError("start must be timezone-aware (UTC)")
        if abs(utc_offset) > timedelta(hours=14):
            raise ScenarioError("utc_offset must be within ±14 h")
        self.scenario = get_scenario(scenario) if isinstance(scenario, str) else scenario
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.utc_offset = utc_offset
        self.cadences = dict(cadences)
        local = self.start + utc_offset
        self._local_sod0 = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6

    def __repr__(self) -> str:
        return f"Patient({self.scenario.name!r}, seed={self.seed}, start={self.start.isoformat()})"

    # ----------------------------------------------------------------------------------------------
    # time

    def time_of(self, t_s: float) -> datetime:
        """The UTC instant of simulated second ``t_s``."""
        return self.start + timedelta(seconds=t_s)

    def seconds_at(self, when: datetime) -> float:
        """Simulated seconds since the start at the instant ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise ScenarioError("when must be timezone-aware")
        return (when - self.start).total_seconds()

    def _local_hour(self, t_s: FloatArray) -> FloatArray:
        result: FloatArray = np.mod(self._local_sod0 + t_s, DAY_S) / 3600.0
        return result

    # ----------------------------------------------------------------------------------------------
    # true physiology

    def vitals_at(self, t: float | datetime) -> Vitals:
        """The patient's true vital signs at simulated second ``t`` (or at the instant ``t``)."""
        t_s = self.seconds_at(t) if isinstance(t, datetime) else float(t)
        series = self.vitals_series(np.array([t_s]))
        return Vitals(
            t_s=t_s,
            **{vital.value: float(series.values[vital][0]) for vital in VitalCode},
            perfusion_index=float(series.perfusion_index[0]),
            consciousness=series.consciousness[0],
            on_oxygen=bool(series.on_oxygen[0]),
            spo2_scale=self.scenario.course.spo2_scale,
        )

    def vitals_series(self, t_s: npt.ArrayLike) -> VitalsSeries:
        """True vitals at each of the simulated seconds in ``t_s`` (any order, any spacing, >= 0)."""
        times = np.asarray(t_s, dtype=np.float64).reshape(-1)
        if times.size and (not np.all(np.isfinite(times)) or float(times.min()) < 0):
            raise ScenarioError("simulated times must be finite and >= 0")
        course = self.scenario.course
        hours = times / 3600.0
        local_hour = self._local_hour(times)
        values: dict[VitalCode, FloatArray] = {}
        for vital in MODELLED:
            frames = course.frames(vital)
            trend = np.interp(hours, [h for h, _ in frames], [v for _, v in frames])
            rhythm = CIRCADIAN[vital]
            circadian = (
                course.circadian_scale
                * rhythm.amplitude
                * np.cos(2 * math.pi * (local_hour - rhythm.peak_hour) / 24.0)
            )
            variability = np.zeros_like(times)
            for spacing, sd in zip(VARIABILITY_SPACING_S, VARIABILITY[vital], strict=True):
                if sd:
                    variability += sd * smooth_noise(self.seed, f"{vital}/{spacing:g}", times, spacing)
            values[vital] = trend + circadian + course.noise_scale * variability
        values[VitalCode.BLOOD_GLUCOSE] += self._meal_rise(local_hour)
        irregularity = np.interp(
            hours, [h for h, _ in course.hr_irregularity], [sd for _, sd in course.hr_irregularity]
        )
        if np.any(irregularity > 0):
            values[VitalCode.HEART_RATE] += irregularity * linear_noise(
                self.seed, "heart_rate/irregular", times, _IRREGULARITY_SPACING_S
            )
        for vital in MODELLED:
            values[vital] = np.clip(values[vital], *LIMITS[vital])
        systolic = values[VitalCode.SYSTOLIC_BP]
        diastolic = np.clip(
            np.minimum(values[VitalCode.DIASTOLIC_BP], systolic - MIN_PULSE_PRESSURE),
            *LIMITS[VitalCode.DIASTOLIC_BP],
        )
        values[VitalCode.DIASTOLIC_BP] = diastolic
        values[VitalCode.MEAN_ARTERIAL_PRESSURE] = diastolic + (systolic - diastolic) / 3.0

        log_pi = np.full_like(times, math.log(course.perfusion_index))
        for spacing, sd in zip(VARIABILITY_SPACING_S, PERFUSION_VARIABILITY, strict=True):
            log_pi += sd * smooth_noise(self.seed, f"perfusion/{spacing:g}", times, spacing)
        perfusion = np.clip(np.exp(log_pi), *PERFUSION_LIMITS)

        step_hours = [h for h, _ in course.consciousness]
        levels = [level for _, level in course.consciousness]
        step = np.searchsorted(step_hours, hours, side="right") - 1
        consciousness = tuple(levels[int(i)] for i in step)
        return VitalsSeries(
            t_s=times,
            values=values,
            perfusion_index=perfusion,
            consciousness=consciousness,
            on_oxygen=np.full(times.shape, course.on_oxygen, dtype=np.bool_),
            spo2_scale=np.full(times.shape, course.spo2_scale, dtype=np.int64),
        )

    @staticmethod
    def _meal_rise(local_hour: FloatArray) -> FloatArray:
        rise = np.zeros_like(local_hour)
        for meal in MEALS_H:
            since = np.mod(local_hour - meal, 24.0) * 3600.0 / MEAL_PEAK_S
            rise += MEAL_RISE_MG_DL * since * np.exp(1.0 - since)
        return rise

    # ----------------------------------------------------------------------------------------------
    # equipment faults

    @property
    def faults(self) -> tuple[FaultEvent, ...]:
        return self.scenario.faults

    def battery_pct(self, device_kind: DeviceKind, t_s: float) -> float:
        return fault_queries.battery_pct(self.faults, device_kind, t_s)

    def device_powered(self, device_kind: DeviceKind, t_s: float) -> bool:
        return fault_queries.device_powered(self.faults, device_kind, t_s)

    def device_connected(self, device_kind: DeviceKind, t_s: float) -> bool:
        return fault_queries.device_connected(self.faults, device_kind, t_s)

    def uplink_up(self, t_s: float) -> bool:
        return fault_queries.uplink_up(self.faults, t_s)

    def fault_transitions(self, t0_s: float, t1_s: float) -> Iterator[FaultTransition]:
        return fault_queries.transitions(self.faults, t0_s, t1_s)

    # ----------------------------------------------------------------------------------------------
    # measurement

    def _cadence(self, device_kind: DeviceKind) -> Cadence:
        try:
            return self.cadences[device_kind]
        except KeyError:
            raise ScenarioError(f"no cadence for device kind {device_kind!r}") from None

    def schedule(self, device_kind: DeviceKind, t0_s: float, t1_s: float) -> IntArray:
        """The whole seconds in ``[t0_s, t1_s)`` at which the device measures (battery permitting)."""
        cadence = self._cadence(device_kind)
        t0_s = max(0.0, t0_s)
        if t1_s <= t0_s:
            return np.empty(0, dtype=np.int64)
        if cadence.period_s is not None:
            first = math.ceil(t0_s / cadence.period_s)
            last = math.ceil(t1_s / cadence.period_s)
            return np.arange(first, last, dtype=np.int64) * cadence.period_s
        slots = np.asarray(cadence.times_of_day_h) * 3600.0
        first_day = max(0, math.floor((t0_s + self._local_sod0) / DAY_S) - 1)
        last_day = math.floor((t1_s + self._local_sod0) / DAY_S) + 1
        days = np.arange(first_day, last_day + 1, dtype=np.int64)
        base = (days[:, None] * DAY_S - self._local_sod0 + slots[None, :]).reshape(-1)
        index = (days[:, None] * MAX_USES_PER_DAY + np.arange(len(slots))[None, :]).reshape(-1)
        shift = np.clip(lattice_normal(self.seed, f"schedule/{device_kind}", index), -2.0, 2.0)
        times = np.round(base + cadence.jitter_s * shift).astype(np.int64)
        return times[(times >= t0_s) & (times < t1_s)]

    def device_samples(
        self, device_kind: DeviceKind, t0_s: float = 0.0, t1_s: float | None = None
    ) -> Iterator[Sample]:
        """What one device measures in ``[t0_s, t1_s)`` (endless when ``t1_s`` is None), in time order."""
        cadence = self._cadence(device_kind)
        window = float(_CHUNK_SAMPLES * (cadence.period_s or 1) if cadence.continuous else DAY_S)
        begin = max(0.0, t0_s)
        while t1_s is None or begin < t1_s:
            end = begin + window if t1_s is None else min(begin + window, t1_s)
            times = self.schedule(device_kind, begin, end)
            _, empty = self._active(FaultKind.BATTERY_EMPTY, device_kind, times)
            times = times[empty < 0]
            if len(times):
                yield from self._measure(cadence, times)
            begin = end

    def samples(
        self,
        t0_s: float = 0.0,
        t1_s: float | None = None,
        devices: Iterable[DeviceKind] | None = None,
    ) -> Iterator[Sample]:
        """Samples of several devices (default: the scenario's kit) merged in time order.

        Samples at the same second come in the order the devices are listed.
        """
        kinds = tuple(self.scenario.devices if devices is None else devices)
        order = {kind: i for i, kind in enumerate(kinds)}
        streams = [self.device_samples(kind, t0_s, t1_s) for kind in kinds]
        return heapq.merge(*streams, key=lambda s: (s.t_s, order[s.device_kind]))

    def _active(
        self, kind: FaultKind, device_kind: DeviceKind, times: IntArray
    ) -> tuple[list[FaultEvent], IntArray]:
        """The events of ``kind`` for the device and, per time, the index of the one active (-1: none)."""
        events = [e for e in self.faults if e.kind is kind and e.device_kind == device_kind]
        which = np.full(times.shape, -1, dtype=np.int64)
        for i, event in reversed(list(enumerate(events))):  # the first listed event wins
            which[(times >= event.start_s) & (times < event.end_s)] = i
        return events, which

    def _measure(self, cadence: Cadence, times: IntArray) -> Iterator[Sample]:
        kind = cadence.kind
        truth = self.vitals_series(times)
        measured: dict[VitalCode, FloatArray] = {}
        perfusion_events, perfusion_which = self._active(FaultKind.LOW_PERFUSION, kind, times)
        low_perfusion = perfusion_which >= 0
        for measurement in cadence.measures:
            vital = measurement.vital
            noise = lattice_normal(self.seed, f"measure/{kind}/{vital}", times)
            sd = np.full(times.shape, measurement.noise_sd)
            if vital in (VitalCode.SPO2, VitalCode.HEART_RATE):
                sd = np.where(low_perfusion, sd * LOW_PERFUSION_NOISE_FACTOR, sd)
            measured[vital] = truth.values[vital] + sd * noise
        if VitalCode.MEAN_ARTERIAL_PRESSURE in measured and VitalCode.SYSTOLIC_BP in measured:
            # An oscillometric cuff's three pressures are consistent with each other.
            sys_m, dia_m = measured[VitalCode.SYSTOLIC_BP], measured.get(VitalCode.DIASTOLIC_BP)
            if dia_m is not None:
                dia_m = np.minimum(dia_m, sys_m - MIN_PULSE_PRESSURE)
                measured[VitalCode.DIASTOLIC_BP] = dia_m
                measured[VitalCode.MEAN_ARTERIAL_PRESSURE] = np.clip(
                    measured[VitalCode.MEAN_ARTERIAL_PRESSURE], dia_m + 1, sys_m - 1
                )

        perfusion: FloatArray | None = None
        if cadence.reports_perfusion:
            wobble = lattice_normal(self.seed, f"measure/{kind}/perfusion", times)
            perfusion = truth.perfusion_index * np.exp(0.05 * wobble)
            fault_pi = np.array([e.perfusion_index for e in perfusion_events] + [np.nan])[perfusion_which]
            perfusion = np.where(low_perfusion, fault_pi * np.exp(0.1 * wobble), perfusion)
            perfusion = np.clip(np.round(perfusion, 2), 0.01, 100.0)

        motion_events, motion_which = self._active(FaultKind.MOTION, kind, times)
        motion = np.zeros(times.shape, dtype=np.bool_)
        motion_flagged = np.zeros(times.shape, dtype=np.bool_)
        if np.any(motion_which >= 0):
            chance = lattice_uniform(self.seed, f"motion/{kind}/when", times)
            rate = np.array([e.artefacts_per_min / 60.0 for e in motion_events] + [0.0])[motion_which]
            motion = chance < rate
            flag_draw = lattice_uniform(self.seed, f"motion/{kind}/flag", times)
            fraction = np.array([e.flagged_fraction for e in motion_events] + [0.0])[motion_which]
            motion_flagged = motion & (flag_draw < fraction)
            size = lattice_uniform(self.seed, f"motion/{kind}/size", times)
            if VitalCode.SPO2 in measured:
                low, high = MOTION_SPO2_DROP
                measured[VitalCode.SPO2] = np.where(
                    motion, measured[VitalCode.SPO2] - (low + (high - low) * size), measured[VitalCode.SPO2]
                )
            if VitalCode.HEART_RATE in measured:
                low, high = MOTION_PULSE_SPIKE
                measured[VitalCode.HEART_RATE] = np.where(
                    motion,
                    measured[VitalCode.HEART_RATE] + (low + (high - low) * size),
                    measured[VitalCode.HEART_RATE],
                )

        for measurement in cadence.measures:
            vital = measurement.vital
            quantised: FloatArray = (
                np.round(measured[vital] / measurement.resolution) * measurement.resolution
            )
            low, high = LIMITS[vital]
            measured[vital] = np.round(quantised.clip(low, high), 6)

        _, probe_which = self._active(FaultKind.PROBE_OFF, kind, times)
        probe_off = (probe_which >= 0).tolist()
        columns = [(vital, measured[vital].tolist()) for vital in cadence.vitals]
        pi_list = perfusion.tolist() if perfusion is not None else None
        flagged = motion_flagged.tolist()
        for i, t in enumerate(times.tolist()):
            measured_at = self.start + timedelta(seconds=t)
            if probe_off[i]:
                yield Sample(t, measured_at, kind, {}, frozenset({cadence.probe_off_flag}), None)
                continue
            flags: set[QualityFlag] = set()
            pi = pi_list[i] if pi_list is not None else None
            if pi is not None and pi < LOW_PERFUSION_THRESHOLD:
                flags.add(QualityFlag.LOW_PERFUSION)
            if flagged[i]:
                flags.add(QualityFlag.MOTION)
            yield Sample(
                t,
                measured_at,
                kind,
                {vital: column[i] for vital, column in columns},
                frozenset(flags),
                pi,
            )
