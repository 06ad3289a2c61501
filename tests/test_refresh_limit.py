"""The refresh grant has its own limit, per session (issue 13 item 13): a backend or a
proxy refreshing for its users from one IP is not throttled like password guessing, and a
runaway client is slowed down per session with an RFC 6749 §5.2 `slow_down` answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from httpx import AsyncClient, Response

from saas_app.core.config import Settings
from tests.factories import TenantCtx, create_tenant, login, token

LOGIN_LIMIT = 10  # LOGIN_RATE_LIMIT's default, per minute and client IP


async def refresh(client: AsyncClient, tenant: TenantCtx, refresh_token: str) -> Response:
    return await token(client, tenant.slug, grant_type="refresh_token", refresh_token=refresh_token)


async def password(client: AsyncClient, tenant: TenantCtx) -> Response:
    owner = tenant.owner
    return await token(
        client, tenant.slug, grant_type="password", username=owner.email, password=owner.password
    )


def assert_slow_down(response: Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "slow_down"
    assert response.json()["error_description"]
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["cache-control"] == "no-store"


@pytest.fixture
def limited(make_client: Callable[..., Any], make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    def build(**overrides: str) -> Any:
        login_limit = f"{LOGIN_LIMIT}/minute"
        return make_client(make_settings(RATE_LIMITS_ENABLED=True, LOGIN_RATE_LIMIT=login_limit, **overrides))

    return build


@pytest.fixture
async def proxy(limited: Callable[..., Any]) -> AsyncIterator[tuple[AsyncClient, TenantCtx]]:
    """One client IP (the ASGI client's) for every request: a proxy or a backend."""
    async with limited(REFRESH_RATE_LIMIT="60/minute") as client:
        yield client, await create_tenant(client)


async def test_thirty_refreshes_from_one_ip_pass_while_password_grants_stay_limited(
    proxy: tuple[AsyncClient, TenantCtx],
) -> None:
    client, tenant = proxy
    current = (await login(client, tenant.slug, tenant.owner.email)).refresh_token
    for _ in range(30):
        response = await refresh(client, tenant, current)
        assert response.status_code == 200, response.text
        current = response.json()["refresh_token"]
    # create_tenant's and the login above took 2 of the IP's password-grant slots.
    for _ in range(LOGIN_LIMIT - 2):
        assert (await password(client, tenant)).status_code == 200
    assert_slow_down(await password(client, tenant))
    # Refreshing is still allowed from the throttled IP: its limit is the session's.
    assert (await refresh(client, tenant, current)).status_code == 200


async def test_a_session_over_its_refresh_limit_gets_slow_down_and_keeps_its_token(
    limited: Callable[..., Any],
) -> None:
    async with limited(REFRESH_RATE_LIMIT="3/minute") as client:
        tenant = await create_tenant(client)
        current = (await login(client, tenant.slug, tenant.owner.email)).refresh_token
        for _ in range(3):
            response = await refresh(client, tenant, current)
            assert response.status_code == 200, response.text
            current = response.json()["refresh_token"]
        assert_slow_down(await refresh(client, tenant, current))
        # The refused refresh retired nothing: retrying the same token is throttled again,
        # not treated as a replay (which would revoke the session, RFC 9700 §4.14.2).
        assert_slow_down(await refresh(client, tenant, current))
        # The limit is per session: another session of the same user, same IP, refreshes.
        other = (await login(client, tenant.slug, tenant.owner.email)).refresh_token
        assert (await refresh(client, tenant, other)).status_code == 200


async def test_bad_refresh_tokens_from_one_ip_are_slowed_down(limited: Callable[..., Any]) -> None:
    """No session to count against: an IP sending unknown refresh tokens is limited as
    guessing is, in a bucket of its own."""
    async with limited(REFRESH_RATE_LIMIT="60/minute") as client:
        tenant = await create_tenant(client)
        for _ in range(LOGIN_LIMIT):
            response = await refresh(client, tenant, "rt_" + "x" * 43)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "invalid_grant"
        assert_slow_down(await refresh(client, tenant, "rt_" + "x" * 43))
