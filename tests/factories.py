"""Test data made through the public API, so every test starts from real states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from httpx import AsyncClient, Response

DEFAULT_PASSWORD = "correct horse battery staple"


def unique_slug(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Login:
    access_token: str
    refresh_token: str
    scope: str
    body: dict[str, object] = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Member:
    id: str
    email: str
    password: str
    login: Login

    @property
    def headers(self) -> dict[str, str]:
        return self.login.headers


@dataclass
class TenantCtx:
    id: str
    slug: str
    owner: Member

    def path(self, suffix: str = "") -> str:
        return f"/t/{self.slug}{suffix}"


async def token(client: AsyncClient, slug: str, **form: str) -> Response:
    return await client.post(f"/t/{slug}/auth/token", data=form)


async def login(
    client: AsyncClient, slug: str, email: str, password: str = DEFAULT_PASSWORD, scope: str | None = None
) -> Login:
    form = {"grant_type": "password", "username": email, "password": password}
    if scope is not None:
        form["scope"] = scope
    response = await token(client, slug, **form)
    assert response.status_code == 200, response.text
    body = response.json()
    return Login(body["access_token"], body["refresh_token"], body["scope"], body)


async def create_tenant(client: AsyncClient, slug: str | None = None) -> TenantCtx:
    slug = slug or unique_slug()
    email = f"owner@{slug}.example.com"
    response = await client.post(
        "/tenants",
        json={
            "slug": slug,
            "name": f"Tenant {slug}",
            "owner": {"email": email, "password": DEFAULT_PASSWORD, "full_name": "Owner"},
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    owner_login = await login(client, slug, email)
    owner = Member(body["owner"]["id"], email, DEFAULT_PASSWORD, owner_login)
    return TenantCtx(body["tenant"]["id"], slug, owner)


async def add_member(client: AsyncClient, tenant: TenantCtx, *roles: str, email: str | None = None) -> Member:
    """Signs a user up and (as the owner) gives them `roles` (default: member)."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    response = await client.post(
        tenant.path("/auth/register"), json={"email": email, "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    if roles and list(roles) != ["member"]:
        response = await client.put(
            tenant.path(f"/users/{user_id}/roles"), json={"roles": list(roles)}, headers=tenant.owner.headers
        )
        assert response.status_code == 200, response.text
    return Member(user_id, email, DEFAULT_PASSWORD, await login(client, tenant.slug, email))
