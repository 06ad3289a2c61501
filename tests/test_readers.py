"""The read cache's loads (saas_app/core/readers.py): on PostgreSQL they run on asyncpg
directly, so what SQLAlchemy would have done for them (types, errors, bounds) is proved
here against SQLAlchemy itself and a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy import Integer, bindparam, literal, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from saas_app.api_keys.service import KEY_QUERY, PARENT_QUERY
from saas_app.auth.sessions import GRANT_QUERY
from saas_app.core import readers
from saas_app.core.config import Settings
from saas_app.core.db import create_engine
from saas_app.core.readers import READER_APPLICATION_NAME, Fetch, PostgresReader, Query, first, reader_for
from saas_app.projects.service import FIRST_PAGE, LATER_PAGE
from saas_app.runtime import Runtime
from saas_app.security.api_keys import parse
from saas_app.tenancy.cache import TENANT_QUERY
from saas_app.users.models import Identity
from saas_app.users.service import ME_QUERY
from tests.conftest import ON_POSTGRES
from tests.factories import create_api_key, create_tenant

postgres_only = pytest.mark.skipif(not ON_POSTGRES, reason="the driver path is PostgreSQL's")


def _runtime(client: AsyncClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def _session_id(client: AsyncClient, access_token: str, slug: str) -> uuid.UUID:
    claims = _runtime(client).access_tokens.verify(access_token, tenant_slug=slug, now=datetime.now(UTC))
    return claims.sid


def prefix_of(key: str) -> str:
    parsed = parse(key)
    assert parsed is not None
    return parsed.prefix


@postgres_only
async def test_every_query_returns_on_the_driver_what_sqlalchemy_returns(client: AsyncClient) -> None:
    """Row for row, value for value, type for type: UUIDs, aware UTC datetimes, JSON
    lists, computed booleans, NULLs, a LIMIT; the key with a parent, the user with two
    roles and a linked provider, a page after a cursor."""
    tenant = await create_tenant(client)
    api = {"X-API-Key": (await create_api_key(client, tenant, "api_keys:manage", "projects:read")).key}
    child = await client.post(
        tenant.path("/api-keys"), json={"name": "c", "scopes": ["projects:read"]}, headers=api
    )
    assert child.status_code == 201, child.text
    for name in ("a", "b", "c"):
        made = await client.post(tenant.path("/projects"), json={"name": name}, headers=tenant.owner.headers)
        assert made.status_code == 201, made.text
    runtime = _runtime(client)
    tenant_id, owner_id = uuid.UUID(tenant.id), uuid.UUID(tenant.owner.id)
    async with runtime.write_session_factory() as session, session.begin():
        session.add(
            Identity(
                tenant_id=tenant_id,
                user_id=owner_id,
                provider="github",
                subject="583231",
                login="octocat",
                created_at=datetime.now(UTC),
            )
        )
    first_page = await client.get(tenant.path("/projects?limit=1"), headers=tenant.owner.headers)
    oldest = first_page.json()["items"][0]
    sid = await _session_id(client, tenant.owner.login.access_token, tenant.slug)
    parameters: dict[int, dict[str, Any]] = {
        id(TENANT_QUERY): {"slug": tenant.slug},
        id(GRANT_QUERY): {"sid": sid, "tid": tenant_id},
        id(ME_QUERY): {"uid": owner_id, "tid": tenant_id},
        id(KEY_QUERY): {"prefix": prefix_of(child.json()["key"])},
        id(PARENT_QUERY): {"id": uuid.UUID(child.json()["parent_id"]), "tid": tenant_id},
        id(FIRST_PAGE): {"tid": tenant_id, "limit": 2},
        id(LATER_PAGE): {
            "tid": tenant_id,
            "limit": 5,
            "at": datetime.fromisoformat(oldest["created_at"]),
            "after_id": uuid.UUID(oldest["id"]),
        },
    }
    built = list(readers.BUILT)
    missing = [str(q.statement)[:80] for q in built if id(q) not in parameters]
    assert not missing, f"queries this test does not run yet: {missing}"

    async with runtime.engine.connect() as connection:
        for query in built:
            params = parameters[id(query)]
            expected = [tuple(row) for row in (await connection.execute(query.statement, params)).all()]

            async def load(fetch: Fetch, query: Query = query, params: dict[str, Any] = params) -> list[Any]:
                return await fetch.all(query, params)

            rows = await runtime.reader.run(load)
            got = [tuple(row) for row in rows]
            assert expected, f"the comparison needs rows: {query.statement}"
            assert got == expected, query.statement
            assert [[type(v) for v in row] for row in got] == [[type(v) for v in row] for row in expected]
            names = [c.key for c in query.statement.selected_columns]  # by name, as loads read them
            assert [getattr(rows[0], name) for name in names] == list(expected[0])


@postgres_only
async def test_a_driver_error_is_raised_as_sqlalchemy_raises_it_without_the_parameters(
    client: AsyncClient,
) -> None:
    """core/errors.py answers SQLAlchemy's exceptions (503 for a lost database, 422 for a
    value the database refuses); a driver error must reach it in that form, SQLSTATE kept."""
    dividing = Query(select(literal(1, Integer) // bindparam("secret_divisor", type_=Integer)))
    readers.BUILT.remove(dividing)  # a test's own query, not one of the app's

    async def load(fetch: Fetch) -> Any:
        return await first(fetch, dividing, {"secret_divisor": 0})

    with pytest.raises(DBAPIError) as raised:
        await _runtime(client).reader.run(load)
    assert raised.value.orig.sqlstate == "22012"  # type: ignore[union-attr]  # division_by_zero
    assert "secret_divisor" not in str(raised.value.params or "")


@postgres_only
async def test_a_load_waits_for_a_free_connection_no_longer_than_the_pool_timeout(settings: Settings) -> None:
    tight = settings.model_copy(update={"DATABASE_POOL_SIZE": 1, "DATABASE_POOL_TIMEOUT_SECONDS": 0.2})
    reader = reader_for(_engine(tight), tight)
    assert isinstance(reader, PostgresReader)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(fetch: Fetch) -> None:
        holding.set()
        await release.wait()

    async def quick(fetch: Fetch) -> Any:
        return await first(fetch, TENANT_QUERY, {"slug": "nobody"})

    try:
        holder = asyncio.create_task(reader.run(hold))
        await holding.wait()
        reader2 = asyncio.create_task(reader.run(quick))
        started = asyncio.get_running_loop().time()
        with pytest.raises(PoolTimeout):
            await reader2
        waited = asyncio.get_running_loop().time() - started
        assert waited < 2, "the bound is the pool timeout, not the statement timeout"
        release.set()
        await holder
        assert await reader.run(quick) is None  # the pool serves again once freed
    finally:
        release.set()
        await reader.close()


def _engine(settings: Settings) -> AsyncEngine:
    return create_engine(settings)


async def test_an_inline_load_may_not_wait_for_anything_but_its_statements(client: AsyncClient) -> None:
    """SQLite loads run on the event loop's thread, one at a time on one connection: a load
    that awaited anything else would let another load in on the same connection."""
    reader = _runtime(client).reader
    if not isinstance(reader, readers.InlineSqliteReader):
        pytest.skip("inline loads are SQLite's (a file database)")

    async def wanders(fetch: Fetch) -> None:
        await first(fetch, TENANT_QUERY, {"slug": "x"})
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other"):
        await reader.run(wanders)

    async def reads(fetch: Fetch) -> Any:
        return await first(fetch, TENANT_QUERY, {"slug": "x"})

    assert await reader.run(reads) is None


@postgres_only
async def test_a_load_whose_backend_is_killed_mid_statement_runs_again_on_another(
    client: AsyncClient,
) -> None:
    """The server ends the connection while the load waits (a failover, an operator's
    pg_terminate_backend): the caller gets the answer from a second connection, not a 503."""
    runtime = _runtime(client)
    tenant = await create_tenant(client)
    async with runtime.engine.connect() as locker:
        transaction = await locker.begin()
        await locker.execute(text("LOCK TABLE tenant IN ACCESS EXCLUSIVE MODE"))
        loading = asyncio.create_task(runtime.reader.run(_tenant_by_slug(tenant.slug)))
        killed = 0
        for _ in range(100):  # until the load is waiting for the lock
            killed = await locker.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name"
                    " = :name AND datname = current_database() AND wait_event_type = 'Lock'"
                ),
                {"name": READER_APPLICATION_NAME},
            )
            if killed:
                break
            await asyncio.sleep(0.02)
        assert killed == 1
        await transaction.commit()
    row = await loading
    assert row is not None
    assert str(row.id) == tenant.id


@postgres_only
async def test_a_connection_the_driver_cannot_use_again_is_closed_and_the_load_retried(
    client: AsyncClient,
) -> None:
    """asyncpg's InternalClientError ("another operation is in progress", seen after a
    backend died mid-statement) is a broken connection, not a 500: the connection is
    closed, never handed to the next load, and the load runs again on another."""
    runtime = _runtime(client)
    backends: list[int] = []

    async def breaks_once(fetch: Fetch) -> str:
        backends.append(await fetch._connection.fetchval("SELECT pg_backend_pid()"))  # type: ignore[attr-defined]
        if len(backends) == 1:
            raise asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress")
        return "answered"

    assert await runtime.reader.run(breaks_once) == "answered"
    assert backends[0] != backends[1]
    await asyncio.sleep(0.2)  # the server notices the closed socket
    async with runtime.engine.connect() as connection:
        alive = await connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backends[0]}
        )
    assert alive == 0, "the broken connection was closed, not kept in the pool"

    async def always_breaks(fetch: Fetch) -> None:
        raise asyncpg.InternalClientError("cannot switch to state 12")

    with pytest.raises(OperationalError):  # answered 503 by core/errors.py
        await runtime.reader.run(always_breaks)


def _tenant_by_slug(slug: str) -> Callable[[Fetch], Coroutine[Any, Any, Any]]:
    async def load(fetch: Fetch) -> Any:
        return await first(fetch, TENANT_QUERY, {"slug": slug})

    return load


def test_a_pgbouncer_statement_cache_setting_in_the_url_reaches_the_loads_pool(settings: Settings) -> None:
    """`?prepared_statement_cache_size=0` (SQLAlchemy's setting for a transaction-pooling
    pgbouncer) must not be dropped by the loads' own pool: asyncpg's is `statement_cache_size`."""
    url = "postgresql+asyncpg://app@db.internal:6432/app?prepared_statement_cache_size=0"
    pooled = settings.model_copy(update={"DATABASE_URL": url})
    reader = reader_for(create_engine(pooled), pooled)
    assert isinstance(reader, PostgresReader)
    connect_args = reader._connect_args
    assert connect_args["statement_cache_size"] == 0
    assert "prepared_statement_cache_size" not in connect_args
    assert connect_args["server_settings"]["application_name"] == READER_APPLICATION_NAME
