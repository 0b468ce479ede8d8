"""``/healthz`` (the process answers; no database, no auth) and ``/readyz`` (the database answers and its
schema is the one this code needs; no auth, nothing about patients)."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, text

from server.api import schemas
from server.api.security import context_of
from server.storage import head_revision

router = APIRouter(tags=["health"])


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@router.get("/healthz", summary="Liveness")
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: database reachable and migrated",
    responses={503: {"model": schemas.Health}},
)
async def readyz(request: Request) -> JSONResponse:
    context = context_of(request)
    try:
        async with context.sessions() as session:
            await session.execute(text("SELECT 1"))
            connection = await session.connection()
            revision = await connection.run_sync(_revision)
    except Exception as exc:  # any failure to reach the database means "not ready"
        body = schemas.Health(status="unavailable", detail=f"database: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    expected = head_revision()
    if revision != expected:
        body = schemas.Health(
            status="unavailable", detail=f"database schema is at {revision}, needs {expected}"
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(schemas.Health(status="ok").model_dump())
