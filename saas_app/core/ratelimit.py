"""Abuse limits over the `limits` library: in memory by default, Redis when configured.

Counters are atomic in both storages (a Redis Lua script or a lock-guarded dict), so
parallel requests cannot all slip under a limit: each one takes its slot *before* the work
it guards. See docs/decisions.md for why this is `limits` directly rather than slowapi.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from saas_app.core.config import Settings
from saas_app.core.errors import RateLimited, ServiceUnavailable
from saas_app.core.logging import REPEATS

logger = logging.getLogger("saas_app.ratelimit")
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int


class RateLimiter:
    """Named buckets (`hit("token_ip", "10/minute", ip)`); each endpoint has its own.

    When Redis fails, RATE_LIMIT_FAIL_OPEN=true (the default) counts in process memory
    instead, with a warning, so logins keep working (with per-process limits) while Redis
    is down; false answers 503 instead.
    """

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.RATE_LIMITS_ENABLED
        self.storage: Storage = _storage(settings)
        self._strategy = MovingWindowRateLimiter(self.storage)
        self._fallback = MovingWindowRateLimiter(_MemoryStorage()) if settings.REDIS_URL else None
        self._fail_open = settings.RATE_LIMIT_FAIL_OPEN
        self._items: dict[str, tuple[RateLimitItem, ...]] = {}

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._strategy, method)(*args)
        except StorageError as exc:
            if self._fallback is None or not self._fail_open:
                raise ServiceUnavailable("Rate-limit storage is unavailable; retry later.") from exc
            kind = type(exc.storage_error).__name__
            REPEATS.log(
                logger,
                logging.WARNING,
                f"ratelimit:{kind}",
                "rate-limit storage down (%s): counting in process",
                kind,
            )
            return await getattr(self._fallback, method)(*args)

    def _parts(self, limit: str) -> tuple[RateLimitItem, ...]:
        """Every part of `limit`: `"100/minute; 3/hour"` is two windows, both enforced."""
        items = self._items.get(limit)
        if items is None:
            items = self._items[limit] = tuple(parse_many(limit))
        return items

    async def hit(self, bucket: str, limit: str, *keys: str) -> Verdict:
        """Takes one slot of each of the bucket's windows, or says how long until one frees up.

        A request refused by a later window keeps the slots it took in the earlier ones:
        over-counting errs on the safe side, and a client over one window is throttled anyway.
        """
        if not self.enabled:
            return Verdict(True, 0)
        for item in self._parts(limit):
            if not await self._call("hit", item, bucket, *keys):
                stats = await self._call("get_window_stats", item, bucket, *keys)
                return Verdict(False, max(1, math.ceil(stats.reset_time - time.time())))
        return Verdict(True, 0)

    async def allows(self, bucket: str, limit: str, *keys: str) -> bool:
        """Whether the bucket has a slot left in every window, without taking one."""
        if not self.enabled:
            return True
        for item in self._parts(limit):
            if not await self._call("test", item, bucket, *keys):
                return False
        return True

    async def enforce(self, bucket: str, limit: str, *keys: str) -> None:
        """Takes one slot or raises RateLimited (429 with Retry-After)."""
        verdict = await self.hit(bucket, limit, *keys)
        if not verdict.allowed:
            raise RateLimited(verdict.retry_after)

    async def clear(self, bucket: str, limit: str, *keys: str) -> None:
        if self.enabled:
            for item in self._parts(limit):
                await self._call("clear", item, bucket, *keys)

    async def ping(self) -> bool:
        return bool(await self.storage.check())


class _MemoryStorage(MemoryStorage):
    """limits' in-memory storage, with a `clear` that cannot crash its expiry task.

    The stock `clear` deletes a key's event list while the background sweep may be between
    listing the keys and reading that list (a KeyError in a task nobody awaits). Emptying
    the list instead leaves the sweep to drop the key itself.
    """

    async def clear(self, key: str) -> None:
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        if key in self.events:
            self.events[key] = []


def _storage(settings: Settings) -> Storage:
    if settings.REDIS_URL:
        uri = "async+" + settings.REDIS_URL
        return RedisStorage(
            uri,
            implementation="redispy",
            key_prefix=settings.RATE_LIMIT_KEY_PREFIX,
            wrap_exceptions=True,  # every Redis failure surfaces as limits' StorageError
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
    return _MemoryStorage()
