"""Tenants: sign-up of a new tenant with its owner, lookup by slug, settings."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.core.errors import Conflict, Forbidden, NotFound
from saas_app.rbac import service as rbac
from saas_app.rbac.models import Role
from saas_app.rbac.permissions import OWNER
from saas_app.tenancy.models import Tenant
from saas_app.users import service as users
from saas_app.users.models import User


class TenantNotFound(NotFound):
    code = "tenant_not_found"
    title = "Tenant not found"


class TenantExists(Conflict):
    code = "tenant_exists"
    title = "A tenant with this slug already exists"


class SignupClosed(Forbidden):
    code = "signup_closed"
    title = "Sign-up is closed"


async def get_by_slug(*, session: AsyncSession, slug: str) -> Tenant:
    """Returns a tenant by slug, or raises TenantNotFound."""
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise TenantNotFound()
    return tenant


async def create_tenant(
    *,
    session: AsyncSession,
    slug: str,
    name: str,
    owner_email: str,
    owner_password_hash: str | None,
    owner_full_name: str | None,
    origin: Origin,
) -> tuple[Tenant, User, list[Role]]:
    """Creates a tenant, its built-in roles and its first owner."""
    tenant = Tenant(id=uuid.uuid4(), slug=slug, name=name, allow_signup=True, created_at=origin.now)
    session.add(tenant)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise TenantExists(f"The slug {slug!r} is taken.") from exc
    await rbac.create_builtin_roles(session=session, tenant_id=tenant.id, now=origin.now)
    await session.flush()
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="tenant.created",
        origin=origin,
        target=Ref("tenant", tenant.id),
        details={"slug": slug},
    )
    owner, roles = await users.create_user(
        session=session,
        tenant_id=tenant.id,
        email=owner_email,
        password_hash=owner_password_hash,
        full_name=owner_full_name,
        role_names=[OWNER],
        origin=origin,
    )
    return tenant, owner, roles


async def update_tenant(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str | None,
    allow_signup: bool | None,
    mfa_required: bool | None,
    require_verified_email: bool | None,
    origin: Origin,
) -> Tenant:
    """Renames a tenant, opens/closes its self sign-up, sets its login policies."""
    tenant = await session.get_one(Tenant, tenant_id)
    changes: dict[str, object] = {}
    if name is not None and name != tenant.name:
        tenant.name = changes["name"] = name
    if allow_signup is not None and allow_signup != tenant.allow_signup:
        tenant.allow_signup = changes["allow_signup"] = allow_signup
    if mfa_required is not None and mfa_required != tenant.mfa_required:
        tenant.mfa_required = changes["mfa_required"] = mfa_required
    if require_verified_email is not None and require_verified_email != tenant.require_verified_email:
        tenant.require_verified_email = changes["require_verified_email"] = require_verified_email
    if changes:
        await audit.record(
            session=session,
            tenant_id=tenant.id,
            action="tenant.updated",
            origin=origin,
            target=Ref("tenant", tenant.id),
            details=changes,
        )
    return tenant
