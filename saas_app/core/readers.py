"""Where the read cache's loads run: the cheapest way each store offers to run a few
statements and nothing else.

A load is a plain function of a SQLAlchemy `Connection` (Core statements, or an ORM
`Session` bound to it), so the same code runs on both:

- **SQLite: inline, on a synchronous connection of the process's own.** The file is local
  and WAL readers never wait for writers: an indexed read costs tens of microseconds,
  less than one hand-off to aiosqlite's thread (each statement there is two). A read
  that meets a lock (a checkpoint, a schema change) gives up after a few milliseconds and
  runs on the async engine instead, so the event loop is never held for long.
- **PostgreSQL: on a pool of its own** (asyncpg, prepared statements), one connection
  in autocommit: no BEGIN, no ROLLBACK, one round trip per statement. Unlike the app's
  main pool it does not ping a connection before each use (a round trip per load, as
  dear as the load itself): a load is a read, so one that meets a connection the server
  closed (a restart, a failover) is simply run again on a fresh one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from saas_app.core.config import Settings
from saas_app.core.db import postgres_connect_args

T = TypeVar("T")
logger = logging.getLogger("saas_app.readcache")
READER_APPLICATION_NAME = "saas_app cache reads"
INLINE_BUSY_MS = 5  # an inline read waits at most this long for a lock, then goes async


class AsyncReader:
    """Runs a load on a pooled connection of the async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, load: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(load)

    async def close(self) -> None:
        return None


class PostgresReader(AsyncReader):
    """Loads on an engine of their own, without a ping per checkout: a load that meets a
    dead connection is retried once (SQLAlchemy then replaces every older connection)."""

    async def run(self, load: Callable[[Connection], T]) -> T:
        try:
            return await super().run(load)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            logger.info("read cache: a pooled connection was gone; the load runs again")
            return await super().run(load)

    async def close(self) -> None:
        await self._engine.dispose()


class InlineSqliteReader:
    """Runs a load on the event loop's thread, on one read-only SQLite connection."""

    def __init__(self, path: str, fallback: AsyncReader) -> None:
        self._fallback = fallback
        # StaticPool: one connection, used only from the event loop's thread, one load
        # at a time (a load never awaits).
        self._engine: Engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": INLINE_BUSY_MS / 1000},
            hide_parameters=True,
        )
        event.listen(self._engine, "connect", _autocommit)

    async def run(self, load: Callable[[Connection], T]) -> T:
        try:
            with self._engine.connect() as connection:
                return load(connection)
        except OperationalError as exc:  # locked or busy: the async path waits properly
            logger.debug("inline read gave way: %s", type(exc.orig).__name__)
            return await self._fallback.run(load)

    async def close(self) -> None:
        self._engine.dispose()


def _autocommit(connection: sqlite3.Connection, _record: Any) -> None:
    # No BEGIN: each statement reads the latest commit, like a READ COMMITTED statement.
    connection.isolation_level = None


def reader_for(engine: AsyncEngine, settings: Settings) -> AsyncReader | InlineSqliteReader:
    """`engine`'s reads as loads use them: no BEGIN on SQLite; on PostgreSQL autocommit,
    on a pool of at most DATABASE_POOL_SIZE connections without pre-ping, with the same
    timeouts as the app's."""
    if engine.dialect.name != "sqlite":
        reads = create_async_engine(
            engine.url,
            hide_parameters=True,
            # Half the requests' pool, with as much again in overflow: a load holds its
            # connection for one statement, and the database's connection budget is shared.
            pool_size=max(1, settings.DATABASE_POOL_SIZE // 2),
            max_overflow=max(1, settings.DATABASE_POOL_SIZE // 2),
            pool_timeout=settings.DATABASE_POOL_TIMEOUT_SECONDS,
            isolation_level="AUTOCOMMIT",
            # application_name: how operators (and tests) tell them apart in pg_stat_activity.
            connect_args=postgres_connect_args(settings, READER_APPLICATION_NAME),
        )
        return PostgresReader(reads)
    fallback = AsyncReader(engine.execution_options(sqlite_begin="NONE"))
    database = engine.url.database
    if database and database != ":memory:":
        return InlineSqliteReader(database, fallback)
    return fallback
