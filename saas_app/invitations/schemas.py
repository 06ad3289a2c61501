from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from saas_app.invitations.models import Invitation
from saas_app.rbac.permissions import MEMBER
from saas_app.rbac.schemas import RoleName
from saas_app.security.emails import EmailAddress
from saas_app.users.schemas import FullName, NewPassword, StrictModel, check_password

Status = Literal["pending", "accepted", "revoked", "expired"]


class InvitationCreate(StrictModel):
    email: EmailAddress
    roles: list[RoleName] = Field(default=[MEMBER], max_length=50)


class InvitationRead(BaseModel):
    id: uuid.UUID
    email: str
    roles: list[str]
    status: Status
    invited_by: uuid.UUID | None
    expires_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, invitation: Invitation, now: datetime) -> InvitationRead:
        return cls(
            id=invitation.id,
            email=invitation.email,
            roles=invitation.roles,
            status=invitation.status(now),
            invited_by=invitation.invited_by,
            expires_at=invitation.expires_at,
            created_at=invitation.created_at,
        )


class InvitationAccept(StrictModel):
    # No length bounds: an empty or overlong token is as invalid as any other (400).
    token: str
    password: str = NewPassword
    full_name: str | None = FullName

    _password_policy = field_validator("password")(check_password)
