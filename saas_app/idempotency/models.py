from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base


class IdempotentAnswer(Base):
    """The first answer to a creating request that carried an Idempotency-Key, per caller
    and key, kept 24 h so that a retry gets it again instead of creating twice. Written in
    the same transaction as what the request created: both exist, or neither."""

    __tablename__ = "idempotent_answer"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    # "user:<id>" or "api_key:<id>": a key is the caller's own, never another's.
    principal: Mapped[str] = mapped_column(String(60), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of method, path and body: the same key with another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    # The answer's JSON, encrypted with ENCRYPTION_KEY (an API key's answer holds its secret).
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
