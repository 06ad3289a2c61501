from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned


class RecoveryCode(UUIDPrimaryKey, TenantOwned, Base):
    """A one-time recovery code, stored as a keyed hash."""

    __tablename__ = "recovery_code"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class MfaChallenge(TenantOwned, Base):
    """The server side of an `mfa_token`: what the password step proved, and its budget.

    `purpose` is "login" (the token endpoint's mfa_otp / mfa_recovery_code grants) or
    "enroll" (a tenant that requires MFA lets a user without it do nothing but enrol).
    """

    __tablename__ = "mfa_challenge"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    amr: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
