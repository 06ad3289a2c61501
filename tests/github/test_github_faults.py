"""GitHub failing (API.md "GitHub outcomes"): a refused code is 400 `github_code_invalid`;
every other failure (OAuth errors answered with HTTP 200, 4xx/5xx, malformed JSON, timeouts)
is 502 `github_unavailable`. Never a 500, never a user, identity, session or login code."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.factories import TenantCtx, create_tenant
from tests.fake_github import CODE_TTL_SECONDS, Account, Endpoint, FakeGitHub, serve_in_thread
from tests.github_helpers import (
    REDIRECT,
    Counts,
    EnvFactory,
    GitHubEnv,
    add_account,
    assert_problem,
    assert_tokens,
)

TIMEOUT_SECONDS = 0.5


@pytest.fixture
def account(fake: FakeGitHub) -> Account:
    return add_account(fake, "faulty@example.com")


@dataclass(frozen=True)
class Fault:
    break_github: Callable[[FakeGitHub], None]
    status: int
    code: str


def fail(endpoint: Endpoint, **how: int | bool | str) -> Callable[[FakeGitHub], None]:
    return lambda fake: fake.fail(endpoint, **how)  # type: ignore[arg-type]


def wrong_client_secret(fake: FakeGitHub) -> None:
    fake.client_secret = "rotated-at-github-" + "z" * 20


def code_expired(fake: FakeGitHub) -> None:
    fake.advance(CODE_TTL_SECONDS + 1)


FAULTS: dict[str, Fault] = {
    "token-bad_verification_code": Fault(
        fail("token", error="bad_verification_code"), 400, "github_code_invalid"
    ),
    "code-expired-at-github": Fault(code_expired, 400, "github_code_invalid"),
    "token-incorrect_client_credentials": Fault(
        fail("token", error="incorrect_client_credentials"), 502, "github_unavailable"
    ),
    "secret-rotated-at-github": Fault(wrong_client_secret, 502, "github_unavailable"),
    "token-redirect_uri_mismatch": Fault(
        fail("token", error="redirect_uri_mismatch"), 502, "github_unavailable"
    ),
    "token-unknown-error": Fault(fail("token", error="unverified_user_email"), 502, "github_unavailable"),
    "token-500": Fault(fail("token", status=500), 502, "github_unavailable"),
    "token-503": Fault(fail("token", status=503), 502, "github_unavailable"),
    "token-404": Fault(fail("token", status=404), 502, "github_unavailable"),
    "token-malformed-json": Fault(fail("token", malformed=True), 502, "github_unavailable"),
    "user-401": Fault(fail("user", status=401), 502, "github_unavailable"),
    "user-500": Fault(fail("user", status=500), 502, "github_unavailable"),
    "user-malformed-json": Fault(fail("user", malformed=True), 502, "github_unavailable"),
    "emails-404": Fault(fail("emails", status=404), 502, "github_unavailable"),
    "emails-502": Fault(fail("emails", status=502), 502, "github_unavailable"),
    "emails-malformed-json": Fault(fail("emails", malformed=True), 502, "github_unavailable"),
}


def assert_nothing_created(before: Counts, after: Counts) -> None:
    assert after == before, f"GitHub failed yet the app wrote: {before} -> {after}"


@pytest.mark.parametrize("redirect_uri", [None, REDIRECT], ids=["api", "browser"])
@pytest.mark.parametrize("fault", FAULTS.values(), ids=list(FAULTS))
async def test_github_fault_is_a_clear_problem_and_nothing_is_created(
    env: GitHubEnv, tenant: TenantCtx, account: Account, fault: Fault, redirect_uri: str | None
) -> None:
    callback = await env.start(tenant, account, redirect_uri)
    fault.break_github(env.fake)
    before = await env.counts(tenant)
    response = await env.client.get(callback)
    assert_problem(response, fault.status, fault.code)
    assert "location" not in response.headers
    assert not [t for t in env.github_tokens() if t in response.text]
    assert_nothing_created(before, await env.counts(tenant))


async def test_a_malformed_profile_is_github_unavailable(
    env: GitHubEnv, tenant: TenantCtx, fake: FakeGitHub
) -> None:
    # Well-formed JSON of the wrong shape: an id that is not an integer.
    account = fake.add_account(id=True, login="bool-id", emails=[("bool@example.com", True, True)])
    before = await env.counts(tenant)
    assert_problem(await env.sign_in(tenant, account), 502, "github_unavailable")
    assert_nothing_created(before, await env.counts(tenant))


async def test_after_a_fault_a_new_attempt_succeeds(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    env.fake.fail("token", status=503)
    assert_problem(await env.sign_in(tenant, account), 502, "github_unavailable")
    assert_tokens(await env.sign_in(tenant, account))


@pytest.mark.parametrize("endpoint", ["token", "user", "emails"])
async def test_a_github_that_hangs_is_502_within_the_timeout(
    make_env: EnvFactory, fake: FakeGitHub, account: Account, endpoint: Endpoint
) -> None:
    # Over a real socket: httpx.ASGITransport does not enforce timeouts.
    with serve_in_thread(fake) as github:
        urls = {
            "GITHUB_AUTHORIZE_URL": f"{github}/login/oauth/authorize",
            "GITHUB_TOKEN_URL": f"{github}/login/oauth/access_token",
            "GITHUB_API_URL": github,
        }
        async with make_env(over_network=True, GITHUB_TIMEOUT_SECONDS=TIMEOUT_SECONDS, **urls) as env:
            tenant = await create_tenant(env.client)
            callback = await env.start(tenant, account)
            fake.fail(endpoint, hang=5 * TIMEOUT_SECONDS)
            before = await env.counts(tenant)
            started = time.monotonic()
            response = await env.client.get(callback)
            elapsed = time.monotonic() - started
            assert_problem(response, 502, "github_unavailable")
            assert elapsed < 4 * TIMEOUT_SECONDS, elapsed
            assert_nothing_created(before, await env.counts(tenant))
            assert_tokens(await env.sign_in(tenant, account))  # the real socket path works
