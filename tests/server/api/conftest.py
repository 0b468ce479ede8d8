"""The API against real databases (SQLite and PostgreSQL from tests/server/conftest.py), with data put in
through the real ingest, tokens made by the real ``create_token`` (at a cheap scrypt cost), and alert
actions done by a small database-backed stand-in for the escalation engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from server_support import T0
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.api import Actor, ApiSettings, Broadcaster, DatabaseActions, create_app
from server.auth import ScryptParameters, create_token
from server.escalation.errors import ActionRefusedError, AlertNotOpenError
from server.ingest import Ingestor
from server.storage.models import Alert, AlertEventRecord

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
"""For tests of the API's own logic (roles, validation): the database backend adds nothing there, and
every PostgreSQL test costs a database of its own."""

CHEAP_KDF = ScryptParameters(n=16, r=1, p=1)
"""Fast enough for tests; the real default is checked separately."""


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class FakeMonotonic:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


@dataclass
class EngineStandIn:
    """Applies alert actions to the alerts table and appends alert_events, as the escalation engine
    does (without its policy: just enough for the API's contract)."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Callable[[], datetime]
    calls: list[tuple[str, uuid.UUID, Actor, dict[str, Any]]] = field(default_factory=list)
    refuse: ActionRefusedError | None = None

    async def _apply(self, action: str, alert_id: uuid.UUID, actor: Actor, **values: Any) -> None:
        self.calls.append((action, alert_id, actor, values))
        if self.refuse is not None:
            raise self.refuse
        now = self.clock()
        async with self.sessions() as session, session.begin():
            alert = await session.scalar(select(Alert).where(Alert.id == alert_id))
            if alert is None or alert.state == "resolved":
                raise AlertNotOpenError(alert_id)
            changes: dict[str, Any] = {"updated_at": now}
            if action == "acknowledged":
                changes |= {"state": "acknowledged", "acknowledged_at": now, "acknowledged_by": actor.account}
                changes["next_escalation_at"] = None
            elif action == "escalated":
                changes |= {"tier": min(alert.tier + 1, 4)}
            elif action == "resolved":
                changes |= {"state": "resolved", "resolved_at": now, "resolved_by": actor.account}
                changes["next_escalation_at"] = None
            elif action == "snoozed":
                changes |= {
                    "state": "snoozed",
                    "snoozed_until": now + timedelta(seconds=values["duration_s"]),
                }
            await session.execute(update(Alert).where(Alert.id == alert_id).values(**changes))
            session.add(
                AlertEventRecord(
                    message_id=protocol.new_message_id(),
                    alert_id=alert_id,
                    action=action,
                    actor=actor.account,
                    reason=values.get("note") or action,
                    priority=alert.priority,
                    tier=changes.get("tier", alert.tier),
                    risk=alert.risk,
                    total=alert.total,
                    at=now,
                )
            )

    async def acknowledge_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None:
        await self._apply("acknowledged", alert_id, actor, note=note)

    async def escalate_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None:
        await self._apply("escalated", alert_id, actor, note=note)

    async def resolve_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str) -> None:
        await self._apply("resolved", alert_id, actor, note=note)

    async def snooze_alert(
        self, alert_id: uuid.UUID, *, actor: Actor, duration_s: float, note: str | None
    ) -> None:
        await self._apply("snoozed", alert_id, actor, duration_s=duration_s, note=note)


@dataclass
class RecordingBroker:
    """Records what DatabaseActions publishes; ``fail`` makes the next publish raise."""

    published: list[tuple[str, bytes]] = field(default_factory=list)
    fail: bool = False

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.fail:
            raise ConnectionError("broker unreachable")
        self.published.append((topic, payload))


@dataclass
class Api:
    """One app under test with its parts and a token per role."""

    client: httpx.AsyncClient
    app: Any
    sessions: async_sessionmaker[AsyncSession]
    ingestor: Ingestor
    clock: FakeClock
    monotonic: FakeMonotonic
    engine: EngineStandIn
    broker: RecordingBroker
    broadcaster: Broadcaster
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def get(self, path: str, role: str = "nurse", **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(role), **kwargs)

    async def post(self, path: str, role: str = "nurse", **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, headers=self.auth(role), **kwargs)


ROLES = ("integration", "viewer", "nurse", "physician", "admin")


async def make_api(
    sessions: async_sessionmaker[AsyncSession],
    ingestor: Ingestor,
    *,
    settings: ApiSettings | None = None,
    address: str = "203.0.113.5",
) -> tuple[Api, Callable[[], Any]]:
    clock = FakeClock(T0 + timedelta(minutes=10))
    monotonic = FakeMonotonic()
    engine = EngineStandIn(sessions, clock)
    broker = RecordingBroker()
    broadcaster = Broadcaster()
    actions = DatabaseActions(sessions, alerts=engine, publish_command=broker.publish, clock=clock)
    app = create_app(
        sessionmaker=sessions,
        settings=settings,
        actions=actions,
        publisher=broadcaster,
        clock=clock,
        ingest_counters=ingestor.counters.snapshot,
        stream_lag_s=lambda: 42.5,
        engine_counters=lambda: {"unlocked_conflicts": 3.0, "max_timer_lateness_s": 0.25},
        kdf=CHEAP_KDF,
        monotonic=monotonic,
    )
    tokens = {role: await create_token(sessions, role, f"{role}-1", kdf=CHEAP_KDF) for role in ROLES}
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://wardwatch.test"
    )
    api = Api(client, app, sessions, ingestor, clock, monotonic, engine, broker, broadcaster, tokens)
    return api, client.aclose


@pytest.fixture
async def api(sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor) -> AsyncIterator[Api]:
    instance, close = await make_api(sessions, ingestor)
    yield instance
    await close()
