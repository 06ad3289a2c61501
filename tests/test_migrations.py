"""The schema comes only from Alembic: it round-trips and matches the models exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.models import Base
from tests.conftest import EXTERNAL_DB, ON_POSTGRES, alembic_config


@pytest.fixture
async def fresh_url(tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the kind under test, dropped afterwards."""
    if not ON_POSTGRES:
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"saas_app_mig_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(EXTERNAL_DB, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(EXTERNAL_DB).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def _diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def _inspect(url: str) -> tuple[set[str], list[object]]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        tables = await connection.run_sync(_tables)
        diff = await connection.run_sync(_diff)
    await engine.dispose()
    return tables, diff


async def test_upgrade_downgrade_upgrade_round_trips(fresh_url: str) -> None:
    config = alembic_config(fresh_url)
    await _run(command.upgrade, config, "head")
    tables, _ = await _inspect(fresh_url)
    assert tables == set(Base.metadata.tables)

    await _run(command.downgrade, config, "base")
    tables, _ = await _inspect(fresh_url)
    assert tables == set()

    await _run(command.upgrade, config, "head")
    tables, _ = await _inspect(fresh_url)
    assert tables == set(Base.metadata.tables)


async def test_models_and_migrations_agree(fresh_url: str) -> None:
    await _run(command.upgrade, alembic_config(fresh_url), "head")
    _, diff = await _inspect(fresh_url)
    assert diff == [], f"autogenerate sees a difference: {diff}"


async def _run(fn: object, *args: object) -> None:
    """Alembic's env.py runs its own event loop: call it from a worker thread."""
    import anyio.to_thread  # noqa: PLC0415

    await anyio.to_thread.run_sync(lambda: fn(*args))  # type: ignore[operator]
