"""Bounded waits (issue 15): a request never waits on the database longer than the
configured bounds, and answers 503 with Retry-After when it would have to. No timing
assertions beyond those bounds (plus a margin for a loaded machine)."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.core.config import Settings
from tests.conftest import ON_POSTGRES
from tests.factories import create_tenant

BOUND = 0.5  # seconds: the bound under test, short so the suite stays fast
MARGIN = 2.0  # seconds a loaded CI machine may add


@pytest.fixture
async def bounded(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> AsyncIterator[AsyncClient]:
    settings = make_settings(DATABASE_LOCK_TIMEOUT_SECONDS=BOUND, DATABASE_STATEMENT_TIMEOUT_SECONDS=30)
    async with make_client(settings) as client:
        yield client


def assert_unavailable(response: Response, started: float, bound: float) -> None:
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "service_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert bound * 0.8 <= elapsed < bound + MARGIN, elapsed


async def assert_healthz_fast(client: AsyncClient) -> None:
    """The process itself stays responsive while requests wait on the database."""
    started = time.monotonic()
    assert (await client.get("/healthz")).status_code == 200
    assert time.monotonic() - started < 0.5


async def _project_names(client: AsyncClient, path: str, headers: dict[str, str]) -> list[str]:
    listed = await client.get(path, headers=headers)
    assert listed.status_code == 200, listed.text
    return [p["name"] for p in listed.json()["items"]]


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's write lock")
async def test_a_write_waits_for_sqlites_lock_only_as_long_as_the_lock_timeout(
    bounded: AsyncClient, database_url: str
) -> None:
    tenant = await create_tenant(bounded)
    path = make_url(database_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        started = time.monotonic()
        refused = await bounded.post(
            tenant.path("/projects"), json={"name": "late"}, headers=tenant.owner.headers
        )
        assert_unavailable(refused, started, BOUND)
        await assert_healthz_fast(bounded)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    created = await bounded.post(
        tenant.path("/projects"), json={"name": "on time"}, headers=tenant.owner.headers
    )
    assert created.status_code == 201, created.text
    assert await _project_names(bounded, tenant.path("/projects"), tenant.owner.headers) == ["on time"]


@pytest.fixture
async def locked_projects(database_url: str) -> AsyncIterator[Callable[[], Any]]:
    """Takes PostgreSQL's strongest lock on `project` in an open transaction, on demand."""
    engine = create_async_engine(database_url)
    connection = await engine.connect()
    transaction = await connection.begin()

    async def lock() -> None:
        await connection.execute(text('LOCK TABLE "project" IN ACCESS EXCLUSIVE MODE'))

    try:
        yield lock
    finally:
        await transaction.rollback()
        await connection.close()
        await engine.dispose()


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's lock_timeout")
async def test_a_write_waits_for_a_postgres_lock_only_as_long_as_the_lock_timeout(
    bounded: AsyncClient, locked_projects: Callable[[], Any]
) -> None:
    tenant = await create_tenant(bounded)
    await locked_projects()
    started = time.monotonic()
    refused = await bounded.post(
        tenant.path("/projects"), json={"name": "late"}, headers=tenant.owner.headers
    )
    assert_unavailable(refused, started, BOUND)
    await assert_healthz_fast(bounded)


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's statement_timeout")
async def test_a_statement_runs_only_as_long_as_the_statement_timeout(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    locked_projects: Callable[[], Any],
) -> None:
    """The lock wait is allowed longer than the statement: the statement's bound ends it."""
    settings = make_settings(DATABASE_LOCK_TIMEOUT_SECONDS=30, DATABASE_STATEMENT_TIMEOUT_SECONDS=BOUND)
    async with make_client(settings) as client:
        tenant = await create_tenant(client)
        await locked_projects()
        started = time.monotonic()
        refused = await client.post(
            tenant.path("/projects"), json={"name": "late"}, headers=tenant.owner.headers
        )
        assert_unavailable(refused, started, BOUND)


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A listener that accepts connections and never says a word (a hung server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes the handshakes; nobody ever answers
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


async def test_an_unresponsive_database_is_503_within_the_connect_timeout(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], silent_database: int
) -> None:
    settings = make_settings(
        DATABASE_URL=f"postgresql+asyncpg://nobody@127.0.0.1:{silent_database}/none",
        DATABASE_CONNECT_TIMEOUT_SECONDS=BOUND,
    )
    async with make_client(settings) as client:
        started = time.monotonic()
        answer = await client.get("/t/acme/users/me", headers={"Authorization": "Bearer x.y.z"})
        assert_unavailable(answer, started, BOUND)
        started = time.monotonic()
        token = await client.post(
            "/t/acme/auth/token", data={"grant_type": "password", "username": "a@b.io", "password": "x" * 12}
        )
        assert time.monotonic() - started < BOUND + MARGIN
        assert token.status_code == 503, token.text
        assert token.json()["error"] == "temporarily_unavailable"  # RFC 6749 §4.1.2.1's form
        assert int(token.headers["retry-after"]) >= 1
