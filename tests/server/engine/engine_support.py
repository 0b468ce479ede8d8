"""Helpers for the escalation engine's tests: an injectable clock, a recording publisher, message builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from server_support import T0

from edge_agent import protocol
from server.ingest import Ingestor, IngestOutcome

HIGH_COMPONENTS: dict[str, int | None] = {
    "respiration": 3,
    "spo2": 2,
    "air_or_oxygen": 0,
    "systolic_bp": 1,
    "pulse": 1,
    "consciousness": 0,
    "temperature": 1,
}
"""NEWS2 8: high risk."""


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RecordingPublisher:
    """Stands in for the broker: keeps what was published, in order."""

    published: list[tuple[str, bytes, bool]] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        assert qos == 1
        self.published.append((topic, payload, retain))

    def alert_events(self) -> list[protocol.AlertEvent]:
        return [
            protocol.decode(protocol.AlertEvent, payload)
            for topic, payload, _ in self.published
            if topic == protocol.CC_ALERT_TOPIC
        ]


def gateway_status(
    gateway_id: str,
    state: Literal["birth", "heartbeat", "death"],
    *,
    session: int = 1,
    sent_at: datetime,
    heartbeat_interval_s: float = 3600,
) -> protocol.GatewayStatus:
    return protocol.GatewayStatus(
        gateway_id=gateway_id,
        state=state,
        session=session,
        sent_at=sent_at,
        software_version="0.1.0",
        heartbeat_interval_s=heartbeat_interval_s,
        clock_synchronized=True,
    )


def news2_assessment(
    gateway_id: str,
    seq: int,
    *,
    patient_id: str,
    assessed_at: datetime,
    components: dict[str, int | None] | None = None,
) -> protocol.Assessment:
    scores = dict(components or HIGH_COMPONENTS)
    total = sum(score for score in scores.values() if score is not None)
    risk = protocol.Risk.HIGH if total >= 7 else protocol.Risk.MEDIUM if total >= 5 else protocol.Risk.LOW
    return protocol.Assessment(
        message_id=protocol.new_message_id(),
        gateway_id=gateway_id,
        seq=seq,
        sent_at=assessed_at,
        patient_id=patient_id,
        assessed_at=assessed_at,
        total=total,
        components=scores,
        risk=risk,
        complete=all(score is not None for score in scores.values()),
        input_ages_s={"respiratory_rate": 10.0},
        spo2_scale=1,
        on_oxygen=False,
        consciousness=protocol.Consciousness.ALERT,
    )


def topic_of(message: protocol.WireModel) -> str:
    channel = {
        protocol.Assessment: protocol.GatewayChannel.SCORE,
        protocol.GatewayStatus: protocol.GatewayChannel.STATUS,
        protocol.Event: protocol.GatewayChannel.EVENT,
        protocol.ObservationBatch: protocol.GatewayChannel.OBS,
    }[type(message)]
    return protocol.gateway_topic(message.gateway_id, channel)  # type: ignore[attr-defined]


async def ingest(ingestor: Ingestor, message: protocol.WireModel, received_at: datetime) -> IngestOutcome:
    outcome = await ingestor.ingest(topic_of(message), protocol.encode(message), received_at)
    assert outcome.kind.value == "stored", outcome
    return outcome
