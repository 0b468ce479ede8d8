"""The ASGI application: ``create_app`` wires routers, authentication, error answers and headers.

Every answer other than success is JSON ``{"error": {"status", "code", "message", "problems": [{"where",
"problem"}]}}``: a malformed request gets 4xx saying what is wrong and where (never 500); a database that
cannot be reached gets 503 so a client retries; only a bug in the server gives 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_agent import __version__
from server.api import schemas
from server.api.actions import Actions
from server.api.context import API_PREFIX, ApiContext, ApiError, EventTickets
from server.api.events import Broadcaster
from server.api.routes import admin, alerts, equipment, health, metrics, patients, stream
from server.api.security import BodyLimit, SecurityHeaders
from server.api.settings import ApiSettings
from server.auth import DEFAULT_KDF, ScryptParameters, SignInLimiter, TokenVerifier
from server.fhir import fhir_router
from server.storage.errors import StorageUnavailable

logger = logging.getLogger(__name__)

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": schemas.ErrorResponse, "description": description}
    for status, description in (
        (401, "Missing, unknown or revoked token"),
        (403, "The token's role may not do this"),
        (404, "No such resource"),
        (422, "The request is malformed; `problems` says where"),
        (429, "Too many failed sign-ins from this address; see Retry-After"),
        (503, "The database (or broker) is unavailable; retry later"),
    )
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def error_response(
    status: int,
    code: str,
    message: str,
    problems: list[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = schemas.ErrorResponse(
        error=schemas.ErrorBody(
            status=status,
            code=code,
            message=message,
            problems=[schemas.Problem(where=where, problem=problem) for where, problem in problems or []],
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


def _where(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location) or "(request)"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.problems, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [(_where(item.get("loc", ())), str(item.get("msg", "invalid"))) for item in exc.errors()]
    first = problems[0] if problems else ("(request)", "invalid")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return error_response(422, "validation_error", f"{first[0]}: {first[1]}{more}", problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers=exc.headers
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, IntegrityError):
        return error_response(409, "conflict", "the change conflicts with stored data")
    if isinstance(exc, DataError):
        return error_response(422, "validation_error", "a value was refused by the database")
    logger.warning(
        "database unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return error_response(
        503, "storage_unavailable", "the database is unavailable; retry later", headers={"Retry-After": "5"}
    )


def create_app(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: ApiSettings | None = None,
    actions: Actions,
    publisher: Broadcaster | None = None,
    clock: Callable[[], datetime] = utc_now,
    ingest_counters: Callable[[], Mapping[str, int]] | None = None,
    stream_lag_s: Callable[[], float] | None = None,
    engine_counters: Callable[[], Mapping[str, float]] | None = None,
    kdf: ScryptParameters = DEFAULT_KDF,
    monotonic: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The WardWatch REST API as an ASGI app (serve it with uvicorn).

    ``publisher`` is the broadcaster the escalation engine publishes live events into (a new one when
    None; either way it is ``app.state.context.broadcaster``). ``ingest_counters`` returns this process's
    ingest counters (``Ingestor.counters.snapshot``) and ``stream_lag_s`` how far behind the gateways'
    traffic it is (``EscalationEngine.stream_lag``), ``engine_counters`` the escalation engine's
    (``EscalationEngine.counters.snapshot``), all for /metrics. ``kdf`` is the scrypt cost for
    tokens created through the API; ``clock`` and ``monotonic`` are injectable for tests."""
    settings = settings or ApiSettings()
    context = ApiContext(
        sessions=sessionmaker,
        settings=settings,
        actions=actions,
        broadcaster=publisher or Broadcaster(queue_size=settings.events_queue_size),
        clock=clock,
        verifier=TokenVerifier(
            sessionmaker, cache_s=settings.token_cache_s, monotonic=monotonic, clock=clock
        ),
        limiter=SignInLimiter(
            max_failures=settings.sign_in_failures_per_window,
            window_s=settings.sign_in_window_s,
            monotonic=monotonic,
        ),
        tickets=EventTickets(monotonic=monotonic),
        ingest_counters=ingest_counters,
        stream_lag_s=stream_lag_s,
        engine_counters=engine_counters,
        extra={"kdf": kdf},
    )
    app = FastAPI(
        title="WardWatch API",
        version=__version__,
        description=(
            "Command-center API of the WardWatch server. Authenticate with `Authorization: Bearer <token>`."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    for router in (patients.router, alerts.router, equipment.router, admin.router, stream.router):
        app.include_router(router, prefix=API_PREFIX, responses=_ERRORS)
    app.include_router(health.router)
    # FHIR describes itself (CapabilityStatement at /fhir/metadata), not in this OpenAPI document.
    app.include_router(fhir_router(), include_in_schema=False)
    app.include_router(
        metrics.router, responses={k: v for k, v in _ERRORS.items() if k in (401, 403, 429, 503)}
    )

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in (DBAPIError, PoolTimeoutError, StorageUnavailable, ConnectionError, TimeoutError):
        app.add_exception_handler(error, _storage_error)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[str(origin).rstrip("/") for origin in settings.cors_origins],
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, 413 included

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "ww_<key id>_<secret>"}
            }
            for path, operations in document.get("paths", {}).items():
                if path.startswith(API_PREFIX) or path == "/metrics":
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
                        # The framework's own 422 schema is not what this API sends.
                        operation.get("responses", {}).get("422", {}).update(
                            {
                                "content": {
                                    "application/json": {
                                        "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                                    }
                                }
                            }
                        )
            schemas_section = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas_section.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
