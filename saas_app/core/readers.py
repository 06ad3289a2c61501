"""Where the read cache's loads run: the cheapest way each store offers to run a few
statements and nothing else.

A load is a plain function of a SQLAlchemy `Connection` (Core statements, or an ORM
`Session` bound to it), so the same code runs on both:

- **SQLite: inline, on a synchronous connection of the process's own.** The file is local
  and WAL readers never wait for writers: an indexed read costs tens of microseconds,
  less than one hand-off to aiosqlite's thread (each statement there is two). A read
  that meets a lock (a checkpoint, a schema change) gives up after a few milliseconds and
  runs on the async engine instead, so the event loop is never held for long.
- **PostgreSQL: on the async engine** (asyncpg, prepared statements), one connection
  from the pool in autocommit: no BEGIN, no ROLLBACK, one round trip per statement.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

T = TypeVar("T")
logger = logging.getLogger("saas_app.readcache")
INLINE_BUSY_MS = 5  # an inline read waits at most this long for a lock, then goes async


class AsyncReader:
    """Runs a load on a pooled connection of the async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, load: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(load)

    def close(self) -> None:
        return None


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

    def close(self) -> None:
        self._engine.dispose()


def _autocommit(connection: sqlite3.Connection, _record: Any) -> None:
    # No BEGIN: each statement reads the latest commit, like a READ COMMITTED statement.
    connection.isolation_level = None


def reader_for(engine: AsyncEngine) -> AsyncReader | InlineSqliteReader:
    """`engine`'s reads as loads use them: no BEGIN on SQLite, autocommit on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return AsyncReader(engine.execution_options(isolation_level="AUTOCOMMIT"))
    fallback = AsyncReader(engine.execution_options(sqlite_begin="NONE"))
    database = engine.url.database
    if database and database != ":memory:":
        return InlineSqliteReader(database, fallback)
    return fallback
