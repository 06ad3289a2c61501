"""tokens:introspect: the built-in owner and admin roles of existing tenants gain it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

New tenants get it from saas_app/rbac/permissions.py (BUILTIN_ROLES). A permission the old
code does not know is ignored by it, so this is safe to roll out node by node.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERMISSION = "tokens:introspect"
ROLES = ("owner", "admin")
role = sa.table(
    "role",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("permissions", sa.JSON()),
    sa.column("is_builtin", sa.Boolean()),
)


def _update(change: str) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(role.c.id, role.c.permissions).where(role.c.is_builtin.is_(True), role.c.name.in_(ROLES))
    ).all()
    for role_id, permissions in rows:
        held = [p for p in permissions if p != PERMISSION]
        if change == "add":
            held.append(PERMISSION)
        connection.execute(sa.update(role).where(role.c.id == role_id).values(permissions=held))


def upgrade() -> None:
    _update("add")


def downgrade() -> None:
    _update("remove")
