from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned

PENDING, ACCEPTED, REVOKED, EXPIRED = "pending", "accepted", "revoked", "expired"
STATUSES = (PENDING, ACCEPTED, REVOKED, EXPIRED)


class Invitation(UUIDPrimaryKey, TenantOwned, Base):
    """An invitation to join the tenant with some roles, sent by mail. Its token (256 random
    bits) is kept only as a SHA-256 hash; accepting it sets `accepted_at` with a conditional
    UPDATE, so of parallel accepts exactly one creates the user."""

    __tablename__ = "invitation"

    email: Mapped[str] = mapped_column(String(320), index=True)
    roles: Mapped[list[str]] = mapped_column(JSON)  # role names, as granted at acceptance
    # Who invited: a user, or an API key (then `invited_by` is None). Acceptance checks that
    # they may still grant the roles.
    invited_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    invited_by_key: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    def status(self, now: datetime) -> str:
        if self.accepted_at is not None:
            return ACCEPTED
        if self.revoked_at is not None:
            return REVOKED
        return PENDING if self.expires_at > now else EXPIRED
