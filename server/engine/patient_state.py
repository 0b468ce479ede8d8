"""Patients' current pictures for the command center (``PatientState``), read from the database.

:func:`patient_states` reads any number of patients in one statement (the engine publishes the states of
every patient touched in the last 200 ms at once): the patient's gateway and whether it is online, the
latest assessment, the latest value of each vital and the number of open alerts are correlated
subqueries of one row per patient, each answered from an index (``observations`` by patient, vital and
time; ``assessments`` by patient and time).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from edge_agent.protocol import PatientState, Risk, VitalCode
from server.storage.models import Alert, Assessment, Gateway, Observation, Patient
from server.storage.repository import one_of

_VITALS = tuple(VitalCode)

_CHUNK = 500
"""Patients per statement (keeps the statement's parameters well below any driver's limit)."""


def _latest_value(vital: VitalCode) -> ScalarSelect[Any]:
    return (
        select(Observation.value)
        .where(Observation.patient_id == Patient.patient_id, Observation.vital == vital.value)
        .order_by(Observation.measured_at.desc(), Observation.id.desc())
        .limit(1)
        .correlate(Patient)
        .scalar_subquery()
    )


def _statement(session: AsyncSession, patient_ids: list[str]) -> Any:
    latest_assessment = (
        select(Assessment.id)
        .where(Assessment.patient_id == Patient.patient_id)
        .order_by(Assessment.assessed_at.desc(), Assessment.id.desc())
        .limit(1)
        .correlate(Patient)
        .scalar_subquery()
    )
    open_alerts = (
        select(func.count())
        .select_from(Alert)
        .where(Alert.patient_id == Patient.patient_id, Alert.state != "resolved")
        .correlate(Patient)
        .scalar_subquery()
    )
    assessment = aliased(Assessment)
    return (
        select(
            Patient.patient_id,
            Patient.gateway_id,
            Gateway.online,
            assessment.risk,
            assessment.total,
            assessment.components,
            open_alerts,
            *(_latest_value(vital) for vital in _VITALS),
        )
        .select_from(Patient)
        .outerjoin(Gateway, Gateway.gateway_id == Patient.gateway_id)
        .outerjoin(assessment, assessment.id == latest_assessment)
        .where(one_of(session, Patient.patient_id, patient_ids), Patient.gateway_id.is_not(None))
        .order_by(Patient.patient_id)
    )


async def patient_states(
    session: AsyncSession, patient_ids: Collection[str], *, now: datetime
) -> list[PatientState]:
    """The states of those of ``patient_ids`` that are known and have a gateway, ordered by patient id."""
    ordered = sorted(set(patient_ids))
    states: list[PatientState] = []
    for start in range(0, len(ordered), _CHUNK):
        rows = await session.execute(_statement(session, ordered[start : start + _CHUNK]))
        for patient_id, gateway_id, online, risk, total, components, open_alerts, *values in rows:
            states.append(
                PatientState(
                    patient_id=patient_id,
                    gateway_id=gateway_id,
                    updated_at=now,
                    risk=Risk(risk) if risk is not None else None,
                    total=total,
                    components=dict(components) if components is not None else {},
                    latest={v: value for v, value in zip(_VITALS, values, strict=True) if value is not None},
                    open_alerts=int(open_alerts or 0),
                    gateway_online=bool(online),
                )
            )
    return states


async def patients_of_gateways(session: AsyncSession, gateway_ids: Collection[str]) -> list[str]:
    """The patients of these gateways, ordered by id."""
    if not gateway_ids:
        return []
    result = await session.scalars(
        select(Patient.patient_id)
        .where(one_of(session, Patient.gateway_id, sorted(gateway_ids)))
        .order_by(Patient.patient_id)
    )
    return list(result.all())
