"""Test data made through the public API, so every test starts from real states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pyotp
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock

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


# -- MFA ------------------------------------------------------------------------------------


@dataclass
class Authenticator:
    """The user's authenticator app (pyotp), reading the app's frozen clock."""

    secret: str
    clock: FrozenClock
    recovery_codes: list[str] = field(default_factory=list)

    def code(self, steps: int = 0) -> str:
        """The code shown now, or `steps` 30-second steps away (negative = earlier)."""
        return pyotp.TOTP(self.secret).at(self.clock.now(), counter_offset=steps)

    def next_code(self) -> str:
        """Waits (by moving the clock) for the next step, whose code nobody has used yet."""
        self.clock.advance(seconds=30)
        return self.code()

    def wrong_code(self) -> str:
        """A well-formed code that matches none of the steps the server would accept."""
        accepted = {self.code(steps) for steps in (-1, 0, 1)}
        return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in accepted)


async def enable_mfa(
    client: AsyncClient, tenant: TenantCtx, member: Member, clock: FrozenClock
) -> Authenticator:
    """Enrols `member` in TOTP with their (fresh) login and confirms it; MFA is then on.

    The confirming code spends the current step: use `next_code()` for the next one.
    """
    response = await client.post(tenant.path("/users/me/mfa/totp"), json={}, headers=member.headers)
    assert response.status_code == 200, response.text
    authenticator = Authenticator(response.json()["secret"], clock)
    response = await client.post(
        tenant.path("/users/me/mfa/totp/confirm"), json={"code": authenticator.code()}, headers=member.headers
    )
    assert response.status_code == 200, response.text
    authenticator.recovery_codes = response.json()["recovery_codes"]
    return authenticator


async def mfa_challenge(
    client: AsyncClient, slug: str, email: str, password: str = DEFAULT_PASSWORD, scope: str | None = None
) -> str:
    """The password step of an MFA user: asserts the 403 `mfa_required` and returns its `mfa_token`."""
    form = {"grant_type": "password", "username": email, "password": password}
    if scope is not None:
        form["scope"] = scope
    response = await token(client, slug, **form)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "mfa_required"
    mfa_token: str = response.json()["mfa_token"]
    return mfa_token


async def login_with_otp(
    client: AsyncClient, slug: str, email: str, authenticator: Authenticator, scope: str | None = None
) -> Login:
    """Both steps of an MFA login, with the authenticator's next (unused) code."""
    mfa_token = await mfa_challenge(client, slug, email, scope=scope)
    response = await token(
        client, slug, grant_type="mfa_otp", mfa_token=mfa_token, otp=authenticator.next_code()
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Login(body["access_token"], body["refresh_token"], body["scope"], body)


# -- API keys -------------------------------------------------------------------------------


@dataclass
class ApiKey:
    """A key as its creator received it (the full key is shown only once)."""

    id: str
    key: str
    prefix: str
    body: dict[str, object] = field(repr=False)

    @property
    def secret(self) -> str:
        """The part after `sk_<prefix>_`, which the server must never store."""
        return self.key.removeprefix(f"{self.prefix}_")

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


async def create_api_key(
    client: AsyncClient, tenant: TenantCtx, *scopes: str, by: Member | None = None, **fields: object
) -> ApiKey:
    """Issues a key with `scopes` (default projects:read) as `by` (default: the owner)."""
    body = {"name": f"key-{uuid.uuid4().hex[:6]}", "scopes": list(scopes or ["projects:read"]), **fields}
    creator = by or tenant.owner
    response = await client.post(tenant.path("/api-keys"), json=body, headers=creator.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    return ApiKey(created["id"], created["key"], created["prefix"], created)
