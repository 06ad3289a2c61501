"""GitHub sign-in (API.md "GitHub sign-in", "GitHub outcomes"): the authorize redirect, the
callback in API mode, the numbered sign-in/link/create rules, and MFA after GitHub.

Browser mode and `state` are in test_github_flows.py, linking in test_github_linking.py,
GitHub's failures in test_github_faults.py. The fake GitHub is tests/fake_github.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from saas_app.core.clock import FrozenClock
from saas_app.users.models import User
from tests.factories import (
    DEFAULT_PASSWORD,
    TenantCtx,
    add_member,
    create_tenant,
    enable_mfa,
    login,
    login_with_otp,
    token,
)
from tests.fake_github import Email, s256
from tests.github_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    COOKIE,
    GITHUB,
    PUBLIC_URL,
    REDIRECT,
    EnvFactory,
    GitHubEnv,
    add_account,
    as_member,
    assert_problem,
    assert_tokens,
    audit_events,
    claims,
    cookie_attributes,
    me,
    query,
)

# -- authorize ------------------------------------------------------------------------------


async def test_authorize_redirects_to_github_with_state_and_pkce(env: GitHubEnv, tenant: TenantCtx) -> None:
    response = await env.authorize(tenant)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(f"{GITHUB}/login/oauth/authorize?")
    params = query(location)
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == f"{PUBLIC_URL}/t/{tenant.slug}/auth/github/callback"
    assert params["scope"] == "read:user user:email"
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32
    cookie = cookie_attributes(response.headers["set-cookie"])
    verifier = cookie[COOKIE]
    assert 43 <= len(verifier) <= 128  # RFC 7636 §4.1
    assert params["code_challenge"] == s256(verifier)
    assert verifier not in location  # the verifier stays in the browser until the exchange
    assert "httponly" in cookie
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == f"/t/{tenant.slug}/auth/github"
    assert "secure" not in cookie  # PUBLIC_URL is http here
    again = await env.authorize(tenant)
    assert query(again.headers["location"])["state"] != params["state"]
    assert cookie_attributes(again.headers["set-cookie"])[COOKIE] != verifier


async def test_state_cookie_is_secure_when_public_url_is_https(make_env: EnvFactory) -> None:
    async with make_env(PUBLIC_URL="https://auth.example.com") as env:
        tenant = await create_tenant(env.client)
        response = await env.authorize(tenant)
    assert response.status_code == 302, response.text
    assert "secure" in cookie_attributes(response.headers["set-cookie"])
    expected = f"https://auth.example.com/t/{tenant.slug}/auth/github/callback"
    assert query(response.headers["location"])["redirect_uri"] == expected


DISALLOWED_REDIRECTS = {
    "other-host": "https://evil.test/signed-in",
    "allowed-plus-path": REDIRECT + "/../steal",
    "allowed-plus-query": REDIRECT + "?next=https://evil.test",
    "other-scheme": REDIRECT.replace("https://", "http://"),
    "allowed-as-userinfo": "https://web.client.test@evil.test/signed-in",
}


@pytest.mark.parametrize("redirect_uri", DISALLOWED_REDIRECTS.values(), ids=list(DISALLOWED_REDIRECTS))
async def test_redirect_uri_must_be_allow_listed_exactly(
    env: GitHubEnv, tenant: TenantCtx, redirect_uri: str
) -> None:
    response = await env.authorize(tenant, redirect_uri)
    assert_problem(response, 400, "redirect_not_allowed")
    assert "set-cookie" not in response.headers
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", "/auth/github/authorize"),
        ("GET", "/auth/github/callback?code=c&state=s"),
        ("POST", "/users/me/identities/github"),
    ],
    ids=["authorize", "callback", "link"],
)
async def test_github_not_configured_is_404(make_env: EnvFactory, method: str, suffix: str) -> None:
    async with make_env(GITHUB_CLIENT_ID=None, GITHUB_CLIENT_SECRET=None) as env:
        tenant = await create_tenant(env.client)
        response = await env.client.request(method, tenant.path(suffix), headers=tenant.owner.headers)
    assert_problem(response, 404, "github_not_configured")
    assert env.fake.requests == []


# -- callback, API mode ---------------------------------------------------------------------


async def test_new_github_user_is_created_as_a_password_less_member(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    account = add_account(env.fake, "New.Octo@example.com")
    response = await env.sign_in(tenant, account)
    body = assert_tokens(response)
    assert claims(body["access_token"])["amr"] == ["github"]
    user = await me(env, tenant, body["access_token"])
    assert user["email"] == "new.octo@example.com"
    assert user["full_name"] == account.name
    assert user["roles"] == ["member"]
    assert user["identities"] == ["github"]
    assert user["mfa_enabled"] is False
    assert COOKIE not in env.client.cookies  # the flow's cookie is cleared
    counts = await env.counts(tenant)
    assert (counts.users, counts.identities, counts.sessions) == (2, 1, 2)  # owner + the new user
    for password in (DEFAULT_PASSWORD, "x" * 12):
        refused = await token(
            env.client, tenant.slug, grant_type="password", username=user["email"], password=password
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_grant"
    linked = await audit_events(env, tenant, "identity.linked")
    assert [(e["target"]["id"], e["details"]["how"]) for e in linked] == [(user["id"], "sign_up")]
    created = {e["target"]["id"] for e in await audit_events(env, tenant, "user.created")}
    assert created == {tenant.owner.id, user["id"]}  # same frozen instant: order is not defined


async def test_the_github_id_is_the_key_not_the_login_or_email(env: GitHubEnv, tenant: TenantCtx) -> None:
    account = add_account(env.fake, "first@example.com", login="octo-first")
    first = assert_tokens(await env.sign_in(tenant, account))
    account.login = "octo-renamed"
    account.emails = [Email("renamed@example.com", True, True)]
    second = assert_tokens(await env.sign_in(tenant, account))
    assert claims(second["access_token"])["sub"] == claims(first["access_token"])["sub"]
    assert (await env.counts(tenant)).users == 2
    # Someone else now holding the old login name is someone else.
    impostor = add_account(env.fake, "impostor@example.com", login="octo-first")
    third = assert_tokens(await env.sign_in(tenant, impostor))
    assert claims(third["access_token"])["sub"] != claims(first["access_token"])["sub"]


async def test_the_github_access_token_never_leaves_the_server(env: GitHubEnv, tenant: TenantCtx) -> None:
    account = add_account(env.fake, "quiet@example.com")
    env.fake.sign_in_as(account)
    responses = [await env.authorize(tenant)]
    responses.append(await env.client.get(await env.at_github(responses[0].headers["location"])))
    body = assert_tokens(responses[-1])
    responses.append(await env.client.get(tenant.path("/users/me"), headers=tenant.owner.headers))
    browser = await env.sign_in(tenant, account, REDIRECT)
    responses += [browser, await env.exchange(tenant, query(browser.headers["location"])["code"])]
    assert claims(responses[-1].json()["access_token"])["sub"] == claims(body["access_token"])["sub"]
    github_tokens = set(env.github_tokens())
    assert len(github_tokens) == 2
    for response in responses:
        seen = response.text + repr(response.headers.multi_items())
        assert not [t for t in github_tokens if t in seen], response.request.url
    stored = await env.database_text()
    assert not [t for t in github_tokens if t in stored]


async def test_code_exchange_is_pkce_json_and_keeps_the_secret_in_the_body(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    callback = await env.start(tenant, add_account(env.fake, "pkce@example.com"))
    assert_tokens(await env.client.get(callback))
    authorize, exchange, user, emails = env.fake.requests
    assert (exchange.method, exchange.path) == ("POST", "/login/oauth/access_token")
    assert exchange.headers["accept"] == "application/json"
    assert exchange.headers["content-type"] == "application/x-www-form-urlencoded"
    assert s256(exchange.form["code_verifier"]) == authorize.query["code_challenge"]
    assert exchange.form["code"] == query(callback)["code"]
    assert exchange.form["client_id"] == CLIENT_ID
    assert exchange.form["client_secret"] == CLIENT_SECRET
    assert exchange.form["redirect_uri"] == authorize.query["redirect_uri"]
    assert "authorization" not in exchange.headers
    for request in env.fake.requests:
        assert CLIENT_SECRET not in request.url
        assert not [v for v in request.headers.values() if CLIENT_SECRET in v]
    assert [(user.path, emails.path)] == [("/user", "/user/emails")]
    for rest in (user, emails):
        assert rest.headers["authorization"].startswith("Bearer gho_")
        assert rest.headers["accept"] == "application/vnd.github+json"


# -- the sign-in rules ----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [str.lower, str.upper], ids=["same-case", "other-case"])
async def test_verified_primary_email_links_when_linking_by_email_is_on(
    make_env: EnvFactory, spelling: Callable[[str], str]
) -> None:
    async with make_env(GITHUB_LINK_BY_EMAIL=True) as env:
        tenant = await create_tenant(env.client)
        member = await add_member(env.client, tenant)
        await mark_email_verified(env, member.id)  # as e-mail verification (to come) will
        body = assert_tokens(await env.sign_in(tenant, add_account(env.fake, spelling(member.email))))
        assert claims(body["access_token"])["sub"] == member.id
        assert (await me(env, tenant, body["access_token"]))["identities"] == ["github"]
        linked = await audit_events(env, tenant, "identity.linked")
        counts = await env.counts(tenant)
    assert [(e["target"]["id"], e["details"]["how"]) for e in linked] == [(member.id, "verified_email")]
    assert counts.users == 2


async def mark_email_verified(env: GitHubEnv, user_id: str) -> None:
    async with env.app.state.runtime.session_factory() as session, session.begin():
        user = await session.get_one(User, uuid.UUID(user_id))
        user.email_verified_at = env.clock.now()


async def email_verified_at(env: GitHubEnv, user_id: str) -> datetime | None:
    async with env.app.state.runtime.session_factory() as session:
        return (await session.get_one(User, uuid.UUID(user_id))).email_verified_at


async def test_a_password_squatter_does_not_capture_the_victims_github_sign_in(make_env: EnvFactory) -> None:
    """Pre-account-takeover (issue 13, item 1): someone registers the victim's address with a
    password of their own; the victim's later GitHub sign-in must not land in that account."""
    async with make_env(GITHUB_LINK_BY_EMAIL=True) as env:
        tenant = await create_tenant(env.client)
        squatter = await add_member(env.client, tenant, email="victim@example.com")
        before = await env.counts(tenant)
        response = await env.sign_in(tenant, add_account(env.fake, "victim@example.com"))
        assert_problem(response, 409, "account_exists")
        assert "access_token" not in response.text
        assert await env.counts(tenant) == before  # no identity, no session, no user
        assert await audit_events(env, tenant, "identity.linked") == []
        squatters_view = await login(env.client, tenant.slug, squatter.email)
        assert (await me(env, tenant, squatters_view.access_token))["identities"] == []


async def test_only_a_github_sign_up_starts_with_a_verified_email(env: GitHubEnv, tenant: TenantCtx) -> None:
    body = assert_tokens(await env.sign_in(tenant, add_account(env.fake, "gh@example.com")))
    member = await add_member(env.client, tenant)
    assert await email_verified_at(env, claims(body["access_token"])["sub"]) == env.clock.now()
    assert await email_verified_at(env, member.id) is None  # registered with a password
    assert await email_verified_at(env, tenant.owner.id) is None  # the tenant's owner


@pytest.mark.parametrize(
    ("link_by_email", "verified"),
    [(False, True), (True, False), (False, False)],
    ids=["linking-off", "unverified-linking-on", "unverified-linking-off"],
)
async def test_an_existing_email_is_account_exists_unless_rule_2_applies(
    make_env: EnvFactory, link_by_email: bool, verified: bool
) -> None:
    async with make_env(GITHUB_LINK_BY_EMAIL=link_by_email) as env:
        tenant = await create_tenant(env.client)
        member = await add_member(env.client, tenant)
        before = await env.counts(tenant)
        response = await env.sign_in(tenant, add_account(env.fake, member.email, verified=verified))
        assert_problem(response, 409, "account_exists")
        assert await env.counts(tenant) == before  # no link, no session, no user
        assert await audit_events(env, tenant, "identity.linked") == []
        assert (await me(env, tenant, member.login.access_token))["identities"] == []


async def test_a_second_github_account_with_the_same_email_is_account_exists(make_env: EnvFactory) -> None:
    """User U signed up with GitHub account A; account B, linked to nobody, reports the same
    verified address. Rule 2 cannot link B (one GitHub identity per user): 409
    `account_exists`, saying U already has a GitHub identity, not `identity_in_use` (B is
    linked to nobody)."""
    async with make_env(GITHUB_LINK_BY_EMAIL=True) as env:
        tenant = await create_tenant(env.client)
        first = assert_tokens(await env.sign_in(tenant, add_account(env.fake, "dual@example.com")))
        before = await env.counts(tenant)
        response = await env.sign_in(tenant, add_account(env.fake, "dual@example.com"))
        assert_problem(response, 409, "account_exists")
        assert "already has a GitHub identity" in response.json()["detail"]
        assert "access_token" not in response.text
        assert await env.counts(tenant) == before
        assert len(await audit_events(env, tenant, "identity.linked")) == 1  # A's sign-up only
        identities = (await me(env, tenant, first["access_token"]))["identities"]
        assert len(identities) == 1


async def test_signup_closed_refuses_new_github_users_but_not_linked_ones(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    known = add_account(env.fake, "known@example.com")
    assert_tokens(await env.sign_in(tenant, known))
    closed = await env.client.patch(tenant.path(), json={"allow_signup": False}, headers=tenant.owner.headers)
    assert closed.status_code == 200, closed.text
    before = await env.counts(tenant)
    assert_problem(
        await env.sign_in(tenant, add_account(env.fake, "stranger@example.com")), 403, "signup_closed"
    )
    assert await env.counts(tenant) == before
    assert_tokens(await env.sign_in(tenant, known))  # rule 1 comes before rule 4


EMAILS_WITHOUT_A_VERIFIED_PRIMARY: dict[str, list[tuple[str, bool, bool]]] = {
    "unverified-primary": [("unverified@example.com", True, False)],
    "verified-but-not-primary": [("primary@example.com", True, False), ("other@example.com", False, True)],
    "no-emails": [],
}


@pytest.mark.parametrize(
    "emails", EMAILS_WITHOUT_A_VERIFIED_PRIMARY.values(), ids=list(EMAILS_WITHOUT_A_VERIFIED_PRIMARY)
)
async def test_a_new_user_needs_a_verified_primary_email(
    env: GitHubEnv, tenant: TenantCtx, emails: list[tuple[str, bool, bool]]
) -> None:
    account = env.fake.add_account(id=4242, login="unverified", emails=emails)
    before = await env.counts(tenant)
    assert_problem(await env.sign_in(tenant, account), 400, "github_email_unverified")
    assert await env.counts(tenant) == before


async def test_private_email_comes_from_user_emails(env: GitHubEnv, tenant: TenantCtx) -> None:
    env.fake.user_email_null = True
    account = env.fake.add_account(
        id=777,
        login="private",
        emails=[("old@example.com", False, True), ("private@example.com", True, True)],
        public_email="private@example.com",
    )
    body = assert_tokens(await env.sign_in(tenant, account))
    assert (await me(env, tenant, body["access_token"]))["email"] == "private@example.com"
    assert "/user/emails" in [r.path for r in env.fake.requests]


@pytest.mark.parametrize("redirect_uri", [None, REDIRECT], ids=["api", "browser"])
async def test_a_deactivated_linked_user_is_refused_without_a_session(
    env: GitHubEnv, tenant: TenantCtx, redirect_uri: str | None
) -> None:
    account = add_account(env.fake, "gone@example.com")
    user_id = claims(assert_tokens(await env.sign_in(tenant, account))["access_token"])["sub"]
    off = await env.client.patch(
        tenant.path(f"/users/{user_id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert off.status_code == 200, off.text
    before = await env.counts(tenant)
    assert_problem(await env.sign_in(tenant, account, redirect_uri), 403, "account_disabled")
    assert await env.counts(tenant) == before


# -- MFA after GitHub -----------------------------------------------------------------------


@pytest.mark.parametrize("redirect_uri", [None, REDIRECT], ids=["api", "browser"])
async def test_mfa_user_must_finish_with_a_second_factor(
    env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock, redirect_uri: str | None
) -> None:
    account = add_account(env.fake, "mfa@example.com")
    member = as_member(assert_tokens(await env.sign_in(tenant, account)), "mfa@example.com")
    authenticator = await enable_mfa(env.client, tenant, member, clock)
    before = await env.counts(tenant)
    response = await env.sign_in(tenant, account, redirect_uri)
    if redirect_uri is None:
        assert response.status_code == 403, response.text
        assert response.headers["cache-control"] == "no-store"
        body: dict[str, Any] = response.json()
        assert body["error"] == "mfa_required"
    else:
        assert response.status_code == 302, response.text
        assert response.headers["location"].startswith(REDIRECT + "?")
        body = query(response.headers["location"])
        assert body["error"] == "mfa_required"
        assert "code" not in body
    assert await env.counts(tenant) == before  # no session, no login code before the OTP
    done = await token(
        env.client,
        tenant.slug,
        grant_type="mfa_otp",
        mfa_token=body["mfa_token"],
        otp=authenticator.next_code(),
    )
    tokens = assert_tokens(done)
    assert claims(tokens["access_token"])["amr"] == ["github", "otp"]
    assert claims(tokens["access_token"])["sub"] == member.id


@pytest.mark.parametrize("redirect_uri", [None, REDIRECT], ids=["api", "browser"])
async def test_a_tenant_requiring_mfa_sends_github_users_without_it_to_enrolment(
    env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock, redirect_uri: str | None
) -> None:
    owner_otp = await enable_mfa(env.client, tenant, tenant.owner, clock)
    with_otp = await login_with_otp(env.client, tenant.slug, tenant.owner.email, owner_otp)
    required = await env.client.patch(tenant.path(), json={"mfa_required": True}, headers=with_otp.headers)
    assert required.status_code == 200, required.text
    account = add_account(env.fake, "newcomer@example.com")
    response = await env.sign_in(tenant, account, redirect_uri)
    if redirect_uri is None:
        assert response.status_code == 403, response.text
        body: dict[str, Any] = response.json()
    else:
        assert response.status_code == 302, response.text
        body = query(response.headers["location"])
        assert "code" not in body
    assert body["error"] == "mfa_enrollment_required"
    # The token enrols and does nothing else.
    enrol = {"Authorization": f"Bearer {body['mfa_token']}"}
    assert (await env.client.get(tenant.path("/users/me"), headers=enrol)).status_code == 401
    started = await env.client.post(tenant.path("/users/me/mfa/totp"), json={}, headers=enrol)
    assert started.status_code == 200, started.text
