"""fold e-mail addresses: NFKC + case folding, clashes reported and left as they are

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Addresses were stored lower-cased only, so look-alikes (`ｏwner@…` beside `owner@…`) could
be two users of one tenant. From now on every address is stored folded (NFKC, casefold,
NFKC: saas_app.security.emails.normalize_email, copied here so this revision never changes
when the app does). Rows whose folded form is theirs alone are rewritten. Users of one
tenant whose addresses fold to the same form are a clash: merging accounts or picking a
winner is an operator's decision, so those rows stay unchanged and a warning names the
tenant and user ids (never the addresses: they are personal data, and the warning goes to
logs). See docs/decisions.md, "Folding stored e-mail addresses".
"""

import logging
import unicodedata
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

user = sa.table(
    "user",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("email", sa.String(320)),
)


def fold(address: str) -> str:
    nfkc = unicodedata.normalize("NFKC", address.strip())
    return unicodedata.normalize("NFKC", nfkc.casefold())


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(user.c.id, user.c.tenant_id, user.c.email)).all()
    groups: dict[tuple[object, str], list[sa.Row[Any]]] = {}
    for row in rows:
        groups.setdefault((row.tenant_id, fold(row.email)), []).append(row)
    for (tenant_id, folded), members in sorted(groups.items(), key=lambda item: str(item[0][0])):
        if len(members) > 1:
            ids = ", ".join(sorted(str(m.id) for m in members))
            log.warning(
                "0008 fold e-mails: CLASH in tenant %s: users %s have addresses that fold to the"
                " same one; left unchanged. Sign-in now finds only the one stored folded, if any:"
                " decide which account keeps the address and change or delete the others.",
                tenant_id,
                ids,
            )
            continue
        (member,) = members
        if member.email != folded:
            connection.execute(sa.update(user).where(user.c.id == member.id).values(email=folded))


def downgrade() -> None:
    # Nothing to undo: the original spellings are not kept (keeping them would keep the
    # look-alikes), and a folded address is still a valid, unique address for the code of
    # 0006, which compared lower-cased addresses.
    pass
