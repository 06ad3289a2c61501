"""Access tokens whose signature was checked once are remembered by their exact string
(`AccessTokens._verified`). These attacks are made *after* the genuine token has been
used, so the remembered outcome is in place: none of them may ride on it."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

from httpx import AsyncClient

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.security.tokens import (
    ACCESS_TOKEN_TYPE,
    LEEWAY_SECONDS,
    VERIFIED_TOKENS_KEPT,
    AccessTokens,
    TokenKeys,
)
from tests.factories import TenantCtx, create_tenant


async def _used(client: AsyncClient) -> TenantCtx:
    tenant = await create_tenant(client)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    return tenant


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def test_a_tampered_signature_of_a_remembered_token_is_refused(client: AsyncClient) -> None:
    tenant = await _used(client)
    head, payload, signature = tenant.owner.login.access_token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    response = await client.get(tenant.path("/users/me"), headers=_bearer(f"{head}.{payload}.{flipped}"))
    assert response.status_code == 401


async def test_a_changed_payload_under_a_remembered_signature_is_refused(client: AsyncClient) -> None:
    tenant = await _used(client)
    head, payload, signature = tenant.owner.login.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = claims["scope"] + " tenant:delete"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    response = await client.get(tenant.path("/users/me"), headers=_bearer(f"{head}.{forged}.{signature}"))
    assert response.status_code == 401


async def test_a_remembered_token_still_expires(
    client: AsyncClient, clock: FrozenClock, settings: Settings
) -> None:
    tenant = await _used(client)
    clock.advance(seconds=settings.ACCESS_TOKEN_TTL_SECONDS)  # no leeway on its own tokens' exp
    response = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert response.status_code == 401


async def test_a_remembered_tokens_not_before_time_is_checked_on_every_use(
    client: AsyncClient, clock: FrozenClock, settings: Settings
) -> None:
    tenant = await create_tenant(client)
    now = clock.now()
    token = TokenKeys(settings).sign(
        {**_claims(tenant.owner.login.access_token), "nbf": int(now.timestamp()) + 120},
        ACCESS_TOKEN_TYPE,
    )
    for _ in range(2):  # the second use finds the signature's outcome remembered
        assert (await client.get(tenant.path("/users/me"), headers=_bearer(token))).status_code == 401
    clock.advance(seconds=120 - LEEWAY_SECONDS)
    assert (await client.get(tenant.path("/users/me"), headers=_bearer(token))).status_code == 200


async def test_a_remembered_token_is_refused_on_another_tenants_path(client: AsyncClient) -> None:
    tenant = await _used(client)
    other = await create_tenant(client)
    response = await client.get(other.path("/users/me"), headers=tenant.owner.headers)
    assert response.status_code == 401


async def test_a_remembered_token_dies_with_its_session(client: AsyncClient) -> None:
    tenant = await _used(client)
    assert (await client.post(tenant.path("/auth/logout"), headers=tenant.owner.headers)).status_code == 204
    response = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert response.status_code == 401


def test_the_table_of_verified_tokens_is_bounded(settings: Settings, clock: FrozenClock) -> None:
    tokens = AccessTokens(TokenKeys(settings), settings)
    now = clock.now()
    for _ in range(VERIFIED_TOKENS_KEPT + 10):
        token = tokens.issue(
            tenant_slug="t",
            tenant_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            scope=frozenset(),
            amr=("pwd",),
            auth_time=now,
            now=now,
        )
        tokens.verify(token, tenant_slug="t", now=now + timedelta(seconds=1))
    assert 0 < len(tokens._verified) <= VERIFIED_TOKENS_KEPT
