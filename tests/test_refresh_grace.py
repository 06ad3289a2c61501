"""REFRESH_REUSE_GRACE_SECONDS (issue 15): a client whose refresh answer was lost may retry
within the grace and gets the same next token, never a new family, and never once that
next token has been used. Off by default: a second presentation is theft (RFC 9700
§4.14.2), as tests/test_auth.py checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.housekeeping import purge_expired
from saas_app.security.opaque import digest
from tests.factories import TenantCtx, create_tenant, login, token

GRACE = 30


@pytest.fixture
async def graced(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[AsyncClient]:
    async with make_client(make_settings(REFRESH_REUSE_GRACE_SECONDS=GRACE)) as client:
        yield client


async def refresh(client: AsyncClient, tenant: TenantCtx, refresh_token: str) -> Response:
    return await token(client, tenant.slug, grant_type="refresh_token", refresh_token=refresh_token)


async def actions(client: AsyncClient, tenant: TenantCtx, action: str) -> list[dict[str, Any]]:
    owner = await login(client, tenant.slug, tenant.owner.email)
    listed = await client.get(tenant.path("/audit-events"), params={"action": action}, headers=owner.headers)
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def test_a_retry_within_the_grace_gets_the_same_next_token(graced: AsyncClient) -> None:
    tenant = await create_tenant(graced)
    first = await login(graced, tenant.slug, tenant.owner.email)
    rotated = await refresh(graced, tenant, first.refresh_token)
    assert rotated.status_code == 200, rotated.text
    retried = await refresh(graced, tenant, first.refresh_token)  # its answer was lost
    assert retried.status_code == 200, retried.text
    assert retried.json()["refresh_token"] == rotated.json()["refresh_token"]  # no new family
    me = await graced.get(
        tenant.path("/users/me"), headers={"Authorization": f"Bearer {retried.json()['access_token']}"}
    )
    assert me.status_code == 200
    assert await actions(graced, tenant, "token.reuse_detected") == []
    refreshed = await actions(graced, tenant, "token.refreshed")
    assert [e["details"].get("replayed") for e in refreshed].count("1") == 1
    # And the next token goes on working as usual.
    onward = await refresh(graced, tenant, rotated.json()["refresh_token"])
    assert onward.status_code == 200, onward.text


async def test_once_the_next_token_is_used_a_retry_is_theft(graced: AsyncClient) -> None:
    tenant = await create_tenant(graced)
    first = await login(graced, tenant.slug, tenant.owner.email)
    rotated = await refresh(graced, tenant, first.refresh_token)
    onward = await refresh(graced, tenant, rotated.json()["refresh_token"])
    assert onward.status_code == 200
    replayed = await refresh(graced, tenant, first.refresh_token)
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"
    # The whole session ends: the newest token too.
    assert (await refresh(graced, tenant, onward.json()["refresh_token"])).status_code == 400
    assert len(await actions(graced, tenant, "token.reuse_detected")) == 1


async def test_after_the_grace_a_retry_is_theft(graced: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(graced)
    first = await login(graced, tenant.slug, tenant.owner.email)
    rotated = await refresh(graced, tenant, first.refresh_token)
    assert rotated.status_code == 200
    clock.advance(seconds=GRACE + 1)
    replayed = await refresh(graced, tenant, first.refresh_token)
    assert replayed.status_code == 400
    assert (await refresh(graced, tenant, rotated.json()["refresh_token"])).status_code == 400


async def test_without_a_grace_nothing_is_kept_and_a_retry_is_theft(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    first = await login(client, tenant.slug, tenant.owner.email)
    assert (await refresh(client, tenant, first.refresh_token)).status_code == 200
    assert (await refresh(client, tenant, first.refresh_token)).status_code == 400
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        kept = await connection.scalar(text("SELECT count(*) FROM refresh_token WHERE successor IS NOT NULL"))
    assert kept == 0


async def test_the_kept_successor_is_sealed_never_in_clear(graced: AsyncClient) -> None:
    tenant = await create_tenant(graced)
    first = await login(graced, tenant.slug, tenant.owner.email)
    rotated = (await refresh(graced, tenant, first.refresh_token)).json()["refresh_token"]
    engine = graced.app.state.runtime.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        sealed = await connection.scalar(
            text("SELECT successor FROM refresh_token WHERE token_hash = :h"),
            {"h": digest(first.refresh_token)},
        )
    assert sealed
    assert rotated not in sealed
    assert graced.app.state.runtime.box.decrypt(sealed) == rotated  # type: ignore[attr-defined]


async def sealed_successors(client: AsyncClient) -> int:
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM refresh_token WHERE successor IS NOT NULL")
        )
    return int(count)


async def test_a_kept_successor_goes_at_the_next_rotation_or_after_the_grace(
    graced: AsyncClient, clock: FrozenClock
) -> None:
    """The sealed successor is a live credential: kept no longer than it can serve."""
    tenant = await create_tenant(graced)
    first = await login(graced, tenant.slug, tenant.owner.email)
    second = (await refresh(graced, tenant, first.refresh_token)).json()["refresh_token"]
    assert await sealed_successors(graced) == 1
    third = (await refresh(graced, tenant, second)).json()["refresh_token"]
    assert await sealed_successors(graced) == 1  # the first's went; the second keeps the third
    clock.advance(seconds=301)
    runtime = graced.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.write_session_factory() as session, session.begin():
        counts = await purge_expired(session=session, now=clock.now(), idle=runtime.lifetimes.idle)
    assert counts["refresh_successor"] == 1
    assert await sealed_successors(graced) == 0
    onward = await refresh(graced, tenant, third)  # the live chain goes on regardless
    assert onward.status_code == 200, onward.text
