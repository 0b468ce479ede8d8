"""Alerts: the open queue, history, one alert with its audit trail, and the clinicians' actions.

Actions go through :class:`server.api.actions.Actions` (the escalation engine), which applies the policy
and appends the ``alert_events`` audit row; the API checks the role first (nurse: acknowledge, snooze,
resolve below high; physician: also escalate and resolve high; admin: technical alerts only) and records
a refused attempt in ``api_audit``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime

from server import queries
from server.api import schemas, views
from server.api.actions import Actor
from server.api.context import ApiContext, ApiError
from server.api.routes.common import ID_PATTERN, reading
from server.api.security import context_of, forbid, require, write_audit
from server.auth import Account, Permission, Role, may
from server.escalation.errors import ActionRefusedError, AlertNotOpenError
from server.storage.models import Alert

logger = logging.getLogger(__name__)
router = APIRouter(tags=["alerts"])

Reader = Annotated[Account, Depends(require(Permission.READ))]
Acknowledger = Annotated[Account, Depends(require(Permission.ACKNOWLEDGE))]
Snoozer = Annotated[Account, Depends(require(Permission.SNOOZE))]
Escalator = Annotated[Account, Depends(require(Permission.ESCALATE))]
Resolver = Annotated[Account, Depends(require(Permission.RESOLVE))]

HIGH_PRIORITIES = frozenset({"high", "emergency"})
CLINICIANS = frozenset({Role.NURSE, Role.PHYSICIAN})


@router.get("/alerts", summary="Open alerts, most urgent first")
async def alert_queue(
    request: Request,
    account: Reader,
    category: Annotated[Literal["clinical", "technical"] | None, Query()] = None,
) -> schemas.AlertQueue:
    """Every alert not resolved (open, acknowledged or snoozed), by priority, then tier, then age; each
    with the time of its next escalation."""
    context = context_of(request)
    now = context.clock()
    async with reading(context) as session:
        rows = await queries.open_alerts(session, category=category)
    return schemas.AlertQueue(alerts=[views.alert(row, now) for row in rows], as_of=now)


@router.get("/alerts/history", summary="All alerts, newest first, paged")
async def alert_history(
    request: Request,
    account: Reader,
    patient_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    gateway_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    state: Annotated[Literal["open", "acknowledged", "snoozed", "resolved"] | None, Query()] = None,
    since: Annotated[AwareDatetime | None, Query(description="Raised at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Raised before")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.AlertPage:
    context = context_of(request)
    now = context.clock()
    async with reading(context) as session:
        try:
            page = await queries.alert_history(
                session,
                patient_id=patient_id,
                gateway_id=gateway_id,
                state=state,
                since=since,
                until=until,
                cursor=cursor,
                limit=limit,
            )
        except ValueError:
            raise ApiError(
                422,
                "validation_error",
                "cursor is not one this server issued",
                problems=[("query.cursor", "invalid")],
            ) from None
    return schemas.AlertPage(
        items=[views.alert(row, now) for row in page.items], next_cursor=page.next_cursor
    )


async def _detail(context: ApiContext, alert_id: uuid.UUID) -> schemas.AlertDetail:
    now = context.clock()
    async with reading(context) as session:
        row = await queries.alert(session, alert_id)
        if row is None:
            raise ApiError(404, "not_found", f"no alert {alert_id}", problems=[("path.alert_id", "unknown")])
        events = await queries.alert_events(session, alert_id)
    return schemas.AlertDetail(
        alert=views.alert(row, now), events=[views.alert_event(item) for item in events]
    )


@router.get("/alerts/{alert_id}", summary="One alert and every action on it")
async def get_alert(request: Request, account: Reader, alert_id: uuid.UUID) -> schemas.AlertDetail:
    return await _detail(context_of(request), alert_id)


def _refusal(account: Account, alert: Alert, verb: str) -> str | None:
    """Why this account may not ``verb`` this alert, or None."""
    if alert.category == "clinical" and account.role not in CLINICIANS:
        return f"may not {verb} a clinical alert (nurses and physicians only)"
    if (
        verb == "resolve"
        and alert.category == "clinical"
        and alert.priority in HIGH_PRIORITIES
        and not may(account.role, Permission.RESOLVE_HIGH)
    ):
        return f"may not resolve a {alert.priority} alert (physicians only)"
    return None


async def _act(
    request: Request,
    account: Account,
    alert_id: uuid.UUID,
    verb: str,
    apply: Callable[[Actor], Awaitable[None]],
) -> schemas.AlertDetail:
    context = context_of(request)
    async with reading(context) as session:
        alert = await queries.alert(session, alert_id)
    if alert is None:
        raise ApiError(404, "not_found", f"no alert {alert_id}", problems=[("path.alert_id", "unknown")])
    if alert.state == "resolved":
        raise ApiError(409, "conflict", f"alert {alert_id} is already resolved")
    refusal = _refusal(account, alert, verb)
    if refusal is not None:
        await write_audit(
            request, account, target=f"alert:{alert_id}", outcome="forbidden", detail={"action": verb}
        )
        raise forbid(account, refusal)
    try:
        await apply(Actor(account=account.name, role=account.role))
    except AlertNotOpenError:
        raise ApiError(409, "conflict", f"alert {alert_id} is no longer open") from None
    except ActionRefusedError as exc:
        if exc.reason == "role_not_allowed":
            await write_audit(
                request, account, target=f"alert:{alert_id}", outcome="forbidden", detail={"action": verb}
            )
            raise ApiError(403, "forbidden", str(exc)) from None
        if exc.reason in ("note_required", "snooze_too_long"):
            where = "body.note" if exc.reason == "note_required" else "body.duration_s"
            raise ApiError(422, exc.reason, str(exc), problems=[(where, str(exc))]) from None
        raise ApiError(409, exc.reason, str(exc)) from None
    logger.info("alert %s: %s by %s (%s)", alert_id, verb, account.name, account.role)
    return await _detail(context, alert_id)


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge: someone is on it (stops escalation)")
async def acknowledge(
    request: Request,
    account: Acknowledger,
    alert_id: uuid.UUID,
    body: schemas.AcknowledgeRequest | None = None,
) -> schemas.AlertDetail:
    note = body.note if body is not None else None
    actions = context_of(request).actions
    return await _act(
        request,
        account,
        alert_id,
        "acknowledge",
        lambda actor: actions.acknowledge_alert(alert_id, actor=actor, note=note),
    )


@router.post("/alerts/{alert_id}/escalate", summary="Escalate to the next tier now (physician)")
async def escalate(
    request: Request, account: Escalator, alert_id: uuid.UUID, body: schemas.EscalateRequest | None = None
) -> schemas.AlertDetail:
    note = body.note if body is not None else None
    actions = context_of(request).actions
    return await _act(
        request,
        account,
        alert_id,
        "escalate",
        lambda actor: actions.escalate_alert(alert_id, actor=actor, note=note),
    )


@router.post("/alerts/{alert_id}/resolve", summary="Resolve, with a note saying why")
async def resolve(
    request: Request, account: Resolver, alert_id: uuid.UUID, body: schemas.ResolveRequest
) -> schemas.AlertDetail:
    actions = context_of(request).actions
    return await _act(
        request,
        account,
        alert_id,
        "resolve",
        lambda actor: actions.resolve_alert(alert_id, actor=actor, note=body.note),
    )


@router.post("/alerts/{alert_id}/snooze", summary="Snooze a low or medium alert for a bounded time")
async def snooze(
    request: Request, account: Snoozer, alert_id: uuid.UUID, body: schemas.SnoozeRequest
) -> schemas.AlertDetail:
    actions = context_of(request).actions
    return await _act(
        request,
        account,
        alert_id,
        "snooze",
        lambda actor: actions.snooze_alert(alert_id, actor=actor, duration_s=body.duration_s, note=body.note),
    )
