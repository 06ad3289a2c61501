"""A read-through cache that is exact: an entry lives until a committed change to a row it
read, and a change evicts nothing else.

Each entry lists the tags it depends on (`session:<id>`, `user:<id>`, `role:<id>`, ...,
saas_app/core/changes.py); the database's triggers name the tags of every committed change,
and the node's change feed (saas_app/core/feeds.py) evicts them. A project insert, an audit
row, another user's login or a `last_used_at` touch therefore evicts nothing of user B's.

A value read while a change was committing must not outlive the change: a reader takes a
snapshot (the eviction counter) *before* it queries, and `put` refuses the value if any of
its tags was evicted since. A commit after the query is evicted later like any other; a
commit before it was read. Where the feed cannot vouch for the cache (no signal, a lost
connection, the cache switched off), `snapshot` is None and every read goes to the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from saas_app.core.readers import Load, Reader

logger = logging.getLogger("saas_app.readcache")
MAX_ENTRIES = 50_000
# Answers cached as sent are counted by their size, anything else as a small record: a
# caller who can make many distinct answers (pages of big rows) pushes out the oldest
# entries, never grows the process past this or empties everyone's cache.
MAX_BYTES = 64 * 1024 * 1024
RECORD_BYTES = 1024
MAX_EVICTIONS = 100_000  # per-tag eviction marks kept before they are folded into a floor
T = TypeVar("T")
SNAPSHOT = "saas_app.cache_snapshot"  # where a request keeps the snapshot it took


@dataclass(frozen=True, slots=True)
class Body:
    """An answer cached as sent (no query, no serialisation on a hit), with the tags of the
    rows it was built from."""

    content: bytes
    depends_on: tuple[str, ...]


class Feed(Protocol):
    """The node's change feed: keeps a ReadCache in step with the database."""

    def attach(self, cache: ReadCache) -> None: ...

    async def start(self) -> None:
        """Connects (at start-up); a feed that cannot connect yet keeps trying."""
        ...

    async def sync(self) -> bool:
        """Applies every change committed so far that this node must see before it reads;
        False when it cannot (then nothing may be cached or served from the cache)."""
        ...

    async def settle(self, fence: str) -> None:
        """Returns once this node has applied the writer's own changes (see db.py)."""
        ...

    async def close(self) -> None: ...


class NoFeed:
    """No change signal (the cache switched off, or an in-memory database): read through."""

    def attach(self, cache: ReadCache) -> None:
        return None

    async def start(self) -> None:
        return None

    async def sync(self) -> bool:
        return False

    async def settle(self, fence: str) -> None:
        return None

    async def close(self) -> None:
        return None


class ReadCache:
    """Values read from the database, each with the tags it depends on."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._entries: dict[Hashable, tuple[object, tuple[str, ...]]] = {}  # oldest first
        self._bytes = 0
        self._keys_by_tag: dict[str, set[Hashable]] = {}
        self._seq = 0  # bumped by every eviction
        self._evicted: dict[str, int] = {}  # tag -> the eviction that last removed it
        self._floor = 0  # a snapshot older than this may have missed an eviction
        self.loads = 0  # reads that went to the database (for tests and diagnostics)
        feed.attach(self)

    async def snapshot(self) -> int | None:
        """Brings the cache up to date with the feed; None if it cannot be used."""
        if not await self.feed.sync():
            return None
        return self._seq

    def get(self, key: Hashable, snapshot: int | None) -> object | None:
        if snapshot is None:
            return None
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: Hashable, value: object, tags: Iterable[str], snapshot: int | None) -> None:
        """Keeps `value`, read after `snapshot` was taken, unless a change it depends on was
        evicted meanwhile (the value may predate that change)."""
        if snapshot is None or snapshot < self._floor:
            return
        depends = tuple(tags)
        if snapshot != self._seq and any(self._evicted.get(t, 0) > snapshot for t in depends):
            return
        self._forget(key)
        self._entries[key] = (value, depends)
        self._bytes += _size(value)
        for t in depends:
            self._keys_by_tag.setdefault(t, set()).add(key)
        while len(self._entries) > MAX_ENTRIES or self._bytes > MAX_BYTES:
            self._forget(next(iter(self._entries)))

    def evict(self, tags: Iterable[str]) -> None:
        """Drops every entry that depends on any of `tags`."""
        self._seq += 1
        for t in tags:
            self._evicted[t] = self._seq
            for key in self._keys_by_tag.pop(t, ()):
                self._forget(key)
        if len(self._evicted) > MAX_EVICTIONS:
            self._evicted.clear()
            self._floor = self._seq  # snapshots from before now are refused wholesale

    def clear(self) -> None:
        """Drops everything (the feed was lost, or fell too far behind)."""
        self._entries.clear()
        self._bytes = 0
        self._keys_by_tag.clear()
        self._evicted.clear()
        self._seq += 1
        self._floor = self._seq

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """What the entries hold, in bytes as MAX_BYTES counts them."""
        return self._bytes

    def _forget(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= _size(entry[0])
        for t in entry[1]:
            keys = self._keys_by_tag.get(t)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_tag[t]

    async def close(self) -> None:
        await self.feed.close()


def _size(value: object) -> int:
    return len(value.content) if isinstance(value, Body) else RECORD_BYTES


async def snapshot_of(cache: ReadCache, memo: MutableMapping[str, Any] | None = None) -> int | None:
    """The cache's snapshot, taken once per request when the request keeps a `memo`."""
    if memo is not None and SNAPSHOT in memo:
        known: int | None = memo[SNAPSHOT]
        return known
    snapshot = await cache.snapshot()
    if memo is not None:
        memo[SNAPSHOT] = snapshot
    return snapshot


async def read_through(
    cache: ReadCache,
    reader: Reader,
    key: Hashable,
    kind: type[T],
    load: Load[T | None],
    tags: Callable[[T], Iterable[str]],
    memo: MutableMapping[str, Any] | None = None,
) -> T | None:
    """The cached value of `key`, else `load` it through `reader` and cache it under
    `tags(value)`. None results are not cached.

    `load` runs its `Query`s through the reader (saas_app/core/readers.py runs them where
    it is cheapest: inline on SQLite, on the driver itself on PostgreSQL), so a miss costs
    its statements and nothing else: no ORM unit of work, no transaction. `memo` (a
    read-only request's ASGI scope) keeps the snapshot taken first in the request for its
    later reads. Older than the data can only be safe; never pass it once the request has
    written."""
    snapshot = await snapshot_of(cache, memo)  # before the query: see ReadCache.put
    cached = cache.get(key, snapshot)
    if isinstance(cached, kind):
        return cached
    cache.loads += 1
    value = await reader.run(load)
    if value is not None:
        cache.put(key, value, tags(value), snapshot)
    return value
