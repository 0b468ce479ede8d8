"""Patients: the sorted overview, one patient's picture, their readings and scores, settings commands."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime

from edge_agent import protocol
from server import queries
from server.api import schemas, views
from server.api.actions import Actor, CommandNotSentError, NoGatewayError, UnknownPatientError
from server.api.context import ApiContext, ApiError
from server.api.routes.common import PatientIdPath, reading
from server.api.security import context_of, require, write_audit
from server.auth import Account, Permission, may

logger = logging.getLogger(__name__)
router = APIRouter(tags=["patients"])

Reader = Annotated[Account, Depends(require(Permission.READ))]
Commander = Annotated[Account, Depends(require(Permission.COMMAND))]
NameSetter = Annotated[Account, Depends(require(Permission.SET_DISPLAY_NAME))]


def _bad_cursor() -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "cursor is not one this server issued",
        problems=[("query.cursor", "invalid")],
    )


def _limit(context: ApiContext, limit: int) -> int:
    if limit > context.settings.max_page_size:
        raise ApiError(
            422,
            "validation_error",
            f"limit must be at most {context.settings.max_page_size}",
            problems=[("query.limit", f"at most {context.settings.max_page_size}")],
        )
    return limit


async def _known_patient(context: ApiContext, patient_id: str) -> queries.PatientRow:
    async with reading(context) as session:
        row = await queries.patient_row(session, patient_id)
    if row is None:
        raise ApiError(
            404, "not_found", f"no patient {patient_id!r}", problems=[("path.patient_id", "unknown")]
        )
    return row


@router.get("/patients", summary="All patients, most at risk first")
async def list_patients(request: Request, account: Reader) -> schemas.PatientList:
    """Sorted by risk band (high first), then NEWS2 total, then the longest without data."""
    context = context_of(request)
    now = context.clock()
    async with reading(context) as session:
        rows = await queries.patient_rows(session)
    show = may(account.role, Permission.READ_IDENTITY)
    return schemas.PatientList(
        patients=[views.patient_summary(row, now, show_identity=show) for row in rows], as_of=now
    )


@router.get("/patients/{patient_id}", summary="One patient: latest picture, settings, commands, alerts")
async def get_patient(request: Request, account: Reader, patient_id: PatientIdPath) -> schemas.PatientDetail:
    context = context_of(request)
    now = context.clock()
    async with reading(context) as session:
        row = await queries.patient_row(session, patient_id)
        if row is None:
            raise ApiError(
                404, "not_found", f"no patient {patient_id!r}", problems=[("path.patient_id", "unknown")]
            )
        commands = await queries.commands_for_patient(session, patient_id)
        history = await queries.alert_history(session, patient_id=patient_id, limit=50)
        open_alerts = await queries.open_alerts(session, patient_id=patient_id)
    return schemas.PatientDetail(
        patient=views.patient_summary(row, now, show_identity=may(account.role, Permission.READ_IDENTITY)),
        settings=views.patient_settings(row),
        commands=[views.command(item) for item in commands],
        open_alerts=[views.alert(item, now) for item in open_alerts],
        recent_alerts=[views.alert(item, now) for item in history.items],
    )


@router.get("/patients/{patient_id}/observations", summary="A patient's readings, oldest first, paged")
async def list_observations(
    request: Request,
    account: Reader,
    patient_id: PatientIdPath,
    vital: Annotated[list[protocol.VitalCode], Query(description="Only these vitals (repeatable)")] = [],  # noqa: B006
    since: Annotated[AwareDatetime | None, Query(description="Measured at or after (with zone)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Measured before (with zone)")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1)] = 1000,
) -> schemas.ObservationPage:
    context = context_of(request)
    await _known_patient(context, patient_id)
    _check_range(since, until)
    async with reading(context) as session:
        try:
            page = await queries.observations(
                session,
                patient_id,
                vitals=[item.value for item in vital],
                since=since,
                until=until,
                cursor=cursor,
                limit=_limit(context, limit),
            )
        except ValueError:
            raise _bad_cursor() from None
    return schemas.ObservationPage(
        items=[views.observation(item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/patients/{patient_id}/assessments", summary="A patient's NEWS2 assessments, oldest first, paged"
)
async def list_assessments(
    request: Request,
    account: Reader,
    patient_id: PatientIdPath,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1)] = 1000,
) -> schemas.AssessmentPage:
    context = context_of(request)
    await _known_patient(context, patient_id)
    _check_range(since, until)
    async with reading(context) as session:
        try:
            page = await queries.assessments(
                session, patient_id, since=since, until=until, cursor=cursor, limit=_limit(context, limit)
            )
        except ValueError:
            raise _bad_cursor() from None
    return schemas.AssessmentPage(
        items=[views.assessment(item) for item in page.items], next_cursor=page.next_cursor
    )


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ApiError(
            422,
            "validation_error",
            "since must be before until",
            problems=[("query.until", "not after since")],
        )


@router.get("/patients/{patient_id}/commands", summary="Commands sent for a patient, newest first")
async def list_commands(
    request: Request, account: Reader, patient_id: PatientIdPath
) -> list[schemas.CommandView]:
    context = context_of(request)
    await _known_patient(context, patient_id)
    async with reading(context) as session:
        rows = await queries.commands_for_patient(session, patient_id)
    return [views.command(item) for item in rows]


@router.get("/commands/{command_id}", summary="A command and the state of its acknowledgement")
async def get_command(request: Request, account: Reader, command_id: uuid.UUID) -> schemas.CommandView:
    context = context_of(request)
    async with reading(context) as session:
        row = await queries.command(session, command_id)
    if row is None:
        raise ApiError(
            404, "not_found", f"no command {command_id}", problems=[("path.command_id", "unknown")]
        )
    return views.command(row)


async def _send(
    request: Request, account: Account, patient_id: str, body: protocol.CommandBody
) -> schemas.CommandAccepted:
    context = context_of(request)
    actor = Actor(account=account.name, role=account.role)
    detail = body.model_dump(mode="json")
    try:
        command_id = await context.actions.send_command(patient_id, body, actor=actor)
    except UnknownPatientError:
        await write_audit(request, account, target=patient_id, outcome="not_found", detail=detail)
        raise ApiError(
            404, "not_found", f"no patient {patient_id!r}", problems=[("path.patient_id", "unknown")]
        ) from None
    except NoGatewayError as exc:
        await write_audit(request, account, target=patient_id, outcome="no_gateway", detail=detail)
        raise ApiError(409, "conflict", str(exc)) from None
    except CommandNotSentError as exc:
        await write_audit(
            request,
            account,
            target=f"command:{exc.command_id}",
            outcome="not_sent",
            detail={**detail, "patient_id": patient_id},
        )
        raise ApiError(
            503,
            "broker_unavailable",
            f"command {exc.command_id} is stored as pending but the broker did not take it; "
            "check its state later",
        ) from None
    await write_audit(
        request,
        account,
        target=f"command:{command_id}",
        outcome="sent",
        detail={**detail, "patient_id": patient_id},
    )
    logger.info(
        "command %s (%s) for patient %s sent by %s", command_id, body.command, patient_id, account.name
    )
    return schemas.CommandAccepted(command_id=command_id, state="sent")


@router.post(
    "/patients/{patient_id}/commands",
    status_code=202,
    summary="Send one settings command to the patient's gateway",
)
async def send_command(
    request: Request, account: Commander, patient_id: PatientIdPath, command: schemas.CommandRequest
) -> schemas.CommandAccepted:
    """Answers once the broker has the command; the gateway's acknowledgement shows later in
    ``GET /api/commands/{command_id}``."""
    return await _send(request, account, patient_id, command.root)


@router.post(
    "/patients/{patient_id}/settings",
    status_code=202,
    summary="Change a patient's SpO2 scale, home oxygen or consciousness (one command each)",
)
async def change_settings(
    request: Request, account: Commander, patient_id: PatientIdPath, settings: schemas.SettingsRequest
) -> schemas.CommandsAccepted:
    bodies: list[protocol.CommandBody] = []
    if settings.spo2_scale is not None:
        bodies.append(protocol.SetSpo2Scale(command="set_spo2_scale", scale=settings.spo2_scale))
    if settings.on_oxygen is not None:
        bodies.append(protocol.SetOxygen(command="set_oxygen", on_oxygen=settings.on_oxygen))
    if settings.consciousness is not None:
        bodies.append(
            protocol.SetConsciousness(command="set_consciousness", consciousness=settings.consciousness)
        )
    if not bodies:
        raise ApiError(
            422,
            "validation_error",
            "give at least one of spo2_scale, on_oxygen, consciousness",
            problems=[("body", "no setting given")],
        )
    return schemas.CommandsAccepted(
        commands=[await _send(request, account, patient_id, body) for body in bodies]
    )


@router.put(
    "/patients/{patient_id}/display-name", status_code=204, summary="Set or clear a display name (admin)"
)
async def set_display_name(
    request: Request, account: NameSetter, patient_id: PatientIdPath, body: schemas.DisplayNameRequest
) -> Response:
    context = context_of(request)
    actor = Actor(account=account.name, role=account.role)
    try:
        await context.actions.set_display_name(patient_id, body.display_name, actor=actor)
    except UnknownPatientError:
        await write_audit(request, account, target=patient_id, outcome="not_found")
        raise ApiError(
            404, "not_found", f"no patient {patient_id!r}", problems=[("path.patient_id", "unknown")]
        ) from None
    # The audit and the log say that a name was set or cleared, never the name itself.
    await write_audit(
        request,
        account,
        target=patient_id,
        outcome="ok",
        detail={"display_name_set": body.display_name is not None},
    )
    logger.info(
        "display name of patient %s %s by %s",
        patient_id,
        "set" if body.display_name else "cleared",
        account.name,
    )
    return Response(status_code=204)
