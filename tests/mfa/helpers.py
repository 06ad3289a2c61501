"""Plain helpers shared by the MFA tests (their fixtures are in conftest.py)."""

from __future__ import annotations

from httpx import AsyncClient, Response

from tests.factories import TenantCtx, token

PROBLEM = "application/problem+json"
TOTP = "/users/me/mfa/totp"


def assert_problem(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


async def mfa_enabled(client: AsyncClient, tenant: TenantCtx, user_id: str) -> bool:
    response = await client.get(tenant.path(f"/users/{user_id}"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    enabled: bool = response.json()["mfa_enabled"]
    return enabled


async def password_grant(client: AsyncClient, tenant: TenantCtx, email: str, password: str) -> Response:
    return await token(client, tenant.slug, grant_type="password", username=email, password=password)
