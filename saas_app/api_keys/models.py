from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned


class ApiKey(UUIDPrimaryKey, TenantOwned, Base):
    """A machine credential. Only a keyed hash of its secret is stored."""

    __tablename__ = "api_key"

    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # The user who created it (None: made by the CLI). A key never does more than its
    # creator may do now; see docs/decisions.md.
    created_by: Mapped[uuid.UUID | None]
    # The key that issued this one (None: issued by a user or the CLI). A child never
    # outlives, outpaces or outscopes its parent, and is revoked with it.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="SET NULL"), index=True
    )
    rate_limit: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
