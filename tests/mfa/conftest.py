"""Fixtures of the MFA tests: a tenant on the default app, and its owner's authenticator."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from saas_app.core.clock import FrozenClock
from tests.factories import Authenticator, TenantCtx, create_tenant, enable_mfa


@pytest.fixture
async def tenant(client: AsyncClient) -> TenantCtx:
    return await create_tenant(client)


@pytest.fixture
async def authenticator(client: AsyncClient, tenant: TenantCtx, clock: FrozenClock) -> Authenticator:
    """The owner's authenticator: MFA is on for the tenant's owner."""
    return await enable_mfa(client, tenant, tenant.owner, clock)
