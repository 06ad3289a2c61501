"""Users of a tenant: creation, lookup, profile and activation."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth.pending import end_every_way_in
from saas_app.core.errors import Conflict, NotFound
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.core.readers import Fetch, Query, Row
from saas_app.rbac import service as rbac
from saas_app.rbac.models import Role, UserRole
from saas_app.rbac.permissions import OWNER
from saas_app.security.emails import normalize_email
from saas_app.users.models import Identity, User


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "User not found"


class UserExists(Conflict):
    code = "user_exists"
    title = "A user with this e-mail already exists"


class SelfDeactivation(Conflict):
    code = "self_deactivation"
    title = "You cannot deactivate yourself; another admin can"


async def create_user(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    email: str,
    password_hash: str | None,
    full_name: str | None,
    role_names: list[str],
    origin: Origin,
    email_verified: bool = False,
) -> tuple[User, list[Role]]:
    """Creates a user with the given roles; raises UserExists for a taken e-mail.

    `email_verified` only when the address was proven (GitHub's verified primary e-mail):
    never for a password registration, whose e-mail nobody has checked.
    """
    user = User(
        tenant_id=tenant_id,
        email=normalize_email(email),  # idempotent: schemas fold already
        full_name=full_name,
        password_hash=password_hash,
        is_active=True,
        email_verified_at=origin.now if email_verified else None,
        created_at=origin.now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise UserExists() from exc
    roles = list(
        (
            await session.scalars(select(Role).where(Role.tenant_id == tenant_id, Role.name.in_(role_names)))
        ).all()
    )
    session.add_all(UserRole(tenant_id=tenant_id, user_id=user.id, role_id=r.id) for r in roles)
    await session.flush()
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="user.created",
        origin=origin,
        target=Ref("user", user.id),
        details={"roles": sorted(r.name for r in roles)},
    )
    return user, roles


async def get_user(*, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User:
    """Returns a user of the tenant by id, or raises UserNotFound."""
    user = await session.scalar(select(User).where(User.id == user_id, User.tenant_id == tenant_id))
    if user is None:
        raise UserNotFound()
    return user


# The signed-in user with their roles and linked providers, in one statement (rows: roles ×
# providers, a handful), as columns named like UserRead's sources (`email_verified` and
# `mfa_enabled` computed as the model's properties are). Built once; run by the read
# cache's load of GET /users/me.
ME_QUERY = Query(
    select(
        User.id,
        User.email,
        User.email_verified_at.is_not(None).label("email_verified"),
        User.full_name,
        User.is_active,
        User.totp_confirmed_at.is_not(None).label("mfa_enabled"),
        User.created_at,
        Role.id.label("role_id"),
        Role.name,
        Role.permissions,
        Identity.provider,
    )
    .outerjoin(UserRole, (UserRole.user_id == User.id) & (UserRole.tenant_id == User.tenant_id))
    .outerjoin(Role, Role.id == UserRole.role_id)
    .outerjoin(Identity, (Identity.user_id == User.id) & (Identity.tenant_id == User.tenant_id))
    .where(User.id == bindparam("uid"), User.tenant_id == bindparam("tid"))
    .order_by(Role.created_at, Role.id, Identity.provider)
)


async def read_with_roles(
    fetch: Fetch, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Row, list[Row], list[str]]:
    """The user's row, their roles' rows (`role_id`, `name`, `permissions`; oldest first)
    and providers (by name); raises UserNotFound."""
    rows = await fetch.all(ME_QUERY, {"uid": user_id, "tid": tenant_id})
    if not rows:
        raise UserNotFound()
    roles = list({row.role_id: row for row in rows if row.role_id is not None}.values())
    providers = sorted({row.provider for row in rows if row.provider is not None})
    return rows[0], roles, providers


async def find_by_email(*, session: AsyncSession, tenant_id: uuid.UUID, email: str) -> User | None:
    """Returns the tenant's user with this e-mail (any case or look-alike spelling), if any."""
    stmt = select(User).where(User.tenant_id == tenant_id, User.email == normalize_email(email))
    return await session.scalar(stmt)


async def list_users(
    *, session: AsyncSession, tenant_id: uuid.UUID, query: str | None, page: PageParams
) -> tuple[list[User], str | None]:
    """Returns a page of users, optionally those whose e-mail or name contains `query`."""
    stmt = select(User).where(User.tenant_id == tenant_id)
    if query:
        # Addresses are stored folded: fold the query the same way to find them.
        email_pattern = f"%{_escape_like(normalize_email(query))}%"
        name_pattern = f"%{_escape_like(query.lower())}%"
        stmt = stmt.where(
            or_(
                User.email.like(email_pattern, escape="\\"),
                func.lower(User.full_name).like(name_pattern, escape="\\"),
            )
        )
    stmt = keyset_page(stmt, page, User.created_at, User.id)
    return split_page(list((await session.scalars(stmt)).all()), page)


async def identities_by_user(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """Returns the linked providers of each user ("github", ...), in one query."""
    if not user_ids:
        return {}
    stmt = (
        select(Identity.user_id, Identity.provider)
        .where(Identity.tenant_id == tenant_id, Identity.user_id.in_(user_ids))
        .order_by(Identity.provider)
    )
    result: dict[uuid.UUID, list[str]] = {}
    for user_id, provider in (await session.execute(stmt)).all():
        result.setdefault(user_id, []).append(provider)
    return result


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def set_active(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user: User,
    is_active: bool,
    actor_user_id: uuid.UUID | None,
    origin: Origin,
) -> User:
    """Activates or deactivates a user; deactivation ends all their sessions and pending
    logins (`mfa_token`s, login codes) at once.

    Refused: deactivating the last active owner (409 `last_owner`), and deactivating
    oneself (409 `self_deactivation`: nobody could undo it but another admin).
    """
    if user.is_active == is_active:
        return user
    if not is_active:
        await rbac.lock_tenant(session=session, tenant_id=tenant_id)
        roles = await rbac.roles_by_user(session=session, tenant_id=tenant_id, user_ids=[user.id])
        if any(r.name == OWNER for r in roles.get(user.id, [])):
            await rbac.ensure_other_active_owner(session=session, tenant_id=tenant_id, user_id=user.id)
        if user.id == actor_user_id:
            raise SelfDeactivation()
        # A login left half-way (an `mfa_token`, an unused GitHub login code, a reset link)
        # must not be finished after a reactivation: deactivation ends every way in, not
        # only sessions (ASVS 5.0 V7.4.1).
        await end_every_way_in(session=session, tenant_id=tenant_id, user_id=user.id, now=origin.now)
    user.is_active = is_active
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="user.deactivated" if not is_active else "user.activated",
        origin=origin,
        target=Ref("user", user.id),
    )
    return user
