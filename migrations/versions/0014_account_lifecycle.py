"""account lifecycle: verified addresses, address changes, invitations

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

- `tenant.require_verified_email` (default false) and `account_token.email` (the address
  a verification link proves): nullable or defaulted columns that old code ignores.
- `invitation`: a new table.
- The user row's cache trigger (migration 0009) also fires on `email_verified_at`, which
  `GET /users/me` now shows. Old code reads the same caches, so this is safe to roll
  out node by node.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "saas_app_cache"
USER_COLUMNS_BEFORE = ("email", "full_name", "is_active", "totp_confirmed_at", "tenant_id")
USER_COLUMNS = (*USER_COLUMNS_BEFORE, "email_verified_at")


def _replace_user_update_trigger(columns: tuple[str, ...]) -> None:
    """Migration 0009's `cache_user_update`, firing on an UPDATE of `columns`."""
    of = ", ".join(f'"{c}"' for c in columns)
    if op.get_bind().dialect.name == "postgresql":
        op.execute('DROP TRIGGER IF EXISTS "cache_user_update" ON "user"')
        op.execute(
            f'CREATE TRIGGER "cache_user_update" AFTER UPDATE OF {of} ON "user" FOR EACH ROW'
            " EXECUTE FUNCTION saas_app_cache_notify('user', 'id')"
        )
        op.execute('ALTER TABLE "user" ENABLE ALWAYS TRIGGER "cache_user_update"')
        return
    op.execute('DROP TRIGGER IF EXISTS "cache_user_update"')
    op.execute(
        f'CREATE TRIGGER "cache_user_update" AFTER UPDATE OF {of} ON "user" FOR EACH ROW BEGIN'  # noqa: S608 (constants)
        " INSERT INTO cache_change (tag) VALUES ('user:' || NEW.\"id\");"
        ' INSERT INTO cache_change (tag) SELECT \'user:\' || OLD."id" WHERE OLD."id" IS NOT NEW."id";'
        " END"
    )


def upgrade() -> None:
    # Plain ADD COLUMN (no batch): SQLite would otherwise copy the table and lose its triggers.
    op.add_column(
        "tenant",
        sa.Column("require_verified_email", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("account_token", sa.Column("email", sa.String(length=320), nullable=True))
    op.create_table(
        "invitation",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column("invited_by_key", sa.Uuid(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_invitation_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"], ["user.id"], name=op.f("fk_invitation_invited_by_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_key"],
            ["api_key.id"],
            name=op.f("fk_invitation_invited_by_key_api_key"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitation")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitation_token_hash")),
    )
    op.create_index(op.f("ix_invitation_tenant_id"), "invitation", ["tenant_id"])
    op.create_index(op.f("ix_invitation_email"), "invitation", ["email"])
    _replace_user_update_trigger(USER_COLUMNS)


def downgrade() -> None:
    _replace_user_update_trigger(USER_COLUMNS_BEFORE)
    op.drop_index(op.f("ix_invitation_email"), table_name="invitation")
    op.drop_index(op.f("ix_invitation_tenant_id"), table_name="invitation")
    op.drop_table("invitation")
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy would lose the tables' triggers.
    op.drop_column("account_token", "email")
    op.drop_column("tenant", "require_verified_email")
