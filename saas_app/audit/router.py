"""/t/{tenant}/audit-events: the tenant's audit trail (`audit:read`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from saas_app.audit import service
from saas_app.audit.models import AuditEvent
from saas_app.core.http import NO_NUL
from saas_app.core.openapi import AUTHENTICATED
from saas_app.core.pagination import Page, PageDep
from saas_app.guards import Principal, require
from saas_app.runtime import SessionDep

router = APIRouter(prefix="/t/{tenant}/audit-events", tags=["audit"], responses=AUTHENTICATED)


class RefRead(BaseModel):
    type: str
    id: uuid.UUID | None


class AuditEventRead(BaseModel):
    id: uuid.UUID
    at: datetime
    action: str
    actor: RefRead | None
    target: RefRead | None
    ip: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventRead:
        return cls(
            id=event.id,
            at=event.created_at,
            action=event.action,
            actor=RefRead(type=event.actor_type, id=event.actor_id) if event.actor_type else None,
            target=RefRead(type=event.target_type, id=event.target_id) if event.target_type else None,
            ip=event.ip,
            details=event.details,
        )


@router.get("")
async def list_events(
    principal: Annotated[Principal, Depends(require("audit:read"))],
    session: SessionDep,
    page: PageDep,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> Page[AuditEventRead]:
    """Lists audit events, newest first, optionally of one action."""
    rows, next_cursor = await service.list_events(
        session=session, tenant_id=principal.tenant_id, action=action, page=page
    )
    return Page(items=[AuditEventRead.of(e) for e in rows], next_cursor=next_cursor)
