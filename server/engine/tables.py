"""The escalation engine's own tables: per-subject policy state (with its timer) and the delivery outbox.

Created by migration ``0003_escalation_runtime``; declared on the storage models' ``Base`` so that the
"models and migrations agree" check sees them (that check must import this module).

``escalation_subjects``
    One row per policy subject (``patient:<id>`` or ``gateway:<id>``): the serialised
    :class:`~server.escalation.EscalationState` of that subject and ``next_due_at``, the earliest timer in
    it. A worker claims due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL), calls the policy
    and writes the new state, the alert rows and the audit records in the same transaction, so each timer
    fires exactly once whatever the number of workers.

``alert_deliveries``
    One row per alert event and sink (the MQTT command-center topic, each configured webhook), written in
    the same transaction as the audit record. A delivery loop sends them, retrying with backoff, and
    records the outcome: ``delivered`` (with when and how many attempts) or ``failed`` (the dead letter,
    with the last error).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from server.storage.models import Base, RowId
from server.storage.types import JsonDocument, UtcDateTime

DELIVERY_STATES: Final = ("pending", "delivered", "failed")


class EscalationSubject(Base):
    """The escalation policy's state for one subject, and when its next timer is due."""

    __tablename__ = "escalation_subjects"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    next_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(BigInteger)
    """Incremented on every write (a reader can tell that the state moved on)."""

    __table_args__ = (
        Index(
            "ix_escalation_subjects_next_due_at",
            "next_due_at",
            postgresql_where=text("next_due_at IS NOT NULL"),
            sqlite_where=text("next_due_at IS NOT NULL"),
        ),
    )


class AlertDelivery(Base):
    """One alert event to one sink: the notification outbox and its delivery record."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The AlertEvent's message id (also alert_events.message_id)."""
    sink: Mapped[str] = mapped_column(String(16))
    """``mqtt`` or ``webhook``."""
    target: Mapped[str] = mapped_column(String(200))
    """The MQTT topic, or the webhook's configured name."""
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """When a worker may (re)try it; a claimed row is leased by moving this into the future."""
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("message_id", "sink", "target"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        Index(
            "ix_alert_deliveries_pending",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_alert_deliveries_created_at", "created_at"),
    )
