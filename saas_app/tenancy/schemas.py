from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from saas_app.users.schemas import NAME_SCHEMA, STRIPPED_NOT_BLANK, Credentials, StrictModel, UserRead

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=63)]
TenantName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    STRIPPED_NOT_BLANK,
    NAME_SCHEMA,
]


class TenantCreate(StrictModel):
    slug: Slug
    name: TenantName
    owner: Credentials


class TenantUpdate(StrictModel):
    name: TenantName | None = None
    allow_signup: bool | None = None
    mfa_required: bool | None = None
    require_verified_email: bool | None = None


class TenantBrief(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    created_at: datetime


class TenantRead(TenantBrief):
    allow_signup: bool
    mfa_required: bool
    require_verified_email: bool


class TenantCreated(BaseModel):
    tenant: TenantBrief
    owner: UserRead = Field()
