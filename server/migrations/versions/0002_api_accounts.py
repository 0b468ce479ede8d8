"""API accounts: bearer tokens (scrypt hashes) and the audit log of API writes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("kdf", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "role IN ('integration', 'viewer', 'nurse', 'physician', 'admin')",
            name=op.f("ck_api_tokens_role"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_tokens_key_id")),
    )
    op.create_index("ix_api_tokens_name", "api_tokens", ["name"], unique=False)

    op.create_table(
        "api_audit",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", JSON_DOCUMENT, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_audit")),
    )
    op.create_index("ix_api_audit_at", "api_audit", ["at"], unique=False)
    # Append-only like alert_events (the PostgreSQL function comes from revision 0001).
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER api_audit_append_only BEFORE UPDATE OR DELETE ON api_audit "
            "FOR EACH ROW EXECUTE FUNCTION wardwatch_reject_audit_change()"
        )
        op.execute(
            "CREATE TRIGGER api_audit_no_truncate BEFORE TRUNCATE ON api_audit "
            "FOR EACH STATEMENT EXECUTE FUNCTION wardwatch_reject_audit_change()"
        )
    else:
        for statement in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER api_audit_append_only_{statement} BEFORE {statement} ON api_audit "
                f"BEGIN SELECT RAISE(ABORT, 'api_audit is append-only: {statement} is not allowed'); END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS api_audit_no_truncate ON api_audit")
        op.execute("DROP TRIGGER IF EXISTS api_audit_append_only ON api_audit")
    else:
        for statement in ("UPDATE", "DELETE"):
            op.execute(f"DROP TRIGGER IF EXISTS api_audit_append_only_{statement}")
    op.drop_table("api_audit")
    op.drop_table("api_tokens")
