"""What one simulated home sends: wire-contract payloads as a pure function of (seed, home, tick).

A home's traffic is planned on a simulated clock ``t`` (seconds since the home's birth):

* observation ``k`` is taken at ``t = k / rate`` from stream ``STREAMS[k % len(STREAMS)]``, so the default
  rate of six observations per second samples each of the six streams at 1 Hz;
* tick ``i`` covers ``[i * batch_interval_s, (i + 1) * batch_interval_s)`` and sends, in this order, the
  device-connected events (tick 0 only), one :class:`ObservationBatch` with the observations taken in the
  interval, and one :class:`Assessment` when a scoring instant ``j * score_interval_s`` (``j >= 1``) falls in
  the interval.

Values are the patient's true vital signs from :mod:`simulators.physiology` (scenario and seed per home),
rounded to what the device reports. NEWS2 assessments are computed with the project's scorer
(:func:`edge_agent.scoring.news2_one`) from the latest value sent of each input, so the server sees the
same assessment it would compute itself. Nothing here reads a clock or draws from a global random
generator: the same seed gives the same contents; only message ids and timestamps differ between runs.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

import numpy as np

from edge_agent.protocol import (
    NEWS2_PARAMETERS,
    VITALS,
    AssessmentContent,
    Consciousness,
    DeviceConnected,
    DeviceState,
    EventContent,
    GatewayChannel,
    Observation,
    TimeSource,
    VitalCode,
)
from edge_agent.scoring import news2_one
from simulators.physiology import SCENARIOS, Patient, VitalsSeries

STREAMS: Final[tuple[VitalCode, ...]] = (
    VitalCode.HEART_RATE,
    VitalCode.SPO2,
    VitalCode.RESPIRATORY_RATE,
    VitalCode.SYSTOLIC_BP,
    VitalCode.DIASTOLIC_BP,
    VitalCode.BODY_TEMPERATURE,
)
"""The vital-sign streams every simulated home reports, in sampling order."""

DEVICE_FOR_STREAM: Final[Mapping[VitalCode, str]] = {
    VitalCode.HEART_RATE: "oximeter",
    VitalCode.SPO2: "oximeter",
    VitalCode.RESPIRATORY_RATE: "resp-patch",
    VitalCode.SYSTOLIC_BP: "bp-cuff",
    VitalCode.DIASTOLIC_BP: "bp-cuff",
    VitalCode.BODY_TEMPERATURE: "thermometer",
}
"""Which of the home's devices measures each stream (device id suffix)."""

DEVICE_KINDS: Final[Mapping[str, str]] = {
    "oximeter": "pulse_oximeter_continuous",
    "resp-patch": "respiration_monitor",
    "bp-cuff": "blood_pressure",
    "thermometer": "thermometer",
}

DECIMALS: Final[Mapping[VitalCode, int]] = {
    VitalCode.HEART_RATE: 0,
    VitalCode.SPO2: 0,
    VitalCode.RESPIRATORY_RATE: 0,
    VitalCode.SYSTOLIC_BP: 0,
    VitalCode.DIASTOLIC_BP: 0,
    VitalCode.BODY_TEMPERATURE: 1,
}
"""Decimal places each device reports."""

NEWS2_INPUTS: Final[Mapping[str, VitalCode]] = {
    "respiratory_rate": VitalCode.RESPIRATORY_RATE,
    "spo2": VitalCode.SPO2,
    "systolic_bp": VitalCode.SYSTOLIC_BP,
    "pulse": VitalCode.HEART_RATE,
    "temperature": VitalCode.BODY_TEMPERATURE,
}
"""``news2_one`` keyword -> the stream that feeds it."""

VITALS_STEP_S: Final = 1.0
"""True vital signs are evaluated on this grid; an observation reports the value at the start of its
step. The physiology changes over tens of seconds, and evaluating it is the generator's main cost."""
CHUNK_STEPS: Final = 300
"""Grid steps evaluated per vectorised call."""

_EPSILON: Final = 1e-9


class TrafficError(ValueError):
    """A traffic plan that cannot be sent (e.g. a batch larger than the wire contract allows)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficPlan:
    """What every home of the fleet sends; the same for all homes apart from identity and patient."""

    seed: int = 0
    rate: float = float(len(STREAMS))
    """Observations per second per home."""
    batch_interval_s: float = 1.0
    score_interval_s: float = 60.0
    """Simulated seconds between assessments; 0 sends none."""
    scenarios: Mapping[str, float] = field(default_factory=lambda: {"stable": 1.0})
    """Scenario name -> weight; each home draws one, seeded."""
    scenario_hour: float = 0.0
    """The scenario hour at which each home's traffic begins."""
    gateway_prefix: str = "sim-gw"
    patient_prefix: str = "sim-pt"

    def __post_init__(self) -> None:
        if not math.isfinite(self.rate) or self.rate <= 0:
            raise TrafficError("rate must be a positive number of observations per second")
        if not math.isfinite(self.batch_interval_s) or self.batch_interval_s <= 0:
            raise TrafficError("batch interval must be > 0 s")
        if not math.isfinite(self.score_interval_s) or self.score_interval_s < 0:
            raise TrafficError("score interval must be >= 0 s (0 sends no assessments)")
        if math.ceil(self.rate * self.batch_interval_s) > 1000:
            raise TrafficError(
                f"rate x batch interval = {self.rate * self.batch_interval_s:g} observations per batch; "
                "the wire contract allows at most 1000: lower --rate or --batch-interval"
            )
        if not self.scenarios:
            raise TrafficError("at least one scenario is needed")
        for name, weight in self.scenarios.items():
            if name not in SCENARIOS:
                raise TrafficError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
            if not math.isfinite(weight) or weight <= 0:
                raise TrafficError(f"scenario weight for {name} must be > 0")
        if not math.isfinite(self.scenario_hour) or self.scenario_hour < 0:
            raise TrafficError("scenario hour must be >= 0")

    def gateway_id(self, index: int) -> str:
        return f"{self.gateway_prefix}-{index:05d}"

    def patient_id(self, index: int) -> str:
        return f"{self.patient_prefix}-{index:05d}"

    def home_seed(self, index: int) -> int:
        digest = hashlib.sha256(f"wardwatch-fleet/{self.seed}/{index}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def scenario_for(self, index: int) -> str:
        names = sorted(self.scenarios)
        chooser = random.Random(f"wardwatch-fleet/{self.seed}/scenario/{index}")
        return chooser.choices(names, weights=[self.scenarios[name] for name in names])[0]

    def ticks(self, duration_s: float) -> int:
        """Ticks a home sends in ``duration_s`` (the last one may end after it)."""
        return max(1, math.ceil(duration_s / self.batch_interval_s - _EPSILON))


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One sequenced message without its head (message id, gateway, seq, sent_at)."""

    channel: GatewayChannel
    body: Sequence[Observation] | AssessmentContent | EventContent
    observations: int = 0


class HomeTraffic:
    """The messages of one home, tick by tick. Ticks must be asked for in increasing order."""

    def __init__(self, plan: TrafficPlan, index: int, *, start: datetime) -> None:
        if start.tzinfo is None:
            raise TrafficError("start must be timezone-aware")
        self.plan = plan
        self.index = index
        self.start = start
        self.gateway_id = plan.gateway_id(index)
        self.patient_id = plan.patient_id(index)
        self.scenario = plan.scenario_for(index)
        self.patient = Patient(self.scenario, seed=plan.home_seed(index))
        self._offset_s = plan.scenario_hour * 3600.0
        self._chunk_index = -1
        self._chunk: VitalsSeries | None = None
        self._chunk_first = 0
        self._phase = (index * 97) % CHUNK_STEPS
        self._last_k = -1
        self._latest: dict[VitalCode, tuple[float, float]] = {}
        """stream -> (simulated time, value as sent)."""
        self._next_tick = 0

    def prepare(self) -> None:
        """Evaluate the first chunk of vital signs now (the costly part of a home's first tick)."""
        self._vitals(0.0)

    # -- identity ---------------------------------------------------------------------------------------

    def device_id(self, suffix: str) -> str:
        return f"{self.gateway_id}-{suffix}"

    def devices(self) -> list[DeviceState]:
        return [
            DeviceState(device_id=self.device_id(suffix), device_kind=kind, connected=True)
            for suffix, kind in DEVICE_KINDS.items()
        ]

    # -- planning ---------------------------------------------------------------------------------------

    def tick(self, i: int) -> list[PlannedMessage]:
        """The sequenced messages of tick ``i`` in the order they are sent."""
        if i != self._next_tick:
            raise TrafficError(f"ticks are planned in order: expected {self._next_tick}, got {i}")
        self._next_tick += 1
        plan = self.plan
        t0, t1 = i * plan.batch_interval_s, (i + 1) * plan.batch_interval_s
        messages: list[PlannedMessage] = []
        if i == 0:
            messages.extend(self._device_events())
        k_first = math.ceil(t0 * plan.rate - _EPSILON)
        k_end = math.ceil(t1 * plan.rate - _EPSILON)
        scoring_instants: list[float] = []
        if plan.score_interval_s > 0:
            j_first = max(1, math.ceil(t0 / plan.score_interval_s - _EPSILON))
            j_end = math.ceil(t1 / plan.score_interval_s - _EPSILON)
            scoring_instants = [j * plan.score_interval_s for j in range(j_first, j_end)]
        observations: list[Observation] = []
        assessments: list[AssessmentContent] = []
        for k in range(k_first, k_end):
            # An assessment sees every observation taken at or before its instant, and none after.
            while scoring_instants and k / plan.rate > scoring_instants[0] + _EPSILON:
                assessments.append(self._assessment(scoring_instants.pop(0)))
            observations.append(self._observation(k))
        assessments.extend(self._assessment(t) for t in scoring_instants)
        if observations:
            messages.append(PlannedMessage(GatewayChannel.OBS, observations, len(observations)))
        messages.extend(PlannedMessage(GatewayChannel.SCORE, body) for body in assessments)
        return messages

    def _device_events(self) -> list[PlannedMessage]:
        return [
            PlannedMessage(
                GatewayChannel.EVENT,
                EventContent(
                    occurred_at=self.start,
                    detail=DeviceConnected(
                        kind="device_connected", device_id=self.device_id(suffix), device_kind=kind
                    ),
                ),
            )
            for suffix, kind in DEVICE_KINDS.items()
        ]

    def _vitals(self, t: float) -> tuple[VitalsSeries, int]:
        """The true vitals chunk holding simulated time ``t`` and the index of ``t``'s grid step in it.

        Chunk boundaries are shifted by a per-home phase: homes started together would otherwise all
        evaluate their next chunk in the same second, a pause of the whole fleet every CHUNK_STEPS."""
        step = math.floor(t / VITALS_STEP_S + _EPSILON)
        chunk_index = (step + self._phase) // CHUNK_STEPS
        if chunk_index != self._chunk_index or self._chunk is None:
            self._chunk_first = max(0, chunk_index * CHUNK_STEPS - self._phase)
            end = (chunk_index + 1) * CHUNK_STEPS - self._phase
            times = np.arange(self._chunk_first, end, dtype=np.float64) * VITALS_STEP_S
            self._chunk = self.patient.vitals_series(self._offset_s + times)
            self._chunk_index = chunk_index
        return self._chunk, step - self._chunk_first

    def _observation(self, k: int) -> Observation:
        t = k / self.plan.rate
        vitals, at = self._vitals(t)
        stream = STREAMS[k % len(STREAMS)]
        spec = VITALS[stream]
        value = round(float(vitals[stream][at]), DECIMALS[stream])
        value = min(max(value, spec.minimum), spec.maximum)
        self._latest[stream] = (t, value)
        self._last_k = k
        return Observation(
            patient_id=self.patient_id,
            vital=stream,
            value=value,
            unit=spec.ucum,
            measured_at=self.start + timedelta(seconds=t),
            time_source=TimeSource.DEVICE,
            device_id=self.device_id(DEVICE_FOR_STREAM[stream]),
            perfusion_index=(
                round(float(vitals.perfusion_index[at]), 2) if stream is VitalCode.SPO2 else None
            ),
        )

    def _assessment(self, t: float) -> AssessmentContent:
        """NEWS2 at simulated time ``t`` from the latest value sent of each input (observations up to
        ``t`` have all been planned: the scoring instant lies in the tick being planned)."""
        # Oxygen, scale and consciousness as at the latest observation (taken at or before t).
        vitals, at = self._vitals(self._last_k / self.plan.rate)
        consciousness, on_oxygen = vitals.consciousness[at], bool(vitals.on_oxygen[at])
        spo2_scale: Literal[1, 2] = 2 if int(vitals.spo2_scale[at]) == 2 else 1
        inputs: dict[str, float] = {}
        ages: dict[str, float | None] = {}
        for keyword, stream in NEWS2_INPUTS.items():
            latest = self._latest.get(stream)
            if latest is None:
                inputs[keyword], ages[str(stream)] = math.nan, None
            else:
                inputs[keyword], ages[str(stream)] = latest[1], round(t - latest[0], 3)
        alert = consciousness is Consciousness.ALERT
        score = news2_one(**inputs, on_oxygen=on_oxygen, alert=alert, spo2_scale=spo2_scale)
        return AssessmentContent(
            patient_id=self.patient_id,
            assessed_at=self.start + timedelta(seconds=t),
            total=score.total,
            components=dict(zip(NEWS2_PARAMETERS, score.components, strict=True)),
            risk=score.risk,
            complete=score.complete,
            input_ages_s=ages,
            spo2_scale=spo2_scale,
            on_oxygen=on_oxygen,
            consciousness=consciousness,
        )
