"""Request and response bodies of the REST API (pydantic; the OpenAPI document is generated from them).

Times are UTC ISO 8601; ``*_age_s`` fields are seconds between that time and the server's clock when it
answered, so a screen can show "3 min ago" without trusting the browser's clock.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from edge_agent import protocol

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
RequiredNote = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# Errors


class Problem(_Out):
    where: str
    """Where in the request: ``body.note``, ``query.limit``, ``path.alert_id``, ``header.authorization``."""
    problem: str


class ErrorBody(_Out):
    status: int
    code: str
    """Machine-readable: ``validation_error``, ``unauthorized``, ``forbidden``, ``not_found``, ``conflict``,
    ``rate_limited``, ``storage_unavailable``, …"""
    message: str
    problems: list[Problem] = Field(default_factory=list)


class ErrorResponse(_Out):
    error: ErrorBody


# --------------------------------------------------------------------------------------------------
# Patients


class VitalReading(_Out):
    value: float
    unit: str
    measured_at: datetime
    age_s: float
    quality: list[str]
    device_id: str


class News2(_Out):
    total: int
    risk: protocol.Risk
    components: dict[str, int | None]
    complete: bool
    trend_rising: bool
    assessed_at: datetime
    age_s: float


class PatientSummary(_Out):
    patient_id: str
    display_name: str | None
    """Only for roles that may see it (not ``integration``); never in events or MQTT."""
    gateway_id: str | None
    gateway_online: bool | None
    news2: News2 | None
    latest: dict[str, VitalReading]
    """Newest reading of each vital (keyed by VitalCode)."""
    last_data_at: datetime | None
    data_age_s: float | None
    open_alerts: int
    top_priority: str | None


class PatientList(_Out):
    patients: list[PatientSummary]
    as_of: datetime


class SettingsInEffect(_Out):
    """What the gateway scored with, from its newest assessment."""

    spo2_scale: int
    on_oxygen: bool
    consciousness: str
    as_of: datetime


class PatientSettings(_Out):
    spo2_scale: int
    on_oxygen: bool
    consciousness: str
    updated_at: datetime | None
    updated_by: str | None
    in_effect: SettingsInEffect | None


class CommandView(_Out):
    command_id: uuid.UUID
    gateway_id: str
    patient_id: str
    name: str
    body: dict[str, Any]
    issued_at: datetime
    issued_by: str
    state: Literal["pending", "sent", "acknowledged", "rejected"]
    sent_at: datetime | None
    ack_ok: bool | None
    ack_detail: str | None
    acked_at: datetime | None
    ack_received_at: datetime | None


class AlertView(_Out):
    alert_id: uuid.UUID
    category: str
    condition: str
    subject: str
    patient_id: str | None
    gateway_id: str | None
    device_id: str | None
    state: str
    priority: str
    tier: int
    risk: str | None
    total: int | None
    reason: str
    raised_at: datetime
    updated_at: datetime
    age_s: float
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    snoozed_until: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    next_escalation_at: datetime | None
    next_escalation_in_s: float | None


class PatientDetail(_Out):
    patient: PatientSummary
    settings: PatientSettings
    commands: list[CommandView]
    """Newest first (at most 50)."""
    open_alerts: list[AlertView]
    recent_alerts: list[AlertView]
    """Newest first (at most 50, any state)."""


class ObservationView(_Out):
    id: int
    vital: str
    value: float
    unit: str
    measured_at: datetime
    time_source: str
    device_id: str
    quality: list[str]
    perfusion_index: float | None
    historical: bool
    received_at: datetime


class ObservationPage(_Out):
    items: list[ObservationView]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; None on the last page."""


class AssessmentView(_Out):
    id: int
    assessed_at: datetime
    total: int
    risk: str
    components: dict[str, int | None]
    complete: bool
    input_ages_s: dict[str, float | None]
    spo2_scale: int
    on_oxygen: bool
    consciousness: str
    trend_rising: bool
    historical: bool
    received_at: datetime


class AssessmentPage(_Out):
    items: list[AssessmentView]
    next_cursor: str | None


# --------------------------------------------------------------------------------------------------
# Alerts


class AlertEventView(_Out):
    id: int
    action: str
    actor: str | None
    reason: str
    priority: str
    tier: int
    risk: str | None
    total: int | None
    at: datetime


class AlertQueue(_Out):
    alerts: list[AlertView]
    as_of: datetime


class AlertPage(_Out):
    items: list[AlertView]
    next_cursor: str | None


class AlertDetail(_Out):
    alert: AlertView
    events: list[AlertEventView]


class AcknowledgeRequest(_In):
    note: Note | None = None


class EscalateRequest(_In):
    note: Note | None = None


class ResolveRequest(_In):
    note: RequiredNote
    """Why the alert is resolved; required."""


class SnoozeRequest(_In):
    duration_s: float = Field(gt=0, le=24 * 3600)
    """How long; the escalation policy's limit applies (only low and medium alerts can be snoozed)."""
    note: Note | None = None


# --------------------------------------------------------------------------------------------------
# Gateways


class DeviceView(_Out):
    device_id: str
    device_kind: str | None
    connected: bool | None
    battery_pct: int | None
    last_reading_at: datetime | None
    last_reading_age_s: float | None


class GatewayView(_Out):
    gateway_id: str
    online: bool
    status_state: str | None
    last_seen_at: datetime
    last_seen_age_s: float
    offline_since: datetime | None
    software_version: str | None
    heartbeat_interval_s: float | None
    backlog: int | None
    oldest_unsent_age_s: float | None
    clock_synchronized: bool | None
    devices: list[DeviceView]
    patients: list[str]
    open_gaps: int
    missing_messages: int
    technical_alarms: list[AlertView]


class GatewayList(_Out):
    gateways: list[GatewayView]
    as_of: datetime


# --------------------------------------------------------------------------------------------------
# Commands and settings


class CommandRequest(RootModel[protocol.CommandBody]):
    """One settings command, e.g. ``{"command": "set_spo2_scale", "scale": 2}``."""


class SettingsRequest(_In):
    """Change one or more settings; each given field becomes one command to the gateway."""

    spo2_scale: Literal[1, 2] | None = None
    on_oxygen: bool | None = None
    consciousness: protocol.Consciousness | None = None


class CommandAccepted(_Out):
    command_id: uuid.UUID
    state: str


class CommandsAccepted(_Out):
    commands: list[CommandAccepted]


class DisplayNameRequest(_In):
    display_name: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
            ),
        ]
        | None
    )
    """The name shown to the command center; null clears it."""


# --------------------------------------------------------------------------------------------------
# Admin


class DeadLetterView(_Out):
    id: int
    topic: str
    gateway_id: str | None
    reason: str
    detail: str
    payload_size: int
    payload_base64: str
    """The kept part of the payload (up to the configured size), base64."""
    received_at: datetime


class DeadLetterPage(_Out):
    items: list[DeadLetterView]
    next_cursor: str | None
    """Pass as ``before_id``."""


class IngestReport(_Out):
    counters: dict[str, int] | None
    """This process's ingest counters since start (None when the API runs without ingest)."""
    dead_letters_stored: dict[str, int]
    """Dead letters in the database by reason."""


class AuditEntry(_Out):
    source: Literal["alert", "api"]
    id: int
    at: datetime
    actor: str | None
    role: str | None
    action: str
    """Alert action (``acknowledged``, …) or the API route's method and template."""
    target: str
    outcome: str
    reason: str | None
    detail: dict[str, Any] | None


class AuditPage(_Out):
    items: list[AuditEntry]
    next_cursor: str | None
    """Pass as ``before_id`` (with the same ``source``)."""


class TokenCreateRequest(_In):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    role: Literal["integration", "viewer", "nurse", "physician", "admin"]


class TokenCreated(_Out):
    token: str
    """Shown once; only its hash is stored."""
    key_id: str
    name: str
    role: str


class TokenView(_Out):
    key_id: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    """Updated at most once per token cache period."""
    revoked_at: datetime | None


class TokenList(_Out):
    tokens: list[TokenView]


class EventTicket(_Out):
    ticket: str
    """Single use, valid for ``expires_in_s``: open ``/api/events?ticket=…`` (EventSource cannot send
    an Authorization header)."""
    expires_in_s: float


class Health(_Out):
    status: Literal["ok", "unavailable"]
    detail: str | None = None
