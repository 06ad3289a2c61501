from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from saas_app.core.http import NO_NUL, has_nul
from saas_app.rbac.models import Role
from saas_app.rbac.permissions import ROLE_NAME_PATTERN, ordered
from saas_app.rbac.service import permissions_of
from saas_app.security.emails import EmailAddress
from saas_app.security.passwords import MAX_LENGTH, MIN_LENGTH, policy_violation
from saas_app.users.models import User

FullName = Field(default=None, max_length=200)


def _no_nul_in_schema(schema: Any) -> None:
    """Gives every text of a schema that has no pattern of its own the NUL-free one (its own
    patterns exclude NUL already), through unions and lists: what `_no_nul` enforces."""
    if isinstance(schema, list):
        for item in schema:
            _no_nul_in_schema(item)
    elif isinstance(schema, dict):
        if schema.get("type") == "string" and not {"pattern", "enum", "const"} & schema.keys():
            schema["pattern"] = NO_NUL
        for key in ("anyOf", "oneOf", "items"):
            _no_nul_in_schema(schema.get(key))


# A name that is stripped of surrounding white space and must then not be empty: some
# character other than white space (or NUL). In the schema only; `StringConstraints` enforces it.
NAME_SCHEMA = Field(json_schema_extra={"pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"})


def _stripped_not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("String should have at least 1 character other than white space")
    return stripped


# After the length is checked on the text *as sent*, as the schema's `maxLength` counts it
# (StringConstraints' own strip_whitespace strips first: " " + 200 letters then passed a
# limit of 200, which the schema says it may not): stored without surrounding white space.
STRIPPED_NOT_BLANK = AfterValidator(_stripped_not_blank)


def _integral(value: object) -> object:
    """JSON has one number type: `1.0` is the integer 1, as JSON Schema's `integer` says
    (draft 2020-12 §6.1.1); a fraction, a string or a boolean stays refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# For an integer member of a request body (strict models refuse `1.0` otherwise); it goes
# after the bounds, `Annotated[int, Field(ge=...), INTEGRAL]`, or the schema loses them.
INTEGRAL = BeforeValidator(_integral)


def request_schema(schema: dict[str, Any]) -> None:
    for field_schema in schema.get("properties", {}).values():
        _no_nul_in_schema(field_schema)


class StrictModel(BaseModel):
    """A request body: no unknown fields, no coercion (`1` is not a boolean, `"5"` not a number),
    no NUL in text. Its JSON schema says so (`additionalProperties: false`, NUL-free patterns)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=request_schema)

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


# A new password: `check_password` enforces the policy (with its own messages); the schema
# states the same bounds, from the same constants (JSON Schema counts characters too).
NewPassword = Field(json_schema_extra={"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH})


class Credentials(StrictModel):
    email: EmailAddress
    password: str = NewPassword
    full_name: str | None = FullName

    _password_policy = field_validator("password")(check_password)


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
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
            email_verified=user.email_verified,
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
    # A new address: it applies once a link mailed to it is opened (202). Needs `password`,
    # or a login of the last 10 minutes.
    email: EmailAddress | None = None
    password: str | None = Field(default=None, max_length=MAX_LENGTH * 4)


class PasswordChange(StrictModel):
    current_password: str = Field(max_length=MAX_LENGTH * 4)
    new_password: str = NewPassword

    _password_policy = field_validator("new_password")(check_password)


class ActivationUpdate(StrictModel):
    is_active: bool


class RolesUpdate(StrictModel):
    # Names of the form roles are created with; a well-formed name of no role is 422 unknown_role.
    roles: list[Annotated[str, StringConstraints(pattern=ROLE_NAME_PATTERN)]] = Field(max_length=50)


class SessionRead(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    current: bool
