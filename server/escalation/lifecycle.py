"""The alert lifecycle shared by clinical and technical alerts: raise, escalate, re-arm, resolve, and
the clinician's actions (acknowledge, escalate, snooze, resolve) with who may do what.

Every function here changes one alert and appends exactly one :class:`AlertChange` to the step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from edge_agent.protocol import Risk
from server.escalation.changes import Action, AlertChange
from server.escalation.config import (
    EMERGENCY_TIER,
    PRIORITY_RANK,
    SNOOZABLE,
    TOP_TIER,
    EscalationPolicy,
    Priority,
    Role,
)
from server.escalation.errors import ActionRefusedError, AlertNotOpenError
from server.escalation.state import Alert, EscalationState

ALERT_ID_NAMESPACE: Final = uuid.UUID("6f1c2b1e-5d0a-4c56-9a59-3f1f8f6f7a10")
"""Alert ids are UUIDv5 of the subject, condition, device, opening time and a per-subject counter, so
the policy needs no randomness and replaying the same inputs gives the same ids."""

Category = Literal["clinical", "technical"]

PERMITTED_ROLES: Final[dict[Category, frozenset[Role]]] = {
    "clinical": frozenset({Role.NURSE, Role.PHYSICIAN}),
    "technical": frozenset({Role.NURSE, Role.PHYSICIAN, Role.ADMIN}),
}
"""Who may acknowledge, escalate, snooze or resolve an alert, by category. ``integration`` never acts."""

HIGH_PRIORITIES: Final = frozenset({"high", "emergency"})
REMINDER_PREFIX: Final = "still not acknowledged"
"""Reason prefix of the reminders an unacknowledged alert at its ceiling sends every timeout."""


@dataclass
class Step:
    """One call of the policy: the state being changed, the time, the policy and the changes so far."""

    state: EscalationState
    now: datetime
    policy: EscalationPolicy
    changes: list[AlertChange] = field(default_factory=list)
    stream_lag: timedelta = timedelta(0)
    """How far behind the gateways' traffic the caller's ingest is (0 up to the policy's cap): the
    timers that wait for news from a gateway fall due this much later (see ``policy.decide``)."""

    def emit(
        self,
        alert: Alert,
        action: Action,
        reason: str,
        *,
        actor: str | None = None,
        due_at: datetime | None = None,
    ) -> AlertChange:
        change = AlertChange(
            alert_id=alert.alert_id,
            action=action,
            category=alert.category,
            condition=alert.condition,
            patient_id=alert.patient_id,
            gateway_id=alert.gateway_id,
            device_id=alert.device_id,
            priority=alert.priority,
            tier=alert.tier,
            risk=alert.risk,
            total=alert.total,
            reason=reason[:500],
            actor=actor,
            at=self.now,
            due_at=due_at,
            snoozed_until=alert.snoozed_until if action == "snoozed" else None,
        )
        self.changes.append(change)
        return change


def minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    value = seconds / 60
    return f"{value:.0f} min" if value < 120 else f"{value / 60:.1f} h"


def _schedule_escalation(alert: Alert, anchor: datetime, policy: EscalationPolicy) -> None:
    """Next tier (or, at the ceiling, a reminder to the current tier) one timeout after ``anchor``."""
    alert.escalation_due_at = anchor + timedelta(seconds=policy.ack_timeout(alert.priority))


def open_alert(
    step: Step,
    *,
    category: Category,
    condition: str,
    subject: str,
    number: int,
    priority: Priority,
    tier: int,
    ceiling: int,
    reason: str,
    patient_id: str | None = None,
    gateway_id: str | None = None,
    device_id: str | None = None,
    risk: Risk | None = None,
    total: int | None = None,
    count: int = 0,
    due_at: datetime | None = None,
) -> Alert:
    """Open a new alert (the caller checked that none is open for this subject and condition)."""
    opened = due_at or step.now  # a timer's alarm is named by its due time, however late it fired
    name = f"{subject}|{condition}|{device_id or ''}|{opened.isoformat()}|{number}"
    alert = Alert(
        alert_id=uuid.uuid5(ALERT_ID_NAMESPACE, name),
        category=category,
        condition=condition,
        subject=subject,
        patient_id=patient_id,
        gateway_id=gateway_id,
        device_id=device_id,
        opened_at=opened,
        priority=priority,
        tier=tier,
        ceiling=max(ceiling, tier),
        ever_high=priority in HIGH_PRIORITIES,
        risk=risk,
        total=total,
        notified_risk=risk,
        notified_total=total,
        count=count,
    )
    # Raised by a timer: the escalation clock starts when the alarm was due, however late it fired.
    _schedule_escalation(alert, due_at or step.now, step.policy)
    step.state.alerts[str(alert.alert_id)] = alert
    step.emit(alert, "raised", reason, due_at=due_at)
    return alert


def _set_tier(alert: Alert, tier: int) -> None:
    alert.tier = tier
    if alert.category == "clinical" and tier >= EMERGENCY_TIER:
        alert.priority = "emergency"
        alert.ever_high = True


def _clear_acknowledgement(alert: Alert) -> None:
    alert.ack_state = "unacknowledged"
    alert.acknowledged_by = None
    alert.acknowledged_at = None
    alert.snoozed_by = None
    alert.snoozed_until = None
    alert.renotify_due_at = None


def rearm(step: Step, alert: Alert, *, anchor: datetime, reason: str, due_at: datetime | None = None) -> None:
    """Back to unacknowledged at the current tier; the current tier is notified again (``updated``) and
    the escalation clock restarts at ``anchor``."""
    _clear_acknowledgement(alert)
    _schedule_escalation(alert, anchor, step.policy)
    if alert.risk is not None:
        alert.notified_risk = alert.risk
        alert.notified_total = alert.total
    step.emit(alert, "updated", reason, due_at=due_at)


def worsen(step: Step, alert: Alert, *, priority: Priority, tier: int, ceiling: int, reason: str) -> None:
    """The condition got worse: raise priority and tier to at least the given ones (never lower them),
    re-arm an acknowledged or snoozed alert, and notify (``escalated`` when priority or tier went up)."""
    before = (alert.priority, alert.tier)
    if PRIORITY_RANK[priority] > PRIORITY_RANK[alert.priority]:
        alert.priority = priority
    if priority in HIGH_PRIORITIES:
        alert.ever_high = True
    alert.ceiling = max(alert.ceiling, ceiling)
    _set_tier(alert, max(alert.tier, tier))
    # An escalation already running for an unacknowledged alert is never delayed by a worsening; a tier
    # that was just notified gets its full timeout.
    running = alert.escalation_due_at if alert.ack_state == "unacknowledged" else None
    _clear_acknowledgement(alert)
    _schedule_escalation(alert, step.now, step.policy)
    if running is not None and alert.tier == before[1] and alert.escalation_due_at is not None:
        alert.escalation_due_at = min(running, alert.escalation_due_at)
    went_up = (alert.priority, alert.tier) != before
    if alert.risk is not None:
        alert.notified_risk = alert.risk
        alert.notified_total = alert.total
    step.emit(alert, "escalated" if went_up else "updated", reason)


def resolve(step: Step, alert: Alert, reason: str, *, actor: str | None = None) -> None:
    alert.escalation_due_at = None
    alert.renotify_due_at = None
    alert.snoozed_until = None
    del step.state.alerts[str(alert.alert_id)]
    step.emit(alert, "resolved", reason, actor=actor)


# ---- timers -------------------------------------------------------------------------------------


def fire_escalation(step: Step, alert: Alert) -> None:
    due = alert.escalation_due_at
    assert due is not None
    waited = step.policy.ack_timeout(alert.priority)
    if alert.tier >= alert.ceiling:
        # At the ceiling: no higher tier, but an unacknowledged alert is never silently left. Remind the
        # current tier every timeout; after an outage, once (the next reminder is the next grid point).
        timeout = timedelta(seconds=waited)
        missed = (step.now - due) // timeout
        alert.escalation_due_at = due + (missed + 1) * timeout
        step.emit(
            alert,
            "updated",
            f"{REMINDER_PREFIX} at tier {alert.tier} (its highest) after {minutes(waited)}: "
            f"tier {alert.tier} notified again",
            due_at=due,
        )
        return
    _set_tier(alert, alert.tier + 1)
    _schedule_escalation(alert, due, step.policy)
    step.emit(
        alert,
        "escalated",
        f"not acknowledged within {minutes(waited)}: escalated to tier {alert.tier}",
        due_at=due,
    )


def fire_renotify(step: Step, alert: Alert) -> None:
    due = alert.renotify_due_at
    assert due is not None
    who = alert.acknowledged_by or "a clinician"
    waited = step.policy.renotify_after(alert.priority)
    rearm(
        step,
        alert,
        anchor=due,
        reason=(
            f"acknowledged by {who} {minutes(waited)} ago and still open: tier {alert.tier} notified again"
        ),
        due_at=due,
    )


def fire_snooze_end(step: Step, alert: Alert) -> None:
    due = alert.snoozed_until
    assert due is not None
    who = alert.snoozed_by or "a clinician"
    rearm(
        step, alert, anchor=due, reason=f"snooze by {who} ended: tier {alert.tier} notified again", due_at=due
    )


# ---- clinicians' actions --------------------------------------------------------------------------


def find_open(state: EscalationState, alert_id: uuid.UUID) -> Alert:
    alert = state.alerts.get(str(alert_id))
    if alert is None:
        raise AlertNotOpenError(alert_id)
    return alert


def check_role(alert: Alert, role: Role, verb: str) -> None:
    if role not in PERMITTED_ROLES[alert.category]:
        allowed = ", ".join(sorted(PERMITTED_ROLES[alert.category]))
        raise ActionRefusedError(
            f"role {role} may not {verb} a {alert.category} alert (allowed: {allowed})",
            alert_id=alert.alert_id,
            reason="role_not_allowed",
        )


def acknowledge(step: Step, alert: Alert, *, actor: str, role: Role, note: str | None) -> None:
    check_role(alert, role, "acknowledge")
    if alert.ack_state == "acknowledged":
        raise ActionRefusedError(
            f"alert {alert.alert_id} is already acknowledged by {alert.acknowledged_by}",
            alert_id=alert.alert_id,
            reason="already_acknowledged",
        )
    _clear_acknowledgement(alert)
    alert.ack_state = "acknowledged"
    alert.acknowledged_by = actor
    alert.acknowledged_at = step.now
    alert.escalation_due_at = None
    alert.renotify_due_at = step.now + timedelta(seconds=step.policy.renotify_after(alert.priority))
    step.emit(alert, "acknowledged", note or f"acknowledged at tier {alert.tier}", actor=actor)


def escalate_by_hand(step: Step, alert: Alert, *, actor: str, role: Role, note: str | None) -> None:
    check_role(alert, role, "escalate")
    if alert.tier >= TOP_TIER:
        raise ActionRefusedError(
            f"alert {alert.alert_id} is already at the top tier {TOP_TIER}",
            alert_id=alert.alert_id,
            reason="top_tier_reached",
        )
    _clear_acknowledgement(alert)
    _set_tier(alert, alert.tier + 1)
    _schedule_escalation(alert, step.now, step.policy)
    reason = f"escalated by hand to tier {alert.tier}" + (f": {note}" if note else "")
    step.emit(alert, "escalated", reason, actor=actor)


def snooze(step: Step, alert: Alert, *, actor: str, role: Role, duration_s: float, note: str | None) -> None:
    check_role(alert, role, "snooze")
    if alert.priority not in SNOOZABLE:
        raise ActionRefusedError(
            f"a {alert.priority} alert cannot be snoozed (only {' and '.join(sorted(SNOOZABLE))})",
            alert_id=alert.alert_id,
            reason="snooze_not_allowed",
        )
    if duration_s > step.policy.snooze_max_s:
        raise ActionRefusedError(
            f"snooze of {minutes(duration_s)} is longer than the allowed {minutes(step.policy.snooze_max_s)}",
            alert_id=alert.alert_id,
            reason="snooze_too_long",
        )
    _clear_acknowledgement(alert)
    alert.ack_state = "snoozed"
    alert.snoozed_by = actor
    alert.acknowledged_by = actor
    alert.acknowledged_at = step.now
    alert.snoozed_until = step.now + timedelta(seconds=duration_s)
    alert.escalation_due_at = None
    reason = f"snoozed for {minutes(duration_s)}" + (f": {note}" if note else "")
    step.emit(alert, "snoozed", reason, actor=actor)


def resolve_by_hand(step: Step, alert: Alert, *, actor: str, role: Role, note: str | None) -> None:
    check_role(alert, role, "resolve")
    if not note:
        raise ActionRefusedError(
            "resolving an alert needs a note saying why", alert_id=alert.alert_id, reason="note_required"
        )
    resolve(step, alert, note, actor=actor)
