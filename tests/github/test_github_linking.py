"""Linking GitHub from a signed-in account and unlinking it (API.md "GitHub sign-in":
`POST/DELETE /t/{tenant}/users/me/identities/github`; the identity key is per tenant).
Both need a login of the last 10 minutes (docs/decisions.md, "Linking GitHub needs a recent
login")."""

from __future__ import annotations

from dataclasses import replace

import pytest
from httpx import Response

from saas_app.core.clock import FrozenClock
from tests.factories import Login, Member, TenantCtx, add_member, create_tenant, login, token
from tests.fake_github import Account
from tests.github_helpers import (
    COOKIE,
    GITHUB,
    PUBLIC_URL,
    REDIRECT,
    GitHubEnv,
    add_account,
    as_member,
    assert_problem,
    assert_tokens,
    audit_events,
    bearer,
    claims,
    cookie_attributes,
    me,
    query,
)

IDENTITY = "/users/me/identities/github"


async def start_link(
    env: GitHubEnv, tenant: TenantCtx, member: Member, redirect_uri: str | None = None
) -> Response:
    params = {"redirect_uri": redirect_uri} if redirect_uri else {}
    return await env.client.post(tenant.path(IDENTITY), params=params, headers=member.headers)


async def link(
    env: GitHubEnv, tenant: TenantCtx, member: Member, account: Account, redirect_uri: str | None = None
) -> Response:
    """The whole link flow: start it with the bearer, approve at GitHub, come back."""
    env.fake.sign_in_as(account)
    started = await start_link(env, tenant, member, redirect_uri)
    assert started.status_code == 200, started.text
    return await env.client.get(await env.at_github(started.json()["authorize_url"]))


async def test_starting_a_link_answers_the_authorize_url_and_a_state_cookie(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    response = await start_link(env, tenant, tenant.owner)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert set(response.json()) == {"authorize_url"}
    url = response.json()["authorize_url"]
    assert url.startswith(f"{GITHUB}/login/oauth/authorize?")
    params = query(url)
    assert params["redirect_uri"] == f"{PUBLIC_URL}/t/{tenant.slug}/auth/github/callback"
    assert params["code_challenge_method"] == "S256"
    assert params["state"]
    cookie = cookie_attributes(response.headers["set-cookie"])
    assert cookie[COOKIE]
    assert "httponly" in cookie
    assert cookie["path"] == f"/t/{tenant.slug}/auth/github"


async def test_starting_a_link_needs_a_bearer_and_an_allowed_redirect(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    anonymous = await env.client.post(tenant.path(IDENTITY))
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == f'Bearer realm="{tenant.slug}"'
    assert "set-cookie" not in anonymous.headers
    refused = await start_link(env, tenant, tenant.owner, "https://evil.test/")
    assert_problem(refused, 400, "redirect_not_allowed")


async def test_linking_adds_github_as_a_way_to_sign_in(env: GitHubEnv, tenant: TenantCtx) -> None:
    account = add_account(env.fake, "someone-else@example.com")
    response = await link(env, tenant, tenant.owner, account)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["identities"]) == (tenant.owner.id, ["github"])
    linked = await audit_events(env, tenant, "identity.linked")
    assert [(e["target"]["id"], e["details"]["how"]) for e in linked] == [(tenant.owner.id, "account")]
    signed_in = assert_tokens(await env.sign_in(tenant, account))
    assert claims(signed_in["access_token"])["sub"] == tenant.owner.id
    assert (await env.counts(tenant)).users == 1


async def test_linking_in_browser_mode_redirects_with_linked(env: GitHubEnv, tenant: TenantCtx) -> None:
    response = await link(env, tenant, tenant.owner, add_account(env.fake, "b@example.com"), REDIRECT)
    assert response.status_code == 302, response.text
    assert response.headers["location"] == f"{REDIRECT}?linked=github"
    assert (await me(env, tenant, tenant.owner.login.access_token))["identities"] == ["github"]


async def test_a_github_account_linked_to_another_user_is_identity_in_use(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    account = add_account(env.fake, "shared@example.com")
    owner_link = await link(env, tenant, tenant.owner, account)
    assert owner_link.status_code == 200, owner_link.text
    member = await add_member(env.client, tenant)
    before = await env.counts(tenant)
    assert_problem(await link(env, tenant, member, account), 409, "identity_in_use")
    assert await env.counts(tenant) == before
    assert (await me(env, tenant, member.login.access_token))["identities"] == []


async def test_a_second_github_account_cannot_be_linked_to_one_user(
    env: GitHubEnv, tenant: TenantCtx
) -> None:
    first = await link(env, tenant, tenant.owner, add_account(env.fake, "one@example.com"))
    assert first.status_code == 200, first.text
    second = add_account(env.fake, "two@example.com")
    assert_problem(await link(env, tenant, tenant.owner, second), 409, "identity_already_linked")
    assert (await env.counts(tenant)).identities == 1
    # The refused account was not linked: signing in with it is a new user, not the owner.
    body = assert_tokens(await env.sign_in(tenant, second))
    assert claims(body["access_token"])["sub"] != tenant.owner.id


async def test_a_link_finished_after_deactivation_is_refused(env: GitHubEnv, tenant: TenantCtx) -> None:
    member = await add_member(env.client, tenant)
    env.fake.sign_in_as(add_account(env.fake, "late@example.com"))
    started = await start_link(env, tenant, member)
    assert started.status_code == 200, started.text
    off = await env.client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert off.status_code == 200, off.text
    response = await env.client.get(await env.at_github(started.json()["authorize_url"]))
    assert_problem(response, 403, "account_disabled")
    assert (await env.counts(tenant)).identities == 0
    assert await audit_events(env, tenant, "identity.linked") == []


async def test_relinking_the_same_account_is_harmless(env: GitHubEnv, tenant: TenantCtx) -> None:
    account = add_account(env.fake, "again@example.com")
    for _ in range(2):
        response = await link(env, tenant, tenant.owner, account)
        assert response.status_code == 200, response.text
    assert (await env.counts(tenant)).identities == 1
    assert len(await audit_events(env, tenant, "identity.linked")) == 1


async def test_unlinking_a_user_with_a_password(env: GitHubEnv, tenant: TenantCtx) -> None:
    account = add_account(env.fake, "unlink@example.com")
    assert (await link(env, tenant, tenant.owner, account)).status_code == 200
    response = await env.client.delete(tenant.path(IDENTITY), headers=tenant.owner.headers)
    assert response.status_code == 204, response.text
    assert (await me(env, tenant, tenant.owner.login.access_token))["identities"] == []
    unlinked = await audit_events(env, tenant, "identity.unlinked")
    assert [(e["target"]["id"], e["details"]["provider"]) for e in unlinked] == [(tenant.owner.id, "github")]
    assert (await env.counts(tenant)).identities == 0
    again = await env.client.delete(tenant.path(IDENTITY), headers=tenant.owner.headers)
    assert_problem(again, 404, "identity_not_found")


async def test_unlinking_the_only_way_to_sign_in_is_refused(env: GitHubEnv, tenant: TenantCtx) -> None:
    account = add_account(env.fake, "only-github@example.com")
    member = as_member(assert_tokens(await env.sign_in(tenant, account)), "only-github@example.com")
    response = await env.client.delete(tenant.path(IDENTITY), headers=member.headers)
    assert_problem(response, 409, "last_sign_in_method")
    assert (await me(env, tenant, member.login.access_token))["identities"] == ["github"]
    assert_tokens(await env.sign_in(tenant, account))
    assert await audit_events(env, tenant, "identity.unlinked") == []


async def test_unlinking_when_nothing_is_linked_is_404(env: GitHubEnv, tenant: TenantCtx) -> None:
    response = await env.client.delete(tenant.path(IDENTITY), headers=tenant.owner.headers)
    assert_problem(response, 404, "identity_not_found")


async def test_one_github_account_may_be_linked_in_two_tenants(env: GitHubEnv, tenant: TenantCtx) -> None:
    other = await create_tenant(env.client)
    account = add_account(env.fake, "two-tenants@example.com")
    for side in (tenant, other):
        response = await link(env, side, side.owner, account)
        assert response.status_code == 200, response.text
    newcomer = add_account(env.fake, "newcomer@example.com")
    ids = {
        claims(assert_tokens(await env.sign_in(t, newcomer))["access_token"])["sub"] for t in (tenant, other)
    }
    assert len(ids) == 2  # one user per tenant for the same GitHub id
    for side in (tenant, other):
        body = assert_tokens(await env.sign_in(side, account))
        assert claims(body["access_token"])["sub"] == side.owner.id


# -- a stolen access token cannot change the ways in (ASVS 5.0 V7.5.1) ---------------------------


async def refreshed(env: GitHubEnv, tenant: TenantCtx, member: Member) -> Member:
    """The member with the tokens a refresh mints now (the login's `auth_time` is kept)."""
    response = await token(
        env.client, tenant.slug, grant_type="refresh_token", refresh_token=member.login.refresh_token
    )
    body = assert_tokens(response)
    assert claims(body["access_token"])["auth_time"] == claims(member.login.access_token)["auth_time"]
    return replace(member, login=Login(body["access_token"], body["refresh_token"], body["scope"], body))


@pytest.mark.parametrize(("seconds", "status"), [(599, 200), (601, 403)], ids=["9m59s", "10m01s"])
async def test_linking_needs_a_login_of_the_last_ten_minutes(
    env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock, seconds: int, status: int
) -> None:
    clock.advance(seconds=seconds)
    response = await start_link(env, tenant, tenant.owner)
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, "reauthentication_required")
        assert "set-cookie" not in response.headers


async def test_a_stolen_token_cannot_link_the_thiefs_github_even_refreshed(
    env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock
) -> None:
    thief = add_account(env.fake, "thief@example.com")
    env.fake.sign_in_as(thief)
    clock.advance(minutes=11)
    stolen = await refreshed(env, tenant, tenant.owner)  # a refresh is no new login
    for victim in (tenant.owner, stolen):
        assert (await me(env, tenant, victim.login.access_token))["id"] == tenant.owner.id
        assert_problem(await start_link(env, tenant, victim), 403, "reauthentication_required")
    assert (await env.counts(tenant)).identities == 0
    assert await audit_events(env, tenant, "identity.linked") == []
    # The thief's GitHub account is no way into the victim's account.
    body = assert_tokens(await env.sign_in(tenant, thief))
    assert claims(body["access_token"])["sub"] != tenant.owner.id


async def test_a_stolen_token_cannot_unlink(env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock) -> None:
    account = add_account(env.fake, "keep-me@example.com")
    assert (await link(env, tenant, tenant.owner, account)).status_code == 200
    clock.advance(minutes=11)
    stolen = await refreshed(env, tenant, tenant.owner)
    for victim in (tenant.owner, stolen):
        response = await env.client.delete(tenant.path(IDENTITY), headers=victim.headers)
        assert_problem(response, 403, "reauthentication_required")
    assert (await me(env, tenant, stolen.login.access_token))["identities"] == ["github"]
    assert await audit_events(env, tenant, "identity.unlinked") == []
    body = assert_tokens(await env.sign_in(tenant, account))
    assert claims(body["access_token"])["sub"] == tenant.owner.id


async def test_after_signing_in_again_linking_and_unlinking_work(
    env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock
) -> None:
    clock.advance(minutes=14)  # the access token still lives (15 minutes); its login is old
    assert_problem(await start_link(env, tenant, tenant.owner), 403, "reauthentication_required")
    again = replace(tenant.owner, login=await login(env.client, tenant.slug, tenant.owner.email))
    assert (await link(env, tenant, again, add_account(env.fake, "back@example.com"))).status_code == 200
    assert (await env.client.delete(tenant.path(IDENTITY), headers=again.headers)).status_code == 204


async def test_a_github_login_is_a_fresh_login_too(
    env: GitHubEnv, tenant: TenantCtx, clock: FrozenClock
) -> None:
    account = add_account(env.fake, "gh@example.com")
    assert (await link(env, tenant, tenant.owner, account)).status_code == 200
    clock.advance(minutes=11)
    body = assert_tokens(await env.sign_in(tenant, account))
    response = await env.client.delete(tenant.path(IDENTITY), headers=bearer(body["access_token"]))
    assert response.status_code == 204, response.text


async def test_the_openapi_document_names_the_403(env: GitHubEnv) -> None:
    paths = (await env.client.get("/openapi.json")).json()["paths"]
    for method in ("post", "delete"):
        forbidden = paths["/t/{tenant}/users/me/identities/github"][method]["responses"]["403"]
        assert "reauthentication_required" in forbidden["description"], method


async def test_a_password_change_ends_unused_login_codes(env: GitHubEnv, tenant: TenantCtx) -> None:
    """A login code handed to the browser before the password changed buys nothing after
    (issue 13, item 9): the change ends every pending way into the account."""
    account = add_account(env.fake, "codes@example.com")
    assert (await link(env, tenant, tenant.owner, account)).status_code == 200
    signed_in = await env.sign_in(tenant, account, REDIRECT)
    assert signed_in.status_code == 302, signed_in.text
    code = query(signed_in.headers["location"])["code"]
    body = {"current_password": tenant.owner.password, "new_password": "a brand new passphrase"}
    changed = await env.client.post(
        tenant.path("/users/me/password"), json=body, headers=tenant.owner.headers
    )
    assert changed.status_code == 204, changed.text
    response = await env.exchange(tenant, code)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
