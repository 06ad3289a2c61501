"""The change feeds that keep each node's read cache in step with the database.

SQLite (one host, any number of workers): before a request reads, `PRAGMA data_version`
on a read-only connection of our own (it moves when anyone else commits, microseconds, no
thread hand-off); when it moved, the rows of `cache_change` past the last one seen are the
tags to evict. Exact on every worker, on its very next request.

PostgreSQL (any number of nodes): a connection of its own LISTENs on `saas_app_cache`,
where the triggers' `pg_notify` lands on commit, in commit order. A request reads nothing
at all; another node's change arrives within milliseconds. The writer's own node waits for
its fence (a notification sent last in its transaction) before answering, so its next
request sees its change. If the connection is lost or stops answering its heartbeat, the
cache is dropped and every read goes to the database until the feed is back.

Why these feeds and not Redis pub/sub: docs/decisions.md, "The change feed".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections import OrderedDict
from typing import Any

from sqlalchemy.engine import make_url

from saas_app.core.changes import CHANGE_LOG, CHANNEL, FENCE, parse
from saas_app.core.config import Settings
from saas_app.core.readcache import Feed, NoFeed, ReadCache

logger = logging.getLogger("saas_app.readcache")

HEARTBEAT_SECONDS = 1.0  # a silent feed connection is noticed within about two of these
CONNECT_TIMEOUT_SECONDS = 3.0
CLOSE_TIMEOUT_SECONDS = 2.0  # shutting down never waits on the feed longer than this
FENCE_TIMEOUT_SECONDS = 1.0  # a writer's own change unheard this long: drop the cache
MAX_RETRY_SECONDS = 5.0
APPLICATION_NAME = "saas_app change feed"  # how operators (and tests) find it in pg_stat_activity


def feed_for(settings: Settings) -> Feed:
    if not settings.READ_CACHE_ENABLED:
        return NoFeed()
    url = make_url(settings.DATABASE_URL)
    if settings.is_sqlite:
        if url.database and url.database != ":memory:":
            return SqliteChangeLog(url.database)
        return NoFeed()
    return PostgresNotifications(url.set(drivername="postgresql").render_as_string(hide_password=False))


class SqliteChangeLog:
    """`cache_change`, read when `PRAGMA data_version` says someone committed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._cache: ReadCache | None = None
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None
        self._last_id = 0

    def attach(self, cache: ReadCache) -> None:
        self._cache = cache

    async def start(self) -> None:
        await self.sync()

    async def sync(self) -> bool:
        try:
            connection = self._connection or self._connect()
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._read_log(connection)
                self._version = version
        except sqlite3.Error as exc:  # no file or no log yet (not migrated): read through
            logger.debug("change log unavailable: %s", exc)
            self._disconnect()
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            f"file:{self._path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        # Start from the log's end with an empty cache: nothing read before can be vouched for.
        query = f"SELECT coalesce(max(id), 0) FROM {CHANGE_LOG}"  # noqa: S608 (a constant)
        (last,) = connection.execute(query).fetchone()
        self._connection, self._version, self._last_id = connection, None, int(last)
        self._clear()
        return connection

    def _read_log(self, connection: sqlite3.Connection) -> None:
        rows = connection.execute(
            f"SELECT id, tag FROM {CHANGE_LOG} WHERE id > ? ORDER BY id",  # noqa: S608 (a constant)
            (self._last_id,),
        ).fetchall()
        if not rows:
            return
        tags = [parse(row[1]) for row in rows]
        # Pruned past us (a gap), or '*': we cannot know what we missed, so drop it all.
        if rows[0][0] != self._last_id + 1 or None in tags:
            self._clear()
        elif self._cache is not None:
            self._cache.evict(t for t in tags if t is not None)
        self._last_id = rows[-1][0]

    def _clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    def _disconnect(self) -> None:
        self._clear()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def settle(self, fence: str) -> None:
        return None  # data_version is read before every request: nothing to wait for

    async def close(self) -> None:
        self._disconnect()


class PostgresNotifications:
    """LISTEN on a dedicated asyncpg connection, reconnecting with back-off."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._cache: ReadCache | None = None
        self._task: asyncio.Task[None] | None = None
        self._up = False
        self.node = uuid.uuid4().hex[:12]  # fences of other nodes are not ours to wait for
        self._waiting: dict[str, asyncio.Event] = {}
        self._heard: OrderedDict[str, None] = OrderedDict()  # fences heard before waited for
        self._listening = asyncio.Event()

    def attach(self, cache: ReadCache) -> None:
        self._cache = cache

    @property
    def is_up(self) -> bool:
        return self._up

    async def start(self) -> None:
        """Starts listening; waits a moment for the first connection so the cache works
        from the first request, but never fails: without the feed, requests read through."""
        if self._task is None:
            self._listening = asyncio.Event()
            self._task = asyncio.create_task(self._listen_forever(), name="saas_app change feed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    await self._listening.wait()

    async def sync(self) -> bool:
        return self._up

    def new_fence(self) -> str:
        return f"{FENCE}{self.node}:{uuid.uuid4().hex}"

    async def settle(self, fence: str) -> None:
        if not self._up:
            return  # the cache is off until the feed is back: nothing to wait for
        if fence in self._heard:  # heard before the writer got here
            del self._heard[fence]
            return
        event = self._waiting[fence] = asyncio.Event()
        try:
            async with asyncio.timeout(FENCE_TIMEOUT_SECONDS):
                await event.wait()
        except TimeoutError:
            logger.warning("change feed: a write was not heard back in time; cache dropped")
            self._clear()
        finally:
            self._waiting.pop(fence, None)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(FENCE):
            if not payload.startswith(f"{FENCE}{self.node}:"):
                return
            event = self._waiting.get(payload)
            if event is not None:
                event.set()
            else:
                self._heard[payload] = None
                while len(self._heard) > 1000:
                    self._heard.popitem(last=False)
            return
        tag = parse(payload)
        if self._cache is not None:
            if tag is None:  # '*' (a TRUNCATE) or unreadable: evicting everything is safe
                self._cache.clear()
            else:
                self._cache.evict((tag,))

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
                logger.warning("change feed connection lost; reading through until it is back")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: retry; the cache is off meanwhile
                level = logging.WARNING if delay == 0.1 else logging.DEBUG
                logger.log(level, "change feed unavailable (%s); reading through", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _listen(self) -> None:
        # Imported here: SQLite deployments never load the driver.
        import asyncpg  # noqa: PLC0415

        connection = await asyncpg.connect(
            self._dsn, timeout=CONNECT_TIMEOUT_SECONDS, server_settings={"application_name": APPLICATION_NAME}
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
            self._clear()  # whatever was cached before LISTEN may have missed a change
            self._up = True
            self._listening.set()
            logger.info("change feed listening")
            while not lost.is_set():
                # A connection that stopped answering (a partition, a hung server) delivers
                # nothing and says nothing: ask it something every second. asyncio.timeout,
                # not wait_for: on Python 3.11 wait_for swallows a cancellation that lands as
                # the awaited call completes, and shutdown would wait on this loop forever.
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await connection.fetchval("SELECT 1")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        await lost.wait()
        finally:
            self._up = False
            self._clear()
            for event in self._waiting.values():
                event.set()  # the writers need not wait: the cache is empty and off
            connection.terminate()

    def _clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait, not awaiting the task: a shutdown is bounded even if the task were
        # to outlive its cancellation (a driver call that does not yield to it).
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_SECONDS)
        if not done:
            logger.warning("change feed did not stop in time; leaving it to the process exit")
        elif not task.cancelled() and task.exception() is not None:
            logger.debug("change feed ended with %s", type(task.exception()).__name__)
