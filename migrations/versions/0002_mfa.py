"""mfa: TOTP on user, recovery codes, MFA challenges, tenant mfa_required

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mfa_challenge",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("amr", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_mfa_challenge_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_mfa_challenge_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_mfa_challenge")),
    )
    op.create_index(op.f("ix_mfa_challenge_tenant_id"), "mfa_challenge", ["tenant_id"])
    op.create_index(op.f("ix_mfa_challenge_user_id"), "mfa_challenge", ["user_id"])

    op.create_table(
        "recovery_code",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_recovery_code_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_recovery_code_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_code")),
        sa.UniqueConstraint("user_id", "code_hash", name=op.f("uq_recovery_code_user_id_code_hash")),
    )
    op.create_index(op.f("ix_recovery_code_tenant_id"), "recovery_code", ["tenant_id"])
    op.create_index(op.f("ix_recovery_code_user_id"), "recovery_code", ["user_id"])

    with op.batch_alter_table("tenant") as batch_op:
        batch_op.add_column(
            sa.Column("mfa_required", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("user") as batch_op:
        batch_op.add_column(sa.Column("totp_secret", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("totp_confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user") as batch_op:
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_confirmed_at")
        batch_op.drop_column("totp_secret")
    with op.batch_alter_table("tenant") as batch_op:
        batch_op.drop_column("mfa_required")
    op.drop_table("recovery_code")
    op.drop_table("mfa_challenge")
