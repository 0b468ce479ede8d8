"""The command-center web page, served by the server itself (no CDN: works without internet).

``mount(app)`` adds to the API app:

- ``GET /``: the page (static HTML; its script and style under ``/static/``);
- ``GET /web/bands.json``: the NEWS2 chart's band edges, taken from ``edge_agent.scoring`` so the page
  draws exactly the thresholds the gateways score with;
- ``GET /api/patients/{id}/trend``: vitals and NEWS2 over the last hours in time buckets (mean, min,
  max, count), for the board's sparklines and the patient charts, computed by the database.

The page signs in with an API token (kept in the tab's sessionStorage), reads the REST API, and follows
live changes through ``/api/events`` (server-sent events opened with a single-use ticket).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import Float, Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from edge_agent.scoring.news2 import (
    HIGH_RISK_TOTAL,
    MEDIUM_RISK_TOTAL,
    PULSE,
    RESPIRATION,
    SPO2_SCALE_1,
    SPO2_SCALE_2_ON_AIR,
    SPO2_SCALE_2_ON_OXYGEN,
    SYSTOLIC_BP,
    TEMPERATURE,
)
from server.api.context import ApiError
from server.api.routes.common import PatientIdPath, reading
from server.api.security import context_of, require
from server.auth import Account, Permission
from server.storage.models import Assessment, Observation, Patient

STATIC: Final = resources.files("server.web") / "static"
_FILES: Final = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
TREND_VITALS: Final = ("spo2", "heart_rate", "respiratory_rate", "systolic_bp", "body_temperature")

Reader = Annotated[Account, Depends(require(Permission.READ))]

page_router = APIRouter(include_in_schema=False)
trend_router = APIRouter()


def _static(name: str) -> Response:
    path = STATIC / name
    if name not in _FILES or not path.is_file():
        return JSONResponse({"error": {"status": 404, "code": "not_found", "message": "no such file"}}, 404)
    return FileResponse(str(path), media_type=_FILES[name], headers={"Cache-Control": "no-cache"})


@page_router.get("/")
async def index() -> Response:
    return _static("index.html")


@page_router.get("/static/{name}")
async def static_file(name: str) -> Response:
    return _static(name)


def chart_bands() -> dict[str, dict[str, list[float] | list[int]]]:
    """Band edges of every NEWS2 parameter drawn on the page, from the scorer's own tables."""
    tables = {
        "respiration": RESPIRATION,
        "spo2_scale_1": SPO2_SCALE_1,
        "spo2_scale_2_on_air": SPO2_SCALE_2_ON_AIR,
        "spo2_scale_2_on_oxygen": SPO2_SCALE_2_ON_OXYGEN,
        "systolic_bp": SYSTOLIC_BP,
        "pulse": PULSE,
        "temperature": TEMPERATURE,
    }
    bands: dict[str, dict[str, list[float] | list[int]]] = {
        name: {"cuts": list(table.cuts), "scores": list(table.scores)} for name, table in tables.items()
    }
    medium, high = MEDIUM_RISK_TOTAL, HIGH_RISK_TOTAL
    bands["news2_total"] = {"cuts": [medium - 0.5, high - 0.5], "scores": [0, 2, 3]}
    return bands


@page_router.get("/web/bands.json")
async def bands_json() -> JSONResponse:
    return JSONResponse(chart_bands(), headers={"Cache-Control": "no-cache"})


def _epoch(column: Any, session: AsyncSession) -> ColumnElement[float]:
    """Seconds since the Unix epoch of a timestamp column, on SQLite (naive UTC text) and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", column), Float)
    return cast(func.strftime("%s", column), Float)


@trend_router.get(
    "/patients/{patient_id}/trend",
    summary="Vitals and NEWS2 in time buckets over the last hours (for charts)",
)
async def patient_trend(
    request: Request,
    account: Reader,
    patient_id: PatientIdPath,
    hours: Annotated[float, Query(gt=0, le=24 * 14)] = 24,
    buckets: Annotated[int, Query(ge=1, le=1000)] = 96,
) -> dict[str, Any]:
    context = context_of(request)
    until: datetime = context.clock()
    since = until - timedelta(hours=hours)
    width = hours * 3600 / buckets
    async with reading(context) as session:
        if await session.get(Patient, patient_id) is None:
            raise ApiError(
                404, "not_found", f"no patient {patient_id}", problems=[("path.patient_id", "unknown")]
            )
        start = since.timestamp()
        vital_bucket = cast((_epoch(Observation.measured_at, session) - start) / width, Integer)
        rows = await session.execute(
            select(
                Observation.vital,
                vital_bucket.label("bucket"),
                func.avg(Observation.value),
                func.min(Observation.value),
                func.max(Observation.value),
                func.count(),
            )
            .where(
                Observation.patient_id == patient_id,
                Observation.vital.in_(TREND_VITALS),
                Observation.measured_at >= since,
                Observation.measured_at < until,
            )
            .group_by(Observation.vital, "bucket")
            .order_by(Observation.vital, "bucket")
        )
        vitals: dict[str, list[dict[str, Any]]] = {vital: [] for vital in TREND_VITALS}
        for vital, bucket, mean, low, high, count in rows:
            vitals[vital].append(_point(since, width, bucket, mean, low, high, count))
        score_bucket = cast((_epoch(Assessment.assessed_at, session) - start) / width, Integer)
        scores = await session.execute(
            select(
                score_bucket.label("bucket"),
                func.avg(Assessment.total),
                func.min(Assessment.total),
                func.max(Assessment.total),
                func.count(),
            )
            .where(
                Assessment.patient_id == patient_id,
                Assessment.assessed_at >= since,
                Assessment.assessed_at < until,
            )
            .group_by("bucket")
            .order_by("bucket")
        )
        news2 = [
            _point(since, width, bucket, mean, low, high, count) for bucket, mean, low, high, count in scores
        ]
    return {
        "patient_id": patient_id,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket_s": width,
        "vitals": vitals,
        "news2": news2,
    }


def _point(
    since: datetime, width: float, bucket: int, mean: float, low: float, high: float, count: int
) -> dict[str, Any]:
    return {
        "start": (since + timedelta(seconds=int(bucket) * width)).isoformat(),
        "mean": float(mean),
        "min": float(low),
        "max": float(high),
        "count": int(count),
    }


def mount(app: FastAPI, *, api_prefix: str = "/api") -> None:
    """Serve the page and its data routes from the API app."""
    app.include_router(trend_router, prefix=api_prefix)
    app.include_router(page_router)
