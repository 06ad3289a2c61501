"""Regression tests for what the fuzzing found (docs/security.md, "Hostile input")."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from tests.factories import DEFAULT_PASSWORD, TenantCtx, create_tenant, login

NUL = "\x00"


@pytest.fixture
async def tenant(client: AsyncClient) -> TenantCtx:
    return await create_tenant(client)


def nul_inputs(t: TenantCtx) -> list[tuple[str, str, dict[str, Any]]]:
    """Every place where text from a request used to reach SQL as it came (PostgreSQL: a 500)."""
    h = t.owner.headers
    owner = {"email": "nul@example.com", "password": DEFAULT_PASSWORD}
    return [
        ("POST", "/tenants", {"json": {"slug": "nul-a", "name": "N", "owner": {**owner, "full_name": NUL}}}),
        ("POST", "/tenants", {"json": {"slug": "nul-b", "name": f"N{NUL}", "owner": owner}}),
        ("POST", t.path("/auth/register"), {"json": {**owner, "full_name": f"a{NUL}b"}}),
        ("GET", t.path("/users"), {"params": {"q": NUL}, "headers": h}),
        ("GET", t.path("/audit-events"), {"params": {"action": NUL}, "headers": h}),
        ("PATCH", t.path(""), {"json": {"name": NUL}, "headers": h}),
        ("PATCH", t.path("/users/me"), {"json": {"full_name": NUL}, "headers": h}),
        ("POST", t.path("/projects"), {"json": {"name": "p", "description": NUL}, "headers": h}),
        ("POST", t.path("/api-keys"), {"json": {"name": NUL, "scopes": ["projects:read"]}, "headers": h}),
        ("PUT", t.path(f"/users/{t.owner.id}/roles"), {"json": {"roles": ["owner", NUL]}, "headers": h}),
    ]


async def test_nul_in_text_input_is_a_422(client: AsyncClient, tenant: TenantCtx) -> None:
    for method, path, kwargs in nul_inputs(tenant):
        response = await client.request(method, path, **kwargs)
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("field", ["username", "password", "refresh_token", "scope"])
async def test_nul_in_an_oauth_parameter_is_invalid_request(
    client: AsyncClient, tenant: TenantCtx, field: str
) -> None:
    form = {"grant_type": "password", "username": tenant.owner.email, "password": DEFAULT_PASSWORD}
    response = await client.post(tenant.path("/auth/token"), data={**form, field: f"x{NUL}"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_a_user_agent_with_nul_does_not_break_login(client: AsyncClient, tenant: TenantCtx) -> None:
    client.headers["User-Agent"] = f"agent{NUL}7"
    signed_in = await login(client, tenant.slug, tenant.owner.email)
    sessions = await client.get(tenant.path("/users/me/sessions"), headers=signed_in.headers)
    assert [s["user_agent"] for s in sessions.json()["items"] if s["current"]] == ["agent7"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/t/acme", "GET, PATCH"),
        ("PUT", "/t/acme/roles", "GET, POST"),
        ("POST", "/t/acme/projects/00000000-0000-0000-0000-000000000000", "GET, PATCH, DELETE"),
        ("GET", "/t/acme/auth/token", "POST"),
    ],
)
async def test_405_allow_names_every_method_of_the_resource(
    client: AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    ("suffix", "body"),
    [
        ("", {"allow_signup": 1}),
        ("", {"mfa_required": "false"}),
        ("/api-keys", {"name": "k", "scopes": ["projects:read"], "expires_in_days": "30"}),
    ],
)
async def test_json_bodies_are_not_coerced(
    client: AsyncClient, tenant: TenantCtx, suffix: str, body: dict[str, Any]
) -> None:
    method = "PATCH" if not suffix else "POST"
    response = await client.request(method, tenant.path(suffix), json=body, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text


async def test_github_callback_code_and_error_are_bounded(client: AsyncClient, tenant: TenantCtx) -> None:
    for name in ("code", "error"):
        response = await client.get(tenant.path("/auth/github/callback"), params={name: "c" * 257})
        assert response.status_code == 422, response.text
