from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, get_args

from pydantic import BaseModel, Field, StringConstraints, field_validator

from saas_app.api_keys.models import ApiKey
from saas_app.rbac.schemas import Permission
from saas_app.users.schemas import INTEGRAL, NAME_SCHEMA, STRIPPED_NOT_BLANK, StrictModel

# A subset of the limits library's notation ("100/minute", "5 per 2 hours", and up to four of
# them joined by ";" or ",": "100/minute; 1000/day", every one enforced): every value the
# pattern admits parses, so the schema tells exactly what is accepted.
_RATE_ITEM = r"[1-9][0-9]{0,8} ?(/|per) ?([1-9][0-9]{0,5} ?)?(second|minute|hour|day|month|year)s?"
RATE_LIMIT_PATTERN = rf"^{_RATE_ITEM}( ?[;,] ?{_RATE_ITEM}){{0,3}}$"
KeyName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    STRIPPED_NOT_BLANK,
    NAME_SCHEMA,
]


class ApiKeyCreate(StrictModel):
    name: KeyName
    scopes: list[Permission] = Field(min_length=1, max_length=len(get_args(Permission)))
    expires_in_days: Annotated[int, Field(ge=1, le=3650), INTEGRAL] | None = None
    # Optional per-key limit, e.g. "100/minute".
    rate_limit: str | None = Field(default=None, max_length=100, pattern=RATE_LIMIT_PATTERN)

    @field_validator("rate_limit")
    @classmethod
    def _valid_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many  # noqa: PLC0415

            parse_many(value)
        return value


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    rate_limit: str | None
    # The user the key acts for; None for keys of the CLI's lineage.
    created_by: uuid.UUID | None
    # The key that issued this one (None: issued by a user or the CLI).
    parent_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyRead:
        return cls(
            id=key.id,
            name=key.name,
            prefix=f"sk_{key.prefix}",
            scopes=list(key.scopes),
            rate_limit=key.rate_limit,
            created_by=key.created_by,
            parent_id=key.parent_id,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
        )


class ApiKeyCreated(ApiKeyRead):
    key: str  # shown only in this answer
