from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned


class AuditEvent(UUIDPrimaryKey, TenantOwned, Base):
    __tablename__ = "audit_event"
    __table_args__ = (Index(None, "tenant_id", "created_at"),)

    created_at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor_type: Mapped[str | None] = mapped_column(String(32))
    actor_id: Mapped[uuid.UUID | None]
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[uuid.UUID | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
