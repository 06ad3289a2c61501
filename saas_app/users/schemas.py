from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from saas_app.core.http import has_nul
from saas_app.rbac.models import Role
from saas_app.rbac.permissions import ordered
from saas_app.rbac.service import permissions_of
from saas_app.security.emails import EmailAddress
from saas_app.security.passwords import MAX_LENGTH, policy_violation
from saas_app.users.models import User

FullName = Field(default=None, max_length=200)


class StrictModel(BaseModel):
    """A request body: no unknown fields, no coercion (`1` is not a boolean, `"5"` not a number),
    no NUL in text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if has_nul(value):
            raise ValueError("Text must not contain NUL (U+0000) characters.")
        return value


def check_password(value: str) -> str:
    problem = policy_violation(value)
    if problem:
        raise ValueError(problem)
    return value


class Credentials(StrictModel):
    email: EmailAddress
    # The length bound is enforced by the validator (in characters, not bytes).
    password: str = Field(max_length=MAX_LENGTH * 4)
    full_name: str | None = FullName

    _password_policy = field_validator("password")(check_password)


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    full_name: str | None
    roles: list[str]
    permissions: list[str]
    is_active: bool
    mfa_enabled: bool
    identities: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User, roles: list[Role], identities: list[str] | None = None) -> UserRead:
        return cls(
            id=user.id,
            email=user.email,
            full_name=user.full_name,
            roles=[r.name for r in roles],
            permissions=ordered(permissions_of(roles)),
            is_active=user.is_active,
            mfa_enabled=user.mfa_enabled,
            identities=identities or [],
            created_at=user.created_at,
        )


class ProfileUpdate(StrictModel):
    full_name: str | None = FullName


class PasswordChange(StrictModel):
    current_password: str = Field(max_length=MAX_LENGTH * 4)
    new_password: str = Field(max_length=MAX_LENGTH * 4)

    _password_policy = field_validator("new_password")(check_password)


class ActivationUpdate(StrictModel):
    is_active: bool


class RolesUpdate(StrictModel):
    roles: list[str] = Field(max_length=50)


class SessionRead(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    current: bool
