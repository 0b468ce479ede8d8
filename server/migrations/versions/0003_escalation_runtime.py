"""escalation runtime: per-subject policy state with timers, and the alert delivery outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Plain types here, not the models' classes: a migration must keep meaning what it meant when written.
TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "escalation_subjects",
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("state", JSON_DOCUMENT, nullable=False),
        sa.Column("next_due_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_escalation_subjects")),
    )
    op.create_index(
        "ix_escalation_subjects_next_due_at",
        "escalation_subjects",
        ["next_due_at"],
        unique=False,
        postgresql_where=sa.text("next_due_at IS NOT NULL"),
        sqlite_where=sa.text("next_due_at IS NOT NULL"),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("sink", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name=op.f("ck_alert_deliveries_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
        sa.UniqueConstraint(
            "message_id", "sink", "target", name=op.f("uq_alert_deliveries_message_id_sink_target")
        ),
    )
    op.create_index(
        "ix_alert_deliveries_pending",
        "alert_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_alert_deliveries_created_at", "alert_deliveries", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_created_at", table_name="alert_deliveries")
    op.drop_index("ix_alert_deliveries_pending", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_escalation_subjects_next_due_at", table_name="escalation_subjects")
    op.drop_table("escalation_subjects")
