"""idempotent answers: the first answer to a creating request with an Idempotency-Key

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

A new table (saas_app/idempotency/): old code never reads it, so this is safe to roll out
node by node. Rows live 24 h; `python -m saas_app purge-expired` deletes them after.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotent_answer",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("principal", sa.String(length=60), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_idempotent_answer_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "principal", "key", name=op.f("pk_idempotent_answer")),
    )
    op.create_index(op.f("ix_idempotent_answer_expires_at"), "idempotent_answer", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotent_answer_expires_at"), table_name="idempotent_answer")
    op.drop_table("idempotent_answer")
