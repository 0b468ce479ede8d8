"""The escalation policy's state: open alerts, per-patient and per-gateway tracks, and their timers.

Everything is a plain pydantic model, so ``state.model_dump(mode="json")`` is what a worker stores and
``EscalationState.model_validate(data)`` is what the next worker continues from. Timestamps are aware
UTC datetimes.

A state may hold every subject (a single-process server) or a single one: inputs only ever touch the
subject that :func:`server.escalation.subject_of` names (``patient:<id>`` for clinical inputs,
``gateway:<id>`` for technical ones), and an alert lives with its subject, so storage may keep one row
per subject with its :meth:`EscalationState.next_due_at` and claim due rows with
``SELECT … FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.protocol import Risk, UtcDatetime
from server.escalation.config import Priority

AckState = Literal["unacknowledged", "acknowledged", "snoozed"]


class _StateModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Alert(_StateModel):
    """One open alert. Resolved alerts leave the state; the audit log keeps their history."""

    alert_id: uuid.UUID
    category: Literal["clinical", "technical"]
    condition: str
    subject: str
    patient_id: str | None = None
    gateway_id: str | None = None
    device_id: str | None = None
    opened_at: UtcDatetime

    priority: Priority
    tier: int = Field(ge=1, le=4)
    ceiling: int = Field(ge=1, le=4)
    """Highest tier the timers escalate to (a clinician may go higher by hand)."""
    ever_high: bool = False
    """Reached high (or emergency) priority at some point: only a clinician may then resolve it."""

    ack_state: AckState = "unacknowledged"
    acknowledged_by: str | None = None
    acknowledged_at: UtcDatetime | None = None
    snoozed_by: str | None = None

    escalation_due_at: UtcDatetime | None = None
    """While unacknowledged: when the next tier is due, or at the ceiling the next reminder."""
    renotify_due_at: UtcDatetime | None = None
    """When an acknowledged alert that is still open is re-armed."""
    snoozed_until: UtcDatetime | None = None

    # Clinical: the latest NEWS2 and what the last notification covered.
    risk: Risk | None = None
    total: int | None = None
    notified_risk: Risk | None = None
    notified_total: int | None = None
    resolution_suggested: bool = False

    # Technical: a running count (observations evicted) where the condition has one.
    count: int = 0

    def due_at(self) -> datetime | None:
        times = [t for t in (self.escalation_due_at, self.renotify_due_at, self.snoozed_until) if t]
        return min(times) if times else None


class PatientTrack(_StateModel):
    """What the policy remembers about a patient's NEWS2 between assessments."""

    gateway_id: str | None = None
    last_assessed_at: UtcDatetime | None = None
    """Newest assessment applied; older ones (out-of-order delivery, replayed backlog) are ignored."""
    risk: Risk | None = None
    total: int | None = None
    low_since: UtcDatetime | None = None
    """``assessed_at`` of the first of the current run of low assessments (gateway clock)."""
    resolved_baseline: Risk | None = None
    """Risk band at which a clinician last resolved the alert while the patient was not low: no new alert
    until the risk rises above it, the patient has been low again, or ``resolved_baseline_until``."""
    resolved_baseline_until: UtcDatetime | None = None
    alerts_opened: int = 0


class DeviceTrack(_StateModel):
    device_id: str
    kind: str | None = None
    patient_id: str | None = None
    connected: bool | None = None
    disconnect_confirm_at: UtcDatetime | None = None
    battery_pct: int | None = None
    first_listed_at: UtcDatetime | None = None
    """Gateway-clock time the device first appeared in a heartbeat without a reading (silence baseline)."""
    probe_off_since: UtcDatetime | None = None
    probe_confirm_at: UtcDatetime | None = None


class GatewayTrack(_StateModel):
    gateway_id: str
    session: int | None = None
    dead_session: int | None = None
    """Session whose death (the MQTT will) was seen; nothing more from that session counts."""
    last_status_sent_at: UtcDatetime | None = None
    online: bool | None = None
    heartbeat_interval_s: float | None = None
    heartbeat_deadline: UtcDatetime | None = None
    backlog: int | None = None
    backlog_growth_streak: int = 0
    clock_unsync_confirm_at: UtcDatetime | None = None
    clock_synchronized: bool | None = None
    devices: dict[str, DeviceTrack] = Field(default_factory=dict)
    suppressed: list[str] = Field(default_factory=list)
    """Alarm keys a person resolved while the condition was still present: not raised again until the
    condition has cleared once."""
    alerts_opened: int = 0


class EscalationState(_StateModel):
    """All state of the policy. Start from ``EscalationState()``."""

    clock: UtcDatetime | None = None
    """Latest ``now`` seen; an earlier ``now`` (a worker's clock behind another's) is treated as this."""
    alerts: dict[str, Alert] = Field(default_factory=dict)
    """Open alerts by ``str(alert_id)``."""
    patients: dict[str, PatientTrack] = Field(default_factory=dict)
    gateways: dict[str, GatewayTrack] = Field(default_factory=dict)

    def open_alert(self, subject: str, condition: str, device_id: str | None = None) -> Alert | None:
        for alert in self.alerts.values():
            if alert.subject == subject and alert.condition == condition and alert.device_id == device_id:
                return alert
        return None

    def due_times(self) -> dict[uuid.UUID, datetime]:
        """The next due time of every open alert that has one (escalation, re-notify or snooze end)."""
        result: dict[uuid.UUID, datetime] = {}
        for alert in self.alerts.values():
            due = alert.due_at()
            if due is not None:
                result[alert.alert_id] = due
        return result

    def next_due_at(
        self, stream_lag: timedelta = timedelta(0), now: datetime | None = None
    ) -> datetime | None:
        """When the scheduler must call back with a tick: the earliest timer of any kind, or None.

        A timer that waits for news from a gateway and has passed ``now`` is postponed by ``stream_lag``
        (see ``policy.decide``); one still ahead is looked at when it comes, with the lag of that time."""
        times: list[datetime] = list(self.due_times().values())
        news: list[datetime] = []
        for gateway in self.gateways.values():
            news.extend(t for t in (gateway.heartbeat_deadline, gateway.clock_unsync_confirm_at) if t)
            for device in gateway.devices.values():
                news.extend(t for t in (device.disconnect_confirm_at, device.probe_confirm_at) if t)
        times.extend(t + stream_lag if now is not None and t <= now else t for t in news)
        return min(times) if times else None
