"""Token introspection (RFC 7662, API-v2 §2): live access tokens, refresh tokens and API keys
of this tenant are active; anything else is `{"active": false}`, one answer for all. Asked
by a caller holding `tokens:introspect`, with our own client and with Authlib's."""

from __future__ import annotations

from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client
from httpx import ASGITransport, AsyncClient, Response

from saas_app.security.tokens import FIRST_PARTY_CLIENT
from tests.factories import TenantCtx, add_member, create_api_key, create_tenant, token


async def introspect(client: AsyncClient, tenant: TenantCtx, value: str, **extra: str) -> Response:
    return await client.post(
        tenant.path("/auth/introspect"), data={"token": value, **extra}, headers=tenant.owner.headers
    )


async def active(client: AsyncClient, tenant: TenantCtx, value: str) -> dict[str, Any]:
    answer = await introspect(client, tenant, value)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    return body


async def test_a_live_access_token_is_active_with_what_it_carries(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    body = await active(client, tenant, member.login.access_token)
    assert body["active"] is True
    assert body["token_type"] == "access_token"
    assert (body["sub"], body["username"], body["client_id"]) == (member.id, member.email, FIRST_PARTY_CLIENT)
    assert body["scope"] == "projects:read projects:write"
    assert body["iss"].endswith(f"/t/{tenant.slug}")
    assert {"tid", "sid", "exp", "iat", "aud", "jti"} <= set(body)
    assert (await client.post(tenant.path("/auth/logout"), headers=member.headers)).status_code == 204
    assert await active(client, tenant, member.login.access_token) == {"active": False}  # its session ended


async def test_a_refresh_token_is_active_until_it_is_used(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    body = await active(client, tenant, member.login.refresh_token)
    assert (body["active"], body["token_type"], body["sub"]) == (True, "refresh_token", member.id)
    # Unused for SESSION_IDLE_DAYS it stops working: `exp` says so, not the 30-day end.
    settings = client.app.state.runtime.settings  # type: ignore[attr-defined]
    assert body["exp"] - body["iat"] <= settings.SESSION_IDLE_DAYS * 86400
    hinted = await introspect(client, tenant, member.login.refresh_token, token_type_hint="access_token")
    assert hinted.json()["token_type"] == "refresh_token"  # a wrong hint changes nothing
    rotated = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=member.login.refresh_token
    )
    assert rotated.status_code == 200
    assert await active(client, tenant, member.login.refresh_token) == {"active": False}
    fresh = await active(client, tenant, rotated.json()["refresh_token"])
    assert fresh["active"] is True


async def test_an_api_key_is_active_until_revoked(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    key = await create_api_key(client, tenant, "projects:read")
    body = await active(client, tenant, key.key)
    assert (body["active"], body["token_type"], body["client_id"], body["scope"]) == (
        True,
        "api_key",
        key.id,
        "projects:read",
    )
    assert (
        await client.delete(tenant.path(f"/api-keys/{key.id}"), headers=tenant.owner.headers)
    ).status_code == 204
    assert await active(client, tenant, key.key) == {"active": False}


async def test_anything_not_live_here_is_one_inactive_answer(client: AsyncClient) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    other_key = await create_api_key(client, other, "projects:read")
    for value in (
        other.owner.login.access_token,  # another tenant's
        other.owner.login.refresh_token,
        other_key.key,
        "garbage",
        "a.b.c",
        "x" * 4000,
    ):
        assert await active(client, tenant, value) == {"active": False}, value[:20]
    missing = await client.post(tenant.path("/auth/introspect"), data={}, headers=tenant.owner.headers)
    assert (missing.status_code, missing.json()["code"]) == (400, "invalid_request")
    assert missing.headers["content-type"] == "application/problem+json"


async def test_only_a_caller_with_tokens_introspect_may_ask(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    path, form = tenant.path("/auth/introspect"), {"token": member.login.access_token}
    assert (await client.post(path, data=form)).status_code == 401
    assert (await client.post(path, data=form, headers=member.headers)).status_code == 403
    admin = await add_member(client, tenant, "admin")  # built-in admins hold it
    assert (await client.post(path, data=form, headers=admin.headers)).json()["active"] is True
    key = await create_api_key(client, tenant, "tokens:introspect")  # a resource server's key
    assert (await client.post(path, data=form, headers=key.headers)).json()["active"] is True


async def test_authlibs_client_introspects_a_token(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    key = await create_api_key(client, tenant, "tokens:introspect")
    transport = ASGITransport(app=client._transport.app)  # type: ignore[attr-defined]
    async with AsyncOAuth2Client(
        token_endpoint_auth_method="none", transport=transport, base_url="http://testserver"
    ) as oauth:
        answer = await oauth.introspect_token(
            f"http://testserver{tenant.path('/auth/introspect')}",
            token=tenant.owner.login.access_token,
            headers={"X-API-Key": key.key},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is True
    assert answer.json()["sub"] == tenant.owner.id
