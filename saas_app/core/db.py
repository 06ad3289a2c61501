"""Database kernel: declarative base, column types, engine and unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, Uuid, event, text
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from saas_app.core.changes import CHANNEL, flush_fires, statement_fires
from saas_app.core.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, uuid.UUID: Uuid}


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


def create_engine(settings: Settings) -> AsyncEngine:
    """Returns an engine for DATABASE_URL, with SQLite tuned for concurrent requests."""
    # hide_parameters: bound values (hashes, e-mails) never reach exception texts or logs.
    if settings.is_sqlite:
        database = make_url(settings.DATABASE_URL).database
        # An in-memory database lives on one connection (SQLAlchemy's StaticPool): no pool
        # to wait for, and no pool_timeout to give.
        pooled = (
            {"pool_timeout": settings.DATABASE_POOL_TIMEOUT_SECONDS}
            if database not in (None, "", ":memory:")
            else {}
        )
        engine = create_async_engine(
            settings.DATABASE_URL,
            connect_args={"timeout": settings.DATABASE_LOCK_TIMEOUT_SECONDS},
            hide_parameters=True,
            **pooled,
        )
        _configure_sqlite(engine, settings.DATABASE_LOCK_TIMEOUT_SECONDS)
        return engine
    return create_async_engine(
        settings.DATABASE_URL,
        hide_parameters=True,
        pool_size=settings.DATABASE_POOL_SIZE,
        max_overflow=settings.DATABASE_POOL_SIZE,
        pool_pre_ping=True,
        pool_timeout=settings.DATABASE_POOL_TIMEOUT_SECONDS,
        connect_args=postgres_connect_args(settings),
    )


def postgres_connect_args(settings: Settings, application_name: str | None = None) -> dict[str, Any]:
    """asyncpg's connection arguments: the connect timeout, and the server's own bounds on
    a statement and on a lock wait (PostgreSQL cancels the statement: SQLSTATE 57014 or
    55P03, answered 503 with Retry-After by core/errors.py)."""
    server_settings = {
        "statement_timeout": str(int(settings.DATABASE_STATEMENT_TIMEOUT_SECONDS * 1000)),
        "lock_timeout": str(int(settings.DATABASE_LOCK_TIMEOUT_SECONDS * 1000)),
    }
    if application_name:
        server_settings["application_name"] = application_name
    return {"timeout": settings.DATABASE_CONNECT_TIMEOUT_SECONDS, "server_settings": server_settings}


def _configure_sqlite(engine: AsyncEngine, lock_timeout: float) -> None:
    """Take transaction control from the driver so writers can BEGIN IMMEDIATE.

    pysqlite's implicit BEGIN is deferred: two requests that read and then write race for
    the write lock and one fails at once with "database is locked". Unsafe requests take
    the write lock up front instead (and wait for it, up to the busy timeout).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        if mode != "NONE":
            connection.exec_driver_sql(f"BEGIN {mode}".strip())


def create_session_factory(
    engine: AsyncEngine, *, for_writes: bool = False, new_fence: Callable[[], str] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that write (on SQLite: BEGIN IMMEDIATE), or for reads.

    Reads run without BEGIN (SQLite) or in autocommit (PostgreSQL): each statement reads
    its own snapshot, exactly as inside a READ COMMITTED transaction, and a read-only
    request saves the BEGIN and ROLLBACK round trips. `new_fence` (PostgreSQL's change
    feed) marks the transactions that change what a read cache holds (see FencedSession).
    """
    sqlite = engine.dialect.name == "sqlite"
    if for_writes:
        bind = engine.execution_options(sqlite_begin="IMMEDIATE")
    elif sqlite:
        bind = engine.execution_options(sqlite_begin="NONE")
    else:
        bind = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(
        bind,
        expire_on_commit=False,
        autoflush=False,
        sync_session_class=Session if new_fence is None else FencedSession,
        info={} if new_fence is None else {NEW_FENCE: new_fence},
    )


NOTIFY = text("SELECT pg_notify(:channel, :fence)")
NEW_FENCE = "saas_app.new_fence"  # in session.info: makes a fence token
FIRES = "saas_app.fires"  # in session.info: this transaction changes cached rows
FENCE = "saas_app.fence"  # in session.info: the fence its last commit sent


class FencedSession(Session):
    """A session that, when its transaction changes rows the caches read (a trigger will
    notify), sends a fence last, so the writer can wait until its own node has heard all
    of it (`ReadCache.feed.settle`, called by the unit of work after COMMIT)."""


@event.listens_for(FencedSession, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    if not session.info.get(FIRES) and flush_fires(session):
        session.info[FIRES] = True


@event.listens_for(FencedSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and statement_fires(state):
        state.session.info[FIRES] = True


@event.listens_for(FencedSession, "before_commit")
def send_fence(session: Session) -> None:
    """Flushes, then sends the fence if the transaction fired a trigger. The unit of work
    calls it before COMMIT (so that a connection lost here is known not to have
    committed); as a `before_commit` hook it covers every other commit."""
    # SQLAlchemy flushes pending changes only after this event: flush now, so they count.
    session.flush()
    if session.info.pop(FIRES, False):
        fence = session.info[NEW_FENCE]()
        session.connection().execute(NOTIFY, {"channel": CHANNEL, "fence": fence})
        session.info[FENCE] = fence


@event.listens_for(FencedSession, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(FIRES, None)
