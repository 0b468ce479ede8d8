"""The API with the real escalation engine behind its alert actions: a high NEWS2 stored by the real
ingest raises an alert that the API lists, a physician acknowledges it through the API, the policy
applies it, the audit trail and the live event stream show it."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from api_data import score, seed_ward
from conftest import CHEAP_KDF, FakeClock, RecordingBroker
from server_support import T0
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.api import Broadcaster, DatabaseActions, create_app
from server.auth import create_token
from server.engine.escalator import EscalationEngine
from server.ingest import Ingestor


@pytest.mark.usefixtures("backend")
async def test_alert_raised_by_the_engine_is_acted_on_through_the_api(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor
) -> None:
    clock = FakeClock(T0 + timedelta(minutes=1))
    broadcaster = Broadcaster()
    engine = EscalationEngine(sessions, clock=clock, broadcaster=broadcaster)
    broker = RecordingBroker()
    app = create_app(
        sessionmaker=sessions,
        actions=DatabaseActions(sessions, alerts=engine, publish_command=broker.publish, clock=clock),
        publisher=broadcaster,
        clock=clock,
        kdf=CHEAP_KDF,
    )
    physician = {
        "Authorization": f"Bearer {await create_token(sessions, 'physician', 'dr-who', kdf=CHEAP_KDF)}"
    }
    nurse = {"Authorization": f"Bearer {await create_token(sessions, 'nurse', 'nurse-joy', kdf=CHEAP_KDF)}"}
    await seed_ward(ingestor)
    worse = score("gw-a", 3, "pt-high", {"respiration": 3, "spo2": 3, "pulse": 2}, 58, protocol.Risk.HIGH)
    ingestor_hook = Ingestor(sessions, ingestor.settings)
    outcome = await ingestor_hook.ingest(
        "wardwatch/v1/gw/gw-a/score", protocol.encode(worse), received_at=clock.now
    )
    async with broadcaster.subscribe() as events:
        await engine.handle_outcome(outcome)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://wardwatch.test"
        ) as client:
            queue = (await client.get("/api/alerts", headers=nurse)).json()["alerts"]
            (alert,) = [item for item in queue if item["patient_id"] == "pt-high"]
            assert alert["priority"] == "high"

            refused = await client.post(
                f"/api/alerts/{alert['alert_id']}/resolve", headers=nurse, json={"note": "ok"}
            )
            acknowledged = await client.post(
                f"/api/alerts/{alert['alert_id']}/acknowledge",
                headers=physician,
                json={"note": "on my way"},
            )

            assert refused.status_code == 403  # high alerts are resolved by physicians
            assert acknowledged.status_code == 200, acknowledged.text
            detail = acknowledged.json()
            assert detail["alert"]["state"] == "acknowledged"
            assert detail["alert"]["acknowledged_by"] == "dr-who"
            assert [e["action"] for e in detail["events"]][-1] == "acknowledged"
            assert detail["events"][-1]["actor"] == "dr-who"
            kinds = []
            while True:
                event = await events.next()
                kinds.append((event.kind, event.data.get("action")))
                if event.data.get("action") == "acknowledged":
                    break
            assert ("alert", "raised") in kinds
