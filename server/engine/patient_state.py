"""A patient's current picture for the command center (``PatientState``), read from the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from edge_agent.protocol import PatientState, Risk, VitalCode
from server.storage.models import Alert, Assessment, Gateway, Observation, Patient


async def patient_state(session: AsyncSession, patient_id: str, *, now: datetime) -> PatientState | None:
    """None when the patient is unknown or has no gateway."""
    patient = await session.get(Patient, patient_id)
    if patient is None or patient.gateway_id is None:
        return None
    assessment = (
        await session.scalars(
            select(Assessment)
            .where(Assessment.patient_id == patient_id)
            .order_by(Assessment.assessed_at.desc(), Assessment.id.desc())
            .limit(1)
        )
    ).first()
    latest: dict[VitalCode, float] = {}
    for vital in VitalCode:
        value = await session.scalar(
            select(Observation.value)
            .where(Observation.patient_id == patient_id, Observation.vital == vital.value)
            .order_by(Observation.measured_at.desc(), Observation.id.desc())
            .limit(1)
        )
        if value is not None:
            latest[vital] = value
    open_alerts = await session.scalar(
        select(func.count())
        .select_from(Alert)
        .where(Alert.patient_id == patient_id, Alert.state != "resolved")
    )
    gateway = await session.get(Gateway, patient.gateway_id)
    return PatientState(
        patient_id=patient_id,
        gateway_id=patient.gateway_id,
        updated_at=now,
        risk=Risk(assessment.risk) if assessment is not None else None,
        total=assessment.total if assessment is not None else None,
        components=dict(assessment.components) if assessment is not None else {},
        latest=latest,
        open_alerts=int(open_alerts or 0),
        gateway_online=bool(gateway is not None and gateway.online),
    )


async def patients_of_gateway(session: AsyncSession, gateway_id: str) -> list[str]:
    result = await session.scalars(
        select(Patient.patient_id).where(Patient.gateway_id == gateway_id).order_by(Patient.patient_id)
    )
    return list(result.all())
