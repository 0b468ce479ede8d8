"""``GET /api/events``: live alert and patient-state changes as server-sent events.

Authenticate with the Authorization header, or (for a browser's EventSource, which cannot send headers)
with a single-use ticket from ``POST /api/events/ticket``: ``/api/events?ticket=…``. Each event is
``event: <kind>`` with JSON ``data``; kinds are what the engine publishes (``alert``, ``patient``, …),
``resync`` when this client fell behind and lost events (reload the lists), ``closed`` when the server
stops. Comment lines keep an idle stream open through proxies.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from server.api import schemas
from server.api.context import ApiContext, ApiError
from server.api.events import CLOSED, LiveEvent
from server.api.routes.common import reading
from server.api.security import authenticate, client_address, context_of, require
from server.auth import Account, ApiToken, Permission, may

router = APIRouter(tags=["events"])
Reader = Annotated[Account, Depends(require(Permission.READ))]


@router.post("/events/ticket", summary="A single-use ticket to open the event stream from a browser")
async def event_ticket(request: Request, account: Reader) -> schemas.EventTicket:
    context = context_of(request)
    return schemas.EventTicket(ticket=context.tickets.issue(account), expires_in_s=context.tickets.lifetime_s)


async def _token_active(context: ApiContext, key_id: str) -> bool:
    async with reading(context) as session:
        revoked = await session.execute(select(ApiToken.revoked_at).where(ApiToken.key_id == key_id))
        row = revoked.first()
    return row is not None and row.revoked_at is None


async def _stream(context: ApiContext, account: Account) -> AsyncIterator[str]:
    keepalive = context.settings.events_keepalive_s
    async with context.broadcaster.subscribe() as subscription:
        yield "retry: 3000\n: connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(subscription.next(), keepalive)
            except TimeoutError:
                # A long-lived stream must not outlive its token: check at every idle interval.
                if not await _token_active(context, account.key_id):
                    yield LiveEvent(0, CLOSED, {"reason": "token revoked"}).to_sse()
                    return
                yield ": keepalive\n\n"
                continue
            yield event.to_sse()
            if event.kind == CLOSED:
                return


@router.get(
    "/events",
    summary="Live changes as server-sent events (text/event-stream)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request, ticket: Annotated[str | None, Query(max_length=100)] = None
) -> StreamingResponse:
    context = context_of(request)
    if ticket is not None:
        address = client_address(request, context)
        wait = context.limiter.retry_after(address)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"too many failed sign-ins from this address; try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        account = context.tickets.redeem(ticket)
        if account is None:
            context.limiter.record_failure(address)
            raise ApiError(
                401,
                "unauthorized",
                "the ticket is unknown, used or expired",
                problems=[("query.ticket", "invalid")],
            )
    else:
        account = await authenticate(request)
    if not may(account.role, Permission.READ):
        raise ApiError(403, "forbidden", f"role {account.role} may not read")
    return StreamingResponse(
        _stream(context, account),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
