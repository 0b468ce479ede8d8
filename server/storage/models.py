"""The server's tables (SQLAlchemy 2 declarative). The schema itself is created by the Alembic
migrations in ``server/migrations``, never by ``metadata.create_all``; a test checks that the two agree.

Identity and dedup:

- every gateway message on obs/score/event/cmd-ack has a UUIDv7 ``message_id``; ``received_messages``
  holds one row per id ever accepted (primary key), inserted in the same transaction as the content, so a
  replay finds the row and stores nothing;
- an observation's identity is ``(message_id, position)`` (its index in the batch), unique as well, so even
  a replay that outlives the dedup window cannot store a reading twice while the reading itself is kept.

Privacy: ``patients.display_name`` is the only column that may hold a name. It exists for the command
center's screens, is never sent on MQTT, never logged, and never leaves this database except through the
authenticated API.

Audit: ``alert_events`` is append-only. The migration installs triggers on both backends that reject
UPDATE and DELETE (and TRUNCATE on PostgreSQL) on that table.
"""

from __future__ import annotations

import importlib
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.storage.types import JsonDocument, UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit surrogate key that is SQLite's rowid alias there (INTEGER PRIMARY KEY) and BIGINT elsewhere.
RowId = BigInteger().with_variant(Integer(), "sqlite")
Id64 = String(64)
"""Gateway ids, patient pseudonyms, device ids and account ids (the wire contract bounds them to 64)."""


class Base(DeclarativeBase):
    """Every server table is declared on this base, whichever module declares it (the escalation
    engine's and the API's tables live next to their code)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def import_model_modules() -> MetaData:
    """Import every module of the ``server`` package that declares tables on :class:`Base`, and return
    the complete metadata. Autogenerate and the test that compares models with migrations need the
    whole schema, not just this module's part of it."""
    package_root = Path(__file__).resolve().parent.parent
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root)
        if relative.parts[0] == "migrations":
            continue
        source = path.read_text(encoding="utf-8")
        if "server.storage.models import" not in source or "(Base)" not in source:
            continue
        name = ".".join(("server", *relative.with_suffix("").parts))
        importlib.import_module(name.removesuffix(".__init__"))
    return Base.metadata


class Gateway(Base):
    """One home gateway and its latest status (from birth, heartbeat and death messages)."""

    __tablename__ = "gateways"

    gateway_id: Mapped[str] = mapped_column(Id64, primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    """When the server last received any message from this gateway."""
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    session: Mapped[int | None] = mapped_column(BigInteger)
    """Newest session number seen on the status topic; older ones are ignored."""
    status_state: Mapped[str | None] = mapped_column(String(16))
    """birth, heartbeat or death: the newest status accepted."""
    status_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status_received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    offline_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    software_version: Mapped[str | None] = mapped_column(String(64))
    heartbeat_interval_s: Mapped[float | None] = mapped_column(Float)
    backlog: Mapped[int | None] = mapped_column(BigInteger)
    oldest_unsent_age_s: Mapped[float | None] = mapped_column(Float)
    clock_synchronized: Mapped[bool | None] = mapped_column(Boolean)
    devices: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDocument)
    highest_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Highest sequence number received on obs/score/event; gaps below it are in sequence_gaps."""
    probe_watch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The escalation policy follows a probe that is off on one of this gateway's devices (kept by the
    engine with the gateway's policy state): only then can a batch without a probe flag change that
    state. Ingest reads it with the row it locks and hands it to the engine with the outcome."""


class Patient(Base):
    """A patient known by pseudonym; settings that the clinician controls (sent to the gateway)."""

    __tablename__ = "patients"

    patient_id: Mapped[str] = mapped_column(Id64, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    """The only place a name may exist. Never on MQTT, never in a log line."""
    gateway_id: Mapped[str | None] = mapped_column(
        Id64, ForeignKey("gateways.gateway_id", ondelete="SET NULL")
    )
    """The gateway that first reported this patient (the home they are in)."""
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    spo2_scale: Mapped[int] = mapped_column(SmallInteger, default=1)
    on_oxygen: Mapped[bool] = mapped_column(Boolean, default=False)
    consciousness: Mapped[str] = mapped_column(String(1), default="A")
    settings_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    settings_updated_by: Mapped[str | None] = mapped_column(Id64)

    __table_args__ = (
        CheckConstraint("spo2_scale IN (1, 2)", name="spo2_scale"),
        CheckConstraint("consciousness IN ('A', 'C', 'V', 'P', 'U')", name="consciousness"),
    )


class Observation(Base):
    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    position: Mapped[int] = mapped_column(Integer)
    """Index of the observation in its batch; (message_id, position) identifies the reading."""
    gateway_id: Mapped[str] = mapped_column(Id64, ForeignKey("gateways.gateway_id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    patient_id: Mapped[str] = mapped_column(Id64, ForeignKey("patients.patient_id"))
    vital: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    measured_at: Mapped[datetime] = mapped_column(UtcDateTime)
    time_source: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(Id64)
    quality: Mapped[list[str]] = mapped_column(JsonDocument)
    perfusion_index: Mapped[float | None] = mapped_column(Float)
    historical: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("message_id", "position"),
        Index("ix_observations_patient_measured", "patient_id", "measured_at"),
        Index("ix_observations_patient_vital_measured", "patient_id", "vital", "measured_at"),
        Index("ix_observations_received_at", "received_at"),
    )


class Assessment(Base):
    """A NEWS2 assessment computed on the gateway."""

    __tablename__ = "assessments"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    gateway_id: Mapped[str] = mapped_column(Id64, ForeignKey("gateways.gateway_id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    patient_id: Mapped[str] = mapped_column(Id64, ForeignKey("patients.patient_id"))
    assessed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    total: Mapped[int] = mapped_column(SmallInteger)
    risk: Mapped[str] = mapped_column(String(16))
    components: Mapped[dict[str, int | None]] = mapped_column(JsonDocument)
    complete: Mapped[bool] = mapped_column(Boolean)
    input_ages_s: Mapped[dict[str, float | None]] = mapped_column(JsonDocument)
    spo2_scale: Mapped[int] = mapped_column(SmallInteger)
    on_oxygen: Mapped[bool] = mapped_column(Boolean)
    consciousness: Mapped[str] = mapped_column(String(1))
    trend_rising: Mapped[bool] = mapped_column(Boolean)
    historical: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_assessments_patient_assessed", "patient_id", "assessed_at"),
        Index("ix_assessments_received_at", "received_at"),
    )


class GatewayEvent(Base):
    """Device and local-alert events from the ``…/event`` topic."""

    __tablename__ = "gateway_events"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    gateway_id: Mapped[str] = mapped_column(Id64, ForeignKey("gateways.gateway_id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str | None] = mapped_column(Id64)
    patient_id: Mapped[str | None] = mapped_column(Id64, ForeignKey("patients.patient_id"))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    historical: Mapped[bool] = mapped_column(Boolean)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_gateway_events_gateway_occurred", "gateway_id", "occurred_at"),
        Index("ix_gateway_events_patient_occurred", "patient_id", "occurred_at"),
        Index("ix_gateway_events_received_at", "received_at"),
    )


class ReceivedMessage(Base):
    """One row per message id accepted: the dedup ledger (exactly-once in effect)."""

    __tablename__ = "received_messages"

    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    gateway_id: Mapped[str] = mapped_column(Id64)
    channel: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_received_messages_received_at", "received_at"),)


class SequenceGap(Base):
    """Sequence numbers a gateway skipped: ``first_missing..last_missing`` inclusive.

    A late arrival inside an open gap shrinks or splits it; ``filled_at`` is set when the last missing
    number arrives. Gaps never stall ingest: later messages are stored as they come."""

    __tablename__ = "sequence_gaps"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    gateway_id: Mapped[str] = mapped_column(Id64, ForeignKey("gateways.gateway_id"))
    first_missing: Mapped[int] = mapped_column(BigInteger)
    last_missing: Mapped[int] = mapped_column(BigInteger)
    detected_at: Mapped[datetime] = mapped_column(UtcDateTime)
    filled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("first_missing <= last_missing", name="range"),
        Index(
            "ix_sequence_gaps_open",
            "gateway_id",
            "first_missing",
            postgresql_where=text("filled_at IS NULL"),
            sqlite_where=text("filled_at IS NULL"),
        ),
        Index("ix_sequence_gaps_detected_at", "detected_at"),
    )


class DeadLetter(Base):
    """A message ingest could not accept, with why. The payload is kept up to a configured size."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    gateway_id: Mapped[str | None] = mapped_column(Id64)
    """The gateway named by the topic when the topic is a valid gateway topic."""
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_dead_letters_received_at", "received_at"),
        Index("ix_dead_letters_gateway_received", "gateway_id", "received_at"),
    )


class Alert(Base):
    """A clinical or technical alert; its whole history is in alert_events.

    ``subject`` is what the alert is about: the patient id for clinical alerts, ``gateway:<id>`` or
    ``device:<gateway>/<device>`` for technical ones. At most one alert per (subject, condition) is not
    resolved (a partial unique index), so a repeated condition updates the open alert."""

    __tablename__ = "alerts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    category: Mapped[str] = mapped_column(String(16))
    condition: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[str | None] = mapped_column(Id64, ForeignKey("patients.patient_id"))
    gateway_id: Mapped[str | None] = mapped_column(Id64, ForeignKey("gateways.gateway_id"))
    device_id: Mapped[str | None] = mapped_column(Id64)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    tier: Mapped[int] = mapped_column(SmallInteger)
    risk: Mapped[str | None] = mapped_column(String(16))
    total: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(Id64)
    snoozed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(Id64)
    next_escalation_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """The escalation timer: due time of the next tier, claimed with FOR UPDATE SKIP LOCKED."""
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)

    __table_args__ = (
        CheckConstraint("category IN ('clinical', 'technical')", name="category"),
        CheckConstraint("state IN ('open', 'acknowledged', 'snoozed', 'resolved')", name="state"),
        CheckConstraint("priority IN ('low', 'medium', 'high', 'emergency')", name="priority"),
        CheckConstraint("tier BETWEEN 1 AND 4", name="tier"),
        Index(
            "uq_alerts_one_unresolved",
            "subject",
            "condition",
            unique=True,
            postgresql_where=text("state <> 'resolved'"),
            sqlite_where=text("state <> 'resolved'"),
        ),
        Index(
            "ix_alerts_next_escalation_at",
            "next_escalation_at",
            postgresql_where=text("next_escalation_at IS NOT NULL"),
            sqlite_where=text("next_escalation_at IS NOT NULL"),
        ),
        Index("ix_alerts_state_raised", "state", "raised_at"),
        Index("ix_alerts_patient_raised", "patient_id", "raised_at"),
    )


class AlertEventRecord(Base):
    """The append-only audit log of alert actions. UPDATE and DELETE are rejected by the database."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    """The id of the AlertEvent published on wardwatch/v1/cc/alerts for this action."""
    alert_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("alerts.id"))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    """Account id of the clinician, or None when the server acted (timer, policy)."""
    reason: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16))
    tier: Mapped[int] = mapped_column(SmallInteger)
    risk: Mapped[str | None] = mapped_column(String(16))
    total: Mapped[int | None] = mapped_column(SmallInteger)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)

    __table_args__ = (
        CheckConstraint(
            "action IN ('raised', 'updated', 'escalated', 'acknowledged', 'resolved', 'snoozed')",
            name="action",
        ),
        Index("ix_alert_events_alert", "alert_id", "id"),
        Index("ix_alert_events_at", "at"),
    )


class CommandRecord(Base):
    """A command sent to a gateway and the state of its acknowledgement."""

    __tablename__ = "commands"

    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    gateway_id: Mapped[str] = mapped_column(Id64, ForeignKey("gateways.gateway_id"))
    patient_id: Mapped[str] = mapped_column(Id64, ForeignKey("patients.patient_id"))
    name: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    issued_by: Mapped[str] = mapped_column(Id64)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    """pending (stored, not yet published), sent, acknowledged (ok) or rejected (gateway said no)."""
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ack_message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    ack_ok: Mapped[bool | None] = mapped_column(Boolean)
    ack_detail: Mapped[str | None] = mapped_column(Text)
    acked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """When the gateway says it acted (its clock)."""
    ack_received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("state IN ('pending', 'sent', 'acknowledged', 'rejected')", name="state"),
        Index("ix_commands_gateway_issued", "gateway_id", "issued_at"),
        Index("ix_commands_patient_issued", "patient_id", "issued_at"),
        Index("ix_commands_state", "state"),
    )
