"""Tenant isolation: every tenant route, tried with a token and object ids from another tenant.

Two tenants, A and B, each with an owner, a custom role, a second user holding it, and a
project. With A's owner token, every route under /t/{tenant} is called (a) on B's path,
where it must be a 401 `invalid_token` (or, for the public OAuth routes, must not act on
A's credentials), and (b) on A's path with B's ids and credentials, where it must find
nothing of B. In both, no B data may appear in the body and B must be left as it was.
The route list comes from the app, so a new route fails the matrix until it is added.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from tests.factories import (
    DEFAULT_PASSWORD,
    ApiKey,
    Member,
    TenantCtx,
    add_member,
    create_api_key,
    create_tenant,
    enable_mfa,
    mfa_challenge,
)

PROBLEM_JSON = "application/problem+json"
ROLE_PERMISSIONS = ["audit:read", "projects:read"]


@dataclass
class Side:
    """One tenant and the objects the other tenant must never reach."""

    tenant: TenantCtx
    user: Member
    project_id: str
    project_name: str
    role_name: str
    owner_sid: str
    api_key: ApiKey
    invitation_id: str

    @property
    def owner(self) -> Member:
        return self.tenant.owner

    def markers(self) -> set[str]:
        """Strings that identify this tenant's data in a response body."""
        t = self.tenant
        return {
            t.id, t.slug, f"Tenant {t.slug}", self.owner.id, self.owner.email, self.owner_sid,
            self.user.id, self.user.email, self.project_id, self.project_name, self.role_name,
            self.api_key.id, self.api_key.prefix, self.invitation_id, self.invitee,
        }  # fmt: skip

    @property
    def invitee(self) -> str:
        return f"invitee-{self.tenant.slug}@example.com"

    def path(self, template: str, ids: Side) -> str:
        """Fills a route template with this tenant's slug and `ids`' object ids."""
        return template.format(
            tenant=self.tenant.slug,
            user_id=ids.user.id,
            project_id=ids.project_id,
            name=ids.role_name,
            sid=ids.owner_sid,
            key_id=ids.api_key.id,
            invitation_id=ids.invitation_id,
        )


async def build_side(client: AsyncClient, label: str) -> Side:
    tenant = await create_tenant(client)
    headers = tenant.owner.headers
    role_name = f"auditor-{label}-{uuid.uuid4().hex[:6]}"
    r = await client.post(
        tenant.path("/roles"), json={"name": role_name, "permissions": ROLE_PERMISSIONS}, headers=headers
    )
    assert r.status_code == 201, r.text
    user = await add_member(client, tenant, "member", role_name)
    project_name = f"secret-plan-{label}-{uuid.uuid4().hex[:6]}"
    r = await client.post(tenant.path("/projects"), json={"name": project_name}, headers=headers)
    assert r.status_code == 201, r.text
    project_id = r.json()["id"]
    r = await client.get(tenant.path("/users/me/sessions"), headers=headers)
    assert r.status_code == 200, r.text
    owner_sid = next(s["id"] for s in r.json()["items"] if s["current"])
    api_key = await create_api_key(client, tenant, "projects:read")
    invitee = {"email": f"invitee-{tenant.slug}@example.com", "roles": ["viewer"]}
    r = await client.post(tenant.path("/invitations"), json=invitee, headers=headers)
    assert r.status_code == 201, r.text
    return Side(tenant, user, project_id, project_name, role_name, owner_sid, api_key, r.json()["id"])


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """GitHub sign-in configured, so its routes answer; its URLs point nowhere, as no request
    here may get as far as calling GitHub."""
    return make_settings(
        GITHUB_CLIENT_ID="Iv1.crosstenant",
        GITHUB_CLIENT_SECRET="cross-tenant-github-secret-" + "x" * 12,
        GITHUB_AUTHORIZE_URL="https://github.invalid/login/oauth/authorize",
        GITHUB_TOKEN_URL="https://github.invalid/login/oauth/access_token",
        GITHUB_API_URL="https://github.invalid",
    )


@pytest.fixture
async def a(client: AsyncClient) -> Side:
    return await build_side(client, "a")


@pytest.fixture
async def b(client: AsyncClient) -> Side:
    return await build_side(client, "b")


Body = Callable[[Side], dict[str, Any]]  # given the tenant that does not own the path


@dataclass(frozen=True)
class Route:
    foreign: int  # A's token on B's path (B's ids, A's credentials in the body)
    own: int  # A's token on A's path (B's ids, B's credentials in the body)
    json: Body | None = None
    form: Body | None = None


def refresh_grant(other: Side) -> dict[str, Any]:
    return {"grant_type": "refresh_token", "refresh_token": other.owner.login.refresh_token}


ROUTES: dict[str, Route] = {
    "GET /t/{tenant}": Route(401, 200),
    "PATCH /t/{tenant}": Route(401, 200, json=lambda _: {"name": "Renamed"}),
    # Public: a stray bearer token grants nothing; the sign-up is an ordinary new member.
    "POST /t/{tenant}/auth/register": Route(
        201, 201, json=lambda other: {"email": other.owner.email, "password": DEFAULT_PASSWORD}
    ),
    "POST /t/{tenant}/auth/token": Route(400, 400, form=refresh_grant),
    # RFC 7009: 200 for a token it does not know, and the other tenant's session lives on.
    "POST /t/{tenant}/auth/revoke": Route(
        200, 200, form=lambda other: {"token": other.owner.login.refresh_token}
    ),
    # Public: the other tenant's owner has no account here, so nothing is mailed (answered
    # alike, whoever asks); a token of nowhere is refused whatever the bearer.
    "POST /t/{tenant}/auth/password/forgot": Route(202, 202, json=lambda other: {"email": other.owner.email}),
    "POST /t/{tenant}/auth/password/reset": Route(
        400, 400, json=lambda _: {"token": "x" * 43, "new_password": "another long passphrase"}
    ),
    # Public: a token of nowhere is refused whatever the bearer.
    "POST /t/{tenant}/auth/email/verify": Route(400, 400, json=lambda _: {"token": "x" * 43}),
    "POST /t/{tenant}/auth/invitations/accept": Route(
        400, 400, json=lambda _: {"token": "x" * 43, "password": "another long passphrase"}
    ),
    # RFC 7662: the other tenant's token is not live here (and nothing of it is told).
    "POST /t/{tenant}/auth/introspect": Route(
        401, 200, form=lambda other: {"token": other.owner.login.access_token}
    ),
    "POST /t/{tenant}/auth/logout": Route(401, 204),
    "GET /t/{tenant}/users/me": Route(401, 200),
    "PATCH /t/{tenant}/users/me": Route(401, 200, json=lambda _: {"full_name": "Mallory"}),
    "POST /t/{tenant}/users/me/password": Route(
        401,
        204,
        json=lambda _: {"current_password": DEFAULT_PASSWORD, "new_password": "another long passphrase"},
    ),
    "POST /t/{tenant}/users/me/email/verification": Route(401, 202),
    "GET /t/{tenant}/users/me/sessions": Route(401, 200),
    "DELETE /t/{tenant}/users/me/sessions/{sid}": Route(401, 404),
    "GET /t/{tenant}/users": Route(401, 200),
    "GET /t/{tenant}/users/{user_id}": Route(401, 404),
    "PATCH /t/{tenant}/users/{user_id}": Route(401, 404, json=lambda _: {"is_active": False}),
    "PUT /t/{tenant}/users/{user_id}/roles": Route(401, 404, json=lambda _: {"roles": ["viewer"]}),
    # MFA: A's fresh login may enrol A (a pending secret of A's, nothing of B); A has no MFA
    # to confirm, turn off or renew codes for (409); B's user is not found from A.
    "POST /t/{tenant}/users/me/mfa/totp": Route(401, 200, json=lambda _: {}),
    "POST /t/{tenant}/users/me/mfa/totp/confirm": Route(401, 409, json=lambda _: {"code": "123456"}),
    "DELETE /t/{tenant}/users/me/mfa/totp": Route(401, 409, json=lambda _: {"code": "123456"}),
    "POST /t/{tenant}/users/me/mfa/recovery-codes": Route(401, 409, json=lambda _: {"code": "123456"}),
    "DELETE /t/{tenant}/users/{user_id}/mfa": Route(401, 404),
    "GET /t/{tenant}/roles": Route(401, 200),
    # Role names are per tenant: A may have a role named like B's.
    "POST /t/{tenant}/roles": Route(
        401, 201, json=lambda other: {"name": other.role_name, "permissions": ["projects:read"]}
    ),
    "PATCH /t/{tenant}/roles/{name}": Route(401, 404, json=lambda _: {"permissions": ["users:manage"]}),
    "DELETE /t/{tenant}/roles/{name}": Route(401, 404),
    "GET /t/{tenant}/projects": Route(401, 200),
    "POST /t/{tenant}/projects": Route(401, 201, json=lambda _: {"name": "mine"}),
    "GET /t/{tenant}/projects/{project_id}": Route(401, 404),
    "PATCH /t/{tenant}/projects/{project_id}": Route(401, 404, json=lambda _: {"name": "hijacked"}),
    "DELETE /t/{tenant}/projects/{project_id}": Route(401, 404),
    "GET /t/{tenant}/audit-events": Route(401, 200),
    # API keys: A issues and lists only its own; B's key id is not found from A.
    "POST /t/{tenant}/api-keys": Route(401, 201, json=lambda _: {"name": "ci", "scopes": ["projects:read"]}),
    "GET /t/{tenant}/api-keys": Route(401, 200),
    "DELETE /t/{tenant}/api-keys/{key_id}": Route(401, 404),
    # Invitations: A may invite B's invitee into A (a pending one of A's); B's invitation
    # is not found from A.
    "POST /t/{tenant}/invitations": Route(401, 201, json=lambda other: {"email": other.invitee}),
    "GET /t/{tenant}/invitations": Route(401, 200),
    "DELETE /t/{tenant}/invitations/{invitation_id}": Route(401, 404),
    # GitHub: authorize is public (a stray token grants nothing; it only starts a flow for the
    # path's tenant); a callback without state is refused before anything else; A may start
    # linking GitHub to A, and A has nothing linked to remove.
    "GET /t/{tenant}/auth/github/authorize": Route(302, 302),
    "GET /t/{tenant}/auth/github/callback": Route(400, 400),
    "POST /t/{tenant}/users/me/identities/github": Route(401, 200),
    "DELETE /t/{tenant}/users/me/identities/github": Route(401, 404),
    # The API's own documentation for the path's tenant: public, the same for every caller,
    # naming nothing of the tenant but its slug (core/docs.py).
    "GET /t/{tenant}/docs": Route(200, 200),
    # What resource servers read: public, naming the path's tenant only (its issuer).
    "GET /t/{tenant}/.well-known/openid-configuration": Route(200, 200),
    "GET /t/{tenant}/.well-known/jwks.json": Route(200, 200),
    "GET /t/{tenant}/oauth/userinfo": Route(401, 200),
    "GET /t/{tenant}/openapi.json": Route(200, 200),
}


def tenant_routes(app: FastAPI) -> set[str]:
    """Every "METHOD /t/{tenant}..." the app serves (HEAD aside)."""
    return {
        f"{method} {route.path}"
        for route in iter_route_contexts(app.routes)
        if route.path and (route.path == "/t/{tenant}" or route.path.startswith("/t/{tenant}/"))
        for method in route.methods or ()
        if method != "HEAD"
    }


async def test_matrix_covers_every_tenant_route(app: FastAPI) -> None:
    served = tenant_routes(app)
    assert served, "no tenant routes found: has the route listing API changed?"
    missing, stale = sorted(served - ROUTES.keys()), sorted(ROUTES.keys() - served)
    assert not missing, f"add these routes to the cross-tenant matrix: {missing}"
    assert not stale, f"matrix entries for routes the app no longer serves: {stale}"


async def call(
    client: AsyncClient, key: str, path_owner: Side, ids: Side, other: Side, token: Member
) -> Response:
    method, template = key.split(" ", 1)
    route = ROUTES[key]
    return await client.request(
        method,
        path_owner.path(template, ids),
        json=route.json(other) if route.json else None,
        data=route.form(other) if route.form else None,
        headers=token.headers,
    )


def assert_no_data_of(side: Side, response: Response) -> None:
    """No marker of `side` in the body, except what the request itself carried."""
    sent = str(response.request.url) + response.request.content.decode()
    answer = response.text + response.headers.get("location", "")
    leaked = {m for m in side.markers() if m in answer and m not in sent}
    assert not leaked, f"{leaked} leaked into {response.text}"


async def assert_untouched(client: AsyncClient, side: Side) -> None:
    """The side's tenant, project, role, user and sessions are as build_side left them."""
    t, headers = side.tenant, side.owner.headers
    r = await client.get(t.path(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == f"Tenant {t.slug}"
    r = await client.get(t.path(f"/projects/{side.project_id}"), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == side.project_name
    r = await client.get(t.path("/roles"), headers=headers)
    assert r.status_code == 200, r.text
    roles = {role["name"]: role["permissions"] for role in r.json()["items"]}
    assert sorted(roles[side.role_name]) == ROLE_PERMISSIONS
    r = await client.get(t.path(f"/users/{side.user.id}"), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["is_active"] is True
    assert sorted(r.json()["roles"]) == sorted(["member", side.role_name])
    r = await client.get(t.path("/users/me"), headers=side.user.headers)
    assert r.status_code == 200, r.text
    r = await client.get(t.path("/projects"), headers=side.api_key.headers)
    assert r.status_code == 200, r.text  # the side's API key still works
    r = await client.get(t.path("/invitations"), params={"status": "pending"}, headers=headers)
    assert [i["id"] for i in r.json()["items"]] == [side.invitation_id]
    # Last, as it rotates it: the owner's session and refresh token are still good.
    r = await client.post(t.path("/auth/token"), data=refresh_grant(side))
    assert r.status_code == 200, r.text


def assert_refusal_shape(response: Response, slug: str) -> None:
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == f'Bearer realm="{slug}", error="invalid_token"'
    if response.status_code in (401, 403, 404):
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
    if response.status_code == 400 and response.headers["content-type"].startswith(PROBLEM_JSON):
        assert response.json()["code"] in {"invalid_state", "invalid_token"}  # GitHub's callback, a reset
    elif response.status_code == 400:  # the token endpoint
        assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("key", ROUTES, ids=list(ROUTES))
async def test_token_of_a_on_b_path(client: AsyncClient, a: Side, b: Side, key: str) -> None:
    r = await call(client, key, path_owner=b, ids=b, other=a, token=a.owner)
    assert r.status_code == ROUTES[key].foreign, r.text
    assert_refusal_shape(r, b.tenant.slug)
    assert_no_data_of(b, r)
    if key.endswith("/auth/register"):
        assert r.json()["roles"] == ["member"]
    await assert_untouched(client, b)
    await assert_untouched(client, a)


@pytest.mark.parametrize("key", ROUTES, ids=list(ROUTES))
async def test_ids_of_b_on_a_path(client: AsyncClient, a: Side, b: Side, key: str) -> None:
    r = await call(client, key, path_owner=a, ids=b, other=b, token=a.owner)
    assert r.status_code == ROUTES[key].own, r.text
    assert_refusal_shape(r, a.tenant.slug)
    assert_no_data_of(b, r)
    await assert_untouched(client, b)


async def test_role_of_b_cannot_be_granted_in_a(client: AsyncClient, a: Side, b: Side) -> None:
    r = await client.put(
        a.tenant.path(f"/users/{a.user.id}/roles"), json={"roles": [b.role_name]}, headers=a.owner.headers
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unknown_role"
    await assert_untouched(client, b)


async def test_user_search_in_a_does_not_find_b(client: AsyncClient, a: Side, b: Side) -> None:
    for query in (b.owner.email, b.user.email):
        r = await client.get(a.tenant.path("/users"), params={"q": query}, headers=a.owner.headers)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [], query


async def test_mfa_of_b_cannot_be_reset_from_a(
    client: AsyncClient, a: Side, b: Side, clock: FrozenClock
) -> None:
    await enable_mfa(client, b.tenant, b.user, clock)
    r = await client.delete(a.tenant.path(f"/users/{b.user.id}/mfa"), headers=a.owner.headers)
    assert r.status_code == 404, r.text
    r = await client.get(b.tenant.path(f"/users/{b.user.id}"), headers=b.owner.headers)
    assert r.json()["mfa_enabled"] is True


async def test_an_mfa_token_of_a_is_refused_by_b(
    client: AsyncClient, a: Side, b: Side, clock: FrozenClock
) -> None:
    authenticator = await enable_mfa(client, a.tenant, a.owner, clock)
    form = {"grant_type": "mfa_otp", "mfa_token": await mfa_challenge(client, a.tenant.slug, a.owner.email)}
    r = await client.post(b.tenant.path("/auth/token"), data={**form, "otp": authenticator.next_code()})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_grant"
    assert_no_data_of(a, r)


SLUGS: dict[str, Callable[[Side], str]] = {
    "unknown": lambda _: f"no-such-tenant-{uuid.uuid4().hex[:8]}",
    "existing-in-uppercase": lambda a: a.tenant.slug.upper(),
    "70-chars": lambda _: "a" * 70,
    "underscore": lambda _: "bad_slug",
    "leading-hyphen": lambda a: f"-{a.tenant.slug}",
}


@pytest.mark.parametrize("make_slug", SLUGS.values(), ids=list(SLUGS))
async def test_unknown_or_malformed_tenant_is_404(
    client: AsyncClient, a: Side, make_slug: Callable[[Side], str]
) -> None:
    slug = make_slug(a)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "", {"headers": a.owner.headers}),
        ("GET", "/users/me", {"headers": a.owner.headers}),
        ("GET", "/projects", {}),
        (
            "POST",
            "/auth/token",
            {"data": {"grant_type": "password", "username": a.owner.email, "password": "x"}},
        ),
    ]
    for method, suffix, kwargs in requests:
        r = await client.request(method, f"/t/{slug}{suffix}", **kwargs)
        assert r.status_code == 404, (method, suffix, r.text)  # never 422 for a malformed slug
        if suffix == "/auth/token":  # an OAuth endpoint answers in RFC 6749 §5.2 form
            assert r.json()["error"] == "invalid_request", r.text
        else:
            assert r.headers["content-type"].startswith(PROBLEM_JSON), (method, suffix)
            assert r.json()["status"] == 404
        assert_no_data_of(a, r)
