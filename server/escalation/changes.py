"""What the policy decides: alert changes (the audit records) and their wire form.

Each :class:`AlertChange` is one state change of one alert: exactly what the audit log appends and what
the command center is told on ``wardwatch/v1/cc/alerts``. :func:`to_alert_event` turns it into the wire
contract's :class:`~edge_agent.protocol.AlertEvent`; the message id is the caller's (the policy draws no
random numbers).
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.protocol import AlertEvent, Risk, UtcDatetime
from server.escalation.config import Priority

Action = Literal["raised", "updated", "escalated", "acknowledged", "resolved", "snoozed"]


class AlertChange(BaseModel):
    """One alert event. ``actor`` is the clinician's account id, or None when the policy acted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: uuid.UUID
    action: Action
    category: Literal["clinical", "technical"]
    condition: str
    patient_id: str | None = None
    gateway_id: str | None = None
    device_id: str | None = None
    priority: Priority
    tier: int
    risk: Risk | None = None
    total: int | None = None
    reason: str
    actor: str | None = None
    at: UtcDatetime
    """When the change happened: the ``now`` of the call that made it."""
    due_at: UtcDatetime | None = None
    """For changes fired by a timer: the time it was due (``at - due_at`` is the scheduler's lateness)."""
    snoozed_until: UtcDatetime | None = None


def to_alert_event(change: AlertChange, *, message_id: uuid.UUID) -> AlertEvent:
    """The wire form of a change; the device id, having no field of its own, is named in the reason."""
    reason = change.reason
    if change.device_id is not None and change.device_id not in reason:
        reason = f"{reason} (device {change.device_id})"
    return AlertEvent(
        message_id=message_id,
        alert_id=change.alert_id,
        action=change.action,
        category=change.category,
        condition=change.condition,
        patient_id=change.patient_id,
        gateway_id=change.gateway_id,
        priority=change.priority,
        tier=change.tier,
        risk=change.risk,
        total=change.total,
        reason=reason[:500],
        actor=change.actor,
        at=change.at,
    )
