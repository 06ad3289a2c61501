"""user.email_verified_at (GitHub links by e-mail only into verified accounts);
api_key.parent_id (a key issued by a key is clipped to it and revoked with it);
api_key.rate_limit up to 100 characters (up to four limits joined: "100/minute; 1000/day")

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing users stay unverified: until e-mail verification exists nothing proves their
    # address, and a password account must not capture a GitHub sign-in (issue 13, item 1).
    with op.batch_alter_table("user") as batch_op:
        batch_op.add_column(sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_key") as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch_op.alter_column("rate_limit", existing_type=sa.String(length=32), type_=sa.String(length=100))
        batch_op.create_index(batch_op.f("ix_api_key_parent_id"), ["parent_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_api_key_parent_id_api_key"),
            "api_key",
            ["parent_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    # No shorter form of a longer limit is as strict as it (dropping a part loosens it):
    # refuse rather than weaken a key.
    too_long = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM api_key WHERE length(rate_limit) > 32"))
        .scalar_one()
    )
    if too_long:
        raise RuntimeError(
            f"{too_long} API key(s) have a rate_limit over 32 characters; revoke them or set a "
            "shorter limit before downgrading below 0007"
        )
    with op.batch_alter_table("api_key") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_key_parent_id_api_key"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_key_parent_id"))
        batch_op.drop_column("parent_id")
        batch_op.alter_column("rate_limit", existing_type=sa.String(length=100), type_=sa.String(length=32))
    with op.batch_alter_table("user") as batch_op:
        batch_op.drop_column("email_verified_at")
