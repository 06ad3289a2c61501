from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey


class Tenant(UUIDPrimaryKey, Base):
    __tablename__ = "tenant"

    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    allow_signup: Mapped[bool] = mapped_column(default=True)
    # Every password login must complete a second factor (users without one must enrol).
    mfa_required: Mapped[bool] = mapped_column(default=False, server_default=false())
    # A password login needs a verified address (API-v2 §1; migration 0014).
    require_verified_email: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime]


class TenantOwned:
    """Mixin for every tenant-owned table: an indexed, non-null `tenant_id`."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
