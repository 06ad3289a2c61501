"""refresh grace: a retired refresh token may name its successor, sealed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

With REFRESH_REUSE_GRACE_SECONDS > 0 (off by default), a refresh token presented again
within that many seconds of its rotation gets the same next token instead of being taken
for theft: its answer may never have reached the client (a timeout, a dropped
connection), and the client retries. The next token is kept on the retired row, encrypted
with ENCRYPTION_KEY (never in clear: it is a live credential), and only while grace is on.
An added nullable column: old code ignores it, so this is safe to roll out node by node.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("refresh_token", sa.Column("successor", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refresh_token") as batch:
        batch.drop_column("successor")
