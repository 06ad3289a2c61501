from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, Field, StringConstraints

from saas_app.rbac.models import Role
from saas_app.rbac.permissions import ROLE_NAME_PATTERN
from saas_app.users.schemas import StrictModel

Permission = Literal[
    "projects:read",
    "projects:write",
    "users:read",
    "users:manage",
    "roles:manage",
    "api_keys:manage",
    "audit:read",
    "tokens:introspect",
    "tenant:manage",
]
RoleName = Annotated[str, StringConstraints(pattern=ROLE_NAME_PATTERN)]


class RoleCreate(StrictModel):
    name: RoleName
    permissions: list[Permission] = Field(max_length=len(get_args(Permission)))


class RoleUpdate(StrictModel):
    permissions: list[Permission] = Field(max_length=len(get_args(Permission)))


class RoleRead(BaseModel):
    name: str
    permissions: list[str]
    builtin: bool

    @classmethod
    def of(cls, role: Role) -> RoleRead:
        return cls(name=role.name, permissions=list(role.permissions), builtin=role.is_builtin)
