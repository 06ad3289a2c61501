"""The audit trail: who did what to whom, from where. Never a secret in `details`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit.models import AuditEvent
from saas_app.core.pagination import PageParams, keyset_page, split_page


@dataclass(frozen=True, slots=True)
class Ref:
    """A typed reference to an actor or target: {"type": "user", "id": ...}."""

    type: str
    id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Who is acting, from which IP, at what time; passed to every service that audits."""

    actor: Ref | None
    ip: str | None
    now: datetime


async def record(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    action: str,
    origin: Origin,
    target: Ref | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Adds an audit event to the current unit of work."""
    session.add(
        AuditEvent(
            tenant_id=tenant_id,
            created_at=origin.now,
            action=action,
            actor_type=origin.actor.type if origin.actor else None,
            actor_id=origin.actor.id if origin.actor else None,
            target_type=target.type if target else None,
            target_id=target.id if target else None,
            ip=origin.ip,
            details=details or {},
        )
    )


async def list_events(
    *, session: AsyncSession, tenant_id: uuid.UUID, action: str | None, page: PageParams
) -> tuple[list[AuditEvent], str | None]:
    """Returns a page of the tenant's audit events, newest first."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    stmt = keyset_page(stmt, page, AuditEvent.created_at, AuditEvent.id, newest_first=True)
    rows = list((await session.scalars(stmt)).all())
    return split_page(rows, page)
