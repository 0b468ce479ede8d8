"""Administration: dead letters, ingest counters, API tokens; and the audit log (read)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AwareDatetime

from server import queries
from server.api import schemas, views
from server.api.context import ApiError
from server.api.routes.common import ID_PATTERN, reading
from server.api.security import context_of, require, write_audit
from server.auth import Account, Permission, create_token, list_tokens, revoke_token

logger = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])

Reader = Annotated[Account, Depends(require(Permission.READ))]
IngestReader = Annotated[Account, Depends(require(Permission.READ_INGEST))]
TokenManager = Annotated[Account, Depends(require(Permission.MANAGE_TOKENS))]


@router.get("/dead-letters", summary="Messages ingest could not accept, newest first (admin)")
async def list_dead_letters(
    request: Request,
    account: IngestReader,
    gateway_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.DeadLetterPage:
    context = context_of(request)
    async with reading(context) as session:
        page = await queries.dead_letters(
            session, gateway_id=gateway_id, reason=reason, before_id=before_id, limit=limit
        )
    return schemas.DeadLetterPage(
        items=[views.dead_letter(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/ingest", summary="Ingest counters of this process and dead letters stored (admin)")
async def ingest_report(request: Request, account: IngestReader) -> schemas.IngestReport:
    context = context_of(request)
    async with reading(context) as session:
        stored = await queries.dead_letter_counts(session)
    counters = dict(context.ingest_counters()) if context.ingest_counters is not None else None
    return schemas.IngestReport(counters=counters, dead_letters_stored=stored)


@router.get("/audit", summary="The audit log: alert actions or API writes, newest first")
async def audit_log(
    request: Request,
    account: Reader,
    source: Annotated[
        Literal["alert", "api"], Query(description="alert actions or other API writes")
    ] = "alert",
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.AuditPage:
    context = context_of(request)
    async with reading(context) as session:
        if source == "alert":
            alert_page = await queries.alert_audit(
                session, since=since, until=until, before_id=before_id, limit=limit
            )
            items = [views.alert_audit_entry(event, owner) for event, owner in alert_page.items]
            cursor = alert_page.next_cursor
        else:
            api_page = await queries.api_audit(
                session, since=since, until=until, before_id=before_id, limit=limit
            )
            items = [views.api_audit_entry(row) for row in api_page.items]
            cursor = api_page.next_cursor
    return schemas.AuditPage(items=items, next_cursor=cursor)


@router.get("/tokens", summary="API tokens (never their secrets) (admin)")
async def get_tokens(request: Request, account: TokenManager) -> schemas.TokenList:
    context = context_of(request)
    async with reading(context) as session:
        rows = await list_tokens(session)
    return schemas.TokenList(
        tokens=[
            schemas.TokenView(
                key_id=row.key_id,
                name=row.name,
                role=row.role,
                created_at=row.created_at,
                created_by=row.created_by,
                last_used_at=row.last_used_at,
                revoked_at=row.revoked_at,
            )
            for row in rows
        ]
    )


@router.post(
    "/tokens", status_code=201, summary="Create a token; the answer is the only time it is shown (admin)"
)
async def post_token(
    request: Request, account: TokenManager, body: schemas.TokenCreateRequest
) -> schemas.TokenCreated:
    context = context_of(request)
    token = await create_token(
        context.sessions,
        body.role,
        body.name,
        created_by=account.name,
        kdf=context.extra["kdf"],
        now=context.clock(),
    )
    key_id = token.split("_")[1]
    await write_audit(
        request,
        account,
        target=f"token:{key_id}",
        outcome="created",
        detail={"name": body.name, "role": body.role},
    )
    logger.info("API token %s (%s, %s) created by %s", key_id, body.name, body.role, account.name)
    return schemas.TokenCreated(token=token, key_id=key_id, name=body.name, role=body.role)


@router.delete("/tokens/{key_id}", status_code=204, summary="Revoke a token (admin)")
async def delete_token(
    request: Request, account: TokenManager, key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]
) -> Response:
    context = context_of(request)
    revoked = await revoke_token(context.sessions, key_id, now=context.clock())
    context.verifier.forget(key_id)
    await write_audit(
        request, account, target=f"token:{key_id}", outcome="revoked" if revoked else "not_found"
    )
    if not revoked:
        raise ApiError(404, "not_found", f"no active token {key_id}", problems=[("path.key_id", "unknown")])
    logger.info("API token %s revoked by %s", key_id, account.name)
    return Response(status_code=204)
