"""What a login does with password hashes: upgrade on login, equal work for unknown e-mails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.core.config import Settings
from saas_app.users.models import User
from tests.factories import DEFAULT_PASSWORD, create_tenant, login, token


async def _stored_hash(database_url: str, email: str) -> str:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        value = await connection.scalar(select(User.password_hash).where(User.email == email))
    await engine.dispose()
    assert isinstance(value, str)
    return value


async def test_login_upgrades_a_hash_made_with_older_parameters(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with make_client(make_settings(BCRYPT_ROUNDS=4)) as client:
        tenant = await create_tenant(client)
    before = await _stored_hash(database_url, tenant.owner.email)
    assert ",r=4$" in before

    async with make_client(make_settings(BCRYPT_ROUNDS=5)) as client:
        await login(client, tenant.slug, tenant.owner.email)
        after = await _stored_hash(database_url, tenant.owner.email)
        assert ",r=5$" in after
        await login(client, tenant.slug, tenant.owner.email)  # the upgraded hash still verifies
    assert await _stored_hash(database_url, tenant.owner.email) == after


@pytest.mark.parametrize("who", ["unknown e-mail", "wrong password"])
async def test_every_failed_login_spends_one_hash_verification(
    client: Any, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    tenant = await create_tenant(client)
    context = client.app.state.runtime.hasher._context
    calls: list[str] = []
    real_verify, real_update = context.verify, context.verify_and_update
    monkeypatch.setattr(context, "verify", lambda *a, **k: calls.append("verify") or real_verify(*a, **k))
    monkeypatch.setattr(
        context, "verify_and_update", lambda *a, **k: calls.append("verify") or real_update(*a, **k)
    )
    email = "nobody@example.com" if who == "unknown e-mail" else tenant.owner.email
    response = await token(
        client, tenant.slug, grant_type="password", username=email, password=DEFAULT_PASSWORD + "x"
    )
    assert response.status_code == 400
    assert calls == ["verify"]
