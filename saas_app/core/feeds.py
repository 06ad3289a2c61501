"""The change feeds that keep each node's read cache in step with the database.

SQLite (one host, any number of workers): before a request reads, `PRAGMA data_version`
on a read-only connection of our own (it moves when anyone else commits, microseconds, no
thread hand-off); when it moved, the rows of `cache_change` past the last one seen are the
tags to evict. Exact on every worker, on its very next request.

PostgreSQL (any number of nodes): a connection of its own LISTENs on `saas_app_cache`,
where the triggers' `pg_notify` lands on commit, in commit order. A request reads nothing
at all; another node's change arrives within milliseconds. The writer's own node waits for
its fence (a notification sent last in its transaction) before answering, so its next
request sees its change. A heartbeat several times a second proves the connection still
delivers (PostgreSQL sends pending notifications before a query's answer): the cache is
served only while the last answered heartbeat is recent, and the heartbeat also checks that
every trigger of migration 0009 is there and enabled. If the connection is lost, the cache
is dropped and every read goes to the database until the feed is back.

Why these feeds and not Redis pub/sub: docs/decisions.md, "The change feed".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections import OrderedDict
from typing import Any

from sqlalchemy.engine import make_url

from saas_app.core.changes import CHANGE_LOG, CHANNEL, FENCE, TRIGGERS, parse
from saas_app.core.config import Settings
from saas_app.core.logging import REPEATS
from saas_app.core.readcache import Feed, NoFeed, ReadCache

logger = logging.getLogger("saas_app.readcache")

HEARTBEAT_SECONDS = 0.2  # how often the feed connection is asked to prove it delivers
# The cache is served while the last answered heartbeat was sent less than this ago: a
# stalled connection (a partition, a stopped server) cannot keep a revocation from this
# node for longer (API-v2 §5: every node within 1 s).
VOUCH_SECONDS = 0.6
HEARTBEAT_TIMEOUT_SECONDS = 2.0  # unanswered this long: the connection is dropped, and redone
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
    return PostgresNotifications(
        url.set(drivername="postgresql").render_as_string(hide_password=False),
        connect_timeout=settings.DATABASE_CONNECT_TIMEOUT_SECONDS,
    )


class SqliteChangeLog:
    """`cache_change`, read when `PRAGMA data_version` says someone committed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._cache: ReadCache | None = None
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None
        self._last: tuple[int, int] | None = None  # (id, nonce) of the last row applied

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
        self._connection, self._version, self._last = connection, None, _end_of_log(connection)
        self._clear()
        return connection

    def _read_log(self, connection: sqlite3.Connection) -> None:
        # One read transaction: the rows and the log's end come from the same snapshot.
        connection.execute("BEGIN")
        try:
            since = self._last[0] if self._last else 0
            rows = connection.execute(
                f"SELECT id, tag, nonce FROM {CHANGE_LOG} WHERE id >= ? ORDER BY id",  # noqa: S608 (a constant)
                (since,),
            ).fetchall()
            end = _end_of_log(connection)
        finally:
            connection.execute("COMMIT")
        if self._last is not None:
            if not rows or (rows[0][0], rows[0][2]) != self._last:
                # The row we read last is gone or another: pruned past us, or the log went
                # back in time (a restored backup, the table recreated). We cannot know what
                # we missed, so drop it all and follow the log from its end.
                self._clear()
                self._last = end
                return
            rows = rows[1:]
        elif rows and rows[0][0] != 1:
            self._clear()  # the log was empty when we began and has been pruned since
            self._last = end
            return
        if not rows:
            return
        tags = [parse(row[1]) for row in rows]
        if None in tags:  # '*': drop everything
            self._clear()
        elif self._cache is not None:
            self._cache.evict(t for t in tags if t is not None)
        self._last = (rows[-1][0], rows[-1][2])

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


def _end_of_log(connection: sqlite3.Connection) -> tuple[int, int] | None:
    query = f"SELECT id, nonce FROM {CHANGE_LOG} ORDER BY id DESC LIMIT 1"  # noqa: S608 (a constant)
    row = connection.execute(query).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


class TriggersMissing(Exception):
    """Some trigger of migration 0009 is missing or disabled: the feed would miss changes."""


# The triggers of migration 0009 that are there and enabled, and how many of them fire in
# every replication role ('A', as the migration makes them) rather than only in origin
# mode ('O', what `ALTER TABLE ... ENABLE TRIGGER` leaves).
TRIGGER_CHECK = """
    SELECT count(*) FILTER (WHERE t.tgenabled IN ('O', 'A')), count(*) FILTER (WHERE t.tgenabled = 'A')
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = current_schema()::regnamespace AND t.tgname = ANY($1::text[])
"""


class PostgresNotifications:
    """LISTEN on a dedicated asyncpg connection, reconnecting with back-off."""

    def __init__(self, dsn: str, connect_timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._cache: ReadCache | None = None
        self._task: asyncio.Task[None] | None = None
        self._up = False
        self.node = uuid.uuid4().hex[:12]  # fences of other nodes are not ours to wait for
        self._waiting: dict[str, asyncio.Event] = {}
        self._heard: OrderedDict[str, None] = OrderedDict()  # fences heard before waited for
        self._listening = asyncio.Event()
        self._attempted = asyncio.Event()  # the first connection attempt has ended, either way
        self._vouched_until = 0.0  # time.monotonic() after which the cache is not served

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
            self._attempted = asyncio.Event()
            self._task = asyncio.create_task(self._listen_forever(), name="saas_app change feed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._connect_timeout):
                    await self._attempted.wait()

    async def sync(self) -> bool:
        return self._up and time.monotonic() < self._vouched_until

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
            except TriggersMissing as exc:
                # Every minute, not once: the cache stays off until an operator acts.
                REPEATS.log(
                    logger,
                    logging.ERROR,
                    "feed:refused",
                    "change feed refused: %s; the read cache stays off",
                    exc,
                )
            except Exception as exc:  # any failure: retry; the cache is off meanwhile
                level = logging.WARNING if delay == 0.1 else logging.DEBUG
                logger.log(level, "change feed unavailable (%s); reading through", type(exc).__name__)
            self._attempted.set()  # start() waits for the first attempt, not for success
            if self._listening.is_set():
                delay = 0.1  # it was up: a new outage starts the back-off (and its log) afresh
                self._listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _listen(self) -> None:
        # Imported here: SQLite deployments never load the driver.
        import asyncpg  # noqa: PLC0415

        connection = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, server_settings={"application_name": APPLICATION_NAME}
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
            self._clear()  # whatever was cached before LISTEN may have missed a change
            await self._heartbeat(connection)
            self._up = True
            self._listening.set()
            self._attempted.set()
            logger.info("change feed listening")
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    await self._heartbeat(connection)
        finally:
            self._up = False
            self._clear()
            for event in self._waiting.values():
                event.set()  # the writers need not wait: the cache is empty and off
            connection.terminate()

    async def _heartbeat(self, connection: Any) -> None:
        """Proves the connection delivers, and that the triggers that feed it are all there.

        PostgreSQL sends the notifications committed before a query ran ahead of its
        answer, and asyncpg runs their callbacks first: once it answers, everything
        committed before `sent` has been applied, and the cache is vouched for a while."""
        sent = time.monotonic()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # lands as the awaited call completes, and shutdown would wait on this loop forever.
        async with asyncio.timeout(HEARTBEAT_TIMEOUT_SECONDS):
            enabled, always = await connection.fetchrow(TRIGGER_CHECK, list(TRIGGERS))
        if enabled != len(TRIGGERS):
            raise TriggersMissing(
                f"{enabled} of the {len(TRIGGERS)} cache triggers are there and enabled"
                " (is the database migrated? were triggers disabled for a load?)"
            )
        if always != len(TRIGGERS):
            REPEATS.log(
                logger,
                logging.WARNING,
                "feed:origin-only",
                "%d cache triggers fire only in origin mode: writes applied in replica mode"
                " (logical replication) will not reach the read caches; restore each with"
                " ALTER TABLE <table> ENABLE ALWAYS TRIGGER <cache_...>",
                len(TRIGGERS) - always,
            )
        self._vouched_until = sent + VOUCH_SECONDS

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
