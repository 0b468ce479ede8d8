"""Turning database rows into response bodies (with ages computed against one ``now``)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from edge_agent import protocol
from server.api import schemas
from server.auth import ApiAuditRecord
from server.queries import PatientRow
from server.storage.models import (
    Alert,
    AlertEventRecord,
    Assessment,
    CommandRecord,
    DeadLetter,
    Gateway,
    Observation,
)


def age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round((now - moment).total_seconds(), 3)


def patient_summary(row: PatientRow, now: datetime, *, show_identity: bool) -> schemas.PatientSummary:
    assessment = row.assessment
    news2 = None
    if assessment is not None:
        news2 = schemas.News2(
            total=assessment.total,
            risk=protocol.Risk(assessment.risk),
            components=dict(assessment.components),
            complete=assessment.complete,
            trend_rising=assessment.trend_rising,
            assessed_at=assessment.assessed_at,
            age_s=age(assessment.assessed_at, now) or 0.0,
        )
    return schemas.PatientSummary(
        patient_id=row.patient.patient_id,
        display_name=row.patient.display_name if show_identity else None,
        gateway_id=row.patient.gateway_id,
        gateway_online=row.gateway.online if row.gateway is not None else None,
        news2=news2,
        latest={
            vital: schemas.VitalReading(
                value=item.value,
                unit=item.unit,
                measured_at=item.measured_at,
                age_s=age(item.measured_at, now) or 0.0,
                quality=item.quality,
                device_id=item.device_id,
            )
            for vital, item in sorted(row.latest.items())
        },
        last_data_at=row.last_data_at,
        data_age_s=age(row.last_data_at, now),
        open_alerts=row.open_alerts,
        top_priority=row.top_priority,
    )


def patient_settings(row: PatientRow) -> schemas.PatientSettings:
    patient, assessment = row.patient, row.assessment
    in_effect = None
    if assessment is not None:
        in_effect = schemas.SettingsInEffect(
            spo2_scale=assessment.spo2_scale,
            on_oxygen=assessment.on_oxygen,
            consciousness=assessment.consciousness,
            as_of=assessment.assessed_at,
        )
    return schemas.PatientSettings(
        spo2_scale=patient.spo2_scale,
        on_oxygen=patient.on_oxygen,
        consciousness=patient.consciousness,
        updated_at=patient.settings_updated_at,
        updated_by=patient.settings_updated_by,
        in_effect=in_effect,
    )


def command(row: CommandRecord) -> schemas.CommandView:
    return schemas.CommandView(
        command_id=row.message_id,
        gateway_id=row.gateway_id,
        patient_id=row.patient_id,
        name=row.name,
        body=dict(row.body),
        issued_at=row.issued_at,
        issued_by=row.issued_by,
        state=row.state,
        sent_at=row.sent_at,
        ack_ok=row.ack_ok,
        ack_detail=row.ack_detail,
        acked_at=row.acked_at,
        ack_received_at=row.ack_received_at,
    )


def alert(row: Alert, now: datetime) -> schemas.AlertView:
    return schemas.AlertView(
        alert_id=row.id,
        category=row.category,
        condition=row.condition,
        subject=row.subject,
        patient_id=row.patient_id,
        gateway_id=row.gateway_id,
        device_id=row.device_id,
        state=row.state,
        priority=row.priority,
        tier=row.tier,
        risk=row.risk,
        total=row.total,
        reason=row.reason,
        raised_at=row.raised_at,
        updated_at=row.updated_at,
        age_s=age(row.raised_at, now) or 0.0,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        snoozed_until=row.snoozed_until,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        next_escalation_at=row.next_escalation_at,
        next_escalation_in_s=(
            None
            if row.next_escalation_at is None
            else round((row.next_escalation_at - now).total_seconds(), 3)
        ),
    )


def alert_event(row: AlertEventRecord) -> schemas.AlertEventView:
    return schemas.AlertEventView(
        id=row.id,
        action=row.action,
        actor=row.actor,
        reason=row.reason,
        priority=row.priority,
        tier=row.tier,
        risk=row.risk,
        total=row.total,
        at=row.at,
    )


def observation(row: Observation) -> schemas.ObservationView:
    return schemas.ObservationView(
        id=row.id,
        vital=row.vital,
        value=row.value,
        unit=row.unit,
        measured_at=row.measured_at,
        time_source=row.time_source,
        device_id=row.device_id,
        quality=list(row.quality),
        perfusion_index=row.perfusion_index,
        historical=row.historical,
        received_at=row.received_at,
    )


def assessment(row: Assessment) -> schemas.AssessmentView:
    return schemas.AssessmentView(
        id=row.id,
        assessed_at=row.assessed_at,
        total=row.total,
        risk=row.risk,
        components=dict(row.components),
        complete=row.complete,
        input_ages_s=dict(row.input_ages_s),
        spo2_scale=row.spo2_scale,
        on_oxygen=row.on_oxygen,
        consciousness=row.consciousness,
        trend_rising=row.trend_rising,
        historical=row.historical,
        received_at=row.received_at,
    )


def _device(raw: Any, now: datetime) -> schemas.DeviceView | None:
    try:
        state = protocol.DeviceState.model_validate(raw)
    except ValidationError:
        return None
    return schemas.DeviceView(
        device_id=state.device_id,
        device_kind=state.device_kind,
        connected=state.connected,
        battery_pct=state.battery_pct,
        last_reading_at=state.last_reading_at,
        last_reading_age_s=age(state.last_reading_at, now),
    )


def gateway(
    row: Gateway,
    now: datetime,
    *,
    patients: list[str],
    gaps: tuple[int, int],
    alarms: list[Alert],
) -> schemas.GatewayView:
    devices = [view for raw in (row.devices or []) if (view := _device(raw, now)) is not None]
    return schemas.GatewayView(
        gateway_id=row.gateway_id,
        online=row.online,
        status_state=row.status_state,
        last_seen_at=row.last_seen_at,
        last_seen_age_s=age(row.last_seen_at, now) or 0.0,
        offline_since=row.offline_since,
        software_version=row.software_version,
        heartbeat_interval_s=row.heartbeat_interval_s,
        backlog=row.backlog,
        oldest_unsent_age_s=row.oldest_unsent_age_s,
        clock_synchronized=row.clock_synchronized,
        devices=devices,
        patients=patients,
        open_gaps=gaps[0],
        missing_messages=gaps[1],
        technical_alarms=[alert(item, now) for item in alarms],
    )


def dead_letter(row: DeadLetter) -> schemas.DeadLetterView:
    return schemas.DeadLetterView(
        id=row.id,
        topic=row.topic,
        gateway_id=row.gateway_id,
        reason=row.reason,
        detail=row.detail,
        payload_size=row.payload_size,
        payload_base64=base64.b64encode(row.payload).decode("ascii"),
        received_at=row.received_at,
    )


def alert_audit_entry(event: AlertEventRecord, owner: Alert) -> schemas.AuditEntry:
    return schemas.AuditEntry(
        source="alert",
        id=event.id,
        at=event.at,
        actor=event.actor,
        role=None,
        action=event.action,
        target=f"alert:{owner.id} ({owner.subject}, {owner.condition})",
        outcome="ok",
        reason=event.reason,
        detail=None,
    )


def api_audit_entry(row: ApiAuditRecord) -> schemas.AuditEntry:
    return schemas.AuditEntry(
        source="api",
        id=row.id,
        at=row.at,
        actor=row.actor,
        role=row.role,
        action=f"{row.method} {row.route}",
        target=row.target,
        outcome=row.outcome,
        reason=row.note,
        detail=dict(row.detail) if row.detail is not None else None,
    )
