"""/t/{tenant}/auth/*: sign-up, the OAuth token endpoint, rotation, revocation, logout,
and changing the password (API.md "Authentication" and "Details that are easy to get wrong")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock
from saas_app.rbac.permissions import PERMISSIONS
from tests.factories import (
    DEFAULT_PASSWORD,
    Login,
    Member,
    TenantCtx,
    add_member,
    create_tenant,
    login,
    token,
)

FORM = "application/x-www-form-urlencoded"
PROBLEM = "application/problem+json"
ALL_PERMISSIONS = set(PERMISSIONS)  # the owner holds the whole catalogue
NEW_PASSWORD = "a brand new passphrase"
WRONG_PASSWORD = "not the right passphrase"


@dataclass
class Auth:
    """One tenant's endpoints, driven through the API; its owner is signed in."""

    client: AsyncClient
    tenant: TenantCtx

    @property
    def owner(self) -> Member:
        return self.tenant.owner

    async def get(self, suffix: str, **kwargs: Any) -> Response:
        return await self.client.get(self.tenant.path(suffix), **kwargs)

    async def post(self, suffix: str, **kwargs: Any) -> Response:
        return await self.client.post(self.tenant.path(suffix), **kwargs)

    async def patch(self, suffix: str, **kwargs: Any) -> Response:
        return await self.client.patch(self.tenant.path(suffix), **kwargs)

    async def register(self, email: str, password: str = DEFAULT_PASSWORD) -> Response:
        return await self.post("/auth/register", json={"email": email, "password": password})

    async def password_grant(self, email: str, password: str = DEFAULT_PASSWORD, **scope: str) -> Response:
        form = {"grant_type": "password", "username": email, "password": password, **scope}
        return await token(self.client, self.tenant.slug, **form)

    async def refresh(self, refresh_token: str, **scope: str) -> Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **scope}
        return await token(self.client, self.tenant.slug, **form)

    async def login(self, scope: str | None = None) -> Login:
        """Opens another session of the owner."""
        return await login(self.client, self.tenant.slug, self.owner.email, scope=scope)

    async def revoke(self, value: str, hint: str | None = None) -> Response:
        return await self.post(
            "/auth/revoke", data={"token": value} | ({"token_type_hint": hint} if hint else {})
        )

    async def logout(self, session: Login) -> Response:
        return await self.post("/auth/logout", headers=session.headers)

    async def me(self, access_token: str) -> Response:
        return await self.get("/users/me", headers=bearer(access_token))

    async def change_password(self, current: str, new: str) -> Response:
        body = {"current_password": current, "new_password": new}
        return await self.post("/users/me/password", json=body, headers=self.owner.headers)


@pytest.fixture
async def auth(client: AsyncClient) -> Auth:
    return Auth(client, await create_tenant(client))


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def assert_oauth_error(response: Response, error: str) -> None:
    """RFC 6749 §5.2: 400, a JSON `error` (never problem+json, never 422), not cached."""
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


def assert_problem(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


# -- register ---------------------------------------------------------------------------
async def test_register_creates_a_member(auth: Auth) -> None:
    response = await auth.register("new.user@example.com")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "new.user@example.com"
    assert body["roles"] == ["member"]
    assert set(body["permissions"]) == {"projects:read", "projects:write"}
    assert body["is_active"] is True
    assert "password" not in body


@pytest.mark.parametrize(
    "second_email", ["taken@example.com", "TAKEN@Example.COM"], ids=["same", "other-case"]
)
async def test_register_with_a_taken_email_is_user_exists(auth: Auth, second_email: str) -> None:
    assert (await auth.register("taken@example.com")).status_code == 201
    assert_problem(await auth.register(second_email), 409, "user_exists")


async def test_register_is_refused_once_the_owner_closes_signup(auth: Auth) -> None:
    closed = await auth.patch("", json={"allow_signup": False}, headers=auth.owner.headers)
    assert closed.status_code == 200, closed.text
    assert_problem(await auth.register("late@example.com"), 403, "signup_closed")


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("not-an-email", DEFAULT_PASSWORD),
        ("short@example.com", "Sev3n!!"),
        ("long@example.com", "p" * 129),
    ],
    ids=["bad-email", "7-char-password", "129-char-password"],
)
async def test_register_rejects_bad_input_without_echoing_it(auth: Auth, email: str, password: str) -> None:
    response = await auth.register(email, password)
    assert_problem(response, 422, "validation_error")
    assert response.json()["errors"], response.text
    assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["errors"])
    assert password not in response.text


async def test_a_128_character_non_ascii_password_works(auth: Auth) -> None:
    password = "ü" * 64 + "密" * 64  # 128 characters, 320 UTF-8 bytes
    assert (await auth.register("unicode@example.com", password)).status_code == 201
    assert (await auth.password_grant("unicode@example.com", password)).status_code == 200


async def test_passwords_sharing_their_first_72_bytes_are_different(auth: Auth) -> None:
    # Plain bcrypt ignores everything after byte 72; these must not be interchangeable.
    registered, other = "x" * 72 + "-registered", "x" * 72 + "-other"
    assert (await auth.register("bcrypt@example.com", registered)).status_code == 201
    assert (await auth.password_grant("bcrypt@example.com", registered)).status_code == 200
    assert_oauth_error(await auth.password_grant("bcrypt@example.com", other), "invalid_grant")


# -- token endpoint: password grant --------------------------------------------------------
async def test_password_grant_issues_an_uncached_bearer_token(auth: Auth) -> None:
    response = await auth.password_grant(auth.owner.email)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"] not in ("", body["access_token"])
    assert (await auth.me(body["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("owner", ALL_PERMISSIONS),
        ("admin", ALL_PERMISSIONS - {"tenant:manage"}),
        ("member", {"projects:read", "projects:write"}),
        ("viewer", {"projects:read"}),
    ],
)
async def test_default_scope_is_all_the_users_permissions(auth: Auth, role: str, expected: set[str]) -> None:
    user = await add_member(auth.client, auth.tenant, role)
    assert set(user.login.scope.split()) == expected
    assert set((await auth.me(user.login.access_token)).json()["permissions"]) == expected


async def test_a_narrowed_scope_grants_only_what_was_asked(auth: Auth) -> None:
    narrow = await auth.login("projects:read")
    assert narrow.scope == "projects:read"
    assert (await auth.get("/projects", headers=narrow.headers)).status_code == 200
    created = await auth.post("/projects", json={"name": "x"}, headers=narrow.headers)
    assert_problem(created, 403, "forbidden")
    assert "projects:write" in created.json()["detail"]


@pytest.mark.parametrize("scope", ["users:manage", "projects:read users:read", "projects:delete"])
async def test_asking_for_a_scope_the_user_lacks_is_invalid_scope(auth: Auth, scope: str) -> None:
    member = await add_member(auth.client, auth.tenant, "member")
    response = await auth.password_grant(member.email, DEFAULT_PASSWORD, scope=scope)
    assert_oauth_error(response, "invalid_scope")


async def test_failed_logins_look_the_same_whatever_the_reason(auth: Auth) -> None:
    inactive = await add_member(auth.client, auth.tenant, "member")
    deactivated = await auth.patch(
        f"/users/{inactive.id}", json={"is_active": False}, headers=auth.owner.headers
    )
    assert deactivated.status_code == 200, deactivated.text
    failures = [
        await auth.password_grant(auth.owner.email, WRONG_PASSWORD),
        await auth.password_grant("nobody@example.com"),
        await auth.password_grant(inactive.email),
    ]
    for response in failures:
        assert_oauth_error(response, "invalid_grant")
    assert len({r.json()["error_description"] for r in failures}) == 1


async def test_an_unknown_grant_type_is_unsupported(auth: Auth) -> None:
    assert_oauth_error(
        await token(auth.client, auth.tenant.slug, grant_type="client_credentials"), "unsupported_grant_type"
    )


CREDENTIALS = "username=a%40example.com&password=whatever1"
MALFORMED_REQUESTS = [  # (body, content type)
    pytest.param("", FORM, id="empty-form"),
    pytest.param(CREDENTIALS, FORM, id="no-grant-type"),
    pytest.param(f"grant_type=&{CREDENTIALS}", FORM, id="empty-grant-type"),
    pytest.param("grant_type=password&password=whatever1", FORM, id="no-username"),
    pytest.param("grant_type=password&username=a%40example.com", FORM, id="no-password"),
    pytest.param("grant_type=refresh_token", FORM, id="no-refresh-token"),
    pytest.param("grant_type=refresh_token&refresh_token=", FORM, id="empty-refresh-token"),
    pytest.param(f"grant_type=password&grant_type=password&{CREDENTIALS}", FORM, id="repeated-parameter"),
    pytest.param(f"grant_type=password&{CREDENTIALS}&scope={'x' * 5000}", FORM, id="huge-field"),
    pytest.param('{"grant_type": "password"}', "application/json", id="json-body"),
    pytest.param(f"grant_type=password&{CREDENTIALS}", None, id="no-content-type"),
    pytest.param("--x\r\nnot a multipart body", "multipart/form-data; boundary=x", id="broken-multipart"),
]


@pytest.mark.parametrize(("content", "content_type"), MALFORMED_REQUESTS)
async def test_malformed_token_requests_are_400_never_422(
    auth: Auth, content: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await auth.post("/auth/token", content=content, headers=headers)
    assert_oauth_error(response, "invalid_request")


async def test_a_revoke_request_without_a_token_is_invalid_request(auth: Auth) -> None:
    assert_oauth_error(await auth.post("/auth/revoke", data={}), "invalid_request")


@pytest.mark.parametrize("route", ["/auth/register", "/auth/token", "/auth/revoke", "/auth/logout"])
async def test_auth_routes_of_an_unknown_tenant_are_404(client: AsyncClient, route: str) -> None:
    response = await client.post(f"/t/no-such-tenant{route}", data={"token": "x"})
    if route in ("/auth/token", "/auth/revoke"):  # OAuth endpoints: RFC 6749 §5.2 form
        assert response.status_code == 404, response.text
        assert response.json() == {"error": "invalid_request", "error_description": "Tenant not found"}
        assert response.headers["cache-control"] == "no-store"
    else:
        assert_problem(response, 404, "tenant_not_found")


# -- token endpoint: refresh grant ---------------------------------------------------------
async def test_refresh_rotates_the_refresh_token(auth: Auth) -> None:
    response = await auth.refresh(auth.owner.login.refresh_token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["refresh_token"] != auth.owner.login.refresh_token
    assert body["scope"] == auth.owner.login.scope
    assert (await auth.me(body["access_token"])).status_code == 200
    assert (await auth.refresh(body["refresh_token"])).status_code == 200


async def test_reusing_a_retired_refresh_token_revokes_the_session(auth: Auth) -> None:
    retired = auth.owner.login.refresh_token
    newest = (await auth.refresh(retired)).json()
    assert_oauth_error(await auth.refresh(retired), "invalid_grant")
    assert_oauth_error(await auth.refresh(newest["refresh_token"]), "invalid_grant")
    assert (await auth.me(newest["access_token"])).status_code == 401
    assert (await auth.me(auth.owner.login.access_token)).status_code == 401


@pytest.mark.parametrize("refresh_token", ["garbage", "rt_" + "A" * 43], ids=["garbage", "unknown"])
async def test_refresh_with_an_unknown_token_fails(auth: Auth, refresh_token: str) -> None:
    response = await auth.refresh(refresh_token)
    assert_oauth_error(response, "invalid_grant")


async def test_a_refresh_token_of_another_tenant_is_refused_and_stays_valid(auth: Auth) -> None:
    other = await create_tenant(auth.client)
    assert_oauth_error(
        await Auth(auth.client, other).refresh(auth.owner.login.refresh_token), "invalid_grant"
    )
    assert (await auth.refresh(auth.owner.login.refresh_token)).status_code == 200


async def test_refresh_may_narrow_the_scope(auth: Auth) -> None:
    response = await auth.refresh(auth.owner.login.refresh_token, scope="projects:read")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "projects:read"
    headers = bearer(response.json()["access_token"])
    assert (await auth.post("/projects", json={"name": "x"}, headers=headers)).status_code == 403


@pytest.mark.parametrize("wider", ["projects:read projects:write", "tenant:manage", "no:such"])
async def test_refresh_never_widens_the_original_grant(auth: Auth, wider: str) -> None:
    narrow = await auth.login("projects:read")
    assert_oauth_error(await auth.refresh(narrow.refresh_token, scope=wider), "invalid_scope")
    # The refused request retired nothing: the presented token still works, with the old ceiling.
    response = await auth.refresh(narrow.refresh_token)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "projects:read"


async def test_a_session_unused_past_its_idle_lifetime_ends(auth: Auth, clock: FrozenClock) -> None:
    clock.advance(days=8)
    assert_oauth_error(await auth.refresh(auth.owner.login.refresh_token), "invalid_grant")


async def test_a_session_ends_at_its_absolute_lifetime_even_if_used(auth: Auth, clock: FrozenClock) -> None:
    refresh_token = auth.owner.login.refresh_token
    for days in (6, 6, 6, 6, 5):  # used every few days, up to day 29
        clock.advance(days=days)
        response = await auth.refresh(refresh_token)
        assert response.status_code == 200, response.text
        refresh_token = response.json()["refresh_token"]
    clock.advance(days=2)  # day 31
    assert_oauth_error(await auth.refresh(refresh_token), "invalid_grant")


async def test_an_access_token_expires_after_fifteen_minutes(auth: Auth, clock: FrozenClock) -> None:
    clock.advance(minutes=14)
    assert (await auth.me(auth.owner.login.access_token)).status_code == 200
    clock.advance(minutes=2)
    response = await auth.me(auth.owner.login.access_token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer realm="{auth.tenant.slug}", error="invalid_token"'


# -- revocation and logout ---------------------------------------------------------------
@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
@pytest.mark.parametrize("kind", ["refresh_token", "access_token"])
async def test_revoking_a_token_ends_its_session(auth: Auth, kind: str, hint: str | None) -> None:
    # RFC 7009 §2.1: a wrong hint only changes where the server looks first.
    session = auth.owner.login
    response = await auth.revoke(getattr(session, kind), hint)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert_oauth_error(await auth.refresh(session.refresh_token), "invalid_grant")
    assert (await auth.me(session.access_token)).status_code == 401


@pytest.mark.parametrize("value", ["garbage", "rt_" + "A" * 43, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"])
async def test_revoking_an_unknown_token_is_ok(auth: Auth, value: str) -> None:
    response = await auth.revoke(value)
    assert response.status_code == 200, response.text
    assert (await auth.me(auth.owner.login.access_token)).status_code == 200


@pytest.mark.parametrize("kind", ["refresh_token", "access_token"])
async def test_revoking_under_another_tenant_does_nothing(auth: Auth, kind: str) -> None:
    other = await create_tenant(auth.client)
    assert (await Auth(auth.client, other).revoke(getattr(auth.owner.login, kind))).status_code == 200
    assert (await auth.me(auth.owner.login.access_token)).status_code == 200


async def test_logout_ends_only_the_callers_session(auth: Auth) -> None:
    other_session = await auth.login()
    response = await auth.logout(auth.owner.login)
    assert response.status_code == 204, response.text
    assert (await auth.me(auth.owner.login.access_token)).status_code == 401
    assert_oauth_error(await auth.refresh(auth.owner.login.refresh_token), "invalid_grant")
    assert (await auth.me(other_session.access_token)).status_code == 200


async def test_logout_without_a_token_is_401(auth: Auth) -> None:
    response = await auth.post("/auth/logout")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == f'Bearer realm="{auth.tenant.slug}"'


# -- changing the password -----------------------------------------------------------------
async def test_changing_the_password_ends_every_other_session(auth: Auth) -> None:
    other = await auth.login()
    assert (await auth.change_password(DEFAULT_PASSWORD, NEW_PASSWORD)).status_code == 204
    assert (await auth.me(other.access_token)).status_code == 401
    assert_oauth_error(await auth.refresh(other.refresh_token), "invalid_grant")
    # The session that changed it carries on.
    assert (await auth.me(auth.owner.login.access_token)).status_code == 200
    assert (await auth.refresh(auth.owner.login.refresh_token)).status_code == 200


async def test_after_a_change_only_the_new_password_logs_in(auth: Auth) -> None:
    assert (await auth.change_password(DEFAULT_PASSWORD, NEW_PASSWORD)).status_code == 204
    old = await auth.password_grant(auth.owner.email)
    assert_oauth_error(old, "invalid_grant")
    assert (await auth.password_grant(auth.owner.email, NEW_PASSWORD)).status_code == 200


async def test_a_wrong_current_password_changes_nothing(auth: Auth) -> None:
    other = await auth.login()
    assert_problem(await auth.change_password(WRONG_PASSWORD, NEW_PASSWORD), 400, "invalid_password")
    assert (await auth.me(other.access_token)).status_code == 200
    assert (await auth.password_grant(auth.owner.email)).status_code == 200


@pytest.mark.parametrize("new_password", ["Sev3n!!", "p" * 129], ids=["7-chars", "129-chars"])
async def test_a_new_password_outside_policy_is_422(auth: Auth, new_password: str) -> None:
    response = await auth.change_password(DEFAULT_PASSWORD, new_password)
    assert_problem(response, 422, "validation_error")
    assert new_password not in response.text


# -- audit trail ---------------------------------------------------------------------------
async def test_auth_events_are_audited_without_secrets(auth: Auth) -> None:
    assert_oauth_error(await auth.password_grant(auth.owner.email, WRONG_PASSWORD), "invalid_grant")
    reused = await auth.login()
    rotated = (await auth.refresh(reused.refresh_token)).json()
    assert_oauth_error(await auth.refresh(reused.refresh_token), "invalid_grant")
    logged_out = await auth.login()
    assert (await auth.logout(logged_out)).status_code == 204
    assert (await auth.change_password(DEFAULT_PASSWORD, NEW_PASSWORD)).status_code == 204
    tokens = [rotated["access_token"], rotated["refresh_token"]]
    tokens += [t for s in (auth.owner.login, reused, logged_out) for t in (s.access_token, s.refresh_token)]

    response = await auth.get("/audit-events?limit=200", headers=auth.owner.headers)
    assert response.status_code == 200, response.text
    actions = {event["action"] for event in response.json()["items"]}
    assert {
        "login.succeeded",
        "login.failed",
        "token.refreshed",
        "token.reuse_detected",
        "session.revoked",
        "password.changed",
    } <= actions
    secrets = [DEFAULT_PASSWORD, WRONG_PASSWORD, NEW_PASSWORD, *tokens]
    leaked = [secret for secret in secrets if secret in response.text]
    assert not leaked
