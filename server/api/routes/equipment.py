"""Gateways and their devices: online, backlog, last seen, batteries, last readings, technical alarms."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from server import queries
from server.api import schemas, views
from server.api.context import ApiError
from server.api.routes.common import GatewayIdPath, reading
from server.api.security import context_of, require
from server.auth import Account, Permission

router = APIRouter(tags=["equipment"])
Reader = Annotated[Account, Depends(require(Permission.READ))]


async def _gateways(
    request: Request, gateway_id: str | None
) -> tuple[list[schemas.GatewayView], schemas.GatewayList]:
    context = context_of(request)
    now = context.clock()
    async with reading(context) as session:
        rows = await queries.gateways(session, gateway_id)
        alarms = await queries.open_technical_alerts(session)
        gaps = await queries.open_gap_counts(session)
        patients = await queries.patients_of_gateways(session)
    items = [
        views.gateway(
            row,
            now,
            patients=patients.get(row.gateway_id, []),
            gaps=gaps.get(row.gateway_id, (0, 0)),
            alarms=alarms.get(row.gateway_id, []),
        )
        for row in rows
    ]
    return items, schemas.GatewayList(gateways=items, as_of=now)


@router.get("/gateways", summary="Every gateway with its devices and open technical alarms")
async def list_gateways(request: Request, account: Reader) -> schemas.GatewayList:
    _, listing = await _gateways(request, None)
    return listing


@router.get("/gateways/{gateway_id}", summary="One gateway")
async def get_gateway(request: Request, account: Reader, gateway_id: GatewayIdPath) -> schemas.GatewayView:
    items, _ = await _gateways(request, gateway_id)
    if not items:
        raise ApiError(
            404, "not_found", f"no gateway {gateway_id!r}", problems=[("path.gateway_id", "unknown")]
        )
    return items[0]
