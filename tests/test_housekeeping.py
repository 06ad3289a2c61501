"""purge-expired removes only records nobody can use any more."""

from __future__ import annotations

from datetime import timedelta

from httpx import AsyncClient

from saas_app.core.clock import FrozenClock
from saas_app.housekeeping import purge_expired
from tests.factories import DEFAULT_PASSWORD, create_tenant, login, token


async def _purge(client: AsyncClient, clock: FrozenClock) -> dict[str, int]:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.write_session_factory() as session, session.begin():
        return await purge_expired(session=session, now=clock.now(), idle=runtime.lifetimes.idle)


async def test_fresh_records_are_kept(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    assert await _purge(client, clock) == dict.fromkeys(
        (
            "spent_state",
            "login_code",
            "mfa_challenge",
            "idempotent_answer",
            "account_token",
            "invitation",
            "mail_message",
            "refresh_successor",
            "refresh_token",
            "session",
        ),
        0,
    )
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200


async def test_long_ended_sessions_go_and_live_ones_stay(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    ended = await login(client, tenant.slug, tenant.owner.email)
    assert (await client.post(tenant.path("/auth/logout"), headers=ended.headers)).status_code == 204
    clock.advance(days=31)
    live = await login(client, tenant.slug, tenant.owner.email)  # a login made today
    counts = await _purge(client, clock)
    # The logged-out session ended 31 days ago: it goes, with its refresh token. The
    # factory's login expired only a day ago (30-day lifetime): it is kept for 30 more days.
    assert counts["session"] == 1
    assert counts["refresh_token"] == 1
    assert (await client.get(tenant.path("/users/me"), headers=live.headers)).status_code == 200
    refreshed = await token(client, tenant.slug, grant_type="refresh_token", refresh_token=live.refresh_token)
    assert refreshed.status_code == 200, refreshed.text


async def test_expired_mfa_challenges_go(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    start = await client.post(tenant.path("/users/me/mfa/totp"), json={}, headers=tenant.owner.headers)
    import pyotp  # noqa: PLC0415

    code = pyotp.TOTP(start.json()["secret"]).at(clock.now())
    confirm = await client.post(
        tenant.path("/users/me/mfa/totp/confirm"), json={"code": code}, headers=tenant.owner.headers
    )
    assert confirm.status_code == 200
    challenge = await token(
        client, tenant.slug, grant_type="password", username=tenant.owner.email, password=DEFAULT_PASSWORD
    )
    assert challenge.status_code == 403
    assert (await _purge(client, clock))["mfa_challenge"] == 0
    clock.advance(seconds=int(timedelta(minutes=6).total_seconds()))
    assert (await _purge(client, clock))["mfa_challenge"] == 1


async def test_idempotent_answers_go_after_24_hours(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    headers = {**tenant.owner.headers, "Idempotency-Key": "k"}
    assert (
        await client.post(tenant.path("/projects"), json={"name": "P"}, headers=headers)
    ).status_code == 201
    clock.advance(hours=23)
    assert (await _purge(client, clock))["idempotent_answer"] == 0
    clock.advance(hours=1, seconds=1)
    assert (await _purge(client, clock))["idempotent_answer"] == 1
