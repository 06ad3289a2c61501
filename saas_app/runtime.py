"""What the app builds once at start-up, and the dependencies that hand it to routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import Depends
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

from saas_app.api_keys.service import UsageRecorder
from saas_app.auth.sessions import Lifetimes
from saas_app.core.clock import Clock
from saas_app.core.config import Settings
from saas_app.core.db import FENCE, create_engine, create_session_factory, send_fence
from saas_app.core.errors import ClientClosedRequest, OutcomeUnknown
from saas_app.core.feeds import PostgresNotifications, feed_for
from saas_app.core.ratelimit import RateLimiter
from saas_app.core.readcache import ReadCache
from saas_app.core.readers import Reader, reader_for
from saas_app.security.crypto import SecretBox
from saas_app.security.passwords import PasswordHasher
from saas_app.security.tokens import AccessTokens, SignedValues, TokenKeys

logger = logging.getLogger("saas_app.runtime")


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    reader: Reader  # where the read cache's loads run
    session_factory: async_sessionmaker[AsyncSession]
    write_session_factory: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    keys: TokenKeys
    access_tokens: AccessTokens
    limiter: RateLimiter
    lifetimes: Lifetimes
    box: SecretBox
    signed: SignedValues
    http: httpx.AsyncClient  # outbound calls (GitHub), with timeouts; closed at shutdown
    key_usage: UsageRecorder
    cache: ReadCache

    @classmethod
    def build(
        cls, settings: Settings, clock: Clock, http_transport: httpx.AsyncBaseTransport | None = None
    ) -> Runtime:
        engine = create_engine(settings)
        keys = TokenKeys(settings)
        timeout = settings.GITHUB_TIMEOUT_SECONDS
        feed = feed_for(settings)
        new_fence = feed.new_fence if isinstance(feed, PostgresNotifications) else None
        write_session_factory = create_session_factory(engine, for_writes=True, new_fence=new_fence)
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            reader=reader_for(engine, settings),
            session_factory=create_session_factory(engine, new_fence=new_fence),
            write_session_factory=write_session_factory,
            hasher=PasswordHasher(settings),
            keys=keys,
            access_tokens=AccessTokens(keys, settings),
            limiter=RateLimiter(settings),
            lifetimes=Lifetimes(
                absolute=timedelta(days=settings.REFRESH_TOKEN_TTL_DAYS),
                idle=timedelta(days=settings.SESSION_IDLE_DAYS),
            ),
            box=SecretBox(settings.ENCRYPTION_KEY),
            signed=SignedValues(keys, settings),
            http=httpx.AsyncClient(
                transport=http_transport,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
                follow_redirects=False,
            ),
            key_usage=UsageRecorder(write_session_factory),
            cache=ReadCache(feed),
        )


DISPOSE_TIMEOUT_SECONDS = 3.0  # closing a pool never holds a shutdown longer than this


async def close_runtime(runtime: Runtime) -> None:
    await runtime.key_usage.drain()
    await runtime.cache.close()
    await runtime.http.aclose()
    # A server that stopped answering would hold a graceful close forever: bounded.
    for close in (runtime.reader.close, runtime.engine.dispose):
        try:
            async with asyncio.timeout(DISPOSE_TIMEOUT_SECONDS):
                await close()
        except TimeoutError:
            logger.warning("a database pool did not close in time; leaving it to the process exit")


# Dependencies are `async def` even when they only read a value: FastAPI runs plain `def`
# dependencies in a worker thread, a hand-off that costs more than the whole lookup.


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def ip_of(request: Request) -> str:
    """The socket peer, or the client a trusted proxy names (FORWARDED_ALLOW_IPS, applied
    by the app's own middleware, saas_app/core/proxy.py)."""
    return request.client.host if request.client else "unknown"


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


NOW = "saas_app.now"  # where the request's "now" is kept in the ASGI scope


def now_of(request: Request) -> datetime:
    """The request's "now", read once so every check in a request agrees."""
    now: datetime | None = request.scope.get(NOW)
    if now is None:
        now = request.scope[NOW] = runtime_of(request).clock.now()
    return now


async def get_now(request: Request) -> datetime:
    return now_of(request)


async def client_ip(request: Request) -> str:
    return ip_of(request)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cache_memo(request: Request) -> MutableMapping[str, Any] | None:
    """Where a read-only request keeps its read-cache snapshot (see `read_through`)."""
    return request.scope if request.method in SAFE_METHODS else None


AUTH_MEMO = "saas_app.auth_memo"  # an unsafe request's snapshot, for its dependencies only


def auth_memo(request: Request) -> MutableMapping[str, Any]:
    """Where the tenant lookup and the authentication of a request keep the read-cache
    snapshot they share: one change-feed sync for both. Both run as dependencies, before
    the route writes anything; an unsafe request's route body never sees this memo (it
    must read fresh after its own writes, see `read_through`)."""
    if request.method in SAFE_METHODS:
        return request.scope
    memo: MutableMapping[str, Any] = request.scope.setdefault(AUTH_MEMO, {})
    return memo


@asynccontextmanager
async def _transaction(
    factory: async_sessionmaker[AsyncSession], cache: ReadCache, request: Request | None = None
) -> AsyncIterator[AsyncSession]:
    """Commits when the body succeeds, else rolls back. Errors that must keep their side
    effects (a failed login's audit event) carry `keep_changes = True`.

    A request whose client has gone away by then is rolled back, not committed: nobody
    will read its answer, and a client that retries must not find the work done behind
    its back (a refresh token already rotated, so that the retry looks like theft).

    After a commit that changed what the read cache holds, waits until this node's change
    feed has applied it (PostgreSQL; see FencedSession), so the writer's next request, on
    this node, sees its change."""
    async with factory() as session:
        try:
            yield session
        except BaseException as exc:
            if getattr(exc, "keep_changes", False):
                await session.commit()
                await _settle(session, cache)
            else:
                await session.rollback()
            raise
        if request is not None and await request.is_disconnected():
            await session.rollback()
            raise ClientClosedRequest()
        await _commit(session)
        await _settle(session, cache)


async def _commit(session: AsyncSession) -> None:
    """COMMIT; a connection lost on the way leaves its fate unknown, and says so. Pending
    changes and the change feed's fence are sent first: losing the connection then is a
    plain outage (503 service_unavailable), as the transaction is certainly not committed."""
    await session.run_sync(send_fence)
    try:
        await session.commit()
    except (DBAPIError, OSError) as exc:
        lost = isinstance(exc, OSError | OperationalError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        if lost:
            logger.warning("connection lost during COMMIT: the outcome is unknown (503 outcome_unknown)")
            raise OutcomeUnknown() from exc
        raise


async def _settle(session: AsyncSession, cache: ReadCache) -> None:
    fence: str | None = session.info.pop(FENCE, None)
    if fence is not None:
        await cache.feed.settle(fence)


async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session: a writer's (BEGIN IMMEDIATE on SQLite) unless the method is safe."""
    runtime = runtime_of(request)
    safe = request.method in SAFE_METHODS
    factory = runtime.session_factory if safe else runtime.write_session_factory
    async with _transaction(factory, runtime.cache, None if safe else request) as session:
        yield session


async def write_unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """For the few safe-method routes that write (GitHub's callback is a GET)."""
    runtime = runtime_of(request)
    async with _transaction(runtime.write_session_factory, runtime.cache, request) as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
NowDep = Annotated[datetime, Depends(get_now)]
ClientIPDep = Annotated[str, Depends(client_ip)]
# scope="function": the unit of work commits before the response is sent, so a failed
# commit can never follow a success answer.
SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
WriteSessionDep = Annotated[AsyncSession, Depends(write_unit_of_work, scope="function")]
