from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey
from saas_app.tenancy.models import TenantOwned


class Project(UUIDPrimaryKey, TenantOwned, Base):
    __tablename__ = "project"

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    # The principal that created it (a user, or later an API key); not a foreign key, so
    # the record survives its creator.
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
