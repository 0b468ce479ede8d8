"""Read-only questions the REST API asks of the database, one function each.

Every function takes an open ``AsyncSession`` and only reads; paged lists use keyset paging (a cursor
made of the last row's sort key), so a page never repeats or skips a row when rows arrive meanwhile.
Nothing here returns display names except :func:`patient_rows` and :func:`patient_row`, which the API
hides from roles that may not see them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from edge_agent import protocol
from server.auth import ApiAuditRecord
from server.storage.models import (
    Alert,
    AlertEventRecord,
    Assessment,
    CommandRecord,
    DeadLetter,
    Gateway,
    Observation,
    Patient,
    SequenceGap,
)

T = TypeVar("T")
RISK_RANK: Final = {"high": 4, "medium": 3, "low-medium": 2, "low": 1}
PRIORITY_RANK: Final = {"emergency": 4, "high": 3, "medium": 2, "low": 1}


@dataclass(frozen=True, slots=True)
class LatestVital:
    vital: str
    value: float
    unit: str
    measured_at: datetime
    quality: list[str]
    device_id: str


@dataclass(slots=True)
class PatientRow:
    patient: Patient
    gateway: Gateway | None
    assessment: Assessment | None
    latest: dict[str, LatestVital] = field(default_factory=dict)
    last_data_at: datetime | None = None
    """Newest measurement time among the patient's readings and assessments."""
    open_alerts: int = 0
    top_priority: str | None = None


def _patients(patient_ids: Sequence[str] | None) -> Select[Any]:
    statement = select(Patient.patient_id)
    if patient_ids is not None:
        statement = statement.where(Patient.patient_id.in_(patient_ids))
    return statement


async def _latest_vitals(
    session: AsyncSession, patient_ids: Sequence[str] | None
) -> dict[str, dict[str, LatestVital]]:
    """The newest reading of each vital of each patient.

    One index probe per patient and vital (``ix_observations_patient_vital_measured``), not a scan of
    the whole table: correlated ``ORDER BY measured_at DESC, id DESC LIMIT 1`` subqueries, which both
    backends answer from the index. Two readings at the same instant: the later stored wins."""
    newest_ids = [
        select(Observation.id)
        .where(Observation.patient_id == Patient.patient_id, Observation.vital == vital.value)
        .order_by(Observation.measured_at.desc(), Observation.id.desc())
        .limit(1)
        .scalar_subquery()
        .label(vital.value)
        for vital in protocol.VitalCode
    ]
    statement = _patients(patient_ids).add_columns(*newest_ids)
    ids = [
        value for row in (await session.execute(statement)).all() for value in row[1:] if value is not None
    ]
    result: dict[str, dict[str, LatestVital]] = {}
    for chunk in range(0, len(ids), 5000):
        rows = await session.scalars(select(Observation).where(Observation.id.in_(ids[chunk : chunk + 5000])))
        for row in rows.all():
            result.setdefault(row.patient_id, {})[row.vital] = LatestVital(
                vital=row.vital,
                value=row.value,
                unit=row.unit,
                measured_at=row.measured_at,
                quality=list(row.quality),
                device_id=row.device_id,
            )
    return result


async def _latest_assessments(
    session: AsyncSession, patient_ids: Sequence[str] | None
) -> dict[str, Assessment]:
    """The newest assessment of each patient (by ``assessed_at``), one index probe per patient."""
    newest_id = (
        select(Assessment.id)
        .where(Assessment.patient_id == Patient.patient_id)
        .order_by(Assessment.assessed_at.desc(), Assessment.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    statement = _patients(patient_ids).add_columns(newest_id)
    ids = [row[1] for row in (await session.execute(statement)).all() if row[1] is not None]
    result: dict[str, Assessment] = {}
    for chunk in range(0, len(ids), 5000):
        rows = await session.scalars(select(Assessment).where(Assessment.id.in_(ids[chunk : chunk + 5000])))
        result.update({row.patient_id: row for row in rows.all()})
    return result


async def _open_alert_summary(
    session: AsyncSession, patient_ids: Sequence[str] | None
) -> dict[str, tuple[int, str | None]]:
    statement = select(Alert.patient_id, Alert.priority).where(
        Alert.state != "resolved", Alert.patient_id.is_not(None)
    )
    if patient_ids is not None:
        statement = statement.where(Alert.patient_id.in_(patient_ids))
    summary: dict[str, tuple[int, str | None]] = {}
    for patient_id, priority in (await session.execute(statement)).all():
        if patient_id is None:
            continue
        count, top = summary.get(patient_id, (0, None))
        if top is None or PRIORITY_RANK.get(priority, 0) > PRIORITY_RANK.get(top, 0):
            top = priority
        summary[patient_id] = (count + 1, top)
    return summary


async def patient_rows(session: AsyncSession, patient_ids: Sequence[str] | None = None) -> list[PatientRow]:
    """Every patient (or those named) with latest vitals, latest assessment and open alerts, sorted:
    highest risk first, then highest NEWS2, then the longest without data (no data at all first)."""
    statement = select(Patient, Gateway).outerjoin(Gateway, Patient.gateway_id == Gateway.gateway_id)
    if patient_ids is not None:
        statement = statement.where(Patient.patient_id.in_(patient_ids))
    pairs = (await session.execute(statement)).all()
    vitals = await _latest_vitals(session, patient_ids)
    assessments = await _latest_assessments(session, patient_ids)
    alerts = await _open_alert_summary(session, patient_ids)
    rows: list[PatientRow] = []
    for patient, gateway in pairs:
        latest = vitals.get(patient.patient_id, {})
        assessment = assessments.get(patient.patient_id)
        times = [item.measured_at for item in latest.values()]
        if assessment is not None:
            times.append(assessment.assessed_at)
        count, top = alerts.get(patient.patient_id, (0, None))
        rows.append(
            PatientRow(
                patient=patient,
                gateway=gateway,
                assessment=assessment,
                latest=latest,
                last_data_at=max(times) if times else None,
                open_alerts=count,
                top_priority=top,
            )
        )

    def order(row: PatientRow) -> tuple[int, int, float, str]:
        risk = RISK_RANK.get(row.assessment.risk, 0) if row.assessment else 0
        total = row.assessment.total if row.assessment else -1
        stamp = row.last_data_at.timestamp() if row.last_data_at else float("-inf")
        return (-risk, -total, stamp, row.patient.patient_id)

    rows.sort(key=order)
    return rows


async def patient_row(session: AsyncSession, patient_id: str) -> PatientRow | None:
    rows = await patient_rows(session, [patient_id])
    return rows[0] if rows else None


# --------------------------------------------------------------------------------------------------
# Keyset paging


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _time_cursor(moment: datetime, row_id: int) -> str:
    return f"{moment.isoformat()}|{row_id}"


def parse_time_cursor(cursor: str) -> tuple[datetime, int]:
    """Raises ValueError when the cursor is not one this module made."""
    moment, _, row_id = cursor.rpartition("|")
    parsed = datetime.fromisoformat(moment)
    if parsed.tzinfo is None:
        raise ValueError("cursor time has no zone")
    return parsed, int(row_id)


async def observations(
    session: AsyncSession,
    patient_id: str,
    *,
    vitals: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 1000,
) -> Page[Observation]:
    """Readings in measurement order (oldest first) in ``[since, until)``, ``limit`` per page."""
    statement = select(Observation).where(Observation.patient_id == patient_id)
    if vitals:
        statement = statement.where(Observation.vital.in_(vitals))
    if since is not None:
        statement = statement.where(Observation.measured_at >= since)
    if until is not None:
        statement = statement.where(Observation.measured_at < until)
    if cursor is not None:
        moment, row_id = parse_time_cursor(cursor)
        statement = statement.where(
            or_(
                Observation.measured_at > moment,
                and_(Observation.measured_at == moment, Observation.id > row_id),
            )
        )
    statement = statement.order_by(Observation.measured_at, Observation.id).limit(limit + 1)
    found = list((await session.scalars(statement)).all())
    more = len(found) > limit
    items = found[:limit]
    return Page(items, _time_cursor(items[-1].measured_at, items[-1].id) if more else None)


async def assessments(
    session: AsyncSession,
    patient_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 1000,
) -> Page[Assessment]:
    statement = select(Assessment).where(Assessment.patient_id == patient_id)
    if since is not None:
        statement = statement.where(Assessment.assessed_at >= since)
    if until is not None:
        statement = statement.where(Assessment.assessed_at < until)
    if cursor is not None:
        moment, row_id = parse_time_cursor(cursor)
        statement = statement.where(
            or_(
                Assessment.assessed_at > moment,
                and_(Assessment.assessed_at == moment, Assessment.id > row_id),
            )
        )
    statement = statement.order_by(Assessment.assessed_at, Assessment.id).limit(limit + 1)
    found = list((await session.scalars(statement)).all())
    more = len(found) > limit
    items = found[:limit]
    return Page(items, _time_cursor(items[-1].assessed_at, items[-1].id) if more else None)


# --------------------------------------------------------------------------------------------------
# Alerts


def _queue_order(statement: Select[Any]) -> Select[Any]:
    rank = case(*((Alert.priority == name, value) for name, value in PRIORITY_RANK.items()), else_=0)
    return statement.order_by(rank.desc(), Alert.tier.desc(), Alert.raised_at, Alert.id)


async def open_alerts(
    session: AsyncSession, *, category: str | None = None, patient_id: str | None = None
) -> list[Alert]:
    """Unresolved alerts, most urgent first: priority, then tier, then the oldest."""
    statement = select(Alert).where(Alert.state != "resolved")
    if category is not None:
        statement = statement.where(Alert.category == category)
    if patient_id is not None:
        statement = statement.where(Alert.patient_id == patient_id)
    return list((await session.scalars(_queue_order(statement))).all())


async def alert_history(
    session: AsyncSession,
    *,
    patient_id: str | None = None,
    gateway_id: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[Alert]:
    """Alerts newest first by when they were raised."""
    statement = select(Alert)
    if patient_id is not None:
        statement = statement.where(Alert.patient_id == patient_id)
    if gateway_id is not None:
        statement = statement.where(Alert.gateway_id == gateway_id)
    if state is not None:
        statement = statement.where(Alert.state == state)
    if since is not None:
        statement = statement.where(Alert.raised_at >= since)
    if until is not None:
        statement = statement.where(Alert.raised_at < until)
    if cursor is not None:
        moment, _, alert_id = cursor.rpartition("|")
        at = datetime.fromisoformat(moment)
        key = uuid.UUID(alert_id)
        statement = statement.where(or_(Alert.raised_at < at, and_(Alert.raised_at == at, Alert.id < key)))
    statement = statement.order_by(Alert.raised_at.desc(), Alert.id.desc()).limit(limit + 1)
    found = list((await session.scalars(statement)).all())
    more = len(found) > limit
    items = found[:limit]
    next_cursor = f"{items[-1].raised_at.isoformat()}|{items[-1].id}" if more else None
    return Page(items, next_cursor)


async def alert(session: AsyncSession, alert_id: uuid.UUID) -> Alert | None:
    return await session.get(Alert, alert_id)


async def alert_events(session: AsyncSession, alert_id: uuid.UUID) -> list[AlertEventRecord]:
    statement = (
        select(AlertEventRecord).where(AlertEventRecord.alert_id == alert_id).order_by(AlertEventRecord.id)
    )
    return list((await session.scalars(statement)).all())


# --------------------------------------------------------------------------------------------------
# Gateways and commands


async def gateways(session: AsyncSession, gateway_id: str | None = None) -> list[Gateway]:
    statement = select(Gateway).order_by(Gateway.gateway_id)
    if gateway_id is not None:
        statement = statement.where(Gateway.gateway_id == gateway_id)
    return list((await session.scalars(statement)).all())


async def open_technical_alerts(session: AsyncSession) -> dict[str, list[Alert]]:
    """Unresolved technical alerts by gateway id."""
    statement = _queue_order(
        select(Alert).where(
            Alert.state != "resolved", Alert.category == "technical", Alert.gateway_id.is_not(None)
        )
    )
    result: dict[str, list[Alert]] = {}
    for row in (await session.scalars(statement)).all():
        assert row.gateway_id is not None
        result.setdefault(row.gateway_id, []).append(row)
    return result


async def open_gap_counts(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """Per gateway: open sequence gaps and the messages they are missing."""
    statement = (
        select(
            SequenceGap.gateway_id,
            func.count(),
            func.sum(SequenceGap.last_missing - SequenceGap.first_missing + 1),
        )
        .where(SequenceGap.filled_at.is_(None))
        .group_by(SequenceGap.gateway_id)
    )
    return {
        gateway_id: (int(count), int(missing or 0))
        for gateway_id, count, missing in (await session.execute(statement)).all()
    }


async def patients_of_gateways(session: AsyncSession) -> dict[str, list[str]]:
    statement = (
        select(Patient.gateway_id, Patient.patient_id)
        .where(Patient.gateway_id.is_not(None))
        .order_by(Patient.patient_id)
    )
    result: dict[str, list[str]] = {}
    for gateway_id, patient_id in (await session.execute(statement)).all():
        if gateway_id is None:
            continue
        result.setdefault(gateway_id, []).append(patient_id)
    return result


async def commands_for_patient(
    session: AsyncSession, patient_id: str, *, limit: int = 50
) -> list[CommandRecord]:
    """Newest first."""
    statement = (
        select(CommandRecord)
        .where(CommandRecord.patient_id == patient_id)
        .order_by(CommandRecord.issued_at.desc(), CommandRecord.message_id.desc())
        .limit(limit)
    )
    return list((await session.scalars(statement)).all())


async def command(session: AsyncSession, command_id: uuid.UUID) -> CommandRecord | None:
    return await session.get(CommandRecord, command_id)


# --------------------------------------------------------------------------------------------------
# Dead letters and audit


async def dead_letters(
    session: AsyncSession,
    *,
    gateway_id: str | None = None,
    reason: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> Page[DeadLetter]:
    """Newest first; ``next_cursor`` is the id to pass as ``before_id``."""
    statement = select(DeadLetter)
    if gateway_id is not None:
        statement = statement.where(DeadLetter.gateway_id == gateway_id)
    if reason is not None:
        statement = statement.where(DeadLetter.reason == reason)
    if before_id is not None:
        statement = statement.where(DeadLetter.id < before_id)
    found = list((await session.scalars(statement.order_by(DeadLetter.id.desc()).limit(limit + 1))).all())
    items = found[:limit]
    return Page(items, str(items[-1].id) if len(found) > limit else None)


async def dead_letter_counts(session: AsyncSession) -> dict[str, int]:
    """Stored dead letters by reason (all time, within retention)."""
    statement = select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason)
    return {reason: int(count) for reason, count in (await session.execute(statement)).all()}


async def alert_audit(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> Page[tuple[AlertEventRecord, Alert]]:
    """Alert actions newest first, each with its alert."""
    statement = select(AlertEventRecord, Alert).join(Alert, Alert.id == AlertEventRecord.alert_id)
    if since is not None:
        statement = statement.where(AlertEventRecord.at >= since)
    if until is not None:
        statement = statement.where(AlertEventRecord.at < until)
    if before_id is not None:
        statement = statement.where(AlertEventRecord.id < before_id)
    rows = (await session.execute(statement.order_by(AlertEventRecord.id.desc()).limit(limit + 1))).all()
    items = [(event, owner) for event, owner in rows[:limit]]
    return Page(items, str(items[-1][0].id) if len(rows) > limit else None)


async def api_audit(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> Page[ApiAuditRecord]:
    """API writes newest first."""
    statement = select(ApiAuditRecord)
    if since is not None:
        statement = statement.where(ApiAuditRecord.at >= since)
    if until is not None:
        statement = statement.where(ApiAuditRecord.at < until)
    if before_id is not None:
        statement = statement.where(ApiAuditRecord.id < before_id)
    found = list((await session.scalars(statement.order_by(ApiAuditRecord.id.desc()).limit(limit + 1))).all())
    items = found[:limit]
    return Page(items, str(items[-1].id) if len(found) > limit else None)
