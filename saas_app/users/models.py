from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned


class User(UUIDPrimaryKey, TenantOwned, Base):
    __tablename__ = "user"
    # E-mails are stored lower-cased, so this is a case-insensitive per-tenant uniqueness.
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    # When the user proved they receive mail at `email`; None = never. Only a verified address
    # may take over a GitHub sign-in by e-mail (pre-account-takeover, issue 13 item 1).
    # Set by a verification link, an accepted invitation, or a GitHub sign-up (GitHub's
    # verified primary address).
    email_verified_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # TOTP (RFC 6238): the secret encrypted at rest; set but unconfirmed = enrolment pending.
    totp_secret: Mapped[str | None] = mapped_column(String(500))
    totp_confirmed_at: Mapped[datetime | None]
    # The last time step accepted, so no step is ever accepted twice (RFC 6238 §5.2).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def mfa_enabled(self) -> bool:
        return self.totp_confirmed_at is not None


class Identity(UUIDPrimaryKey, TenantOwned, Base):
    """A sign-in account at an outside provider, keyed by the provider's stable numeric id
    (never its login name or e-mail, which the owner can change)."""

    __tablename__ = "identity"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider", "subject"),
        UniqueConstraint("user_id", "provider"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64))
    login: Mapped[str | None] = mapped_column(String(100))  # for display only
    created_at: Mapped[datetime]
