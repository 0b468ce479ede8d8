"""Builders for escalation tests: wire messages with explicit times, and a runner that feeds a policy."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from edge_agent.protocol import (
    NEWS2_PARAMETERS,
    Assessment,
    Consciousness,
    DeviceState,
    Event,
    EventDetail,
    GatewayStatus,
    Observation,
    ObservationBatch,
    QualityFlag,
    Risk,
    TimeSource,
    VitalCode,
    new_message_id,
)
from server.escalation import (
    AlertChange,
    AssessmentReceived,
    EscalationPolicy,
    EscalationState,
    EventReceived,
    ObservationsReceived,
    PolicyInput,
    StatusReceived,
    Tick,
    decide,
    risk_from_score,
)

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
_seq = itertools.count()


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def news2_components(total: int, *, single_three: bool = False) -> dict[str, int | None]:
    """Components summing to ``total`` (0..20): twos before threes, so a total below 7 has no 3 unless
    ``single_three`` asks for exactly one (a low-medium score when the total is 3 or 4)."""
    scores = dict.fromkeys(NEWS2_PARAMETERS, 0)
    remaining = total
    names = list(NEWS2_PARAMETERS)
    if single_three and total >= 3:
        scores[names[0]] = 3
        remaining -= 3
        names = names[1:]
    for cap in (2, 3):
        for name in names:
            while remaining > 0 and scores[name] < cap:
                scores[name] += 1
                remaining -= 1
    assert remaining == 0, f"no NEWS2 components sum to {total}"
    return dict(scores)


def assessment(
    when: datetime,
    total: int,
    *,
    patient: str = "p-1",
    gateway: str = "gw-1",
    single_three: bool = False,
    risk: Risk | None = None,
    components: Mapping[str, int | None] | None = None,
    historical: bool = False,
) -> AssessmentReceived:
    parts = dict(components) if components is not None else news2_components(total, single_three=single_three)
    message = Assessment(
        message_id=new_message_id(),
        gateway_id=gateway,
        seq=next(_seq),
        sent_at=when,
        patient_id=patient,
        assessed_at=when,
        total=total,
        components=parts,
        risk=risk or risk_from_score(total, parts),
        complete=all(v is not None for v in parts.values()),
        input_ages_s={},
        spo2_scale=1,
        on_oxygen=False,
        consciousness=Consciousness.ALERT,
        historical=historical,
    )
    return AssessmentReceived(assessment=message)


def status(
    state: str,
    when: datetime,
    *,
    gateway: str = "gw-1",
    session: int = 1,
    interval: float = 30,
    devices: Sequence[DeviceState] = (),
    backlog: int = 0,
    oldest_unsent_age_s: float | None = None,
    clock_synchronized: bool | None = None,
) -> StatusReceived:
    return StatusReceived(
        status=GatewayStatus(
            gateway_id=gateway,
            state=state,  # type: ignore[arg-type]
            session=session,
            sent_at=when,
            software_version="test",
            heartbeat_interval_s=interval,
            backlog=backlog,
            oldest_unsent_age_s=oldest_unsent_age_s,
            devices=list(devices),
            clock_synchronized=clock_synchronized,
        )
    )


def device(
    device_id: str = "ox-1",
    *,
    kind: str = "ble_plx_continuous",
    connected: bool = True,
    battery: int | None = None,
    last_reading_at: datetime | None = None,
) -> DeviceState:
    return DeviceState(
        device_id=device_id,
        device_kind=kind,
        connected=connected,
        battery_pct=battery,
        last_reading_at=last_reading_at,
    )


def event(
    detail: EventDetail, when: datetime, *, gateway: str = "gw-1", historical: bool = False
) -> EventReceived:
    return EventReceived(
        event=Event(
            message_id=new_message_id(),
            gateway_id=gateway,
            seq=next(_seq),
            sent_at=when,
            occurred_at=when,
            detail=detail,
            historical=historical,
        )
    )


def spo2_reading(
    when: datetime,
    *,
    device_id: str = "ox-1",
    patient: str = "p-1",
    gateway: str = "gw-1",
    quality: Iterable[QualityFlag] = (),
    historical: bool = False,
) -> ObservationsReceived:
    observation = Observation(
        patient_id=patient,
        vital=VitalCode.SPO2,
        value=96,
        unit="%",
        measured_at=when,
        time_source=TimeSource.DEVICE,
        device_id=device_id,
        quality=list(quality),
        historical=historical,
    )
    batch = ObservationBatch(
        message_id=new_message_id(),
        gateway_id=gateway,
        seq=next(_seq),
        sent_at=when,
        observations=[observation],
    )
    return ObservationsReceived(batch=batch)


@dataclass
class Run:
    """Feeds inputs to the policy, keeps the state, and records every change."""

    policy: EscalationPolicy = field(default_factory=EscalationPolicy)
    state: EscalationState = field(default_factory=EscalationState)
    changes: list[AlertChange] = field(default_factory=list)
    roundtrip: bool = True
    """Serialise and reload the state after every step, as a worker handing over to another would."""

    def feed(self, item: PolicyInput, now: datetime) -> list[AlertChange]:
        decision = decide(self.state, item, now=now, policy=self.policy)
        self.state = decision.state
        if self.roundtrip:
            self.state = EscalationState.model_validate(self.state.model_dump(mode="json"))
        self.changes.extend(decision.changes)
        return decision.changes

    def tick(self, now: datetime) -> list[AlertChange]:
        return self.feed(Tick(), now)

    def only_alert(self) -> str:
        (key,) = self.state.alerts
        return key
