"""POST /tenants, /t/{tenant} itself, and the platform endpoints (health, readiness, 404/405)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from saas_app.core.config import Settings
from saas_app.rbac.permissions import PERMISSIONS
from tests.factories import DEFAULT_PASSWORD, add_member, create_tenant, unique_slug

PROBLEM_JSON = "application/problem+json"
UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/x"


def tenant_body(slug: str, **owner: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": "Acme Inc.",
        "owner": {"email": "Founder@Acme.example.com", "password": DEFAULT_PASSWORD, **owner},
    }


# POST /tenants


async def test_create_tenant_returns_tenant_and_owner(client: AsyncClient) -> None:
    slug = unique_slug()
    response = await client.post("/tenants", json=tenant_body(slug, full_name="Fay Founder"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"tenant", "owner"}
    tenant = body["tenant"]
    assert set(tenant) == {"id", "slug", "name", "created_at"}
    assert tenant["slug"] == slug
    assert tenant["name"] == "Acme Inc."
    assert datetime.fromisoformat(tenant["created_at"]).utcoffset() == timedelta(0)
    owner = body["owner"]
    assert set(owner) == {
        "id",
        "email",
        "email_verified",
        "full_name",
        "roles",
        "permissions",
        "is_active",
        "mfa_enabled",
        "identities",
        "created_at",
    }
    assert owner["email"] == "founder@acme.example.com"
    assert owner["full_name"] == "Fay Founder"
    assert owner["roles"] == ["owner"]
    assert owner["email_verified"] is False  # until the mailed link is opened
    assert sorted(owner["permissions"]) == sorted(PERMISSIONS)
    assert owner["is_active"] is True
    assert owner["mfa_enabled"] is False
    assert owner["identities"] == []


async def test_new_owner_can_sign_in(client: AsyncClient) -> None:
    slug = unique_slug()
    await client.post("/tenants", json=tenant_body(slug))
    response = await client.post(
        f"/t/{slug}/auth/token",
        data={"grant_type": "password", "username": "founder@acme.example.com", "password": DEFAULT_PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == set(PERMISSIONS)


async def test_create_tenant_with_taken_slug_is_409(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.post("/tenants", json=tenant_body(tenant.slug))
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == "tenant_exists"


@pytest.mark.parametrize(
    "slug",
    ["Acme", "-acme", "acme-", "a" * 64, "", "acme_corp", "acme corp"],
    ids=["uppercase", "leading-dash", "trailing-dash", "64-chars", "empty", "underscore", "space"],
)
async def test_create_tenant_rejects_bad_slug(client: AsyncClient, slug: str) -> None:
    response = await client.post("/tenants", json=tenant_body(slug))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert ["body", "slug"] in [error["loc"] for error in body["errors"]]


@pytest.mark.parametrize(
    "slug", ["a", "a" * 63, "0-9", "acme-2"], ids=["1-char", "63-chars", "digits", "dash"]
)
async def test_create_tenant_accepts_good_slug(client: AsyncClient, slug: str) -> None:
    response = await client.post("/tenants", json=tenant_body(slug))
    assert response.status_code == 201, response.text
    assert response.json()["tenant"]["slug"] == slug


@pytest.mark.parametrize(
    ("owner", "field"),
    [
        ({"email": "not-an-email", "password": DEFAULT_PASSWORD}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": "x" * 129}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"password": DEFAULT_PASSWORD}, "email"),
        ({"email": "a@example.com", "password": DEFAULT_PASSWORD, "is_admin": True}, "is_admin"),
    ],
    ids=["bad-email", "short-password", "long-password", "no-password", "no-email", "unknown-field"],
)
async def test_create_tenant_rejects_bad_owner(
    client: AsyncClient, owner: dict[str, Any], field: str
) -> None:
    body = {"slug": unique_slug(), "name": "Acme", "owner": owner}
    response = await client.post("/tenants", json=body)
    assert response.status_code == 422, response.text
    assert ["body", "owner", field] in [error["loc"] for error in response.json()["errors"]]


async def test_create_tenant_without_owner_is_422(client: AsyncClient) -> None:
    response = await client.post("/tenants", json={"slug": unique_slug(), "name": "Acme"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_create_tenant_when_signup_closed_is_403(
    make_settings: Callable[..., Settings], make_client: Callable[..., Any]
) -> None:
    slug = unique_slug()
    async with make_client(make_settings(TENANT_SIGNUP="closed")) as closed:
        response = await closed.post("/tenants", json=tenant_body(slug))
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "signup_closed"
        assert (await closed.get(f"/t/{slug}")).status_code == 404  # nothing was created


# GET /t/{tenant}


@pytest.mark.parametrize("roles", [["viewer"], ["member"], []], ids=["viewer", "member", "no-roles"])
async def test_any_member_reads_the_tenant(client: AsyncClient, roles: list[str]) -> None:
    tenant = await create_tenant(client)
    user = await add_member(client, tenant, *roles)
    if not roles:
        put = await client.put(
            tenant.path(f"/users/{user.id}/roles"), json={"roles": []}, headers=tenant.owner.headers
        )
        assert put.json()["roles"] == []
    response = await client.get(tenant.path(), headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "slug",
        "name",
        "allow_signup",
        "mfa_required",
        "require_verified_email",
        "created_at",
    }
    assert body["mfa_required"] is False  # a new tenant does not require MFA
    assert body["id"] == tenant.id
    assert body["slug"] == tenant.slug
    assert body["name"] == f"Tenant {tenant.slug}"


async def test_new_tenant_allows_signup(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path(), headers=tenant.owner.headers)
    assert response.json()["allow_signup"] is True


async def test_reading_the_tenant_needs_authentication(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path())
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == f'Bearer realm="{tenant.slug}"'


async def test_unknown_tenant_is_404(client: AsyncClient) -> None:
    response = await client.get(f"/t/{unique_slug()}")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "tenant_not_found"


async def test_another_tenants_token_is_401(client: AsyncClient) -> None:
    tenant_a = await create_tenant(client)
    tenant_b = await create_tenant(client)
    response = await client.get(tenant_b.path(), headers=tenant_a.owner.headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == f'Bearer realm="{tenant_b.slug}", error="invalid_token"'
    assert tenant_b.id not in response.text


# PATCH /t/{tenant}


async def test_admin_cannot_update_the_tenant(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    response = await client.patch(tenant.path(), json={"name": "Hijacked"}, headers=admin.headers)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert "tenant:manage" in response.json()["detail"]


async def test_owner_renames_the_tenant(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.patch(tenant.path(), json={"name": "Renamed"}, headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Renamed"
    assert response.json()["allow_signup"] is True  # untouched
    again = await client.get(tenant.path(), headers=tenant.owner.headers)
    assert again.json()["name"] == "Renamed"


async def test_owner_closes_signup(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.patch(tenant.path(), json={"allow_signup": False}, headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["allow_signup"] is False
    assert response.json()["name"] == f"Tenant {tenant.slug}"  # untouched
    register = await client.post(
        tenant.path("/auth/register"), json={"email": "late@example.com", "password": DEFAULT_PASSWORD}
    )
    assert register.status_code == 403, register.text
    assert register.json()["code"] == "signup_closed"


@pytest.mark.parametrize(
    "body",
    [{"name": ""}, {"name": "   "}, {"slug": "other"}, {"allow_signup": "maybe"}],
    ids=["empty-name", "blank-name", "slug-is-immutable", "non-boolean"],
)
async def test_update_tenant_rejects_bad_body(client: AsyncClient, body: dict[str, Any]) -> None:
    tenant = await create_tenant(client)
    response = await client.patch(tenant.path(), json=body, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


# Platform


async def test_healthz_answers_ok(client: AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_answers_ok_when_dependencies_answer(client: AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


async def test_readyz_names_an_unreachable_database(
    make_settings: Callable[..., Settings], make_client: Callable[..., Any]
) -> None:
    async with make_client(make_settings(DATABASE_URL=UNREACHABLE_DATABASE)) as down:
        response = await down.get("/readyz")
        healthz = await down.get("/healthz")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == 503
    assert "database" in body["detail"]
    assert body["down"] == ["database"]
    assert "127.0.0.1:1" not in response.text  # no connection details leak
    assert healthz.status_code == 200  # liveness touches nothing


async def test_unknown_route_is_problem_404(client: AsyncClient) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 404
    assert response.json()["code"] == "not_found"


async def test_wrong_method_is_problem_405(client: AsyncClient) -> None:
    response = await client.delete("/healthz")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
