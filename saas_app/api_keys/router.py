"""/t/{tenant}/api-keys: issue, list and revoke machine credentials (`api_keys:manage`)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response

from saas_app.api_keys import service
from saas_app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from saas_app.auth.errors import NO_STORE
from saas_app.core.openapi import AUTHENTICATED, problems
from saas_app.core.pagination import Page, PageDep
from saas_app.guards import CurrentPrincipal, OriginDep, require
from saas_app.idempotency.service import OnceDep
from saas_app.runtime import RuntimeDep, SessionDep

router = APIRouter(
    prefix="/t/{tenant}/api-keys",
    tags=["api-keys"],
    dependencies=[Depends(require("api_keys:manage"))],
    responses=AUTHENTICATED,
)


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=problems(409, 422))
async def create_key(
    body: ApiKeyCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: OriginDep,
    once: OnceDep,
) -> Response:
    """Issues a key with scopes the caller holds; the key is shown only in this answer
    (and in its replays to the same caller with the same Idempotency-Key, for 24 h).

    Issued by a key, it stays within that key: its scopes, expiry and rate limit (403
    `key_exceeds_parent`), and it is revoked with it. With an `Idempotency-Key`, a retry
    issues nothing twice and gets the same key again.
    """
    once.replay_headers.update(NO_STORE)
    if (stored := await once.replay(session, principal)) is not None:
        return stored
    key, full_key = await service.create_key(
        session=session,
        box=runtime.box,
        tenant_id=principal.tenant_id,
        name=body.name,
        scopes=list(body.scopes),
        grantor=principal.permissions,
        created_by=principal.user_id,  # a key's child acts for the key's creator instead
        expires_in_days=body.expires_in_days,
        rate_limit=body.rate_limit,
        origin=origin,
        parent_id=principal.api_key_id,
    )
    created = ApiKeyCreated(**ApiKeyRead.of(key).model_dump(), key=full_key)
    return await once.answer(session, 201, created, headers=dict(NO_STORE))


@router.get("")
async def list_keys(principal: CurrentPrincipal, session: SessionDep, page: PageDep) -> Page[ApiKeyRead]:
    """Lists the tenant's live keys (never their secrets), with when each was last used."""
    rows, next_cursor = await service.list_keys(session=session, tenant_id=principal.tenant_id, page=page)
    return Page(items=[ApiKeyRead.of(k) for k in rows], next_cursor=next_cursor)


@router.delete("/{key_id}", status_code=204)
async def revoke_key(
    key_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, origin: OriginDep
) -> Response:
    """Revokes a key; it stops working at once."""
    await service.revoke_key(session=session, tenant_id=principal.tenant_id, key_id=key_id, origin=origin)
    return Response(status_code=204)
