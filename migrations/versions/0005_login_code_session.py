"""login code: the session its redemption opened (revoked when the code is replayed)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_code") as batch_op:
        batch_op.add_column(sa.Column("session_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_login_code_session_id_session"),
            "session",
            ["session_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("login_code") as batch_op:
        batch_op.drop_constraint(op.f("fk_login_code_session_id_session"), type_="foreignkey")
        batch_op.drop_column("session_id")
