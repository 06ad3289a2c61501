"""GitHub sign-in, browser mode and `state` (API.md "GitHub sign-in", "GitHub outcomes"):
the one-time login code exchanged with grant_type=authorization_code, and every way a
callback's state can be wrong (RFC 9700 §4.7: state bound to the browser, used once)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from httpx import Response

from saas_app.core.clock import FrozenClock
from tests.factories import TenantCtx, create_tenant, token
from tests.fake_github import Account, FakeGitHub, s256
from tests.github_helpers import (
    COOKIE,
    REDIRECT,
    REDIRECT_WITH_QUERY,
    GitHubEnv,
    add_account,
    assert_problem,
    assert_tokens,
    audit_events,
    bearer,
    claims,
    me,
    query,
)


@pytest.fixture
def account(fake: FakeGitHub) -> Account:
    return add_account(fake, "browser@example.com")


async def login_code(
    env: GitHubEnv, tenant: TenantCtx, account: Account, redirect_uri: str = REDIRECT
) -> str:
    response = await env.sign_in(tenant, account, redirect_uri)
    assert response.status_code == 302, response.text
    code: str = query(response.headers["location"])["code"]
    return code


def assert_invalid_grant(response: Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


# -- browser mode: the one-time login code --------------------------------------------------


async def test_browser_mode_redirects_with_a_code_that_buys_tokens(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    response = await env.sign_in(tenant, account, REDIRECT)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?code=")
    assert set(query(location)) == {"code"}
    counts = await env.counts(tenant)
    assert (counts.sessions, counts.login_codes) == (1, 1)  # the owner's session; no new one yet
    body = assert_tokens(await env.exchange(tenant, query(location)["code"]))
    assert claims(body["access_token"])["amr"] == ["github"]
    assert (await me(env, tenant, body["access_token"]))["email"] == "browser@example.com"
    assert (await env.counts(tenant)).sessions == 2


async def test_an_existing_query_on_redirect_uri_is_kept(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    response = await env.sign_in(tenant, account, REDIRECT_WITH_QUERY)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith("https://web.client.test/cb?")
    params = query(location)
    assert (params["app"], params["lang"]) == ("web", "en")
    assert_tokens(await env.exchange(tenant, params["code"]))


async def test_a_login_code_works_once(env: GitHubEnv, tenant: TenantCtx, account: Account) -> None:
    code = await login_code(env, tenant, account)
    assert_tokens(await env.exchange(tenant, code))
    assert_invalid_grant(await env.exchange(tenant, code))
    assert (await env.counts(tenant)).sessions == 2


# RFC 6749 §4.1.2: a code used twice leaked; the tokens its first use bought are revoked.


async def assert_session_dead(env: GitHubEnv, tenant: TenantCtx, body: dict[str, Any]) -> None:
    response = await env.client.get(tenant.path("/users/me"), headers=bearer(body["access_token"]))
    assert response.status_code == 401, response.text
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    assert_invalid_grant(await token(env.client, tenant.slug, **refresh))


async def test_a_replayed_code_revokes_the_session_its_first_use_opened(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    code = await login_code(env, tenant, account)
    first = assert_tokens(await env.exchange(tenant, code))
    assert (await me(env, tenant, first["access_token"]))["email"] == "browser@example.com"
    replay = await env.exchange(tenant, code)
    assert_invalid_grant(replay)
    assert (
        replay.json()["error_description"]
        == (await env.exchange(tenant, "lc_never-issued")).json()["error_description"]
    )  # the replay learns nothing the attacker could not guess
    await assert_session_dead(env, tenant, first)
    # Only that session: the owner's, and the user's next sign-in, are untouched.
    assert (await me(env, tenant, tenant.owner.login.access_token))["id"] == tenant.owner.id
    assert_tokens(await env.exchange(tenant, await login_code(env, tenant, account)))


async def test_a_replay_is_audited_like_refresh_token_reuse(
    env: GitHubEnv, tenant: TenantCtx, account: Account, clock: FrozenClock
) -> None:
    code = await login_code(env, tenant, account)
    first = assert_tokens(await env.exchange(tenant, code))
    for _ in range(2):
        clock.advance(seconds=1)  # the events' order is their time
        assert_invalid_grant(await env.exchange(tenant, code))
    events = await audit_events(env, tenant, "token.reuse_detected")
    sid = claims(first["access_token"])["sid"]
    user_id = claims(first["access_token"])["sub"]
    details = {"user_id": user_id, "token": "login_code"}
    assert [(e["target"], e["details"]) for e in reversed(events)] == [
        ({"type": "session", "id": sid}, {**details, "session_revoked": True}),
        ({"type": "session", "id": sid}, {**details, "session_revoked": False}),
    ]
    assert code.removeprefix("lc_") not in str(events)  # audit events hold no codes


async def test_a_code_replayed_after_it_expired_still_revokes(
    env: GitHubEnv, tenant: TenantCtx, account: Account, clock: FrozenClock
) -> None:
    code = await login_code(env, tenant, account)
    first = assert_tokens(await env.exchange(tenant, code))
    clock.advance(minutes=5)  # past the code's 60 s; the spent record is kept until purged
    assert_invalid_grant(await env.exchange(tenant, code))
    await assert_session_dead(env, tenant, first)


async def test_a_replay_at_another_tenant_revokes_nothing(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    code = await login_code(env, tenant, account)
    first = assert_tokens(await env.exchange(tenant, code))
    other = await create_tenant(env.client)
    assert_invalid_grant(await env.exchange(other, code))
    assert (await me(env, tenant, first["access_token"]))["email"] == "browser@example.com"
    assert await audit_events(env, tenant, "token.reuse_detected") == []


async def test_an_unspent_or_unknown_code_revokes_nothing(
    env: GitHubEnv, tenant: TenantCtx, account: Account, clock: FrozenClock
) -> None:
    code = await login_code(env, tenant, account)
    clock.advance(seconds=61)
    assert_invalid_grant(await env.exchange(tenant, code))  # expired before any use
    assert_invalid_grant(await env.exchange(tenant, "lc_" + "x" * 43))
    assert await audit_events(env, tenant, "token.reuse_detected") == []
    assert (await me(env, tenant, tenant.owner.login.access_token))["id"] == tenant.owner.id


@pytest.mark.parametrize(("seconds", "works"), [(59, True), (61, False)], ids=["at-59s", "at-61s"])
async def test_a_login_code_lives_60_seconds(
    env: GitHubEnv, tenant: TenantCtx, account: Account, clock: FrozenClock, seconds: int, works: bool
) -> None:
    code = await login_code(env, tenant, account)
    clock.advance(seconds=seconds)
    response = await env.exchange(tenant, code)
    if works:
        assert_tokens(response)
    else:
        assert_invalid_grant(response)


async def test_parallel_exchanges_of_one_code_have_one_winner_whose_session_the_losers_revoke(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    code = await login_code(env, tenant, account)
    responses = await asyncio.gather(*(env.exchange(tenant, code) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] + [400] * 9
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
    assert (await env.counts(tenant)).sessions == 2
    # A loser gives up only after the winner committed, so each one finds the winner's
    # session; the first revokes it. Parallel use counts as a replay, as for refresh tokens.
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    await assert_session_dead(env, tenant, winner)
    events = await audit_events(env, tenant, "token.reuse_detected")
    assert len(events) == 9
    assert {e["target"]["id"] for e in events} == {claims(winner["access_token"])["sid"]}
    assert sorted(e["details"]["session_revoked"] for e in events) == [False] * 8 + [True]


async def test_of_two_racing_exchanges_the_loser_always_revokes_the_winner(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    for _ in range(5):
        code = await login_code(env, tenant, account)
        responses = await asyncio.gather(env.exchange(tenant, code), env.exchange(tenant, code))
        assert sorted(r.status_code for r in responses) == [200, 400]
        (winner,) = [r.json() for r in responses if r.status_code == 200]
        await assert_session_dead(env, tenant, winner)


async def test_a_login_code_is_only_a_login_code(env: GitHubEnv, tenant: TenantCtx, account: Account) -> None:
    code = await login_code(env, tenant, account)
    other = await create_tenant(env.client)
    assert_invalid_grant(await env.exchange(other, code))  # another tenant's endpoint
    assert_invalid_grant(await token(env.client, tenant.slug, grant_type="refresh_token", refresh_token=code))
    mfa = await token(env.client, tenant.slug, grant_type="mfa_otp", mfa_token=code, otp="123456")
    assert_invalid_grant(mfa)
    assert_tokens(await env.exchange(tenant, code))  # none of that spent it


# -- state ----------------------------------------------------------------------------------


@dataclass
class Flow:
    """A sign-in on tenant `a` that GitHub approved; `callback` is where it sent the browser."""

    env: GitHubEnv
    a: TenantCtx
    b: TenantCtx
    account: Account
    callback: str
    verifier: str

    def params(self) -> dict[str, str]:
        return query(self.callback)

    def url(self, tenant: TenantCtx | None = None, **params: str | None) -> str:
        """The callback URL, on `tenant`'s path, with `params` replaced (None removes)."""
        merged = {**self.params(), **params}
        parts = urlsplit(self.callback)
        path = (tenant or self.a).path("/auth/github/callback")
        return urlunsplit(
            parts._replace(path=path, query=urlencode({k: v for k, v in merged.items() if v is not None}))
        )


Attempt = tuple[str, str | None]  # callback URL, cookie value (None: no cookie)


def flip(segment: str) -> str:
    middle = len(segment) // 2
    return segment[:middle] + ("A" if segment[middle] != "A" else "B") + segment[middle + 1 :]


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unb64(segment: str) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


async def tampered_signature(flow: Flow) -> Attempt:
    header, payload, signature = flow.params()["state"].split(".")
    return flow.url(state=f"{header}.{payload}.{flip(signature)}"), flow.verifier


async def attacker_challenge(flow: Flow) -> Attempt:
    # Login CSRF: swap in the challenge of a verifier the attacker planted in the cookie.
    header, payload, signature = flow.params()["state"].split(".")
    forged = b64({**unb64(payload), "cc": s256("attacker-verifier-" + "x" * 40)})
    return flow.url(state=f"{header}.{forged}.{signature}"), "attacker-verifier-" + "x" * 40


async def unsigned(flow: Flow) -> Attempt:
    header, payload, _ = flow.params()["state"].split(".")
    return flow.url(state=f"{b64({**unb64(header), 'alg': 'none'})}.{payload}."), flow.verifier


async def cookie_of_another_flow(flow: Flow) -> Attempt:
    _, other_verifier = await flow.env.begin(flow.a, flow.account)
    return flow.callback, other_verifier


async def expired(flow: Flow) -> Attempt:
    flow.env.clock.advance(minutes=11)
    return flow.callback, flow.verifier


async def replayed(flow: Flow) -> Attempt:
    first = await flow.env.client.get(flow.callback, headers={"Cookie": f"{COOKIE}={flow.verifier}"})
    assert_tokens(first)
    # A fresh GitHub code, so only the state can be what is refused.
    fresh, _ = await flow.env.begin(flow.a, flow.account)
    return flow.url(code=query(fresh)["code"]), flow.verifier


STATE_CASES: dict[str, Callable[[Flow], Awaitable[Attempt]]] = {
    "missing-state": lambda f: _ready(f.url(state=None), f.verifier),
    "empty-state": lambda f: _ready(f.url(state=""), f.verifier),
    "missing-cookie": lambda f: _ready(f.callback, None),
    "garbage-state": lambda f: _ready(f.url(state="not-a-state"), f.verifier),
    "tampered-signature": tampered_signature,
    "tampered-challenge": attacker_challenge,
    "alg-none": unsigned,
    "access-token-as-state": lambda f: _ready(f.url(state=f.a.owner.login.access_token), f.verifier),
    "cookie-of-another-flow": cookie_of_another_flow,
    "expired": expired,
    "replayed": replayed,
    "state-of-tenant-a-on-b": lambda f: _ready(f.url(f.b), f.verifier),
}


async def _ready(url: str, cookie: str | None) -> Attempt:
    return url, cookie


@pytest.mark.parametrize("case", STATE_CASES.values(), ids=list(STATE_CASES))
async def test_a_bad_state_is_refused_before_github_is_asked(
    env: GitHubEnv, tenant: TenantCtx, account: Account, case: Callable[[Flow], Awaitable[Attempt]]
) -> None:
    b = await create_tenant(env.client)
    callback, verifier = await env.begin(tenant, account)
    url, cookie = await case(Flow(env, tenant, b, account, callback, verifier))
    before = (await env.counts(tenant), await env.counts(b), len(env.fake.requests))
    env.client.cookies.clear()  # the attempt carries exactly the cookie the case chose
    response = await env.client.get(url, headers={"Cookie": f"{COOKIE}={cookie}"} if cookie else {})
    assert_problem(response, 400, "invalid_state")
    assert (await env.counts(tenant), await env.counts(b), len(env.fake.requests)) == before


async def test_the_state_check_accepts_the_untouched_flow(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    # The control for the table above: the same request, unmodified, signs in.
    callback, verifier = await env.begin(tenant, account)
    env.client.cookies.clear()
    assert_tokens(await env.client.get(callback, headers={"Cookie": f"{COOKIE}={verifier}"}))


async def test_a_declined_sign_in_is_github_denied(
    env: GitHubEnv, tenant: TenantCtx, account: Account
) -> None:
    env.fake.deny_next = True
    callback = await env.start(tenant, account)
    assert query(callback)["error"] == "access_denied"
    before = await env.counts(tenant)
    assert_problem(await env.client.get(callback), 400, "github_denied")
    assert await env.counts(tenant) == before
    assert "/login/oauth/access_token" not in [r.path for r in env.fake.requests]
    assert_tokens(await env.sign_in(tenant, account))  # trying again works
