from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base
from saas_app.tenancy.models import TenantOwned


class SpentState(TenantOwned, Base):
    """OAuth `state` values already used at the callback, so none is accepted twice.
    Rows older than `expires_at` can be deleted: the state itself has expired by then."""

    __tablename__ = "spent_state"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]
