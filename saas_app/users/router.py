"""/t/{tenant}/users: the signed-in user (`me`) and user administration."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth import service as auth
from saas_app.auth import sessions, verification
from saas_app.auth.reauth import confirm_identity
from saas_app.core.changes import tag, tags
from saas_app.core.errors import NotFound
from saas_app.core.http import NO_NUL, json_answer
from saas_app.core.openapi import AUTHENTICATED, RECENT_LOGIN, problems
from saas_app.core.pagination import Page, PageDep
from saas_app.core.readcache import Body, read_through
from saas_app.core.readers import Fetch
from saas_app.guards import CurrentPrincipal, HumanPrincipal, OriginDep, Principal, human_principal, require
from saas_app.rbac import service as rbac
from saas_app.runtime import NowDep, RuntimeDep, SessionDep, cache_memo, runtime_of
from saas_app.tenancy.deps import TenantDep
from saas_app.users import service
from saas_app.users.models import User
from saas_app.users.schemas import (
    ActivationUpdate,
    PasswordChange,
    ProfileUpdate,
    RolesUpdate,
    SessionRead,
    UserRead,
)

# Personal routes: a signed-in user only, never an API key.
me_router = APIRouter(
    prefix="/t/{tenant}/users/me",
    tags=["me"],
    dependencies=[Depends(human_principal)],
    responses=AUTHENTICATED,
)
admin_router = APIRouter(prefix="/t/{tenant}/users", tags=["users"], responses=AUTHENTICATED)


class SessionNotFound(NotFound):
    code = "session_not_found"
    title = "Session not found"


async def describe(session: AsyncSession, tenant_id: uuid.UUID, users: list[User]) -> list[UserRead]:
    """UserRead for each user, with roles and identities loaded in one query each."""
    ids = [u.id for u in users]
    roles = await rbac.roles_by_user(session=session, tenant_id=tenant_id, user_ids=ids)
    identities = await service.identities_by_user(session=session, tenant_id=tenant_id, user_ids=ids)
    return [UserRead.of(u, roles.get(u.id, []), identities.get(u.id, [])) for u in users]


async def _read(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> UserRead:
    user = await service.get_user(session=session, tenant_id=principal.tenant_id, user_id=user_id)
    return (await describe(session, principal.tenant_id, [user]))[0]


def _me(principal: Principal) -> uuid.UUID:
    assert principal.user_id is not None
    return principal.user_id


@me_router.get("", response_model=UserRead)
async def read_me(principal: HumanPrincipal, request: Request) -> Response:
    """Returns the signed-in user."""
    runtime, user_id = runtime_of(request), _me(principal)

    async def load(fetch: Fetch) -> Body:
        user, roles, providers = await service.read_with_roles(fetch, principal.tenant_id, user_id)
        content = UserRead.of(user, roles, providers).model_dump_json().encode()
        return Body(content, (tag("user", user_id), *tags("role", (r.role_id for r in roles))))

    # Cached as sent, until the user, their roles or their identities change.
    body = await read_through(
        runtime.cache,
        runtime.reader,
        ("me", user_id),
        Body,
        load,
        lambda b: b.depends_on,
        cache_memo(request),
    )
    assert body is not None  # get_user answers 404 rather than None
    return json_answer(body.content)


@me_router.patch(
    "",
    responses={
        202: {"model": UserRead, "description": "Accepted: a link was mailed to the new address"},
        **problems(400, 409, 429),
        **RECENT_LOGIN,
    },
)
async def update_me(
    body: ProfileUpdate,
    principal: CurrentPrincipal,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: OriginDep,
    response: Response,
) -> UserRead:
    """Updates the signed-in user's profile. A new `email` applies only once the link
    mailed to it is opened (202); the current address is told."""
    user = await service.get_user(session=session, tenant_id=principal.tenant_id, user_id=_me(principal))
    if body.email is not None:
        # Before any change: confirming a password commits the (empty) unit of work.
        await confirm_identity(
            session=session,
            runtime=runtime,
            principal=principal,
            user=user,
            password=body.password,
            now=origin.now,
        )
    if "full_name" in body.model_fields_set:
        user.full_name = body.full_name
    if body.email is not None:
        await verification.request_change(
            session=session, runtime=runtime, tenant=tenant, user=user, new_email=body.email, origin=origin
        )
        response.status_code = 202
    return await _read(session, principal, user.id)


@me_router.post("/password", status_code=204, responses=problems(400))
async def change_password(
    body: PasswordChange,
    principal: CurrentPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: OriginDep,
) -> Response:
    """Changes the password; every other session of the user ends."""
    await auth.change_password(
        session=session,
        runtime=runtime,
        tenant_id=principal.tenant_id,
        user_id=_me(principal),
        current_session_id=principal.session_id,
        current_password=body.current_password,
        new_password=body.new_password,
        origin=origin,
    )
    return Response(status_code=204)


@me_router.get("/sessions")
async def list_sessions(
    principal: CurrentPrincipal, session: SessionDep, runtime: RuntimeDep, now: NowDep, page: PageDep
) -> Page[SessionRead]:
    """Lists the signed-in user's live sessions."""
    rows, next_cursor = await sessions.list_live(
        session=session,
        tenant_id=principal.tenant_id,
        user_id=_me(principal),
        lifetimes=runtime.lifetimes,
        now=now,
        page=page,
    )
    items = [
        SessionRead(
            id=s.id,
            created_at=s.created_at,
            last_used_at=s.last_used_at,
            user_agent=s.user_agent,
            current=s.id == principal.session_id,
        )
        for s in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


@me_router.delete("/sessions/{sid}", status_code=204)
async def delete_session(
    sid: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, runtime: RuntimeDep, origin: OriginDep
) -> Response:
    """Ends one of the signed-in user's sessions."""
    live = await sessions.get_live(
        session=session,
        tenant_id=principal.tenant_id,
        user_id=_me(principal),
        session_id=sid,
        lifetimes=runtime.lifetimes,
        now=origin.now,
    )
    if live is None:
        raise SessionNotFound()
    await auth.end_session(
        session=session, tenant_id=principal.tenant_id, session_id=sid, origin=origin, reason="user"
    )
    return Response(status_code=204)


@admin_router.get("", dependencies=[Depends(require("users:read"))])
async def list_users(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> Page[UserRead]:
    """Lists the tenant's users, optionally filtered by e-mail or name."""
    rows, next_cursor = await service.list_users(
        session=session, tenant_id=principal.tenant_id, query=q, page=page
    )
    return Page(items=await describe(session, principal.tenant_id, rows), next_cursor=next_cursor)


@admin_router.get("/{user_id}", dependencies=[Depends(require("users:read"))])
async def read_user(user_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep) -> UserRead:
    """Returns one user of the tenant."""
    return await _read(session, principal, user_id)


@admin_router.patch("/{user_id}", dependencies=[Depends(require("users:manage"))], responses=problems(409))
async def update_user(
    user_id: uuid.UUID,
    body: ActivationUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    origin: OriginDep,
) -> UserRead:
    """Activates or deactivates a user; deactivation ends all their sessions."""
    user = await service.get_user(session=session, tenant_id=principal.tenant_id, user_id=user_id)
    # The rule of role changes: act on a user only while holding all they hold (an admin,
    # or an admin's key, cannot lock an owner out or bring back one an owner locked out).
    await rbac.ensure_may_act_on(
        session=session, tenant_id=principal.tenant_id, user_id=user.id, actor=principal.permissions
    )
    await service.set_active(
        session=session,
        tenant_id=principal.tenant_id,
        user=user,
        is_active=body.is_active,
        actor_user_id=principal.user_id,
        origin=origin,
    )
    return await _read(session, principal, user.id)


@admin_router.put(
    "/{user_id}/roles", dependencies=[Depends(require("roles:manage"))], responses=problems(409)
)
async def set_roles(
    user_id: uuid.UUID, body: RolesUpdate, principal: CurrentPrincipal, session: SessionDep, origin: OriginDep
) -> UserRead:
    """Replaces a user's roles (no escalation; the last owner stays)."""
    user = await service.get_user(session=session, tenant_id=principal.tenant_id, user_id=user_id)
    await rbac.set_user_roles(
        session=session,
        tenant_id=principal.tenant_id,
        user=user,
        role_names=body.roles,
        grantor=principal.permissions,
        origin=origin,
    )
    return await _read(session, principal, user.id)
