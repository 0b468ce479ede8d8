"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Plain types here, not the models' classes: a migration must keep meaning what it meant when written.
TIMESTAMP = sa.DateTime(timezone=True)
"""UTC; stored as timestamptz on PostgreSQL and naive UTC text on SQLite (see server.storage.types)."""
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(
        "ix_dead_letters_gateway_received", "dead_letters", ["gateway_id", "received_at"], unique=False
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"], unique=False)

    op.create_table(
        "gateways",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("session", sa.BigInteger(), nullable=True),
        sa.Column("status_state", sa.String(length=16), nullable=True),
        sa.Column("status_sent_at", TIMESTAMP, nullable=True),
        sa.Column("status_received_at", TIMESTAMP, nullable=True),
        sa.Column("offline_since", TIMESTAMP, nullable=True),
        sa.Column("software_version", sa.String(length=64), nullable=True),
        sa.Column("heartbeat_interval_s", sa.Float(), nullable=True),
        sa.Column("backlog", sa.BigInteger(), nullable=True),
        sa.Column("oldest_unsent_age_s", sa.Float(), nullable=True),
        sa.Column("clock_synchronized", sa.Boolean(), nullable=True),
        sa.Column("devices", JSON_DOCUMENT, nullable=True),
        sa.Column("highest_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("gateway_id", name=op.f("pk_gateways")),
    )
    op.create_table(
        "received_messages",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_received_messages")),
    )
    op.create_index("ix_received_messages_received_at", "received_messages", ["received_at"], unique=False)

    op.create_table(
        "patients",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("gateway_id", sa.String(length=64), nullable=True),
        sa.Column("first_seen_at", TIMESTAMP, nullable=False),
        sa.Column("spo2_scale", sa.SmallInteger(), nullable=False),
        sa.Column("on_oxygen", sa.Boolean(), nullable=False),
        sa.Column("consciousness", sa.String(length=1), nullable=False),
        sa.Column("settings_updated_at", TIMESTAMP, nullable=True),
        sa.Column("settings_updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "consciousness IN ('A', 'C', 'V', 'P', 'U')", name=op.f("ck_patients_consciousness")
        ),
        sa.CheckConstraint("spo2_scale IN (1, 2)", name=op.f("ck_patients_spo2_scale")),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.gateway_id"],
            name=op.f("fk_patients_gateway_id_gateways"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_patients")),
    )
    op.create_table(
        "sequence_gaps",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("first_missing", sa.BigInteger(), nullable=False),
        sa.Column("last_missing", sa.BigInteger(), nullable=False),
        sa.Column("detected_at", TIMESTAMP, nullable=False),
        sa.Column("filled_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("first_missing <= last_missing", name=op.f("ck_sequence_gaps_range")),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name=op.f("fk_sequence_gaps_gateway_id_gateways")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_gaps")),
    )
    op.create_index("ix_sequence_gaps_detected_at", "sequence_gaps", ["detected_at"], unique=False)
    op.create_index(
        "ix_sequence_gaps_open",
        "sequence_gaps",
        ["gateway_id", "first_missing"],
        unique=False,
        postgresql_where=sa.text("filled_at IS NULL"),
        sqlite_where=sa.text("filled_at IS NULL"),
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("condition", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("gateway_id", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=True),
        sa.Column("total", sa.SmallInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raised_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("acknowledged_at", TIMESTAMP, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("snoozed_until", TIMESTAMP, nullable=True),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("next_escalation_at", TIMESTAMP, nullable=True),
        sa.Column("detail", JSON_DOCUMENT, nullable=True),
        sa.CheckConstraint("category IN ('clinical', 'technical')", name=op.f("ck_alerts_category")),
        sa.CheckConstraint(
            "priority IN ('low', 'medium', 'high', 'emergency')", name=op.f("ck_alerts_priority")
        ),
        sa.CheckConstraint(
            "state IN ('open', 'acknowledged', 'snoozed', 'resolved')", name=op.f("ck_alerts_state")
        ),
        sa.CheckConstraint("tier BETWEEN 1 AND 4", name=op.f("ck_alerts_tier")),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name=op.f("fk_alerts_gateway_id_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], name=op.f("fk_alerts_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "ix_alerts_next_escalation_at",
        "alerts",
        ["next_escalation_at"],
        unique=False,
        postgresql_where=sa.text("next_escalation_at IS NOT NULL"),
        sqlite_where=sa.text("next_escalation_at IS NOT NULL"),
    )
    op.create_index("ix_alerts_patient_raised", "alerts", ["patient_id", "raised_at"], unique=False)
    op.create_index("ix_alerts_state_raised", "alerts", ["state", "raised_at"], unique=False)
    op.create_index(
        "uq_alerts_one_unresolved",
        "alerts",
        ["subject", "condition"],
        unique=True,
        postgresql_where=sa.text("state <> 'resolved'"),
        sqlite_where=sa.text("state <> 'resolved'"),
    )

    op.create_table(
        "assessments",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("assessed_at", TIMESTAMP, nullable=False),
        sa.Column("total", sa.SmallInteger(), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=False),
        sa.Column("components", JSON_DOCUMENT, nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("input_ages_s", JSON_DOCUMENT, nullable=False),
        sa.Column("spo2_scale", sa.SmallInteger(), nullable=False),
        sa.Column("on_oxygen", sa.Boolean(), nullable=False),
        sa.Column("consciousness", sa.String(length=1), nullable=False),
        sa.Column("trend_rising", sa.Boolean(), nullable=False),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name=op.f("fk_assessments_gateway_id_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], name=op.f("fk_assessments_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessments")),
        sa.UniqueConstraint("message_id", name=op.f("uq_assessments_message_id")),
    )
    op.create_index(
        "ix_assessments_patient_assessed", "assessments", ["patient_id", "assessed_at"], unique=False
    )
    op.create_index("ix_assessments_received_at", "assessments", ["received_at"], unique=False)

    op.create_table(
        "commands",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("body", JSON_DOCUMENT, nullable=False),
        sa.Column("issued_at", TIMESTAMP, nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.Column("ack_message_id", sa.Uuid(), nullable=True),
        sa.Column("ack_ok", sa.Boolean(), nullable=True),
        sa.Column("ack_detail", sa.Text(), nullable=True),
        sa.Column("acked_at", TIMESTAMP, nullable=True),
        sa.Column("ack_received_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'sent', 'acknowledged', 'rejected')", name=op.f("ck_commands_state")
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name=op.f("fk_commands_gateway_id_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], name=op.f("fk_commands_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_commands")),
    )
    op.create_index("ix_commands_gateway_issued", "commands", ["gateway_id", "issued_at"], unique=False)
    op.create_index("ix_commands_patient_issued", "commands", ["patient_id", "issued_at"], unique=False)
    op.create_index("ix_commands_state", "commands", ["state"], unique=False)

    op.create_table(
        "gateway_events",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("detail", JSON_DOCUMENT, nullable=False),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name=op.f("fk_gateway_events_gateway_id_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], name=op.f("fk_gateway_events_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_events")),
        sa.UniqueConstraint("message_id", name=op.f("uq_gateway_events_message_id")),
    )
    op.create_index(
        "ix_gateway_events_gateway_occurred", "gateway_events", ["gateway_id", "occurred_at"], unique=False
    )
    op.create_index(
        "ix_gateway_events_patient_occurred", "gateway_events", ["patient_id", "occurred_at"], unique=False
    )
    op.create_index("ix_gateway_events_received_at", "gateway_events", ["received_at"], unique=False)

    op.create_table(
        "observations",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("vital", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("measured_at", TIMESTAMP, nullable=False),
        sa.Column("time_source", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("quality", JSON_DOCUMENT, nullable=False),
        sa.Column("perfusion_index", sa.Float(), nullable=True),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name=op.f("fk_observations_gateway_id_gateways")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], name=op.f("fk_observations_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
        sa.UniqueConstraint("message_id", "position", name=op.f("uq_observations_message_id_position")),
    )
    op.create_index(
        "ix_observations_patient_measured", "observations", ["patient_id", "measured_at"], unique=False
    )
    op.create_index(
        "ix_observations_patient_vital_measured",
        "observations",
        ["patient_id", "vital", "measured_at"],
        unique=False,
    )
    op.create_index("ix_observations_received_at", "observations", ["received_at"], unique=False)

    op.create_table(
        "alert_events",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=True),
        sa.Column("total", sa.SmallInteger(), nullable=True),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("detail", JSON_DOCUMENT, nullable=True),
        sa.CheckConstraint(
            "action IN ('raised', 'updated', 'escalated', 'acknowledged', 'resolved', 'snoozed')",
            name=op.f("ck_alert_events_action"),
        ),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_alert_events_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
        sa.UniqueConstraint("message_id", name=op.f("uq_alert_events_message_id")),
    )
    op.create_index("ix_alert_events_alert", "alert_events", ["alert_id", "id"], unique=False)
    op.create_index("ix_alert_events_at", "alert_events", ["at"], unique=False)
    _create_audit_guard()


def downgrade() -> None:
    _drop_audit_guard()
    for table in (
        "alert_events",
        "observations",
        "gateway_events",
        "commands",
        "assessments",
        "alerts",
        "sequence_gaps",
        "patients",
        "received_messages",
        "gateways",
        "dead_letters",
    ):
        op.drop_table(table)


# The audit log is append-only: the database itself refuses to change or remove a row, whatever the
# application (or a person with a SQL prompt and the application's credentials) tries.
AUDIT_TABLE = "alert_events"
_SQLITE_GUARD = """
CREATE TRIGGER alert_events_append_only_{op}
BEFORE {op} ON alert_events
BEGIN
    SELECT RAISE(ABORT, 'alert_events is append-only: {op} is not allowed');
END
"""
_POSTGRES_FUNCTION = """
CREATE FUNCTION wardwatch_reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _create_audit_guard() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        op.execute(
            "CREATE TRIGGER alert_events_append_only BEFORE UPDATE OR DELETE ON alert_events "
            "FOR EACH ROW EXECUTE FUNCTION wardwatch_reject_audit_change()"
        )
        op.execute(
            "CREATE TRIGGER alert_events_no_truncate BEFORE TRUNCATE ON alert_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION wardwatch_reject_audit_change()"
        )
    else:
        for statement in ("UPDATE", "DELETE"):
            op.execute(_SQLITE_GUARD.format(op=statement))


def _drop_audit_guard() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS alert_events_no_truncate ON alert_events")
        op.execute("DROP TRIGGER IF EXISTS alert_events_append_only ON alert_events")
        op.execute("DROP FUNCTION IF EXISTS wardwatch_reject_audit_change()")
    else:
        for statement in ("UPDATE", "DELETE"):
            op.execute(f"DROP TRIGGER IF EXISTS alert_events_append_only_{statement}")
