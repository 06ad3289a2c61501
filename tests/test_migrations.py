"""The schema comes only from Alembic: it round-trips and matches the models exactly."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import column, inspect, select, table, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.core.changes import CHANGE_LOG
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


# Not models: Alembic's own, and SQLite's change log that only triggers write (migration 0009).
NOT_MODELS = {"alembic_version", CHANGE_LOG}


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - NOT_MODELS


def _is_model(obj: object, name: str | None, kind: str, reflected: bool, _compare_to: object) -> bool:
    return not (kind == "table" and name in NOT_MODELS)


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"include_object": _is_model})
    return list(compare_metadata(context, Base.metadata))


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


TENANT_0007_COLUMNS = ("id", "slug", "name", "allow_signup", "created_at")
LEGACY_ROWS = {
    # name: (tenant, stored address before 0008, address after 0008)
    "full-width": ("a", "ｂoss@example.com", "boss@example.com"),
    "ligature": ("a", "\ufb01nance@example.com", "finance@example.com"),
    "sharp-s": ("a", "straße@example.com", "strasse@example.com"),
    "already-folded": ("a", "plain@example.com", "plain@example.com"),
    "clash-plain": ("a", "owner@example.com", "owner@example.com"),
    "clash-look-alike": ("a", "ｏwner@example.com", "ｏwner@example.com"),
    "same-fold-other-tenant": ("b", "ｏwner@example.com", "owner@example.com"),
}


async def test_0008_folds_stored_addresses_and_reports_clashes(
    fresh_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = alembic_config(fresh_url)
    await _run(command.upgrade, config, "0007")
    tenants = {"a": uuid.uuid4(), "b": uuid.uuid4()}
    users = {name: uuid.uuid4() for name in LEGACY_ROWS}
    now = datetime.now(UTC)
    tenant_table, user_table = Base.metadata.tables["tenant"], Base.metadata.tables["user"]
    # The tenant table as of 0007, without the models' later columns (and their defaults).
    tenant_0007 = table("tenant", *(column(c, tenant_table.c[c].type) for c in TENANT_0007_COLUMNS))
    engine = create_async_engine(fresh_url)
    async with engine.begin() as connection:
        await connection.execute(
            tenant_0007.insert(),
            [
                {"id": i, "slug": k, "name": k, "allow_signup": True, "created_at": now}
                for k, i in tenants.items()
            ],
        )
        await connection.execute(
            user_table.insert(),
            [
                {"id": users[name], "tenant_id": tenants[t], "email": before, "created_at": now}
                for name, (t, before, _) in LEGACY_ROWS.items()
            ],
        )

    caplog.set_level(logging.WARNING, logger="alembic")
    await _run(command.upgrade, config, "head")

    async with engine.connect() as connection:
        stored = dict((await connection.execute(select(user_table.c.id, user_table.c.email))).all())
    await engine.dispose()
    assert {name: stored[users[name]] for name in LEGACY_ROWS} == {
        name: after for name, (_, _, after) in LEGACY_ROWS.items()
    }
    clashes = [r.getMessage() for r in caplog.records if "CLASH" in r.getMessage()]
    assert len(clashes) == 1, clashes
    (clash,) = clashes
    assert str(tenants["a"]) in clash
    assert str(users["clash-plain"]) in clash
    assert str(users["clash-look-alike"]) in clash
    assert "example.com" not in clash  # ids, never addresses


async def test_0015_gives_existing_owners_and_admins_tokens_introspect(fresh_url: str) -> None:
    config = alembic_config(fresh_url)
    await _run(command.upgrade, config, "0014")
    tenant_id, now = uuid.uuid4(), datetime.now(UTC)
    before = {
        "owner": ["projects:read", "tenant:manage"],
        "admin": ["projects:read"],
        "viewer": ["projects:read"],
    }
    role_ids = {name: uuid.uuid4() for name in before}
    tenant_table, role_table = Base.metadata.tables["tenant"], Base.metadata.tables["role"]
    engine = create_async_engine(fresh_url)
    async with engine.begin() as connection:
        await connection.execute(
            tenant_table.insert(), [{"id": tenant_id, "slug": "t", "name": "t", "created_at": now}]
        )
        await connection.execute(
            role_table.insert(),
            [
                {"id": role_ids[name], "tenant_id": tenant_id, "name": name, "permissions": held,
                 "is_builtin": True, "created_at": now}
                for name, held in before.items()
            ],
        )  # fmt: skip

    async def stored() -> dict[str, list[str]]:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(role_table.c.name, role_table.c.permissions))).all()
        return {name: sorted(held) for name, held in rows}

    await _run(command.upgrade, config, "head")
    assert await stored() == {
        "owner": ["projects:read", "tenant:manage", "tokens:introspect"],
        "admin": ["projects:read", "tokens:introspect"],
        "viewer": ["projects:read"],  # only the two built-in roles API-v2 §2 names
    }
    await _run(command.downgrade, config, "0014")
    assert await stored() == {name: sorted(held) for name, held in before.items()}
    await engine.dispose()
