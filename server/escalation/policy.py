"""The escalation policy as one pure function: ``decide(state, input, now=…, policy=…) -> Decision``.

``decide`` never mutates the state it is given: it works on a deep copy and returns the new state, the
alert changes (in the order they happened, each one audit record) and the next time the scheduler must
call back. Before applying the input it fires every timer that is due at ``now`` (escalations,
re-notifications, snooze ends, heartbeat deadlines, grace periods), earliest first, so the result does
not depend on whether the scheduler ticked before the input arrived. A timer that was due long ago fires
every step it missed, each with its own ``due_at`` (a worker that was down for 20 minutes catches up
through every tier the alert should have reached).

Firing is idempotent: calling again with the same ``now`` fires nothing twice, because each fired timer is
moved past ``now`` or cleared in the state that is stored with the changes. Storage that claims a subject's
row with ``SELECT … FOR UPDATE SKIP LOCKED``, calls ``decide`` and writes state and changes in the same
transaction therefore fires each escalation exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from edge_agent.protocol import LocalAlert, Risk
from server.escalation.changes import AlertChange
from server.escalation.clinical import apply_assessment, patient_subject
from server.escalation.config import EscalationPolicy
from server.escalation.errors import EscalationError
from server.escalation.inputs import (
    Acknowledge,
    AssessmentReceived,
    Escalate,
    EventReceived,
    ObservationsReceived,
    PolicyInput,
    Resolve,
    Snooze,
    StatusReceived,
    Tick,
)
from server.escalation.lifecycle import (
    Step,
    acknowledge,
    escalate_by_hand,
    find_open,
    fire_escalation,
    fire_renotify,
    fire_snooze_end,
    resolve_by_hand,
    snooze,
)
from server.escalation.state import Alert, EscalationState, PatientTrack
from server.escalation.technical import (
    apply_device_event,
    apply_observations,
    apply_status,
    fire_clock,
    fire_disconnect,
    fire_heartbeat_deadline,
    fire_probe,
    gateway_subject,
    gateway_track,
    suppress_after_manual_resolve,
)

MAX_FIRINGS_PER_CALL = 10_000
"""A guard against a timer that fails to move past ``now`` (a bug); never reached by a correct policy."""


@dataclass(frozen=True, slots=True)
class Decision:
    state: EscalationState
    changes: list[AlertChange]
    next_due_at: datetime | None


def subject_of(item: PolicyInput) -> str | None:
    """The one subject an input touches (``patient:<id>`` or ``gateway:<id>``), or None for a tick (every
    subject in the state) and for a clinician's action (the subject of the alert it names)."""
    match item:
        case AssessmentReceived():
            return patient_subject(item.assessment.patient_id)
        case StatusReceived():
            return gateway_subject(item.status.gateway_id)
        case EventReceived():
            detail = item.event.detail
            if isinstance(detail, LocalAlert):
                return patient_subject(detail.patient_id)
            return gateway_subject(item.event.gateway_id)
        case ObservationsReceived():
            return gateway_subject(item.batch.gateway_id)
        case _:
            return None


def alert_subject(category: str, *, patient_id: str | None, gateway_id: str | None) -> str:
    """The subject whose state holds an alert (from an AlertChange or an alerts row): ``patient:<id>`` for
    a clinical alert, ``gateway:<id>`` for a technical one. Storage uses it to load the right state for a
    clinician's action."""
    if category == "clinical" and patient_id is not None:
        return patient_subject(patient_id)
    if category == "technical" and gateway_id is not None:
        return gateway_subject(gateway_id)
    raise ValueError(f"a {category} alert needs its {'patient' if category == 'clinical' else 'gateway'} id")


def decide(
    state: EscalationState,
    item: PolicyInput,
    *,
    now: datetime,
    policy: EscalationPolicy,
    stream_lag: timedelta = timedelta(0),
) -> Decision:
    """Apply one input at ``now`` (an aware datetime). Raises :class:`EscalationError` for a refused
    clinician action; the given state is then unchanged and nothing is emitted.

    ``stream_lag`` is how far behind the gateways' traffic the caller is: the age of the messages its
    ingest is storing now (``server.engine.stream_lag``), capped at ``policy.max_stream_lag_s``. The
    timers that only news from a gateway can stop (its heartbeat deadline, a device's disconnect or
    probe-off grace, the clock grace) fall due that much later, so that a heartbeat still queued for
    this server is not taken as missing. It only ever postpones them: a wrong estimate can delay such an
    alarm by at most the cap, never raise one early. Alert timers (escalation, reminders, snooze) keep
    the server's clock: nothing in the gateways' traffic stops them."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (UTC)")
    now = now.astimezone(UTC)
    work = EscalationState.model_validate(state.model_dump())  # a deep copy, faster than deepcopy
    if work.clock is not None and now < work.clock:
        now = work.clock  # never let time run backwards for the state
    work.clock = now
    lag = min(max(stream_lag, timedelta(0)), timedelta(seconds=policy.max_stream_lag_s))
    step = Step(state=work, now=now, policy=policy, stream_lag=lag)
    fire_due_timers(step)
    _apply(step, item)
    return Decision(state=work, changes=step.changes, next_due_at=work.next_due_at(lag, now))


def fire_due_timers(step: Step) -> None:
    for _ in range(MAX_FIRINGS_PER_CALL):
        earliest = _earliest_timer(step)
        if earliest is None:
            return
        earliest()
    raise RuntimeError("escalation timers did not settle; a timer failed to move past now")


def _earliest_timer(step: Step) -> Callable[[], None] | None:
    """The earliest due timer (ties broken by a stable key), as a callable that fires it."""
    best: tuple[datetime, str] | None = None
    action: Callable[[], None] | None = None
    state, now, lag = step.state, step.now, step.stream_lag

    def consider(due: datetime | None, key: str, fire: Callable[[], None], *, news: bool = False) -> None:
        """``news``: a timer that news from the gateway would stop, due ``lag`` later."""
        nonlocal best, action
        if due is None:
            return
        if news:
            due += lag
        if due <= now and (best is None or (due, key) < best):
            best, action = (due, key), fire

    for alert in state.alerts.values():
        # ties between equal due times are broken by what the alert is about, never by its id
        alert_order = f"{alert.subject}|{alert.condition}|{alert.device_id or ''}"
        consider(alert.snoozed_until, f"{alert_order}|snooze", partial(fire_snooze_end, step, alert))
        consider(alert.renotify_due_at, f"{alert_order}|renotify", partial(fire_renotify, step, alert))
        consider(alert.escalation_due_at, f"{alert_order}|escalate", partial(fire_escalation, step, alert))
    for gateway_id, gateway in state.gateways.items():
        consider(
            gateway.heartbeat_deadline,
            f"gateway:{gateway_id}|~heartbeat",
            partial(fire_heartbeat_deadline, step, gateway),
            news=True,
        )
        consider(
            gateway.clock_unsync_confirm_at,
            f"gateway:{gateway_id}|~clock",
            partial(fire_clock, step, gateway),
            news=True,
        )
        for device_id, device in gateway.devices.items():
            consider(
                device.disconnect_confirm_at,
                f"gateway:{gateway_id}|~device|{device_id}|disconnect",
                partial(fire_disconnect, step, gateway, device),
                news=True,
            )
            consider(
                device.probe_confirm_at,
                f"gateway:{gateway_id}|~device|{device_id}|probe",
                partial(fire_probe, step, gateway, device),
                news=True,
            )
    return action


def _apply(step: Step, item: PolicyInput) -> None:
    match item:
        case Tick():
            return
        case AssessmentReceived():
            a = item.assessment
            apply_assessment(
                step,
                patient_id=a.patient_id,
                gateway_id=a.gateway_id,
                assessed_at=a.assessed_at,
                risk=a.risk,
                total=a.total,
                components=a.components,
                source="(replayed backlog)" if a.historical else "",
            )
        case StatusReceived():
            apply_status(step, item.status)
        case EventReceived():
            detail = item.event.detail
            if isinstance(detail, LocalAlert):
                apply_assessment(
                    step,
                    patient_id=detail.patient_id,
                    gateway_id=item.event.gateway_id,
                    assessed_at=item.event.occurred_at,
                    risk=detail.risk,
                    total=detail.total,
                    components={},
                    source=f"(local alert run by the gateway after {detail.uplink_down_s:.0f} s offline)",
                )
            else:
                apply_device_event(step, item.event.gateway_id, detail, historical=item.event.historical)
        case ObservationsReceived():
            apply_observations(step, item.batch.gateway_id, item.batch.observations)
        case Acknowledge():
            acknowledge(
                step, find_open(step.state, item.alert_id), actor=item.actor, role=item.role, note=item.note
            )
        case Escalate():
            alert = find_open(step.state, item.alert_id)
            escalate_by_hand(step, alert, actor=item.actor, role=item.role, note=item.note)
        case Snooze():
            alert = find_open(step.state, item.alert_id)
            snooze(step, alert, actor=item.actor, role=item.role, duration_s=item.duration_s, note=item.note)
        case Resolve():
            alert = find_open(step.state, item.alert_id)
            resolve_by_hand(step, alert, actor=item.actor, role=item.role, note=item.note)
            _after_manual_resolve(step, alert)


def _after_manual_resolve(step: Step, alert: Alert) -> None:
    """A clinician resolved a clinical alert while the patient is not low: no new alert at that level for
    the re-notify interval of the alert's priority. A person resolved a technical alarm whose condition
    persists: not raised again until it clears."""
    if alert.category == "clinical" and alert.patient_id is not None:
        track = step.state.patients.setdefault(alert.patient_id, PatientTrack())
        if track.risk is not None and track.risk is not Risk.LOW:
            track.resolved_baseline = track.risk
            track.resolved_baseline_until = step.now + timedelta(
                seconds=step.policy.renotify_after(alert.priority)
            )
    elif alert.category == "technical" and alert.gateway_id is not None:
        suppress_after_manual_resolve(gateway_track(step, alert.gateway_id), alert)


__all__ = ["Decision", "EscalationError", "alert_subject", "decide", "fire_due_timers", "subject_of"]
