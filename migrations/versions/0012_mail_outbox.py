"""mail outbox: e-mails written with the change that causes them, delivered by a sender

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

A new table (saas_app/mail/): old code never reads it, so this is safe to roll out node
by node.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("sender_name", sa.String(length=200), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_mail_message_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_message")),
    )
    op.create_index("ix_mail_message_due", "mail_message", ["state", "next_attempt_at"])
    op.create_index(op.f("ix_mail_message_tenant_id"), "mail_message", ["tenant_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_mail_message_tenant_id"), table_name="mail_message")
    op.drop_index("ix_mail_message_due", table_name="mail_message")
    op.drop_table("mail_message")
