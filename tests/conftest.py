"""Fixtures: a migrated database per test, an app per test, clients and factories.

The suite runs on SQLite by default. With DATABASE_URL=postgresql+asyncpg://... (and
REDIS_URL=redis://...) it runs unchanged on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.main import create_app
from saas_app.models import Base

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL_DB = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = EXTERNAL_DB.startswith("postgresql")
REDIS_URL = os.environ.get("REDIS_URL") or None
TEST_JWT_SECRET = "test-secret-" + "x" * 40


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Migrates once per run: a SQLite file to copy per test, or the PostgreSQL database."""
    if ON_POSTGRES:
        command.downgrade(alembic_config(EXTERNAL_DB), "base")
        command.upgrade(alembic_config(EXTERNAL_DB), "head")
        return EXTERNAL_DB
    path = tmp_path_factory.mktemp("template") / "template.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{path}"), "head")
    return str(path)


@pytest.fixture
async def database_url(template_db: str, tmp_path: Path) -> str:
    """A freshly migrated, empty database for this test."""
    if not ON_POSTGRES:
        target = tmp_path / "test.db"
        shutil.copyfile(template_db, target)
        return f"sqlite+aiosqlite:///{target}"
    engine = create_async_engine(template_db)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    await engine.dispose()
    return template_db


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "ENV": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "JWT_SECRET": TEST_JWT_SECRET,
            "BCRYPT_ROUNDS": 4,  # fast hashes in tests; production default is 12
            "RATE_LIMITS_ENABLED": False,
            "RATE_LIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",  # no test sees another's counters
            "LOG_FORMAT": "text",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_client(clock: FrozenClock) -> Iterator[Callable[..., Any]]:
    """Builds an app from settings and returns an async context manager for its client."""
    from contextlib import asynccontextmanager  # noqa: PLC0415

    @asynccontextmanager
    async def make(settings: Settings) -> AsyncIterator[AsyncClient]:
        app = create_app(settings, clock=clock)
        async with LifespanManager(app) as manager:
            transport = ASGITransport(app=manager.app)
            async with AsyncClient(transport=transport, base_url="http://testserver") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    yield make


@pytest.fixture
async def client(make_client: Callable[..., Any], settings: Settings) -> AsyncIterator[AsyncClient]:
    async with make_client(settings) as client:
        yield client


@pytest.fixture
def app(client: AsyncClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    return app
