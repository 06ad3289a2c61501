from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned


class Session(UUIDPrimaryKey, TenantOwned, Base):
    """One login: its id is the `sid` of every token it issues (the refresh-token family)."""

    __tablename__ = "session"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    # The scope granted at login; NULL means "whatever the user's roles allow".
    scope: Mapped[str | None] = mapped_column(Text)
    amr: Mapped[str] = mapped_column(String(100))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class RefreshToken(TenantOwned, Base):
    """Every refresh token a session ever issued, by hash; a used one is retired for good."""

    __tablename__ = "refresh_token"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("session.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The token that replaced this one, encrypted with ENCRYPTION_KEY; set only while
    # REFRESH_REUSE_GRACE_SECONDS > 0, for a client's retry within the grace (migration 0010).
    successor: Mapped[str | None] = mapped_column(Text)


class LoginCode(TenantOwned, Base):
    """A one-time code (60 s) that a browser sign-in hands to the client's redirect URI;
    `grant_type=authorization_code` exchanges it for tokens."""

    __tablename__ = "login_code"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    amr: Mapped[str] = mapped_column(String(100))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The session the code's redemption opened: a replay revokes it (RFC 6749 §4.1.2).
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("session.id", ondelete="SET NULL"))


class AccountToken(UUIDPrimaryKey, TenantOwned, Base):
    """A token sent by mail (password reset, address verification): 256 random
    bits, stored only as a SHA-256 hash, bound to one purpose, tenant and user, expiring,
    used at most once (a conditional UPDATE marks it; of parallel uses one wins)."""

    __tablename__ = "account_token"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    # The address a verification link proves (the account's own, or the one it is to
    # change to); None for other purposes (migration 0014).
    email: Mapped[str | None] = mapped_column(String(320))
