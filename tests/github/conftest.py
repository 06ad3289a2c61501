"""Fixtures of the GitHub sign-in tests: a fake GitHub per test, the app wired to it
(tests/github_helpers.py) and a tenant on that app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from tests.factories import TenantCtx, create_tenant
from tests.fake_github import FakeGitHub
from tests.github_helpers import EnvFactory, GitHubEnv, env_factory, new_fake


@pytest.fixture
def fake() -> FakeGitHub:
    return new_fake()


@pytest.fixture
def make_env(make_settings: Callable[..., Settings], clock: FrozenClock, fake: FakeGitHub) -> EnvFactory:
    """`make_env(**settings_overrides)` for a test that needs other settings than `env`'s."""
    return env_factory(make_settings, clock, fake)


@pytest.fixture
async def env(make_env: EnvFactory) -> AsyncIterator[GitHubEnv]:
    async with make_env() as env:
        yield env


@pytest.fixture
async def tenant(env: GitHubEnv) -> TenantCtx:
    return await create_tenant(env.client)
