"""The database questions of the FHIR export (read-only, one function each), and the paging of
Observation results across the observations and assessments tables.

Paging is keyset paging on the resources' own order, (effectiveDateTime, id): rows are read in time
order in batches, every row of one instant is read before that instant's resources are built (so a
blood pressure panel is never split across pages), and a page resumes after the cursor's resource. A
reading that arrives later with an older time than the cursor is not shown on later pages of that
search; a new search sees it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from fhir.resources.R4B.observation import Observation as FhirObservation
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from edge_agent.protocol import VitalCode
from server.fhir import mapping
from server.fhir.search import CodeFilter, Cursor, TimeWindow
from server.storage.models import Alert, Assessment, Gateway, Observation, Patient

BATCH_ROWS: Final = 500


async def find_patient(session: AsyncSession, fhir_id: str) -> Patient | None:
    """The patient whose FHIR id (see :func:`server.fhir.mapping.patient_fhir_id`) is ``fhir_id``."""
    if mapping.FHIR_ID.match(fhir_id):
        found = await session.get(Patient, fhir_id)
        if found is not None:
            return found
    if fhir_id.startswith("pt-") and len(fhir_id) == 43:
        # Pseudonyms with '_' are not FHIR ids; their digest ids are resolved among those pseudonyms.
        statement = select(Patient).where(Patient.patient_id.contains("_", autoescape=True))
        for candidate in (await session.scalars(statement)).all():
            if mapping.patient_fhir_id(candidate.patient_id) == fhir_id:
                return candidate
    return None


async def _time_groups(
    session: AsyncSession, statement: Select[Any], time_column: Any, id_column: Any, batch_rows: int
) -> AsyncGenerator[list[Any], None]:
    """Rows of ``statement`` in (time, id) order, grouped by equal time, read ``batch_rows`` at a time."""
    last: tuple[datetime, int] | None = None
    group: list[Any] = []
    while True:
        batch_statement = statement
        if last is not None:
            batch_statement = batch_statement.where(
                or_(time_column > last[0], and_(time_column == last[0], id_column > last[1]))
            )
        rows = (
            await session.scalars(batch_statement.order_by(time_column, id_column).limit(batch_rows))
        ).all()
        for row in rows:
            moment = getattr(row, time_column.key)
            if group and getattr(group[0], time_column.key) != moment:
                yield group
                group = []
            group.append(row)
        if len(rows) < batch_rows:
            break
        last = (getattr(rows[-1], time_column.key), rows[-1].id)
    if group:
        yield group


def _windowed(statement: Select[Any], column: Any, window: TimeWindow) -> Select[Any]:
    if window.start is not None:
        statement = statement.where(column >= window.start)
    if window.end is not None:
        statement = statement.where(column < window.end)
    return statement


@dataclass(frozen=True, slots=True)
class ObservationPage:
    resources: list[FhirObservation]
    next_cursor: Cursor | None
    devices: list[tuple[str, str]] = field(default_factory=list)
    """(gateway id, device id) of every Device the page's resources reference, sorted."""


async def observation_page(
    session: AsyncSession,
    patient_id: str,
    *,
    window: TimeWindow,
    vitals: Sequence[VitalCode],
    include_news2: bool,
    code_filter: CodeFilter | None,
    after: Cursor | None,
    count: int,
) -> ObservationPage:
    """One page of a patient's Observations (vital signs, blood pressure panels, NEWS2), in
    (effectiveDateTime, id) order, starting after ``after``."""
    if window.empty or (not vitals and not include_news2):
        return ObservationPage([], None)
    if after is not None:
        window = window.narrowed(after.time, None)
    observations = _windowed(
        select(Observation).where(
            Observation.patient_id == patient_id, Observation.vital.in_([v.value for v in vitals])
        ),
        Observation.measured_at,
        window,
    )
    assessments = _windowed(
        select(Assessment).where(Assessment.patient_id == patient_id), Assessment.assessed_at, window
    )
    # A resource is one to three rows; read a little more than a page needs, at most BATCH_ROWS at once.
    batch_rows = min(BATCH_ROWS, 3 * count + 8)
    found: list[FhirObservation] = []
    device_keys: dict[str, tuple[str, str]] = {}
    async with (
        aclosing(
            _time_groups(session, observations, Observation.measured_at, Observation.id, batch_rows)
        ) as readings,
        aclosing(
            _time_groups(session, assessments, Assessment.assessed_at, Assessment.id, batch_rows)
        ) as scores,
    ):
        reading_group: list[Observation] | None = await anext(readings, None) if vitals else None
        score_group: list[Assessment] | None = await anext(scores, None) if include_news2 else None
        while reading_group is not None or score_group is not None:
            reading_time = reading_group[0].measured_at if reading_group else None
            score_time = score_group[0].assessed_at if score_group else None
            moment = min(t for t in (reading_time, score_time) if t is not None)
            resources: list[FhirObservation] = []
            if reading_group is not None and reading_time == moment:
                for row in reading_group:
                    device_keys[mapping.device_fhir_id(row.gateway_id, row.device_id)] = (
                        row.gateway_id,
                        row.device_id,
                    )
                resources.extend(mapping.observations(reading_group))
                reading_group = await anext(readings, None)
            if score_group is not None and score_time == moment:
                resources.extend(mapping.news2_observation(row) for row in score_group)
                score_group = await anext(scores, None)
            resources.sort(key=mapping.resource_sort_key)
            for resource in resources:
                key = mapping.resource_sort_key(resource)
                if after is not None and key <= (after.time, after.resource_id):
                    continue
                if code_filter is not None and not code_filter.matches(_codings(resource)):
                    continue
                found.append(resource)
            if len(found) > count:
                break
    next_cursor = None
    if len(found) > count:
        found = found[:count]
        next_cursor = Cursor(*mapping.resource_sort_key(found[-1]))
    referenced = {
        device_keys[str(resource.device.reference).removeprefix("Device/")]
        for resource in found
        if resource.device is not None and resource.device.reference is not None
    }
    return ObservationPage(found, next_cursor, sorted(referenced))


def _codings(resource: FhirObservation) -> list[tuple[str, str]]:
    return [
        (str(coding.system), str(coding.code))
        for coding in (resource.code.coding or [])
        if coding.system is not None and coding.code is not None
    ]


async def alerts_about(session: AsyncSession, patient_id: str) -> list[Alert]:
    """Every alert about the patient, oldest first."""
    statement = select(Alert).where(Alert.patient_id == patient_id).order_by(Alert.raised_at, Alert.id)
    return list((await session.scalars(statement)).all())


@dataclass(frozen=True, slots=True)
class DeviceSet:
    gateways: list[mapping.GatewayInfo]
    devices: list[mapping.DeviceInfo]


async def devices_of(
    session: AsyncSession, patient_id: str, pairs: Sequence[tuple[str, str]], gateway_ids: Sequence[str] = ()
) -> DeviceSet:
    """Devices for ``(gateway id, device id)`` pairs and their gateways (plus ``gateway_ids``), with the
    device kinds and software versions from the gateways' latest status. One indexed lookup of the
    gateways; the observations table is not scanned."""
    wanted = sorted({gateway_id for gateway_id, _ in pairs} | set(gateway_ids))
    rows = (
        (await session.scalars(select(Gateway).where(Gateway.gateway_id.in_(wanted)))).all() if wanted else []
    )
    kinds: dict[tuple[str, str], str] = {}
    for gateway in rows:
        for state in gateway.devices or []:
            if isinstance(state, dict) and isinstance(state.get("device_kind"), str):
                kinds[(gateway.gateway_id, str(state.get("device_id")))] = state["device_kind"]
    versions = {gateway.gateway_id: gateway.software_version for gateway in rows}
    return DeviceSet(
        gateways=[
            mapping.GatewayInfo(gateway_id, patient_id, versions.get(gateway_id)) for gateway_id in wanted
        ],
        devices=[
            mapping.DeviceInfo(gateway_id, device_id, patient_id, kinds.get((gateway_id, device_id)))
            for gateway_id, device_id in sorted(set(pairs))
        ],
    )
