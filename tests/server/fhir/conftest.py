"""The FHIR router mounted on the real REST API app, against the real databases of
tests/server/conftest.py (SQLite, and PostgreSQL: skipped when unreachable, failing under CI=true),
with data put in through the real ingest and tokens made by the real ``create_token``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fhir_support import FhirApi, Sequencer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.api import Actor, DatabaseActions, create_app
from server.auth import ScryptParameters, create_token
from server.fhir import fhir_router
from server.ingest import Ingestor

CHEAP_KDF = ScryptParameters(n=16, r=1, p=1)
ROLES = ("integration", "viewer", "nurse", "physician", "admin")


class NoAlertActions:
    """The FHIR routes never act on alerts; any call is a test failure."""

    async def acknowledge_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None:
        raise AssertionError("unexpected alert action")

    async def escalate_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None:
        raise AssertionError("unexpected alert action")

    async def resolve_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str) -> None:
        raise AssertionError("unexpected alert action")

    async def snooze_alert(
        self, alert_id: uuid.UUID, *, actor: Actor, duration_s: float, note: str | None
    ) -> None:
        raise AssertionError("unexpected alert action")


async def _no_publish(topic: str, payload: bytes) -> None:
    raise AssertionError("unexpected command")


@pytest.fixture
async def fhir_api(sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor) -> AsyncIterator[FhirApi]:
    actions = DatabaseActions(sessions, alerts=NoAlertActions(), publish_command=_no_publish)
    app = create_app(sessionmaker=sessions, actions=actions, kdf=CHEAP_KDF)
    app.include_router(fhir_router())
    tokens = {role: await create_token(sessions, role, f"{role}-1", kdf=CHEAP_KDF) for role in ROLES}
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 40000)), base_url="http://ward.test"
    )
    yield FhirApi(client, sessions, ingestor, tokens, Sequencer())
    await client.aclose()
