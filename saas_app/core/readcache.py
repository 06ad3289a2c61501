"""A read-through cache that is exact: an entry is used only while the database has not
changed at all since it was read.

On SQLite, `PRAGMA data_version` on a connection of our own changes whenever any other
connection, in this process or another worker, commits a change to the file. Reading it
costs microseconds and no thread hand-off, so the authenticated hot path (who is this
token's session, what may they do) needs no query while nothing changes, and sees any
role change, revocation or deactivation, from any worker, on the very next request.
On PostgreSQL the signal is `cache_epoch`, bumped in every writing transaction
(saas_app/core/epoch.py): one small query per read instead of the reads it replaces.
Where no signal can be read, `version()` is None and nothing is cached.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from saas_app.core.config import Settings
from saas_app.core.epoch import PostgresEpoch

logger = logging.getLogger("saas_app.readcache")
MAX_ENTRIES = 50_000
T = TypeVar("T")
VERSION = "saas_app.cache_version"  # where a request keeps the version it read


class DataVersion(Protocol):
    async def current(self) -> int | None: ...

    async def close(self) -> None: ...


class NoDataVersion:
    """No change signal: every read goes to the database."""

    async def current(self) -> int | None:
        return None

    async def close(self) -> None:
        return None


class SqliteDataVersion:
    """`PRAGMA data_version` of a read-only connection that never writes, so every commit
    by anyone moves it (SQLite docs, "PRAGMA data_version")."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    async def current(self) -> int | None:
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    f"file:{self._path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            row = self._connection.execute("PRAGMA data_version").fetchone()
            return int(row[0])
        except sqlite3.Error as exc:  # no file yet, or unreadable: do not cache
            logger.debug("data_version unavailable: %s", exc)
            self._disconnect()
            return None

    async def close(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def data_version_for(settings: Settings) -> DataVersion:
    url = make_url(settings.DATABASE_URL)
    if not settings.READ_CACHE_ENABLED:
        return NoDataVersion()
    if settings.is_sqlite:
        if url.database and url.database != ":memory:":
            return SqliteDataVersion(url.database)
        return NoDataVersion()
    return PostgresEpoch(settings)


class ReadCache:
    """Values read from the database, valid for one data version. Read the version
    *before* the query whose result you cache: a commit racing the query then only makes
    the entry look older than it is, never newer."""

    def __init__(self, data_version: DataVersion) -> None:
        self._data_version = data_version
        self._version: int | None = None
        self._entries: dict[Hashable, object] = {}

    async def version(self) -> int | None:
        """The database's current version; entries of older versions are dropped."""
        current = await self._data_version.current()
        if current != self._version:
            self._entries.clear()
            self._version = current
        return current

    def get(self, key: Hashable, version: int | None) -> object | None:
        if version is None or version != self._version:
            return None
        return self._entries.get(key)

    def put(self, key: Hashable, value: object, version: int | None) -> None:
        if version is None or version != self._version:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = value

    async def close(self) -> None:
        await self._data_version.close()


async def version_of(cache: ReadCache, memo: MutableMapping[str, Any] | None = None) -> int | None:
    """The cache's version, read once per request when the request keeps a `memo`."""
    if memo is not None and VERSION in memo:
        known: int | None = memo[VERSION]
        return known
    version = await cache.version()
    if memo is not None:
        memo[VERSION] = version
    return version


async def read_through(
    cache: ReadCache,
    factory: async_sessionmaker[AsyncSession],
    key: Hashable,
    kind: type[T],
    load: Callable[[AsyncSession], Awaitable[T | None]],
    memo: MutableMapping[str, Any] | None = None,
) -> T | None:
    """The cached value of `key`, else `load` it in a read session of its own (opened only
    on a miss, so a hit costs no connection) and cache it. None results are not cached.

    `memo` (a read-only request's ASGI scope) keeps the version read first in the request
    for its later reads: one version check per request (a query on PostgreSQL). Older
    than the data can only be safe; never pass it once the request has written."""
    version = await version_of(cache, memo)  # before the query: see ReadCache
    cached = cache.get(key, version)
    if isinstance(cached, kind):
        return cached
    async with factory() as session:
        value = await load(session)
    if value is not None:
        cache.put(key, value, version)
    return value
