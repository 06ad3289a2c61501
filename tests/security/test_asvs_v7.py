"""ASVS 5.0 V7 Session Management: what a session is, how long it lives, how it ends.

A session is one login: its refresh tokens (rotating) and the access tokens carrying its
`sid`. Cases are registered on TABLE with the requirement ids they prove; see test_asvs.py.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from saas_app.core.clock import FrozenClock
from tests.factories import (
    Login,
    create_api_key,
    enable_mfa,
    login,
    login_with_otp,
    mfa_challenge,
)
from tests.github_helpers import add_account, assert_tokens
from tests.security.test_asvs import (
    Case,
    MakeClient,
    MakeSettings,
    Scene,
    Table,
    assert_oauth_error,
    assert_problem,
    bearer,
    claims_of,
    resign,
    run_case,
)

TABLE = Table("V7")
REFRESH_TOKEN = re.compile(r"rt_[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url


def sid(session: Login) -> str:
    return str(claims_of(session.access_token)["sid"])


def fresh_copy(s: Scene, session: Login) -> str:
    """The session's access token re-signed with a new `jti`, `iat` and `exp`: a token the
    signature check alone would take."""
    now = int(s.clock.now().timestamp())
    return resign(session.access_token, jti=uuid.uuid4().hex, iat=now, exp=now + 600)


async def assert_dead(s: Scene, session: Login) -> None:
    """Neither the session's access token, nor a fresh copy of it, nor its refresh token works."""
    assert (await s.me(session.headers)).status_code == 401
    assert (await s.me(bearer(fresh_copy(s, session)))).status_code == 401
    assert_oauth_error(await s.refresh(session.refresh_token), "invalid_grant")


# -- V7.2 fundamentals --------------------------------------------------------------------------


async def logout(s: Scene, session: Login) -> None:
    assert (await s.client.post(s.path("/auth/logout"), headers=session.headers)).status_code == 204


async def revoke_refresh_token(s: Scene, session: Login) -> None:
    response = await s.client.post(s.path("/auth/revoke"), data={"token": session.refresh_token})
    assert response.status_code == 200, response.text


async def revoke_access_token(s: Scene, session: Login) -> None:
    form = {"token": session.access_token, "token_type_hint": "access_token"}
    assert (await s.client.post(s.path("/auth/revoke"), data=form)).status_code == 200


async def end_from_another_session(s: Scene, session: Login) -> None:
    response = await s.client.delete(s.path(f"/users/me/sessions/{sid(session)}"), headers=s.owner.headers)
    assert response.status_code == 204, response.text


ENDINGS: list[Callable[[Scene, Login], Awaitable[None]]] = [
    logout,
    revoke_refresh_token,
    revoke_access_token,
    end_from_another_session,
]


@TABLE.case("V7.2.1", "V7.4.1")
async def an_ended_session_is_refused_however_its_tokens_are_presented(s: Scene) -> None:
    # The control: a fresh copy of a live session's token is accepted, so only the server's
    # record of the session can refuse the copies below.
    assert (await s.me(bearer(fresh_copy(s, s.owner.login)))).status_code == 200
    for end in ENDINGS:
        session = await login(s.client, s.tenant.slug, s.owner.email)
        assert (await s.me(session.headers)).status_code == 200
        await end(s, session)
        await assert_dead(s, session)
    assert (await s.me(s.owner.headers)).status_code == 200


@TABLE.case("V7.2.3")
async def refresh_tokens_are_256_random_bits_stored_only_as_digests(s: Scene) -> None:
    tokens = [(await login(s.client, s.tenant.slug, s.owner.email)).refresh_token for _ in range(10)]
    assert all(REFRESH_TOKEN.fullmatch(t) for t in tokens), tokens
    assert len(set(tokens)) == len(tokens)
    stored = await s.database_text()
    assert not [t for t in tokens if t in stored or t.removeprefix("rt_") in stored]
    assert all(hashlib.sha256(t.encode()).hexdigest() in stored for t in tokens)


@TABLE.case("V7.2.4")
async def every_login_starts_a_new_session_and_spends_what_led_to_it(s: Scene) -> None:
    again = await login(s.client, s.tenant.slug, s.owner.email)
    assert sid(again) != sid(s.owner.login)
    assert again.refresh_token != s.owner.login.refresh_token
    authenticator = await enable_mfa(s.client, s.tenant, s.owner, s.clock)
    mfa_token = await mfa_challenge(s.client, s.tenant.slug, s.owner.email)
    form = {"grant_type": "mfa_otp", "mfa_token": mfa_token}
    finished = await s.token(**form, otp=authenticator.next_code())
    assert finished.status_code == 200, finished.text
    assert claims_of(finished.json()["access_token"])["sid"] not in {sid(again), sid(s.owner.login)}
    # The password step's token was spent by the login it led to.
    assert_oauth_error(await s.token(**form, otp=authenticator.next_code()), "invalid_grant")


# -- V7.3 timeouts ------------------------------------------------------------------------------


@TABLE.case("V7.3.1")
async def a_session_unused_for_seven_days_ends_and_use_keeps_it_alive(s: Scene) -> None:
    refresh_token = s.owner.login.refresh_token
    for days in (6, 6):  # used within every idle window: day 12 is fine
        s.clock.advance(days=days)
        response = await s.refresh(refresh_token)
        assert response.status_code == 200, response.text
        refresh_token, access_token = response.json()["refresh_token"], response.json()["access_token"]
    s.clock.advance(days=7, seconds=1)
    assert (await s.me(bearer(access_token))).status_code == 401
    assert_oauth_error(await s.refresh(refresh_token), "invalid_grant")


# -- V7.4 termination ---------------------------------------------------------------------------


@TABLE.case("V7.4.2")
async def deactivation_ends_every_way_back_in(s: Scene) -> None:
    admin = await s.member("admin")
    second = await login(s.client, s.tenant.slug, admin.email)
    key = await create_api_key(s.client, s.tenant, "projects:read", by=admin)
    authenticator = await enable_mfa(s.client, s.tenant, admin, s.clock)
    pending = await mfa_challenge(s.client, s.tenant.slug, admin.email)  # password step done
    assert (await s.client.get(s.path("/projects"), headers=key.headers)).status_code == 200
    deactivate = {"is_active": False}
    response = await s.client.patch(s.path(f"/users/{admin.id}"), json=deactivate, headers=s.owner.headers)
    assert response.status_code == 200, response.text
    for session in (admin.login, second):
        await assert_dead(s, session)
    assert (await s.client.get(s.path("/projects"), headers=key.headers)).status_code == 401
    finish = await s.token(grant_type="mfa_otp", mfa_token=pending, otp=authenticator.next_code())
    assert_oauth_error(finish, "invalid_grant")
    assert_oauth_error(await s.password_grant(admin.email, admin.password), "invalid_grant")


@TABLE.case("V7.4.3")
async def after_a_factor_changes_the_other_sessions_end_or_can_be_ended(s: Scene) -> None:
    current = s.owner.login
    authenticator = await enable_mfa(s.client, s.tenant, s.owner, s.clock)
    other = await login_with_otp(s.client, s.tenant.slug, s.owner.email, authenticator)
    off = await s.client.request(
        "DELETE",
        s.path("/users/me/mfa/totp"),
        json={"code": authenticator.next_code()},
        headers=current.headers,
    )
    assert off.status_code == 204, off.text
    # Turning MFA off ends no session; the user sees the other one and ends it.
    listed = await s.client.get(s.path("/users/me/sessions"), headers=current.headers)
    others = [item["id"] for item in listed.json()["items"] if not item["current"]]
    assert sid(other) in others
    for session_id in others:
        ended = await s.client.delete(s.path(f"/users/me/sessions/{session_id}"), headers=current.headers)
        assert ended.status_code == 204, ended.text
    await assert_dead(s, other)
    # A password change ends every other session by itself.
    other = await login(s.client, s.tenant.slug, s.owner.email)
    change = {"current_password": s.owner.password, "new_password": "another long passphrase"}
    changed = await s.client.post(s.path("/users/me/password"), json=change, headers=current.headers)
    assert changed.status_code == 204, changed.text
    await assert_dead(s, other)
    assert (await s.me(current.headers)).status_code == 200


# -- V7.5 defences against session abuse ---------------------------------------------------------


IDENTITY = "/users/me/identities/github"


async def link_github(s: Scene, session: Login, email: str) -> None:
    """Links a new GitHub account to the owner from `session` (the whole browser leg)."""
    s.env.fake.sign_in_as(add_account(s.env.fake, email))
    started = await s.client.post(s.path(IDENTITY), headers=session.headers)
    assert started.status_code == 200, started.text
    linked = await s.client.get(await s.env.at_github(started.json()["authorize_url"]))
    assert linked.status_code == 200, linked.text


@TABLE.case("V7.5.1", github=True)
async def linking_another_way_to_sign_in_needs_a_fresh_proof(s: Scene) -> None:
    await link_github(s, s.owner.login, "victim@example.com")  # while the login is fresh
    # A stolen session, 11 minutes after its login: its access token, and the one a refresh
    # mints now (a refresh keeps the login's `auth_time`; it is no new proof).
    s.clock.advance(minutes=11)
    refreshed = (await s.refresh(s.owner.login.refresh_token)).json()
    for headers in (s.owner.headers, bearer(refreshed["access_token"])):
        assert (await s.me(headers)).status_code == 200  # the token itself is live
        enrol = await s.client.post(s.path("/users/me/mfa/totp"), json={}, headers=headers)
        assert_problem(enrol, 403, "reauthentication_required")
        link = await s.client.post(s.path(IDENTITY), headers=headers)
        assert_problem(link, 403, "reauthentication_required")
        assert "set-cookie" not in link.headers  # no link flow was started
        unlink = await s.client.delete(s.path(IDENTITY), headers=headers)
        assert_problem(unlink, 403, "reauthentication_required")
    assert (await s.me(s.owner.headers)).json()["identities"] == ["github"]
    # The control: the user signs in again and may change their ways in.
    again = await login(s.client, s.tenant.slug, s.owner.email)
    assert (await s.client.delete(s.path(IDENTITY), headers=again.headers)).status_code == 204
    await link_github(s, again, "victim-again@example.com")


# -- V7.6 federated re-authentication -------------------------------------------------------------


@TABLE.case("V7.6.1", github=True)
async def a_github_session_ends_at_the_absolute_lifetime_like_any_other(s: Scene) -> None:
    body = assert_tokens(await s.env.sign_in(s.tenant, add_account(s.env.fake, "octo@example.com")))
    assert claims_of(body["access_token"])["amr"] == ["github"]
    refresh_token = body["refresh_token"]
    for days in (6, 6, 6, 6, 5):  # used every few days, up to day 29
        s.clock.advance(days=days)
        response = await s.refresh(refresh_token)
        assert response.status_code == 200, response.text
        refresh_token = response.json()["refresh_token"]
    s.clock.advance(days=2)  # day 31: sign in at GitHub again
    assert_oauth_error(await s.refresh(refresh_token), "invalid_grant")


@pytest.mark.parametrize("case", TABLE.params())
async def test_asvs_v7_sessions(
    case: Case, make_settings: MakeSettings, make_client: MakeClient, clock: FrozenClock, tmp_path: Path
) -> None:
    await run_case(case, make_settings, make_client, clock, tmp_path)
