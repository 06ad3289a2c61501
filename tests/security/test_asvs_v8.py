"""ASVS 5.0 V8 Authorization: every route's permission, object and field level access.

Cases are registered on TABLE with the requirement ids they prove; see test_asvs.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts

from saas_app.core.clock import FrozenClock
from saas_app.rbac.permissions import CATALOGUE
from tests.factories import DEFAULT_PASSWORD, create_api_key, create_tenant, login, unique_slug
from tests.security.test_asvs import (
    Case,
    MakeClient,
    MakeSettings,
    Scene,
    Table,
    assert_problem,
    bearer,
    claims_of,
    resign,
    run_case,
)

TABLE = Table("V8")

# API.md's permission column, route by route.
GUARDED = {
    "PATCH /t/{tenant}": "tenant:manage",
    "GET /t/{tenant}/users": "users:read",
    "GET /t/{tenant}/users/{user_id}": "users:read",
    "PATCH /t/{tenant}/users/{user_id}": "users:manage",
    "PUT /t/{tenant}/users/{user_id}/roles": "roles:manage",
    "DELETE /t/{tenant}/users/{user_id}/mfa": "users:manage",
    "GET /t/{tenant}/roles": "users:read",
    "POST /t/{tenant}/roles": "roles:manage",
    "PATCH /t/{tenant}/roles/{name}": "roles:manage",
    "DELETE /t/{tenant}/roles/{name}": "roles:manage",
    "GET /t/{tenant}/audit-events": "audit:read",
    "POST /t/{tenant}/api-keys": "api_keys:manage",
    "GET /t/{tenant}/api-keys": "api_keys:manage",
    "DELETE /t/{tenant}/api-keys/{key_id}": "api_keys:manage",
    "GET /t/{tenant}/projects": "projects:read",
    "GET /t/{tenant}/projects/{project_id}": "projects:read",
    "POST /t/{tenant}/projects": "projects:write",
    "POST /t/{tenant}/invitations": "users:manage",
    "POST /t/{tenant}/auth/introspect": "tokens:introspect",
    "GET /t/{tenant}/invitations": "users:manage",
    "DELETE /t/{tenant}/invitations/{invitation_id}": "users:manage",
    "PATCH /t/{tenant}/projects/{project_id}": "projects:write",
    "DELETE /t/{tenant}/projects/{project_id}": "projects:write",
}
# Any signed-in user of the tenant, for themselves.
SIGNED_IN = {
    "GET /t/{tenant}",
    "POST /t/{tenant}/auth/logout",
    "GET /t/{tenant}/users/me",
    "PATCH /t/{tenant}/users/me",
    "POST /t/{tenant}/users/me/email/verification",
    "GET /t/{tenant}/oauth/userinfo",
    "POST /t/{tenant}/users/me/password",
    "GET /t/{tenant}/users/me/sessions",
    "DELETE /t/{tenant}/users/me/sessions/{sid}",
    "POST /t/{tenant}/users/me/mfa/totp",
    "POST /t/{tenant}/users/me/mfa/totp/confirm",
    "DELETE /t/{tenant}/users/me/mfa/totp",
    "POST /t/{tenant}/users/me/mfa/recovery-codes",
    "POST /t/{tenant}/users/me/identities/github",
    "DELETE /t/{tenant}/users/me/identities/github",
}
# The ways in: they take credentials in the request, not a principal.
PUBLIC = {
    "POST /t/{tenant}/auth/register",
    "POST /t/{tenant}/auth/token",
    "POST /t/{tenant}/auth/revoke",
    "POST /t/{tenant}/auth/password/forgot",
    "POST /t/{tenant}/auth/password/reset",
    "POST /t/{tenant}/auth/email/verify",
    "POST /t/{tenant}/auth/invitations/accept",
    # What resource servers read to verify tokens (API-v2 §2).
    "GET /t/{tenant}/.well-known/openid-configuration",
    "GET /t/{tenant}/.well-known/jwks.json",
    "GET /t/{tenant}/auth/github/authorize",
    "GET /t/{tenant}/auth/github/callback",
    # The API's documentation for the tenant (Swagger UI and its OpenAPI document).
    "GET /t/{tenant}/docs",
    "GET /t/{tenant}/openapi.json",
}
USER_READ = {
    "id",
    "email",
    "email_verified",
    "full_name",
    "roles",
    "permissions",
    "is_active",
    "mfa_enabled",
    "identities",
}
USER_READ |= {"created_at"}
API_KEY_READ = {"id", "name", "prefix", "scopes", "rate_limit", "created_by", "created_at", "expires_at"}
API_KEY_READ |= {"last_used_at", "parent_id"}  # parent_id: the key that issued it (docs/api.md)


def tenant_routes(s: Scene) -> set[str]:
    return {
        f"{method} {route.path}"
        for route in iter_route_contexts(s.app.routes)
        if route.path and (route.path + "/").startswith("/t/{tenant}/")
        for method in route.methods or ()
        if method != "HEAD"
    }


@TABLE.case("V8.1.1", "V8.2.1", "V8.3.1")
async def every_route_demands_the_permission_the_docs_name(s: Scene) -> None:
    assert tenant_routes(s) == GUARDED.keys() | SIGNED_IN | PUBLIC, "a route is missing from the tables"
    role = await s.client.post(
        s.path("/roles"), json={"name": "spare", "permissions": ["projects:read"]}, headers=s.owner.headers
    )
    project = await s.client.post(s.path("/projects"), json={"name": "p"}, headers=s.owner.headers)
    key = await create_api_key(s.client, s.tenant, "projects:read")
    member = await s.member()
    ids = {
        "tenant": s.tenant.slug,
        "user_id": member.id,
        "name": role.json()["name"],
        "project_id": project.json()["id"],
        "key_id": key.id,
        "sid": claims_of(s.owner.login.access_token)["sid"],
        "invitation_id": str(uuid.uuid4()),  # refused before any lookup
    }
    for route in sorted(GUARDED.keys() | SIGNED_IN):
        method, template = route.split(" ")
        response = await s.client.request(method, template.format(**ids))
        assert response.status_code == 401, route
        assert response.headers["www-authenticate"] == f'Bearer realm="{s.tenant.slug}"', route
    for permission in sorted(CATALOGUE):
        # The owner, signed in with every permission but this one.
        lacking = await login(
            s.client, s.tenant.slug, s.owner.email, scope=" ".join(sorted(CATALOGUE - {permission}))
        )
        for route in sorted(r for r, needed in GUARDED.items() if needed == permission):
            method, template = route.split(" ")
            response = await s.client.request(method, template.format(**ids), headers=lacking.headers)
            assert_problem(response, 403, "forbidden")
            assert permission in response.json()["detail"], route


@TABLE.case("V8.2.2")
async def another_users_objects_are_out_of_reach(s: Scene) -> None:
    member = await s.member()
    owner_sid = claims_of(s.owner.login.access_token)["sid"]
    ended = await s.client.delete(s.path(f"/users/me/sessions/{owner_sid}"), headers=member.headers)
    assert_problem(ended, 404, "session_not_found")
    assert (await s.me(s.owner.headers)).status_code == 200
    project = await s.client.post(s.path("/projects"), json={"name": "plans"}, headers=s.owner.headers)
    other = await create_tenant(s.client)
    # Another tenant's owner: refused on this tenant's path, and finds nothing of it on its own.
    project_path = f"/projects/{project.json()['id']}"
    assert (await s.client.get(s.path(project_path), headers=other.owner.headers)).status_code == 401
    assert_problem(
        await s.client.get(other.path(project_path), headers=other.owner.headers), 404, "project_not_found"
    )
    assert_problem(
        await s.client.get(other.path(f"/users/{member.id}"), headers=other.owner.headers),
        404,
        "user_not_found",
    )
    ours = await s.client.get(s.path(project_path), headers=member.headers)
    assert ours.status_code == 200, ours.text


@TABLE.case("V8.1.2", "V8.2.3")
async def no_field_outside_the_documented_bodies_is_written_or_shown(s: Scene) -> None:
    member = await s.member()
    other_id = str(uuid.uuid4())
    mine, owners = member.headers, s.owner.headers
    key = {"name": "k", "scopes": ["projects:read"]}
    sign_up = {"email": "x@example.com", "password": DEFAULT_PASSWORD}
    attempts: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("PATCH", "/users/me", {"full_name": "M", "roles": ["owner"]}, mine),
        ("PATCH", "/users/me", {"email_verified": True}, mine),
        ("POST", "/invitations", {"email": "i@example.com", "status": "accepted"}, owners),
        ("PATCH", "/users/me", {"is_active": True, "mfa_enabled": False}, mine),
        ("PATCH", "/users/me", {"password_hash": "$2b$04$forged"}, mine),
        ("POST", "/auth/register", {**sign_up, "roles": ["owner"]}, {}),
        ("POST", "/projects", {"name": "p", "created_by": other_id}, mine),
        ("POST", "/projects", {"name": "p", "tenant_id": other_id}, mine),
        ("POST", "/api-keys", {**key, "created_by": member.id}, owners),
        ("POST", "/api-keys", {**key, "prefix": "0" * 16}, owners),
        ("POST", "/roles", {"name": "r", "permissions": ["projects:read"], "builtin": True}, owners),
        ("PATCH", f"/users/{member.id}", {"is_active": True, "email": "m2@example.com"}, owners),
        ("PATCH", "", {"name": "Renamed", "slug": unique_slug()}, owners),
    ]
    for method, suffix, body, headers in attempts:
        response = await s.client.request(method, s.path(suffix), json=body, headers=headers)
        assert_problem(response, 422, "validation_error")
    owner = {**sign_up, "roles": ["admin"]}
    tenant = await s.client.post("/tenants", json={"slug": unique_slug(), "name": "T", "owner": owner})
    assert_problem(tenant, 422, "validation_error")
    # The address is a documented field, but another user's is not to be had (nor changed
    # at once: only a link mailed to the new address changes it).
    taken = await s.client.patch(s.path("/users/me"), json={"email": s.owner.email}, headers=mine)
    assert_problem(taken, 409, "user_exists")
    me = (await s.me(member.headers)).json()
    assert (me["email"], me["roles"], me["is_active"]) == (member.email, ["member"], True)
    assert (await s.client.get(s.path(), headers=member.headers)).json()["slug"] == s.tenant.slug
    # What is read back is the documented fields, never a hash or a secret.
    assert set(me) == USER_READ
    listed = await s.client.get(s.path("/users"), headers=s.owner.headers)
    assert all(set(user) == USER_READ for user in listed.json()["items"])
    await create_api_key(s.client, s.tenant, "projects:read")
    keys = await s.client.get(s.path("/api-keys"), headers=s.owner.headers)
    assert [set(k) for k in keys.json()["items"]] == [API_KEY_READ]


@TABLE.case("V8.3.1")
async def a_scope_claim_beyond_the_users_roles_grants_nothing(s: Scene) -> None:
    member = await s.member()  # role member: projects:read, projects:write
    everything = resign(member.login.access_token, scope=" ".join(sorted(CATALOGUE)))
    for method, suffix in [("PATCH", ""), ("GET", "/users"), ("GET", "/audit-events"), ("GET", "/api-keys")]:
        response = await s.client.request(method, s.path(suffix), json={}, headers=bearer(everything))
        assert_problem(response, 403, "forbidden")
    # The same forged token still does what the member may do: only the roles limited it.
    created = await s.client.post(s.path("/projects"), json={"name": "p"}, headers=bearer(everything))
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("case", TABLE.params())
async def test_asvs_v8_authorization(
    case: Case, make_settings: MakeSettings, make_client: MakeClient, clock: FrozenClock, tmp_path: Path
) -> None:
    await run_case(case, make_settings, make_client, clock, tmp_path)
