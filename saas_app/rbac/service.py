"""Roles, their permissions, and who holds them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.core.errors import Conflict, DomainError, NotFound, PermissionDenied
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.rbac.models import Role, UserRole
from saas_app.rbac.permissions import BUILTIN_ROLES, OWNER, ordered
from saas_app.tenancy.models import Tenant
from saas_app.users.models import User


class RoleNotFound(NotFound):
    code = "role_not_found"
    title = "Role not found"


class RoleExists(Conflict):
    code = "role_exists"
    title = "A role with this name already exists"


class BuiltinRole(Conflict):
    code = "builtin_role"
    title = "Built-in roles cannot be changed or deleted"


class RoleInUse(Conflict):
    code = "role_in_use"
    title = "The role is still assigned to users"


class UnknownRole(DomainError):
    status = 422
    code = "unknown_role"
    title = "Unknown role"


class LastOwner(Conflict):
    code = "last_owner"
    title = "A tenant must keep at least one active owner"


async def create_builtin_roles(*, session: AsyncSession, tenant_id: uuid.UUID, now: datetime) -> None:
    """Adds owner/admin/member/viewer to a new tenant."""
    session.add_all(
        Role(tenant_id=tenant_id, name=name, permissions=list(perms), is_builtin=True, created_at=now)
        for name, perms in BUILTIN_ROLES.items()
    )


async def list_roles(
    *, session: AsyncSession, tenant_id: uuid.UUID, page: PageParams
) -> tuple[list[Role], str | None]:
    """Returns a page of the tenant's roles, built-ins first."""
    stmt = keyset_page(select(Role).where(Role.tenant_id == tenant_id), page, Role.created_at, Role.id)
    return split_page(list((await session.scalars(stmt)).all()), page)


async def list_all_roles(*, session: AsyncSession, tenant_id: uuid.UUID) -> list[Role]:
    """Returns every role of the tenant."""
    return list((await session.scalars(select(Role).where(Role.tenant_id == tenant_id))).all())


async def get_role(*, session: AsyncSession, tenant_id: uuid.UUID, name: str) -> Role:
    """Returns a role by name, or raises RoleNotFound."""
    role = await session.scalar(select(Role).where(Role.tenant_id == tenant_id, Role.name == name))
    if role is None:
        raise RoleNotFound(f"No role named {name!r}.")
    return role


def ensure_grantable(permissions: Iterable[str], grantor: frozenset[str]) -> None:
    """No escalation: nobody hands out (or takes away) a permission they do not hold."""
    missing = ordered(set(permissions) - grantor)
    if missing:
        raise PermissionDenied(missing, f"You cannot grant or revoke: {' '.join(missing)}.")


def ensure_covers(target: Iterable[str], actor: frozenset[str]) -> None:
    """No escalation across users: act on a user (their activation, their second factor)
    only while holding every permission they hold, so an admin cannot lock out an owner."""
    missing = ordered(set(target) - actor)
    if missing:
        raise PermissionDenied(missing, f"The user holds permissions you lack: {' '.join(missing)}.")


async def ensure_may_act_on(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, actor: frozenset[str]
) -> None:
    """Raises 403 unless `actor` holds every permission of the user's current roles."""
    roles = await roles_by_user(session=session, tenant_id=tenant_id, user_ids=[user_id])
    ensure_covers(permissions_of(roles.get(user_id, [])), actor)


async def create_role(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str,
    permissions: list[str],
    grantor: frozenset[str],
    origin: Origin,
) -> Role:
    """Creates a custom role whose permissions the grantor holds."""
    ensure_grantable(permissions, grantor)
    role = Role(
        tenant_id=tenant_id,
        name=name,
        permissions=ordered(set(permissions)),
        is_builtin=False,
        created_at=origin.now,
    )
    session.add(role)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise RoleExists(f"A role named {name!r} already exists.") from exc
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="role.created",
        origin=origin,
        target=Ref("role", role.id),
        details={"name": name, "permissions": role.permissions},
    )
    return role


async def update_role(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str,
    permissions: list[str],
    grantor: frozenset[str],
    origin: Origin,
) -> Role:
    """Replaces a custom role's permissions; takes effect on holders' next request."""
    role = await get_role(session=session, tenant_id=tenant_id, name=name)
    if role.is_builtin:
        raise BuiltinRole()
    ensure_grantable(set(permissions) | set(role.permissions), grantor)
    before = role.permissions
    role.permissions = ordered(set(permissions))
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="role.updated",
        origin=origin,
        target=Ref("role", role.id),
        details={"name": name, "before": before, "after": role.permissions},
    )
    return role


async def delete_role(
    *, session: AsyncSession, tenant_id: uuid.UUID, name: str, grantor: frozenset[str], origin: Origin
) -> None:
    """Deletes a custom role that nobody holds."""
    role = await get_role(session=session, tenant_id=tenant_id, name=name)
    if role.is_builtin:
        raise BuiltinRole()
    ensure_grantable(role.permissions, grantor)
    holders = await session.scalar(select(func.count()).where(UserRole.role_id == role.id))
    if holders:
        raise RoleInUse(f"{holders} user(s) still hold the role {name!r}.")
    await session.delete(role)
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="role.deleted",
        origin=origin,
        target=Ref("role", role.id),
        details={"name": name},
    )


async def roles_by_user(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Role]]:
    """Returns the roles of each user, in one query."""
    if not user_ids:
        return {}
    stmt = (
        select(UserRole.user_id, Role)
        .join(Role, Role.id == UserRole.role_id)
        .where(UserRole.tenant_id == tenant_id, UserRole.user_id.in_(user_ids))
        .order_by(Role.created_at, Role.id)
    )
    result: dict[uuid.UUID, list[Role]] = defaultdict(list)
    for user_id, role in (await session.execute(stmt)).all():
        result[user_id].append(role)
    return result


def permissions_of(roles: Iterable[Role]) -> frozenset[str]:
    return frozenset(p for role in roles for p in role.permissions)


async def lock_tenant(*, session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Serialises owner-changing writes of one tenant (SQLite already serialises writers)."""
    await session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


async def ensure_other_active_owner(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Raises LastOwner unless an active owner other than `user_id` remains."""
    stmt = (
        select(func.count())
        .select_from(UserRole)
        .join(Role, Role.id == UserRole.role_id)
        .join(User, User.id == UserRole.user_id)
        .where(
            UserRole.tenant_id == tenant_id,
            Role.name == OWNER,
            User.is_active.is_(True),
            User.id != user_id,
        )
    )
    if not await session.scalar(stmt):
        raise LastOwner()


async def roles_named(*, session: AsyncSession, tenant_id: uuid.UUID, names: Iterable[str]) -> list[Role]:
    """The tenant's roles of these names that exist, oldest first."""
    stmt = select(Role).where(Role.tenant_id == tenant_id, Role.name.in_(set(names)))
    return sorted((await session.scalars(stmt)).all(), key=lambda r: (r.created_at, str(r.id)))


def ensure_known(names: Iterable[str], roles: list[Role]) -> None:
    """Raises 422 `unknown_role` for a name none of `roles` has."""
    unknown = sorted(set(names) - {r.name for r in roles})
    if unknown:
        raise UnknownRole(f"Unknown role(s): {', '.join(unknown)}.")


async def set_user_roles(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user: User,
    role_names: list[str],
    grantor: frozenset[str],
    origin: Origin,
) -> list[Role]:
    """Replaces a user's roles, refusing escalation and the loss of the last owner."""
    await lock_tenant(session=session, tenant_id=tenant_id)
    wanted = await roles_named(session=session, tenant_id=tenant_id, names=role_names)
    ensure_known(role_names, wanted)
    current = (await roles_by_user(session=session, tenant_id=tenant_id, user_ids=[user.id])).get(user.id, [])
    added = [r for r in wanted if r.id not in {c.id for c in current}]
    removed = [r for r in current if r.id not in {w.id for w in wanted}]
    ensure_grantable(permissions_of(added) | permissions_of(removed), grantor)
    if any(r.name == OWNER for r in removed) and user.is_active:
        await ensure_other_active_owner(session=session, tenant_id=tenant_id, user_id=user.id)
    for role in removed:
        await session.delete(await session.get_one(UserRole, (user.id, role.id)))
    session.add_all(UserRole(tenant_id=tenant_id, user_id=user.id, role_id=r.id) for r in added)
    await session.flush()
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="user.roles_changed",
        origin=origin,
        target=Ref("user", user.id),
        details={"before": sorted(c.name for c in current), "after": sorted(r.name for r in wanted)},
    )
    return sorted(wanted, key=lambda r: (r.created_at, str(r.id)))
