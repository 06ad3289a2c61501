"""The hot-path read cache is exact: any change, made by any worker, shows on the next
request. Two apps on one database stand for two workers (each has its own cache)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from httpx import AsyncClient

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.core.readcache import NoDataVersion, ReadCache
from saas_app.tenancy import service as tenancy_service
from tests.conftest import ON_POSTGRES
from tests.factories import (
    add_member,
    create_api_key,
    create_tenant,
    enable_mfa,
    login,
    login_with_otp,
    token,
)


@pytest.fixture
async def workers(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(make_client(make_settings()))
        second = await stack.enter_async_context(make_client(make_settings()))
        yield first, second


async def test_a_demotion_through_another_worker_applies_on_the_next_request(
    workers: tuple[AsyncClient, AsyncClient],
) -> None:
    first, second = workers
    tenant = await create_tenant(first)
    member = await add_member(first, tenant)
    for _ in range(3):  # warm the first worker's cache
        assert (
            await first.post(tenant.path("/projects"), json={"name": "p"}, headers=member.headers)
        ).status_code == 201
    demoted = await second.put(
        tenant.path(f"/users/{member.id}/roles"), json={"roles": ["viewer"]}, headers=tenant.owner.headers
    )
    assert demoted.status_code == 200
    refused = await first.post(tenant.path("/projects"), json={"name": "p"}, headers=member.headers)
    assert refused.status_code == 403
    me = await first.get(tenant.path("/users/me"), headers=member.headers)
    assert me.json()["roles"] == ["viewer"]


async def test_a_logout_through_another_worker_ends_the_session_everywhere(
    workers: tuple[AsyncClient, AsyncClient],
) -> None:
    first, second = workers
    tenant = await create_tenant(first)
    assert (await first.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert (await second.post(tenant.path("/auth/logout"), headers=tenant.owner.headers)).status_code == 204
    assert (await first.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 401


async def test_a_key_revoked_through_another_worker_stops_at_once(
    workers: tuple[AsyncClient, AsyncClient],
) -> None:
    first, second = workers
    tenant = await create_tenant(first)
    key = await create_api_key(first, tenant, "projects:read")
    assert (await first.get(tenant.path("/projects"), headers=key.headers)).status_code == 200
    revoked = await second.delete(tenant.path(f"/api-keys/{key.id}"), headers=tenant.owner.headers)
    assert revoked.status_code == 204
    assert (await first.get(tenant.path("/projects"), headers=key.headers)).status_code == 401


async def test_a_profile_change_shows_in_users_me_of_every_worker(
    workers: tuple[AsyncClient, AsyncClient],
) -> None:
    first, second = workers
    tenant = await create_tenant(first)
    assert (await first.get(tenant.path("/users/me"), headers=tenant.owner.headers)).json()[
        "full_name"
    ] == "Owner"
    renamed = await second.patch(
        tenant.path("/users/me"), json={"full_name": "Ada"}, headers=tenant.owner.headers
    )
    assert renamed.status_code == 200
    assert (await first.get(tenant.path("/users/me"), headers=tenant.owner.headers)).json()[
        "full_name"
    ] == "Ada"


async def test_the_cache_serves_repeat_reads_while_nothing_changes(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    cache: ReadCache = client.app.state.runtime.cache  # type: ignore[attr-defined]
    await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    version = await cache.version()
    assert version is not None  # SQLite's data_version, or PostgreSQL's cache_epoch
    assert cache.get(("me", _uuid(tenant.owner.id)), version) is not None


async def test_without_a_change_signal_nothing_is_cached() -> None:
    cache = ReadCache(NoDataVersion())
    version = await cache.version()
    cache.put("k", "v", version)
    assert cache.get("k", version) is None


def _uuid(value: str) -> Any:
    import uuid  # noqa: PLC0415

    return uuid.UUID(value)


async def test_a_project_created_through_another_worker_is_listed_at_once(
    workers: tuple[AsyncClient, AsyncClient],
) -> None:
    first, second = workers
    tenant = await create_tenant(first)
    key = await create_api_key(first, tenant, "projects:read")
    for headers in (key.headers, tenant.owner.headers):  # warm both callers' views of the list
        assert (await first.get(tenant.path("/projects"), headers=headers)).json()["items"] == []
    created = await second.post(
        tenant.path("/projects"), json={"name": "Apollo"}, headers=tenant.owner.headers
    )
    assert created.status_code == 201
    for headers in (key.headers, tenant.owner.headers):
        listed = await first.get(tenant.path("/projects"), headers=headers)
        assert [p["name"] for p in listed.json()["items"]] == ["Apollo"]


async def test_one_tenants_cached_list_is_never_another_tenants(client: AsyncClient) -> None:
    first = await create_tenant(client)
    second = await create_tenant(client)
    assert (
        await client.post(first.path("/projects"), json={"name": "Mine"}, headers=first.owner.headers)
    ).status_code == 201
    assert [
        p["name"]
        for p in (await client.get(first.path("/projects"), headers=first.owner.headers)).json()["items"]
    ] == ["Mine"]
    other = await client.get(second.path("/projects"), headers=second.owner.headers)
    assert other.json()["items"] == []


async def _epoch(client: AsyncClient) -> int | None:
    cache: ReadCache = client.app.state.runtime.cache  # type: ignore[attr-defined]
    return await cache.version()


@pytest.mark.skipif(not ON_POSTGRES, reason="cache_epoch is PostgreSQL's signal; SQLite has data_version")
async def test_on_postgres_a_write_moves_the_epoch_and_a_read_does_not(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    before = await _epoch(client)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert (await client.get(tenant.path("/projects"), headers=tenant.owner.headers)).status_code == 200
    assert await _epoch(client) == before
    renamed = await client.patch(
        tenant.path("/users/me"), json={"full_name": "Ada"}, headers=tenant.owner.headers
    )
    assert renamed.status_code == 200
    after = await _epoch(client)
    assert before is not None
    assert after is not None
    assert after > before


@pytest.mark.skipif(not ON_POSTGRES, reason="cache_epoch is PostgreSQL's signal; SQLite has data_version")
async def test_on_postgres_a_refused_write_leaves_the_epoch(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    before = await _epoch(client)
    # Same name twice: the second insert fails and its transaction (bump included) rolls back.
    assert (
        await client.post(
            tenant.path("/roles"), json={"name": "ops", "permissions": []}, headers=tenant.owner.headers
        )
    ).status_code == 201
    middle = await _epoch(client)
    again = await client.post(
        tenant.path("/roles"), json={"name": "ops", "permissions": []}, headers=tenant.owner.headers
    )
    assert again.status_code == 409
    assert before is not None
    assert middle is not None
    assert middle > before
    assert await _epoch(client) == middle


async def test_mfa_required_through_another_worker_applies_to_the_next_login(
    workers: tuple[AsyncClient, AsyncClient], clock: FrozenClock
) -> None:
    """Issue 13 item 4: a tenant's security policy reaches every worker at once, as a
    revocation does; no worker keeps issuing password-only tokens from a stale copy."""
    first, second = workers
    tenant = await create_tenant(first)
    member = await add_member(first, tenant)
    authenticator = await enable_mfa(first, tenant, tenant.owner, clock)
    owner = await login_with_otp(first, tenant.slug, tenant.owner.email, authenticator)
    await login(second, tenant.slug, member.email)  # the second worker now knows the tenant
    required = await first.patch(tenant.path(), json={"mfa_required": True}, headers=owner.headers)
    assert required.status_code == 200, required.text
    response = await token(
        second, tenant.slug, grant_type="password", username=member.email, password=member.password
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "mfa_enrollment_required"
    assert "access_token" not in response.json()


async def test_a_bearer_request_reads_the_change_signal_once_and_the_tenant_from_cache(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenant is cached under the same change signal as the session: a warm bearer
    request reads the signal once (tenant and session share it) and loads no tenant."""
    tenant = await create_tenant(client)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    cache: ReadCache = client.app.state.runtime.cache  # type: ignore[attr-defined]
    signal = cache._data_version
    reads = loads = 0
    read_signal, load_tenant = signal.current, tenancy_service.get_by_slug

    async def counted_read() -> int | None:
        nonlocal reads
        reads += 1
        return await read_signal()

    async def counted_load(**kwargs: Any) -> Any:
        nonlocal loads
        loads += 1
        return await load_tenant(**kwargs)

    monkeypatch.setattr(signal, "current", counted_read)
    monkeypatch.setattr(tenancy_service, "get_by_slug", counted_load)
    for method in ("GET", "POST"):  # POST: logout, after which the session is gone
        reads = loads = 0
        path = "/users/me" if method == "GET" else "/auth/logout"
        warm = await client.request(method, tenant.path(path), headers=tenant.owner.headers)
        assert warm.status_code in (200, 204), warm.text
        assert reads == 1
        assert loads == 0
