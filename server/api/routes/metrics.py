"""``GET /metrics``: Prometheus text exposition (version 0.0.4) of counts, never patient data.

Needs a bearer token of the ``integration`` or ``admin`` role (Prometheus: ``authorization:
{credentials: <token>}`` in the scrape config). Exposes this process's ingest counters and stream lag,
the API's sign-in counters and event-stream subscribers, and from the database the open alerts by
category and priority and the gateways online and offline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select

from server.api.routes.common import reading
from server.api.security import context_of, require
from server.auth import Account, Permission
from server.storage.models import Alert, Gateway

router = APIRouter(tags=["metrics"])
Scraper = Annotated[Account, Depends(require(Permission.READ_METRICS))]

# Ingest counter names with a dot are one labelled family: ``stored.obs`` -> stored{channel="obs"}.
_LABELS: Final = {"stored": "channel", "dead_letters": "reason"}
_HELP: Final = {
    "wardwatch_ingest_received_total": "Gateway messages handed to ingest by this process",
    "wardwatch_ingest_stored_total": "Messages stored, by channel",
    "wardwatch_ingest_dead_letters_total": "Messages rejected to the dead-letter table, by reason",
    "wardwatch_ingest_duplicates_total": "Replays recognised by message id and not stored again",
    "wardwatch_ingest_stream_lag_seconds": "How far behind the gateways' traffic this process's ingest is "
    "(the age of the fresh messages it stores; gateway-news timers wait this much longer)",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {_HELP.get(name, name.removeprefix('wardwatch_').replace('_', ' '))}"]
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
        lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")
    return lines


ENGINE_GAUGES: Final = {"max_timer_lateness_s": "wardwatch_engine_max_timer_lateness_seconds"}
"""Engine counters that are not counts (``EngineCounters``): each its own gauge."""


def engine_families(counters: Mapping[str, float]) -> list[str]:
    """The escalation engine's counters (``EngineCounters.snapshot``): ``wardwatch_engine_<name>_total``,
    e.g. ``wardwatch_engine_unlocked_conflicts_total``; the lateness of timers as a gauge."""
    lines: list[str] = []
    for key, value in sorted(counters.items()):
        if key in ENGINE_GAUGES:
            lines.extend(_family(ENGINE_GAUGES[key], "gauge", [({}, value)]))
        else:
            lines.extend(_family(f"wardwatch_engine_{key}_total", "counter", [({}, value)]))
    return lines


def ingest_families(counters: Mapping[str, int]) -> list[str]:
    grouped: dict[str, list[tuple[dict[str, str], float]]] = {}
    for key, value in sorted(counters.items()):
        family, _, label = key.partition(".")
        labels = {_LABELS.get(family, "kind"): label} if label else {}
        grouped.setdefault(f"wardwatch_ingest_{family}_total", []).append((labels, float(value)))
    lines: list[str] = []
    for name, samples in grouped.items():
        lines.extend(_family(name, "counter", samples))
    return lines


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (integration, admin)")
async def metrics(request: Request, account: Scraper) -> PlainTextResponse:
    context = context_of(request)
    async with reading(context) as session:
        alerts = (
            await session.execute(
                select(Alert.category, Alert.priority, func.count())
                .where(Alert.state != "resolved")
                .group_by(Alert.category, Alert.priority)
            )
        ).all()
        gateways = (
            await session.execute(select(Gateway.online, func.count()).group_by(Gateway.online))
        ).all()
    lines: list[str] = []
    if context.ingest_counters is not None:
        lines.extend(ingest_families(context.ingest_counters()))
    if context.stream_lag_s is not None:
        lines.extend(_family("wardwatch_ingest_stream_lag_seconds", "gauge", [({}, context.stream_lag_s())]))
    if context.engine_counters is not None:
        lines.extend(engine_families(context.engine_counters()))
    lines.extend(
        _family(
            "wardwatch_alerts_open",
            "gauge",
            [
                ({"category": category, "priority": priority}, float(count))
                for category, priority, count in alerts
            ],
        )
    )
    online = {bool(state): int(count) for state, count in gateways}
    lines.extend(
        _family(
            "wardwatch_gateways",
            "gauge",
            [
                ({"state": "online"}, float(online.get(True, 0))),
                ({"state": "offline"}, float(online.get(False, 0))),
            ],
        )
    )
    lines.extend(
        _family(
            "wardwatch_api_sign_in_failures_total", "counter", [({}, float(context.limiter.failures_total))]
        )
    )
    lines.extend(
        _family("wardwatch_api_rate_limited_total", "counter", [({}, float(context.limiter.refusals_total))])
    )
    lines.extend(
        _family(
            "wardwatch_api_event_subscribers", "gauge", [({}, float(context.broadcaster.subscriber_count))]
        )
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
