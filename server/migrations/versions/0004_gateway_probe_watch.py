"""gateways.probe_watch: the escalation policy follows a probe that is off on one of the gateway's devices

Ingest reads it with the gateway row it locks anyway, so the engine knows without a query of its own
which observation batches without a probe flag can change a policy state (they clear a probe that is
off) and which cannot (almost all of them). Set from the existing policy states.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

GATEWAY_SUBJECT = "gateway:"


def _watching(document: Any, gateway_id: str) -> bool:
    """The state document as migration 0003's code wrote it: gateways -> id -> devices -> id -> times."""
    state = json.loads(document) if isinstance(document, str) else document
    gateway = (state or {}).get("gateways", {}).get(gateway_id) or {}
    return any(
        device.get("probe_off_since") is not None or device.get("probe_confirm_at") is not None
        for device in (gateway.get("devices") or {}).values()
    )


def upgrade() -> None:
    op.add_column(
        "gateways", sa.Column("probe_watch", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT subject, state FROM escalation_subjects WHERE subject LIKE :prefix"),
        {"prefix": GATEWAY_SUBJECT + "%"},
    )
    watched = [
        subject[len(GATEWAY_SUBJECT) :]
        for subject, state in rows
        if _watching(state, subject[len(GATEWAY_SUBJECT) :])
    ]
    for gateway_id in watched:
        connection.execute(
            sa.text("UPDATE gateways SET probe_watch = true WHERE gateway_id = :gateway_id"),
            {"gateway_id": gateway_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("gateways") as batch:
        batch.drop_column("probe_watch")
