"""Fixed records for the FHIR golden files, and helpers shared by the FHIR tests."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.api import Actor, DatabaseActions, create_app
from server.auth import ScryptParameters, create_token
from server.fhir import fhir_router
from server.ingest import Ingestor
from server.storage.models import Alert, Assessment, Observation, Patient

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WARDWATCH_UPDATE_GOLDEN") == "1"
"""Set WARDWATCH_UPDATE_GOLDEN=1 to rewrite the golden files (then review the diff)."""

T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FHIR_JSON = "application/fhir+json"
MESSAGE = uuid.UUID("01956a3c-4f00-7abc-8def-0123456789ab")
SCORE_MESSAGE = uuid.UUID("01956a3c-5000-7abc-8def-0123456789ab")
ALERT_ID = uuid.UUID("5b0e7c1e-2f4a-4d7e-9a51-3c2b1a0f9e8d")


def reading(
    vital: str,
    value: float,
    *,
    position: int = 0,
    message_id: uuid.UUID = MESSAGE,
    measured_at: datetime = T,
    device_id: str = "cuff-1",
    quality: list[str] | None = None,
    perfusion_index: float | None = None,
    historical: bool = False,
    patient_id: str = "pt-0042",
) -> Observation:
    units = {
        "heart_rate": "/min",
        "respiratory_rate": "/min",
        "spo2": "%",
        "systolic_bp": "mm[Hg]",
        "diastolic_bp": "mm[Hg]",
        "mean_arterial_pressure": "mm[Hg]",
        "body_temperature": "Cel",
        "body_weight": "kg",
        "blood_glucose": "mg/dL",
    }
    return Observation(
        id=position + 1,
        message_id=message_id,
        position=position,
        gateway_id="gw-home-7",
        seq=12,
        patient_id=patient_id,
        vital=vital,
        value=value,
        unit=units[vital],
        measured_at=measured_at,
        time_source="device",
        device_id=device_id,
        quality=list(quality or []),
        perfusion_index=perfusion_index,
        historical=historical,
        received_at=measured_at + timedelta(seconds=4),
    )


def assessment(*, complete: bool = True) -> Assessment:
    components: dict[str, int | None] = {
        "respiration": 2,
        "spo2": 3,
        "air_or_oxygen": 0,
        "systolic_bp": 1,
        "pulse": 1,
        "consciousness": 0,
        "temperature": 1 if complete else None,
    }
    total = sum(score for score in components.values() if score is not None)
    return Assessment(
        id=1,
        message_id=SCORE_MESSAGE,
        gateway_id="gw-home-7",
        seq=13,
        patient_id="pt-0042",
        assessed_at=T + timedelta(seconds=30),
        total=total,
        risk="high" if total >= 7 else "medium",
        components=components,
        complete=complete,
        input_ages_s={"respiratory_rate": 12.0},
        spo2_scale=1,
        on_oxygen=False,
        consciousness="A",
        trend_rising=True,
        historical=False,
        received_at=T + timedelta(seconds=31),
    )


def patient(*, patient_id: str = "pt-0042", display_name: str | None = "Ada Example") -> Patient:
    return Patient(
        patient_id=patient_id,
        display_name=display_name,
        gateway_id="gw-home-7",
        first_seen_at=T,
        spo2_scale=1,
        on_oxygen=False,
        consciousness="A",
    )


def alert(*, state: str = "acknowledged", resolved_at: datetime | None = None) -> Alert:
    return Alert(
        id=ALERT_ID,
        category="clinical",
        condition="news2_high",
        subject="pt-0042",
        patient_id="pt-0042",
        gateway_id="gw-home-7",
        device_id=None,
        state=state,
        priority="emergency",
        tier=2,
        risk="high",
        total=8,
        reason="NEWS2 8 (high): respiration 3, spo2 3",
        raised_at=T + timedelta(seconds=31),
        updated_at=T + timedelta(seconds=90),
        resolved_at=resolved_at,
    )


def as_json(resource: Resource) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(resource.model_dump_json(exclude_none=True))
    return loaded


def check_golden(name: str, resource: Resource) -> None:
    """Compare with tests/server/fhir/golden/<name>.json (rewrite it when WARDWATCH_UPDATE_GOLDEN=1)."""
    path = GOLDEN / f"{name}.json"
    produced = as_json(resource)
    if UPDATE:
        path.write_text(json.dumps(produced, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert produced == expected, f"{name} differs from its golden file"


def validated(document: dict[str, Any]) -> Resource:
    """Parse a JSON resource with the R4B model of its resourceType (raises when it is not valid)."""
    model = get_fhir_model_class(document["resourceType"])
    resource: Resource = model.model_validate(document)
    return resource


# Wire messages for the tests that go through the real ingest


def vital_reading(
    patient: str, vital: protocol.VitalCode, value: float, when: datetime, device: str, **extra: Any
) -> protocol.Observation:
    return protocol.Observation(
        patient_id=patient,
        vital=vital,
        value=value,
        unit=protocol.VITALS[vital].ucum,
        measured_at=when,
        time_source=protocol.TimeSource.DEVICE,
        device_id=device,
        **extra,
    )


class Sequencer:
    """Continuous sequence numbers per gateway, as a real gateway sends them."""

    def __init__(self, start: int = -1) -> None:
        self.start = start
        self.seqs: dict[str, int] = {}

    def next(self, gateway: str) -> int:
        self.seqs[gateway] = self.seqs.get(gateway, self.start) + 1
        return self.seqs[gateway]

    def batch(self, gateway: str, readings: list[protocol.Observation]) -> protocol.ObservationBatch:
        return protocol.ObservationBatch(
            message_id=protocol.new_message_id(),
            gateway_id=gateway,
            seq=self.next(gateway),
            sent_at=T + timedelta(hours=2),
            observations=readings,
        )

    def score(
        self, gateway: str, patient: str, when: datetime, total_parts: dict[str, int]
    ) -> protocol.Assessment:
        components: dict[str, int | None] = dict.fromkeys(protocol.NEWS2_PARAMETERS, 0)
        components.update(total_parts)
        total = sum(v for v in components.values() if v is not None)
        return protocol.Assessment(
            message_id=protocol.new_message_id(),
            gateway_id=gateway,
            seq=self.next(gateway),
            sent_at=when + timedelta(seconds=1),
            patient_id=patient,
            assessed_at=when,
            total=total,
            components=components,
            risk=protocol.Risk.HIGH if total >= 7 else protocol.Risk.LOW,
            complete=True,
            input_ages_s={"respiratory_rate": 5.0},
            spo2_scale=1,
            on_oxygen=False,
            consciousness=protocol.Consciousness.ALERT,
        )


@dataclass
class FhirApi:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    ingestor: Ingestor
    tokens: dict[str, str]
    sequencer: Sequencer

    async def get(self, url: str, role: str = "integration", **kwargs: Any) -> httpx.Response:
        return await self.client.get(url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, **kwargs)

    async def ingest(self, *messages: protocol.WireModel) -> None:
        """Through the real ingest, in one ``ingest_many`` call (as the MQTT consumer batches)."""
        channels = {
            protocol.ObservationBatch: protocol.GatewayChannel.OBS,
            protocol.Assessment: protocol.GatewayChannel.SCORE,
            protocol.GatewayStatus: protocol.GatewayChannel.STATUS,
        }
        outcomes = await self.ingestor.ingest_many(
            [
                (
                    protocol.gateway_topic(getattr(message, "gateway_id"), channels[type(message)]),  # noqa: B009
                    protocol.encode(message),
                )
                for message in messages
            ]
        )
        assert [outcome.kind.value for outcome in outcomes] == ["stored"] * len(messages), outcomes


# The app under test: the real REST API with the FHIR router mounted

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


async def make_fhir_api(sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor) -> FhirApi:
    actions = DatabaseActions(sessions, alerts=NoAlertActions(), publish_command=_no_publish)
    app = create_app(sessionmaker=sessions, actions=actions, kdf=CHEAP_KDF)
    app.include_router(fhir_router())
    tokens = {role: await create_token(sessions, role, f"{role}-1", kdf=CHEAP_KDF) for role in ROLES}
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 40000)), base_url="http://ward.test"
    )
    return FhirApi(client, sessions, ingestor, tokens, Sequencer())
