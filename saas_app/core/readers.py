"""Where the read cache's loads run: the cheapest way each store offers to run a few
statements and nothing else.

A load is an async function of a `Fetch`: it runs `Query`s (Core SELECTs built once) and
builds a value from their rows, so the same code runs on every store:

- **SQLite: inline, on a synchronous connection of the process's own.** The file is local
  and WAL readers never wait for writers: an indexed read costs tens of microseconds,
  less than one hand-off to aiosqlite's thread (each statement there is two). The load
  never yields to the event loop (the reader checks), and a read that meets a lock (a
  checkpoint, a schema change) gives up after a few milliseconds and runs on the async
  engine instead, so the loop is never held for long.
- **PostgreSQL: on asyncpg directly**, on a pool of its own in autocommit: no BEGIN, no
  ROLLBACK, one round trip per statement, prepared once per connection. Through
  SQLAlchemy's async engine a one-row load cost about 350 µs of the worker's CPU (pool
  checkout, greenlet hop, execution context, result); on the driver it costs about
  120 µs, and a cold request runs three. The statements are still SQLAlchemy's: each
  `Query` is compiled once with SQLAlchemy's own asyncpg dialect, and its columns' result
  processors applied, so a row is what SQLAlchemy would have returned (a test compares
  the two for every query). The pool does not ping a connection before each use (a round
  trip per load, as dear as the load itself) and skips asyncpg's reset on release (a
  load changes no session state): a load that meets a connection the server closed (a
  restart, a failover) is simply run again on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy import Select, create_engine, event
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from saas_app.core.config import Settings
from saas_app.core.db import postgres_connect_args
from saas_app.core.logging import REPEATS

T = TypeVar("T")
Row = Any  # a result row: by attribute or by index (SQLAlchemy's Row, or a named tuple)
logger = logging.getLogger("saas_app.readcache")
READER_APPLICATION_NAME = "saas_app cache reads"
INLINE_BUSY_MS = 5  # an inline read waits at most this long for a lock, then goes async
BUILT: list[Query] = []  # every Query made (they are built once, at import)
POSTGRES = asyncpg_dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


class Query:
    """A Core SELECT, built once, runnable through SQLAlchemy or on asyncpg directly."""

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._postgres: _Compiled | None = None
        BUILT.append(self)  # so a test can prove, for every query, the driver path exact

    @property
    def postgres(self) -> _Compiled:
        if self._postgres is None:
            self._postgres = _Compiled.of(self.statement)
        return self._postgres


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement as asyncpg runs it: SQL text with $n parameters, their order and
    processors, and the result columns' processors (SQLAlchemy's, for this dialect)."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]  # values bound in the statement itself (a LIMIT, say)
    binders: tuple[Callable[[Any], Any] | None, ...]
    row: Callable[[Iterable[Any]], tuple[Any, ...]]
    results: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def of(cls, statement: Select[*tuple[Any, ...]]) -> _Compiled:
        compiled = statement.compile(dialect=POSTGRES)
        names = tuple(compiled.positiontup or ())
        columns = list(statement.selected_columns)
        return cls(
            sql=str(compiled),
            names=names,
            defaults={name: value for name, value in compiled.params.items() if value is not None},
            binders=tuple(
                compiled.binds[name].type.dialect_impl(POSTGRES).bind_processor(POSTGRES) for name in names
            ),
            row=namedtuple("Row", [c.key for c in columns], rename=True)._make,  # type: ignore[misc,attr-defined]
            results=tuple(c.type.dialect_impl(POSTGRES).result_processor(POSTGRES, None) for c in columns),
        )

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = [params[name] if name in params else self.defaults[name] for name in self.names]
        return [
            v if bind is None or v is None else bind(v) for v, bind in zip(values, self.binders, strict=True)
        ]

    def rows(self, records: list[Any]) -> list[Row]:
        results = self.results
        if not any(results):
            return [self.row(record) for record in records]
        return [
            self.row(v if p is None else p(v) for v, p in zip(record, results, strict=True))
            for record in records
        ]


class Fetch(Protocol):
    """What a load reads with."""

    async def all(self, query: Query, params: Mapping[str, Any]) -> list[Row]: ...


Load = Callable[[Fetch], Coroutine[Any, Any, T]]


async def first(fetch: Fetch, query: Query, params: Mapping[str, Any]) -> Row | None:
    rows = await fetch.all(query, params)
    return rows[0] if rows else None


class _SyncFetch:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def all(self, query: Query, params: Mapping[str, Any]) -> list[Row]:
        return list(self._connection.execute(query.statement, dict(params)).all())


class _AsyncFetch:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def all(self, query: Query, params: Mapping[str, Any]) -> list[Row]:
        return list((await self._connection.execute(query.statement, dict(params))).all())


class _DriverFetch:
    def __init__(self, connection: Any) -> None:  # an asyncpg Connection
        self._connection = connection

    async def all(self, query: Query, params: Mapping[str, Any]) -> list[Row]:
        compiled = query.postgres
        return compiled.rows(await self._connection.fetch(compiled.sql, *compiled.arguments(params)))


class Reader(Protocol):
    async def run(self, load: Load[T]) -> T: ...

    async def close(self) -> None: ...


class AsyncReader:
    """Runs a load on a pooled connection of the async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, load: Load[T]) -> T:
        async with self._engine.connect() as connection:
            return await load(_AsyncFetch(connection))

    async def close(self) -> None:
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

    async def run(self, load: Load[T]) -> T:
        try:
            with self._engine.connect() as connection:
                return _complete(load(_SyncFetch(connection)))
        except OperationalError as exc:  # locked or busy: the async path waits properly
            logger.debug("inline read gave way: %s", type(exc.orig).__name__)
            return await self._fallback.run(load)

    async def close(self) -> None:
        self._engine.dispose()


def _complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine that must not suspend (its statements run synchronously), to its
    end, without the event loop: one load at a time on the one connection."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("an inline load awaited something other than its statements")


def _autocommit(connection: sqlite3.Connection, _record: Any) -> None:
    # No BEGIN: each statement reads the latest commit, like a READ COMMITTED statement.
    connection.isolation_level = None


class PostgresReader:
    """Loads on asyncpg, on a pool of their own (see the module docstring)."""

    def __init__(self, connect_args: dict[str, Any], size: int, acquire_timeout: float) -> None:
        self._connect_args = connect_args
        self._size = size
        self._acquire_timeout = acquire_timeout
        self._pool: asyncpg.Pool | None = None  # made on first use
        self._opening = asyncio.Lock()

    async def run(self, load: Load[T]) -> T:
        try:
            try:
                return await self._once(load)
            except _ConnectionLost as lost:
                REPEATS.log(
                    logger,
                    logging.INFO,
                    f"reader:{_name(lost.cause)}",
                    "read cache: a pooled connection was lost (%s); the load runs again on another",
                    _name(lost.cause),
                )
                return await self._once(load)
        except _ConnectionLost as lost:
            raise _translated(lost.cause) from lost.cause
        except TimeoutError as exc:  # no connection free in time, or none could be made
            raise PoolTimeout("no read connection available in time") from exc
        except _DRIVER_ERRORS as exc:
            # As SQLAlchemy raises them, so core/errors.py answers them as for any other
            # query (503 for a lost or overloaded database, with the SQLSTATE logged).
            raise _translated(exc) from exc

    async def _once(self, load: Load[T]) -> T:
        pool = self._pool or await self._open()
        # asyncio.timeout, not acquire(timeout=...): that one wraps every acquire in a task.
        # A refused connect raises here, and is not retried: there is no other server.
        async with asyncio.timeout(self._acquire_timeout):
            connection = await pool.acquire()
        try:
            return await load(_DriverFetch(connection))
        except _CONNECTION_BROKEN as exc:
            # The server ended it, or it is in a state asyncpg cannot use again: closed,
            # never handed to the next load (the pool connects afresh in its place).
            with contextlib.suppress(asyncpg.InterfaceError):  # asyncpg closed it already
                connection.terminate()
            raise _ConnectionLost(exc) from exc
        finally:
            await pool.release(connection)

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    min_size=0,
                    max_size=self._size,
                    init=_json_codecs,
                    reset=_keep,
                    **self._connect_args,
                )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def _json_codecs(connection: Any) -> None:
    # JSON columns decoded as SQLAlchemy's asyncpg dialect decodes them (its JSON type then
    # has no result processor of its own).
    for name, encode, decode in (("json", str.encode, _json), ("jsonb", _jsonb_encode, _jsonb)):
        await connection.set_type_codec(
            name, encoder=encode, decoder=decode, schema="pg_catalog", format="binary"
        )


def _json(value: bytes) -> Any:
    return json.loads(value)


def _jsonb(value: bytes) -> Any:
    return json.loads(value[1:])  # binary jsonb starts with a version byte


def _jsonb_encode(value: str) -> bytes:
    return b"\x01" + value.encode()


async def _keep(_connection: Any) -> None:
    """No reset on release: a load sets nothing (no SET, LISTEN, lock or open transaction)
    that the next one could inherit."""


# A connection the server ended (a restart, a failover, pg_terminate_backend) or that
# asyncpg cannot use again: the load runs again, once, on another. SQLSTATE class 08 and
# 57P01-03; asyncpg's own InterfaceError ("connection is closed") and InternalClientError
# (its protocol in an unexpected state, as after a backend died mid-statement); a socket
# error. Any other driver error is the statement's own (57014 statement_timeout, 22...)
# and leaves the connection usable.
_CONNECTION_BROKEN = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


class _ConnectionLost(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _translated(exc: BaseException) -> DBAPIError:
    """The SQLAlchemy exception for a driver error: OperationalError when the connection
    is unusable, DBAPIError otherwise; `orig` keeps the SQLSTATE, no parameters kept."""
    if not isinstance(exc, asyncpg.PostgresError) or str(exc.sqlstate).startswith("08"):
        return OperationalError(None, None, exc, hide_parameters=True)
    return DBAPIError(None, None, exc, hide_parameters=True)


def reader_for(engine: AsyncEngine, settings: Settings) -> Reader:
    """`engine`'s reads as loads use them: no BEGIN on SQLite; on PostgreSQL autocommit on
    asyncpg, on a pool of at most DATABASE_POOL_SIZE connections without pre-ping, with
    the same timeouts as the app's."""
    if engine.dialect.name != "sqlite":
        connect_args = dict(engine.dialect.create_connect_args(engine.url)[1])
        # SQLAlchemy's own statement cache settings (for pgbouncer: `?prepared_statement_
        # cache_size=0`) become asyncpg's: a size of 0 runs unnamed statements, which a
        # transaction-pooling pgbouncer allows, so no name function is needed.
        cache_size = connect_args.pop("prepared_statement_cache_size", None)
        connect_args.pop("prepared_statement_name_func", None)
        if cache_size is not None:
            connect_args["statement_cache_size"] = int(cache_size)
        connect_args.update(postgres_connect_args(settings, READER_APPLICATION_NAME))
        # At most the requests' pool size: a load holds its connection for one or two
        # statements, and the database's connection budget is shared.
        return PostgresReader(
            connect_args,
            size=max(1, settings.DATABASE_POOL_SIZE),
            acquire_timeout=settings.DATABASE_POOL_TIMEOUT_SECONDS,
        )
    fallback = AsyncReader(engine.execution_options(sqlite_begin="NONE"))
    database = engine.url.database
    if database and database != ":memory:":
        return InlineSqliteReader(database, fallback)
    return fallback
