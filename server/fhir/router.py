"""``fhir_router``: the FHIR R4 REST endpoints, for the API application to mount.

Routes (under ``/fhir``; every answer ``application/fhir+json``, never cached)::

    GET /fhir/metadata                       CapabilityStatement (no token needed)
    GET /fhir/Patient/{id}                   one Patient
    GET /fhir/Observation?patient=…          searchset Bundle: date (repeatable), code, _count, _cursor
    GET /fhir/Patient/{id}/$everything       searchset Bundle: Patient, Devices, Flags, Observations;
                                             start, end, _count, _cursor (later pages: Observations)

Authentication and roles are the REST API's: a bearer token whose role has ``read`` (integration,
viewer, nurse, physician, admin); the Patient's name only for roles with ``read_identity`` (not
integration). Every error is an OperationOutcome with the HTTP status: 400 malformed or unsupported
search, 401 no or bad token, 403 role, 404 unknown resource, 429 sign-in rate limit, 503 database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.resource import Resource
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import __version__
from server.api.context import ApiError
from server.auth import Account, Permission, may
from server.fhir import codes, mapping, reads
from server.fhir.errors import FhirError, InvalidSearchError, ResourceNotFoundError
from server.fhir.search import Cursor, TimeWindow, date_range, page_size, parse_codes, time_window, vitals_for
from server.storage.engine import READ_ONLY
from server.storage.errors import StorageUnavailable

logger = logging.getLogger(__name__)

FHIR_JSON: Final = "application/fhir+json"
FHIR_PREFIX: Final = "/fhir"
_JSON_FORMATS: Final = frozenset({"json", "application/json", "application/fhir+json"})
_ISSUE_FOR_STATUS: Final = {401: "login", 403: "forbidden", 404: "not-found", 429: "throttled"}

Authenticator = Callable[[Request], Awaitable[Account]]
SessionSource = Callable[[Request], async_sessionmaker[AsyncSession]]


class FhirSettings(BaseModel):
    """Settings of the FHIR endpoints (keyword-only, validated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: AnyHttpUrl | None = None
    """The public base of the FHIR endpoints (e.g. ``https://ward.example.org/fhir``) for fullUrl and
    paging links; None: taken from the request (correct unless a proxy rewrites the host or path)."""
    default_count: int = Field(default=100, ge=1, le=10_000)
    max_count: int = Field(default=1000, ge=1, le=10_000)
    """A larger ``_count`` is served as this many (FHIR lets a server return fewer than asked)."""


def fhir_response(
    resource: Resource, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=resource.model_dump_json(exclude_none=True),
        status_code=status,
        media_type=FHIR_JSON,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _outcome(
    status: int, code: str, diagnostics: str, *, expression: str | None = None, **headers: str
) -> Response:
    return fhir_response(mapping.operation_outcome(code, diagnostics, expression=expression), status, headers)


class FhirRoute(APIRoute):
    """Answers every failure of a FHIR route, authentication and parameter validation included, with
    an OperationOutcome instead of the REST API's JSON error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def fhir_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except FhirError as exc:
                return _outcome(exc.status, exc.issue_code, exc.diagnostics, expression=exc.expression)
            except ApiError as exc:
                code = _ISSUE_FOR_STATUS.get(exc.status, "invalid")
                return fhir_response(mapping.operation_outcome(code, exc.message), exc.status, exc.headers)
            except RequestValidationError as exc:
                problems = [
                    f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', 'invalid')}"
                    for item in exc.errors()
                ]
                return _outcome(400, "invalid", "; ".join(problems) or "invalid request")
            except (DBAPIError, PoolTimeoutError, StorageUnavailable, ConnectionError, TimeoutError) as exc:
                logger.warning(
                    "database unavailable during FHIR %s: %s", request.url.path, type(exc).__name__
                )
                return _outcome(
                    503, "transient", "the database is unavailable; retry later", **{"Retry-After": "5"}
                )

        return fhir_handler


def _api_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.context.sessions
    return sessions


async def _api_authenticate(request: Request) -> Account:
    from server.api.security import authenticate

    return await authenticate(request)


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidSearchError(f"give {name} once", expression=name)
    return values[0] if values else None


def _check_parameters(request: Request, allowed: frozenset[str]) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise InvalidSearchError(
                f"search parameter {name!r} is not supported here (supported: {', '.join(sorted(allowed))})",
                expression=name,
                issue_code="not-supported",
            )
    accept = request.headers.get("accept", "").lower()
    if accept and not any(kind in accept for kind in ("json", "*/*", "application/*")):
        raise FhirError(
            f"cannot answer in {accept!r}: this server answers application/fhir+json only",
            issue_code="not-supported",
            status=406,
        )
    fmt = _single(request, "_format")
    if fmt is not None and fmt not in _JSON_FORMATS:
        raise InvalidSearchError(
            f"_format={fmt!r}: this server answers JSON only",
            expression="_format",
            issue_code="not-supported",
        )


def _route_path(request: Request) -> str:
    """The request's path below ``/fhir`` (e.g. ``/Observation``)."""
    path = request.url.path
    root = str(request.scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.removeprefix(FHIR_PREFIX)


def fhir_router(
    *,
    settings: FhirSettings | None = None,
    authenticate: Authenticator | None = None,
    sessions: SessionSource | None = None,
) -> APIRouter:
    """The FHIR endpoints as a router with prefix ``/fhir``; include it in the API app as it is
    (``app.include_router(fhir_router())``).

    By default it uses the REST API's machinery from ``request.app.state.context`` (``create_app``):
    its bearer-token authentication (``server.api.security.authenticate``) and its sessionmaker.
    ``authenticate`` and ``sessions`` replace them (another app, tests); ``authenticate`` returns the
    caller's Account or raises ``ApiError`` (401/429)."""
    fhir = settings or FhirSettings()
    authenticator = authenticate or _api_authenticate
    session_source = sessions or _api_sessions
    router = APIRouter(prefix=FHIR_PREFIX, route_class=FhirRoute, tags=["fhir"])

    async def reader(request: Request) -> Account:
        account = await authenticator(request)
        if not may(account.role, Permission.READ):
            raise ApiError(403, "forbidden", f"role {account.role} may not read")
        return account

    def base_url(request: Request) -> str:
        if fhir.base_url is not None:
            return str(fhir.base_url).rstrip("/")
        return str(request.base_url).rstrip("/") + FHIR_PREFIX

    def self_url(request: Request) -> str:
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{base_url(request)}{_route_path(request)}{query}"

    def next_url(request: Request, cursor: Cursor, count: int) -> str:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_cursor", "_count")]
        kept += [("_count", str(count)), ("_cursor", cursor.encode())]
        return f"{base_url(request)}{_route_path(request)}?{urlencode(kept)}"

    async def open_patient(session: AsyncSession, fhir_id: str) -> Any:
        found = await reads.find_patient(session, fhir_id)
        if found is None:
            raise ResourceNotFoundError(f"no Patient/{fhir_id}", expression="id")
        return found

    def cursor_of(request: Request) -> Cursor | None:
        text = _single(request, "_cursor")
        return None if text is None else Cursor.decode(text)

    @router.get("/metadata", summary="CapabilityStatement of the FHIR endpoints")
    async def metadata(request: Request) -> Response:
        return fhir_response(capability_statement(base_url(request)))

    @router.get(
        "/Patient/{patient_id}", summary="One Patient (pseudonym; name only for roles that may see it)"
    )
    async def read_patient(request: Request, patient_id: str) -> Response:
        account = await reader(request)
        _check_parameters(request, frozenset({"_format"}))
        async with session_source(request)() as session:
            await session.connection(execution_options=READ_ONLY)
            row = await open_patient(session, patient_id)
        resource = mapping.patient(row, show_identity=may(account.role, Permission.READ_IDENTITY))
        return fhir_response(resource)

    @router.get("/Observation", summary="Search a patient's Observations (searchset Bundle, paged)")
    async def search_observations(request: Request) -> Response:
        await reader(request)
        _check_parameters(
            request, frozenset({"patient", "subject", "date", "code", "_count", "_cursor", "_format"})
        )
        params = request.query_params
        targets = params.getlist("patient") + params.getlist("subject")
        if len(targets) != 1:
            raise InvalidSearchError(
                "name exactly one patient (patient=<id> or subject=Patient/<id>); this server does not "
                "search across patients",
                expression="patient",
            )
        target = targets[0].removeprefix(f"{base_url(request)}/").removeprefix("Patient/")
        window = time_window(params.getlist("date"))
        code_filter = parse_codes(params.getlist("code"))
        vitals, news2 = vitals_for(code_filter)
        count = page_size(params.getlist("_count"), default=fhir.default_count, maximum=fhir.max_count)
        after = cursor_of(request)
        async with session_source(request)() as session:
            await session.connection(execution_options=READ_ONLY)
            found = await reads.find_patient(session, target)
            if found is None:
                page = reads.ObservationPage([], None)  # FHIR: an unknown reference matches nothing
            else:
                page = await reads.observation_page(
                    session,
                    found.patient_id,
                    window=window,
                    vitals=vitals,
                    include_news2=news2,
                    code_filter=code_filter,
                    after=after,
                    count=count,
                )
        bundle = mapping.searchset(
            [(resource, "match") for resource in page.resources],
            base_url=base_url(request),
            self_url=self_url(request),
            next_url=None if page.next_cursor is None else next_url(request, page.next_cursor, count),
        )
        return fhir_response(bundle)

    @router.get("/Patient/{patient_id}/$everything", summary="Everything about one patient (paged)")
    async def patient_everything(request: Request, patient_id: str) -> Response:
        account = await reader(request)
        _check_parameters(request, frozenset({"start", "end", "_count", "_cursor", "_format"}))
        window = TimeWindow()
        start, end = _single(request, "start"), _single(request, "end")
        if start is not None:
            window = window.narrowed(date_range(start, parameter="start")[1], None)
        if end is not None:
            window = window.narrowed(None, date_range(end, parameter="end")[2])
        count = page_size(
            request.query_params.getlist("_count"), default=fhir.default_count, maximum=fhir.max_count
        )
        after = cursor_of(request)
        entries: list[tuple[Resource, str]] = []
        async with session_source(request)() as session:
            await session.connection(execution_options=READ_ONLY)
            row = await open_patient(session, patient_id)
            vitals, news2 = vitals_for(None)
            page = await reads.observation_page(
                session,
                row.patient_id,
                window=window,
                vitals=vitals,
                include_news2=news2,
                code_filter=None,
                after=after,
                count=count,
            )
            first = after is None
            home = [row.gateway_id] if first and row.gateway_id is not None else []
            devices = await reads.devices_of(session, row.patient_id, page.devices, home)
            alerts = await reads.alerts_about(session, row.patient_id) if first else []
        if first:
            show = may(account.role, Permission.READ_IDENTITY)
            entries.append((mapping.patient(row, show_identity=show), "match"))
        # Each page includes the Devices its Observations reference (and the first page the home gateway).
        entries.extend((mapping.gateway_device(item), "include") for item in devices.gateways)
        entries.extend((mapping.device(item), "include") for item in devices.devices)
        entries.extend((mapping.alert_flag(alert), "include") for alert in alerts)
        entries.extend((resource, "match") for resource in page.resources)
        bundle = mapping.searchset(
            entries,
            base_url=base_url(request),
            self_url=self_url(request),
            next_url=None if page.next_cursor is None else next_url(request, page.next_cursor, count),
        )
        return fhir_response(bundle)

    return router


def capability_statement(base_url: str) -> CapabilityStatement:
    """What these endpoints implement, for a client's ``GET [base]/metadata``."""
    return CapabilityStatement.model_validate(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-22",
            "kind": "instance",
            "software": {"name": "WardWatch", "version": __version__},
            "implementation": {"description": "WardWatch hospital-at-home FHIR export", "url": base_url},
            "fhirVersion": codes.FHIR_VERSION,
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "Bearer token of the WardWatch REST API (any role with read)"
                    },
                    "resource": [
                        {
                            "type": "Patient",
                            "interaction": [{"code": "read"}],
                            "operation": [
                                {
                                    "name": "everything",
                                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                                }
                            ],
                        },
                        {
                            "type": "Observation",
                            "interaction": [{"code": "search-type"}],
                            "searchParam": [
                                {"name": "patient", "type": "reference"},
                                {"name": "subject", "type": "reference"},
                                {"name": "date", "type": "date"},
                                {"name": "code", "type": "token"},
                            ],
                        },
                    ],
                }
            ],
        }
    )
