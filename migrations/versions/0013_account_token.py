"""account tokens: the single-use tokens that mail carries (password reset first)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

A new table (saas_app/auth/account_tokens.py): old code never reads it, so this is safe
to roll out node by node.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_account_token_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_account_token_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_token_token_hash")),
    )
    op.create_index(op.f("ix_account_token_tenant_id"), "account_token", ["tenant_id"])
    op.create_index(op.f("ix_account_token_user_id"), "account_token", ["user_id"])
    op.create_index(op.f("ix_account_token_expires_at"), "account_token", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_account_token_expires_at"), table_name="account_token")
    op.drop_index(op.f("ix_account_token_user_id"), table_name="account_token")
    op.drop_index(op.f("ix_account_token_tenant_id"), table_name="account_token")
    op.drop_table("account_token")
