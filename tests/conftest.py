"""Fixtures: a migrated database per test, an app per test, clients and factories.

The suite runs on SQLite by default. With DATABASE_URL=postgresql+asyncpg://... (and
REDIS_URL=redis://...) it runs unchanged on PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
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


async def _admin(sql: str) -> None:
    engine = create_async_engine(EXTERNAL_DB, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(sql))
    await engine.dispose()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Migrates once per run: a SQLite file to copy per test, or a PostgreSQL database of
    this run's own (created next to DATABASE_URL's, dropped at the end), so parallel runs
    on one server never see each other."""
    if not ON_POSTGRES:
        path = tmp_path_factory.mktemp("template") / "template.db"
        command.upgrade(alembic_config(f"sqlite+aiosqlite:///{path}"), "head")
        yield str(path)
        return
    name = f"{make_url(EXTERNAL_DB).database}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(EXTERNAL_DB).set(database=name).render_as_string(hide_password=False)
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(template_db: str, tmp_path: Path) -> str:
    """A freshly migrated, empty database for this test."""
    if not ON_POSTGRES:
        target = tmp_path / "test.db"
        shutil.copyfile(template_db, target)
        return f"sqlite+aiosqlite:///{target}"
    engine = create_async_engine(template_db)
    # TRUNCATE fires the change feed's '*' (migration 0009): no cache keeps the last test's rows.
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
def make_client(clock: FrozenClock) -> Callable[..., Any]:
    """Builds an app from settings and returns an async context manager for its client."""

    @asynccontextmanager
    async def make(settings: Settings) -> AsyncIterator[AsyncClient]:
        app = create_app(settings, clock=clock)
        async with LifespanManager(app) as manager:
            transport = ASGITransport(app=manager.app)
            async with AsyncClient(transport=transport, base_url="http://testserver") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any], settings: Settings) -> AsyncIterator[AsyncClient]:
    async with make_client(settings) as client:
        yield client


@pytest.fixture
def app(client: AsyncClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    return app
