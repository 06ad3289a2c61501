"""Exactly one winner under 50-way parallel use of every one-time thing (issue 7,
"Concurrency"), on SQLite and on PostgreSQL + Redis.

One table, one row per one-time thing. Each row sets up a fresh tenant through the public
API, then fires 50 requests at once (asyncio.gather) on ONE in-process client and checks:
exactly one answer is the success, every other one is the documented error for a spent
thing (API.md), and none is a 5xx. RACE_ROUNDS=N repeats every row N times (default 1).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from httpx import Response

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from tests.factories import DEFAULT_PASSWORD, create_tenant, enable_mfa, login, mfa_challenge, token
from tests.fake_github import FakeGitHub
from tests.github_helpers import REDIRECT, EnvFactory, GitHubEnv, add_account, env_factory, new_fake, query

WAYS = 50
ROUNDS = int(os.environ.get("RACE_ROUNDS", "1"))
Request = Callable[[int], Awaitable[Response]]


@dataclass(frozen=True)
class Armed:
    """request(i) makes the i-th of the parallel uses; check(winner), if any, looks at what
    the win left behind."""

    request: Request
    check: Callable[[Response], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Race:
    arm: Callable[[GitHubEnv], Awaitable[Armed]]  # sets the stage on a fresh tenant
    winner: int
    loser: tuple[int, str]  # status and `error` (OAuth) or `code` (problem details)


@pytest.fixture
async def env(make_settings: Callable[..., Settings], clock: FrozenClock) -> AsyncIterator[GitHubEnv]:
    """One app (GitHub sign-in wired to the in-process fake) and its one client."""
    fake: FakeGitHub = new_fake()
    make: EnvFactory = env_factory(make_settings, clock, fake)
    async with make() as env:
        yield env


# -- the rows ---------------------------------------------------------------------------------


async def refresh_token_rotation(env: GitHubEnv) -> Armed:
    tenant = await create_tenant(env.client)
    presented = tenant.owner.login.refresh_token
    return Armed(
        lambda _: token(env.client, tenant.slug, grant_type="refresh_token", refresh_token=presented)
    )


async def login_code(env: GitHubEnv) -> Armed:
    tenant = await create_tenant(env.client)
    account = add_account(env.fake, f"racer-{uuid.uuid4().hex[:8]}@example.com")
    callback = await env.sign_in(tenant, account, REDIRECT)
    assert callback.status_code == 302, callback.text
    code = query(callback.headers["location"])["code"]
    return Armed(lambda _: env.exchange(tenant, code))


async def _mfa_owner(env: GitHubEnv, tokens: int) -> tuple[str, list[str], list[str], str]:
    """A tenant whose owner has MFA on; returns (slug, `tokens` fresh mfa_tokens, the
    recovery codes, a valid unused TOTP code)."""
    tenant = await create_tenant(env.client)
    authenticator = await enable_mfa(env.client, tenant, tenant.owner, env.clock)
    challenges = [await mfa_challenge(env.client, tenant.slug, tenant.owner.email) for _ in range(tokens)]
    return tenant.slug, challenges, authenticator.recovery_codes, authenticator.next_code()


async def recovery_code(env: GitHubEnv) -> Armed:
    slug, mfa_tokens, codes, _ = await _mfa_owner(env, WAYS)
    return Armed(
        lambda i: token(
            env.client, slug, grant_type="mfa_recovery_code", mfa_token=mfa_tokens[i], recovery_code=codes[0]
        )
    )


async def totp_step(env: GitHubEnv) -> Armed:
    slug, mfa_tokens, _, otp = await _mfa_owner(env, WAYS)
    return Armed(lambda i: token(env.client, slug, grant_type="mfa_otp", mfa_token=mfa_tokens[i], otp=otp))


async def one_mfa_token(env: GitHubEnv) -> Armed:
    slug, mfa_tokens, _, otp = await _mfa_owner(env, 1)
    return Armed(lambda _: token(env.client, slug, grant_type="mfa_otp", mfa_token=mfa_tokens[0], otp=otp))


async def tenant_slug(env: GitHubEnv) -> Armed:
    slug = f"race-{uuid.uuid4().hex[:10]}"

    def create(i: int) -> Awaitable[Response]:
        owner = {"email": f"owner-{i}@{slug}.example.com", "password": DEFAULT_PASSWORD}
        return env.client.post("/tenants", json={"slug": slug, "name": f"Contender {i}", "owner": owner})

    async def the_tenant_is_the_winners(winner: Response) -> None:
        body = winner.json()
        owner = await login(env.client, slug, body["owner"]["email"])
        tenant = await env.client.get(f"/t/{slug}", headers=owner.headers)
        assert tenant.json()["name"] == body["tenant"]["name"], tenant.text
        users = await env.client.get(f"/t/{slug}/users", headers=owner.headers)
        assert [u["email"] for u in users.json()["items"]] == [body["owner"]["email"]], users.text

    return Armed(create, the_tenant_is_the_winners)


async def email_registration(env: GitHubEnv) -> Armed:
    tenant = await create_tenant(env.client)
    spellings = ["racer@example.com", "Racer@Example.com", "RACER@EXAMPLE.COM"]

    def register(i: int) -> Awaitable[Response]:
        body = {"email": spellings[i % 3], "password": DEFAULT_PASSWORD}
        return env.client.post(tenant.path("/auth/register"), json=body)

    async def one_user_was_created(winner: Response) -> None:
        users = await env.client.get(tenant.path("/users?q=racer"), headers=tenant.owner.headers)
        assert [u["id"] for u in users.json()["items"]] == [winner.json()["id"]], users.text

    return Armed(register, one_user_was_created)


RACES = {
    "refresh_token_rotation": Race(refresh_token_rotation, 200, (400, "invalid_grant")),
    "login_code": Race(login_code, 200, (400, "invalid_grant")),
    "recovery_code": Race(recovery_code, 200, (400, "invalid_grant")),
    "totp_step": Race(totp_step, 200, (400, "invalid_grant")),
    "mfa_token": Race(one_mfa_token, 200, (400, "invalid_grant")),
    "tenant_slug": Race(tenant_slug, 201, (409, "tenant_exists")),
    "email_registration": Race(email_registration, 201, (409, "user_exists")),
}


# -- the test ---------------------------------------------------------------------------------


def outcome(response: Response) -> tuple[int, str | None]:
    """(status, machine code): `error` of an OAuth answer, `code` of a problem."""
    try:
        body = response.json()
    except ValueError:
        return response.status_code, None
    if not isinstance(body, dict):
        return response.status_code, None
    return response.status_code, body.get("error") or body.get("code")


@pytest.mark.parametrize("name", list(RACES))
async def test_of_fifty_parallel_uses_exactly_one_wins(env: GitHubEnv, name: str) -> None:
    race = RACES[name]
    for _ in range(ROUNDS):
        armed = await race.arm(env)
        responses = list(await asyncio.gather(*(armed.request(i) for i in range(WAYS))))

        server_errors = [r.text for r in responses if r.status_code >= 500]
        assert not server_errors, f"{name}: {len(server_errors)} answers 5xx: {server_errors[:3]}"
        winners = [r for r in responses if r.status_code == race.winner]
        assert len(winners) == 1, f"{name}: {len(winners)} winners of {WAYS}"
        losers = [outcome(r) for r in responses if r.status_code != race.winner]
        assert set(losers) == {race.loser}, f"{name}: losers answered {sorted(set(losers), key=str)}"
        if armed.check is not None:
            await armed.check(winners[0])
