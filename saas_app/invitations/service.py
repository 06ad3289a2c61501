"""Invitations (API-v2 §1): an admin invites an address with some roles; whoever opens the
mailed link chooses a password and joins, verified, even while self sign-up is closed.

The roles are clipped to the inviter: nobody invites into a permission they lack (403, the
rule of role changes). At acceptance the inviter (a user, or an API key) must still be
able to grant them, so an invitation does not outlive its inviter's authority.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.api_keys import service as api_keys
from saas_app.api_keys.models import ApiKey
from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth import account_tokens
from saas_app.auth.account_tokens import MAX_TOKEN_LENGTH, InvalidAccountToken
from saas_app.auth.issuance import held_permissions
from saas_app.auth.verification import MAIL_BUCKET
from saas_app.core.errors import Conflict, NotFound
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.guards import Principal
from saas_app.invitations.models import ACCEPTED, EXPIRED, PENDING, REVOKED, Invitation
from saas_app.mail import templates
from saas_app.mail.outbox import enqueue_template
from saas_app.rbac import service as rbac
from saas_app.rbac.models import Role
from saas_app.rbac.service import permissions_of
from saas_app.runtime import Runtime
from saas_app.security.emails import normalize_email
from saas_app.security.opaque import digest
from saas_app.tenancy.cache import TenantInfo
from saas_app.users import service as users
from saas_app.users.models import User
from saas_app.users.service import UserExists

PURPOSE = "invitation"
INVITE = "users:manage"  # what POST /invitations requires (invitations/router.py)


class InvitationNotFound(NotFound):
    code = "invitation_not_found"
    title = "No pending invitation with this id"


class InvitationExists(Conflict):
    code = "invitation_exists"
    title = "A pending invitation for this address exists"


def in_status(status: str, now: datetime) -> ColumnElement[bool]:
    """SQL for `Invitation.status(now) == status`."""
    open_ = and_(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
    return {
        PENDING: and_(open_, Invitation.expires_at > now),
        ACCEPTED: Invitation.accepted_at.is_not(None),
        REVOKED: and_(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_not(None)),
        EXPIRED: and_(open_, Invitation.expires_at <= now),
    }[status]


async def invite(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    email: str,
    role_names: list[str],
    inviter: Principal,
    origin: Origin,
) -> Invitation:
    """Creates an invitation and writes its mail (in the caller's transaction)."""
    email = normalize_email(email)
    # One writer per tenant from here: "no pending invitation for this address" holds at commit.
    await rbac.lock_tenant(session=session, tenant_id=tenant.id)
    roles = await rbac.roles_named(session=session, tenant_id=tenant.id, names=role_names)
    rbac.ensure_known(role_names, roles)
    rbac.ensure_grantable(permissions_of(roles), inviter.permissions)
    if await users.find_by_email(session=session, tenant_id=tenant.id, email=email) is not None:
        raise UserExists()
    pending = select(Invitation.id).where(
        Invitation.tenant_id == tenant.id, Invitation.email == email, in_status(PENDING, origin.now)
    )
    if await session.scalar(pending) is not None:
        raise InvitationExists()
    # Invite, revoke, invite again: a mailbox must not fill with invitations either.
    await runtime.limiter.enforce(MAIL_BUCKET, runtime.settings.FORGOT_PASSWORD_RATE_LIMIT, email)
    token, token_hash = account_tokens.new_token()
    days = runtime.settings.INVITATION_TTL_DAYS
    invitation = Invitation(
        tenant_id=tenant.id,
        email=email,
        roles=[r.name for r in roles],
        invited_by=inviter.user_id,
        invited_by_key=inviter.api_key_id,
        token_hash=token_hash,
        created_at=origin.now,
        expires_at=origin.now + timedelta(days=days),
    )
    session.add(invitation)
    await session.flush()
    await _mail(session, runtime, tenant, invitation, token, inviter.user_id, origin.now)
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="invitation.created",
        origin=origin,
        target=Ref("invitation", invitation.id),
        details={"roles": invitation.roles},
    )
    return invitation


async def _mail(
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    invitation: Invitation,
    token: str,
    inviter_user_id: uuid.UUID | None,
    now: datetime,
) -> None:
    inviter = await session.get(User, inviter_user_id) if inviter_user_id else None
    days = runtime.settings.INVITATION_TTL_DAYS
    enqueue_template(
        session,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        template="invitation",
        purpose=PURPOSE,
        recipient=invitation.email,
        subject=f"You are invited to join {tenant.name}",
        now=now,
        inviter=(inviter.full_name or inviter.email) if inviter else f"An administrator of {tenant.name}",
        email=invitation.email,
        days=f"{days:g}",
        link=templates.page_link(runtime.settings.PUBLIC_URL, tenant.slug, "accept-invite", token),
    )


async def list_invitations(
    *, session: AsyncSession, tenant_id: uuid.UUID, status: str | None, page: PageParams, now: datetime
) -> tuple[list[Invitation], str | None]:
    """A page of the tenant's invitations, newest first, optionally of one status."""
    stmt = select(Invitation).where(Invitation.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(in_status(status, now))
    stmt = keyset_page(stmt, page, Invitation.created_at, Invitation.id, newest_first=True)
    return split_page(list((await session.scalars(stmt)).all()), page)


async def revoke(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    invitation_id: uuid.UUID,
    actor: frozenset[str],
    origin: Origin,
) -> None:
    """Revokes a pending invitation: its link stops working. Only by someone holding the
    permissions it grants (the rule of acting on users)."""
    stmt = select(Invitation).where(
        Invitation.id == invitation_id, Invitation.tenant_id == tenant_id, in_status(PENDING, origin.now)
    )
    invitation = await session.scalar(stmt.with_for_update())
    if invitation is None:
        raise InvitationNotFound()
    rbac.ensure_covers(
        permissions_of(await rbac.roles_named(session=session, tenant_id=tenant_id, names=invitation.roles)),
        actor,
    )
    invitation.revoked_at = origin.now
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="invitation.revoked",
        origin=origin,
        target=Ref("invitation", invitation.id),
    )


def _live(tenant_id: uuid.UUID, token: str, now: datetime) -> ColumnElement[bool]:
    return and_(
        Invitation.token_hash == digest(token), Invitation.tenant_id == tenant_id, in_status(PENDING, now)
    )


async def accept(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    token: str,
    password: str,
    full_name: str | None,
    origin: Origin,
) -> tuple[User, list[Role]]:
    """Creates the invited user, with the invited roles and a verified address (the link
    came to it). Of parallel accepts of one link exactly one succeeds (a conditional
    UPDATE); 409 `user_exists` when the address joined another way meanwhile (the
    invitation stays pending: the unit of work rolls back)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAccountToken()
    # A read first, so that a guessed token costs no password hash.
    if await session.scalar(select(Invitation.id).where(_live(tenant.id, token, origin.now))) is None:
        raise InvalidAccountToken()
    await session.commit()  # the read ends: no lock is held while hashing
    password_hash = await runtime.hasher.hash(password)
    invitation_id = await session.scalar(
        update(Invitation)
        .where(_live(tenant.id, token, origin.now))
        .values(accepted_at=origin.now)
        .returning(Invitation.id)
        .execution_options(synchronize_session=False)
    )
    if invitation_id is None:  # accepted or revoked in between
        raise InvalidAccountToken()
    invitation = await session.get_one(Invitation, invitation_id)
    roles = await rbac.roles_named(session=session, tenant_id=tenant.id, names=invitation.roles)
    if len(roles) != len(invitation.roles):  # a role deleted since: not what was offered
        raise InvalidAccountToken()
    if not await _inviter_still_may(session, runtime, invitation, permissions_of(roles), origin.now):
        raise InvalidAccountToken()
    user, roles = await users.create_user(
        session=session,
        tenant_id=tenant.id,
        email=invitation.email,
        password_hash=password_hash,
        full_name=full_name,
        role_names=[r.name for r in roles],
        origin=origin,
        email_verified=True,
    )
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="invitation.accepted",
        origin=Origin(actor=Ref("user", user.id), ip=origin.ip, now=origin.now),
        target=Ref("invitation", invitation.id),
        details={"roles": sorted(r.name for r in roles)},
    )
    return user, roles


async def _inviter_still_may(
    session: AsyncSession, runtime: Runtime, invitation: Invitation, granted: frozenset[str], now: datetime
) -> bool:
    """Whether who invited could invite so now: an active user holding `users:manage` and
    `granted`, or a live API key whose permissions (its scopes, within its creator's) do."""
    tenant_id, granted = invitation.tenant_id, granted | {INVITE}
    if invitation.invited_by is not None:
        inviter = await session.get(User, invitation.invited_by)
        if inviter is None or inviter.tenant_id != tenant_id or not inviter.is_active:
            return False
        return granted <= await held_permissions(session=session, tenant_id=tenant_id, user_id=inviter.id)
    if invitation.invited_by_key is not None:
        prefix = await session.scalar(
            select(ApiKey.prefix).where(ApiKey.id == invitation.invited_by_key, ApiKey.tenant_id == tenant_id)
        )
        if prefix is None:
            return False
        key = await runtime.reader.run(lambda fetch: api_keys.load_record(fetch, prefix))
        return (
            key is not None
            and key.is_live(now)
            and key.permissions is not None
            and granted <= key.permissions
        )
    return False  # the inviter is gone
