"""Precise invalidation (API-v2 §5): a change evicts what it changes and nothing else, on
every node, through the change feed (migration 0009, saas_app/core/feeds.py).

Counted, not timed: "evicts nothing" is a count of database loads. The cross-process tests
run two real servers on one database and measure how long a change made through one takes
to show on the other (bound: 1 s)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.core import readcache
from saas_app.core.changes import FIRES, TRIGGERS, parse, tag
from saas_app.core.feeds import VOUCH_SECONDS, PostgresNotifications
from saas_app.core.readcache import Body, NoFeed, ReadCache
from saas_app.core.readers import READER_APPLICATION_NAME
from tests.conftest import ON_POSTGRES, ROOT
from tests.factories import DEFAULT_PASSWORD, add_member, create_api_key, create_tenant, login, token
from tests.servers import running_server

MIGRATION = ROOT / "migrations" / "versions" / "0009_change_feed.py"
# Migration 0014 replaced the user row's trigger (it fires on email_verified_at too).
USER_TRIGGER_MIGRATION = ROOT / "migrations" / "versions" / "0014_account_lifecycle.py"


def _cache(client: AsyncClient) -> ReadCache:
    cache: ReadCache = client.app.state.runtime.cache  # type: ignore[attr-defined]
    return cache


async def _quiet(client: AsyncClient) -> None:
    """Lets background writes finish and the feed deliver what they fired."""
    await client.app.state.runtime.key_usage.drain()  # type: ignore[attr-defined]
    await asyncio.sleep(0.3 if ON_POSTGRES else 0)


# --- the cache's own rules ---------------------------------------------------------------


async def test_an_eviction_drops_exactly_the_entries_that_name_the_tag() -> None:
    cache = ReadCache(_AlwaysUp())
    a, b = uuid.uuid4(), uuid.uuid4()
    snapshot = await cache.snapshot()
    cache.put("a", "A", (tag("user", a), tag("role", b)), snapshot)
    cache.put("b", "B", (tag("user", b),), snapshot)
    cache.evict((tag("role", b),))
    snapshot = await cache.snapshot()
    assert cache.get("a", snapshot) is None
    assert cache.get("b", snapshot) == "B"


async def test_a_value_read_before_an_eviction_of_its_tag_is_not_kept() -> None:
    """The race the snapshot exists for: a load that read the old row, finishing after the
    change was evicted, must not put the old row back."""
    cache = ReadCache(_AlwaysUp())
    user = uuid.uuid4()
    snapshot = await cache.snapshot()  # the load starts
    cache.evict((tag("user", user),))  # a change commits and is heard meanwhile
    cache.put("me", "stale", (tag("user", user),), snapshot)
    assert cache.get("me", await cache.snapshot()) is None
    cache.put("other", "fresh", (tag("user", uuid.uuid4()),), snapshot)  # another tag: kept
    assert cache.get("other", await cache.snapshot()) == "fresh"


async def test_without_a_feed_nothing_is_cached() -> None:
    cache = ReadCache(NoFeed())
    snapshot = await cache.snapshot()
    cache.put("k", "v", (), snapshot)
    assert snapshot is None
    assert len(cache) == 0


def test_payloads_are_folded_to_one_form_and_anything_else_is_not_a_tag() -> None:
    user = uuid.uuid4()
    assert parse(f"user:{user}") == parse(f"user:{user.hex}") == tag("user", user)
    assert parse("*") is None
    assert parse("user:not-a-uuid") is None


def _module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_apps_idea_of_what_fires_matches_the_migrations_triggers() -> None:
    triggers = {
        table: (frozenset(e.lower() for e in events), frozenset(columns))
        for table, _kind, _column, events, columns in _module(MIGRATION).WATCHED
    }
    user_events, _ = triggers["user"]
    triggers["user"] = (user_events, frozenset(_module(USER_TRIGGER_MIGRATION).USER_COLUMNS))
    assert triggers == FIRES


class _AlwaysUp(NoFeed):
    async def sync(self) -> bool:
        return True


# --- precise eviction through the app ----------------------------------------------------


async def test_writes_that_touch_no_authorization_evict_nothing_of_another_user(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    other_tenant = await create_tenant(client)
    alice = await add_member(client, tenant)
    bob = await add_member(client, tenant)
    key = await create_api_key(client, tenant, "projects:write")
    cache = _cache(client)
    for _ in range(2):  # warm: bob's tenant, session grant and /users/me answer
        assert (await client.get(tenant.path("/users/me"), headers=bob.headers)).status_code == 200
    await _quiet(client)
    loads = cache.loads
    assert (await client.get(tenant.path("/users/me"), headers=bob.headers)).status_code == 200
    assert cache.loads == loads, "a warm read loaded something"

    # Projects in both tenants, by a user and by a key (the key's first use also touches
    # its last_used_at), a login and a failed login of alice (audit rows), a refresh of
    # alice's session, and another tenant's owner changing their profile.
    for headers, where in (
        (alice.headers, tenant),
        (key.headers, tenant),
        (other_tenant.owner.headers, other_tenant),
    ):
        created = await client.post(where.path("/projects"), json={"name": "p"}, headers=headers)
        assert created.status_code == 201, created.text
    again = await login(client, tenant.slug, alice.email)
    refused = await token(
        client, tenant.slug, grant_type="password", username=alice.email, password="wrong-pass"
    )
    assert refused.status_code == 400
    refreshed = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=again.refresh_token
    )
    assert refreshed.status_code == 200
    renamed = await client.patch(
        other_tenant.path("/users/me"), json={"full_name": "X"}, headers=other_tenant.owner.headers
    )
    assert renamed.status_code == 200
    await _quiet(client)

    loads = cache.loads
    assert (await client.get(tenant.path("/users/me"), headers=bob.headers)).status_code == 200
    assert cache.loads == loads, "an unrelated write evicted bob's principal, tenant or answer"


async def test_a_role_change_evicts_its_holders_and_only_them(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    created = await client.post(
        tenant.path("/roles"),
        json={"name": "ops", "permissions": ["projects:read"]},
        headers=tenant.owner.headers,
    )
    assert created.status_code == 201
    holder = await add_member(client, tenant, "ops")
    bystander = await add_member(client, tenant)
    for member in (holder, bystander):
        assert (await client.get(tenant.path("/users/me"), headers=member.headers)).status_code == 200
    assert (await client.get(tenant.path("/projects"), headers=holder.headers)).status_code == 200
    cache = _cache(client)

    emptied = await client.patch(
        tenant.path("/roles/ops"), json={"permissions": []}, headers=tenant.owner.headers
    )
    assert emptied.status_code == 200
    loads = cache.loads
    assert (await client.get(tenant.path("/users/me"), headers=bystander.headers)).status_code == 200
    assert cache.loads == loads  # the bystander does not hold the role: nothing reloaded
    refused = await client.get(tenant.path("/projects"), headers=holder.headers)
    assert refused.status_code == 403  # the writer's own node sees it on the next request
    assert cache.loads > loads


# --- the feed's failures -----------------------------------------------------------------


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's feed is a connection that can be lost")
async def test_a_lost_feed_connection_empties_the_cache_reads_through_and_recovers(
    client: AsyncClient, database_url: str
) -> None:
    tenant = await create_tenant(client)
    cache = _cache(client)
    feed = cache.feed
    assert isinstance(feed, PostgresNotifications)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert len(cache) > 0

    await _terminate_feed_connections(database_url)
    await _until(lambda: not feed.is_up, 3)
    assert len(cache) == 0
    loads = cache.loads
    for _ in range(3):  # served, from the database every time
        assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert cache.loads >= loads + 3 * 2  # the tenant and the grant at least, each time
    assert len(cache) == 0

    await _until(lambda: feed.is_up, 5)
    for _ in range(2):
        assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    loads = cache.loads
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert cache.loads == loads  # cached again


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's feed is the change log table")
async def test_a_gap_in_the_change_log_empties_the_cache(client: AsyncClient, database_url: str) -> None:
    """A worker that fell behind the log's pruning cannot know what it missed: it drops all."""
    tenant = await create_tenant(client)
    cache = _cache(client)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert len(cache) > 0
    path = make_url(database_url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        (last,) = connection.execute("SELECT coalesce(max(id), 0) FROM cache_change").fetchone()
        connection.execute("DELETE FROM cache_change")
        # A tag nothing cached depends on, but after a gap: the rows between were pruned.
        connection.execute(
            "INSERT INTO cache_change (id, tag) VALUES (?, ?)", (last + 5, tag("user", uuid.uuid4()))
        )
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    assert len(cache) <= 3  # emptied, then refilled by this one request (tenant, grant, answer)


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks and NOTIFY ordering are PostgreSQL's")
async def test_an_open_writing_transaction_does_not_hold_up_an_unrelated_write(
    client: AsyncClient, database_url: str
) -> None:
    """No row or lock every writer takes: with a transaction in tenant A left open after
    changing a role and adding a project (both fire the feed), a login, a logout and a
    project in tenant B commit meanwhile."""
    first = await create_tenant(client)
    second = await create_tenant(client)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as held:
            await held.execute(
                text("UPDATE role SET permissions = permissions WHERE tenant_id = :t"),
                {"t": uuid.UUID(first.id)},
            )
            await held.execute(
                text("INSERT INTO project (id, tenant_id, name, created_at) VALUES (:id, :t, 'held', now())"),
                {"id": uuid.uuid4(), "t": uuid.UUID(first.id)},
            )

            async def unrelated() -> None:
                fresh = await login(client, second.slug, second.owner.email)
                made = await client.post(second.path("/projects"), json={"name": "b"}, headers=fresh.headers)
                assert made.status_code == 201
                assert (
                    await client.post(second.path("/auth/logout"), headers=fresh.headers)
                ).status_code == 204

            await asyncio.wait_for(unrelated(), 10)
            await held.rollback()
    finally:
        await engine.dispose()


async def _terminate_feed_connections(database_url: str) -> None:
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'saas_app change feed' AND datname = current_database()"
                )
            )
    finally:
        await engine.dispose()


async def _until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- two real processes on one database --------------------------------------------------


@pytest.fixture
def two_nodes(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    # One PUBLIC_URL for both: it is the tokens' issuer, and both nodes serve one issuer.
    env = {
        "DATABASE_URL": database_url,
        "RATE_LIMITS_ENABLED": "false",
        "LOG_FORMAT": "text",
        "PUBLIC_URL": "http://127.0.0.1:8000",
    }
    with ExitStack() as stack:
        first, _ = stack.enter_context(running_server(env, tmp_path / "a.log"))
        second, _ = stack.enter_context(running_server(env, tmp_path / "b.log"))
        yield first, second


Check = Callable[[AsyncClient], Awaitable[bool]]


async def _refused(answer: Awaitable[int]) -> bool:
    """401 once the change shows; 200 before it (anything else fails the test)."""
    status = await answer
    assert status in (200, 401)
    return status == 401


async def _propagation(
    writer: AsyncClient, reader: AsyncClient, change: Callable[[], Awaitable[None]], changed: Check
) -> float:
    """Seconds until a change made through `writer` shows on `reader`, which had it cached.
    The writer's own node must show it on the very next request."""
    for node in (writer, reader, reader, writer):  # the second time, from each node's cache
        assert not await changed(node), "the check holds before the change: it tests nothing"
    await change()
    started = time.monotonic()
    assert await changed(writer), "the writer's own node did not see its change at once"
    while not await changed(reader):
        assert time.monotonic() - started < 1.0, "the change took longer than 1 s to reach the other node"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def test_every_kind_of_authorization_change_reaches_the_other_process_within_a_second(
    two_nodes: tuple[str, str],
) -> None:
    async with httpx.AsyncClient(base_url=two_nodes[0]) as a, httpx.AsyncClient(base_url=two_nodes[1]) as b:
        tenant = await create_tenant(a)
        owner = tenant.owner.headers
        delays: dict[str, float] = {}

        async def status(
            client: AsyncClient, method: str, path: str, headers: dict[str, str], **kw: Any
        ) -> int:
            return (await client.request(method, tenant.path(path), headers=headers, **kw)).status_code

        demoted = await add_member(a, tenant)

        async def demote() -> None:
            assert (
                await status(a, "PUT", f"/users/{demoted.id}/roles", owner, json={"roles": ["viewer"]}) == 200
            )

        async def may_not_write(c: AsyncClient) -> bool:  # 403 before the (empty) body's 422
            answer = await status(c, "POST", "/projects", demoted.headers, json={})
            assert answer in (403, 422)
            return answer == 403

        delays["role membership"] = await _propagation(a, b, demote, may_not_write)

        assert (
            await status(a, "POST", "/roles", owner, json={"name": "ops", "permissions": ["projects:read"]})
            == 201
        )
        holder = await add_member(a, tenant, "ops")

        async def empty_role() -> None:
            assert await status(a, "PATCH", "/roles/ops", owner, json={"permissions": []}) == 200

        async def may_not_read(c: AsyncClient) -> bool:
            answer = await status(c, "GET", "/projects", holder.headers)
            assert answer in (200, 403)
            return answer == 403

        delays["role permissions"] = await _propagation(a, b, empty_role, may_not_read)

        leaving = await add_member(a, tenant)

        async def log_out() -> None:
            assert await status(a, "POST", "/auth/logout", leaving.headers) == 204

        async def signed_out(c: AsyncClient) -> bool:
            return await _refused(status(c, "GET", "/users/me", leaving.headers))

        delays["logout"] = await _propagation(a, b, log_out, signed_out)

        locked = await add_member(a, tenant)

        async def deactivate() -> None:
            assert await status(a, "PATCH", f"/users/{locked.id}", owner, json={"is_active": False}) == 200

        async def locked_out(c: AsyncClient) -> bool:
            return await _refused(status(c, "GET", "/users/me", locked.headers))

        delays["deactivation"] = await _propagation(a, b, deactivate, locked_out)

        mover = await add_member(a, tenant)
        elsewhere = await login(a, tenant.slug, mover.email)  # a second session of the same user

        async def change_password() -> None:
            body = {"current_password": DEFAULT_PASSWORD, "new_password": "another-long-passphrase-9"}
            assert await status(a, "POST", "/users/me/password", mover.headers, json=body) == 204

        async def other_session_ended(c: AsyncClient) -> bool:
            return await _refused(status(c, "GET", "/users/me", elsewhere.headers))

        delays["password change"] = await _propagation(a, b, change_password, other_session_ended)

        key = await create_api_key(a, tenant, "projects:read")

        async def revoke() -> None:
            assert await status(a, "DELETE", f"/api-keys/{key.id}", owner) == 204

        async def key_refused(c: AsyncClient) -> bool:
            return await _refused(status(c, "GET", "/projects", key.headers))

        delays["key revocation"] = await _propagation(a, b, revoke, key_refused)

        async def close_signup() -> None:
            assert await status(a, "PATCH", "", owner, json={"allow_signup": False}) == 200

        async def signup_refused(c: AsyncClient) -> bool:
            body = {"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "password": DEFAULT_PASSWORD}
            answer = await status(c, "POST", "/auth/register", {}, json=body)
            assert answer in (201, 403)
            return answer == 403

        delays["tenant policy"] = await _propagation(a, b, close_signup, signup_refused)

    print("propagation to the other process (s):", {k: round(v, 4) for k, v in delays.items()})
    assert max(delays.values()) < 1.0


@pytest.mark.skipif(not ON_POSTGRES, reason="the fence is PostgreSQL's (SQLite reads its log per request)")
async def test_only_writes_that_fire_a_trigger_send_a_fence(client: AsyncClient) -> None:
    """The writer waits for its own notices only when it sent some: a login (a new session,
    an audit row) or a project in no cached list costs no fence; a role change does."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    feed = runtime.cache.feed
    assert isinstance(feed, PostgresNotifications)
    settled: list[str] = []
    settle = feed.settle

    async def counted(fence: str) -> None:
        settled.append(fence)
        await settle(fence)

    feed.settle = counted  # type: ignore[method-assign]
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    settled.clear()
    await login(client, tenant.slug, member.email)
    assert settled == []
    demoted = await client.put(
        tenant.path(f"/users/{member.id}/roles"), json={"roles": ["viewer"]}, headers=tenant.owner.headers
    )
    assert demoted.status_code == 200
    assert len(settled) == 1


class _HeartbeatThatCancels:
    """A feed connection whose heartbeat answers just as the listener is cancelled: the
    window in which Python 3.11's `asyncio.wait_for` used to swallow the cancellation, so
    that shutdown waited on the listener forever."""

    def __init__(self) -> None:
        self.victim: asyncio.Task[Any] | None = None
        self.terminated = False

    def add_termination_listener(self, _callback: Any) -> None:
        return None

    async def add_listener(self, _channel: str, _callback: Any) -> None:
        return None

    async def fetchrow(self, _query: str, *_args: Any) -> tuple[int, int]:
        if self.victim is not None:
            asyncio.get_running_loop().call_soon(self.victim.cancel)
        return len(TRIGGERS), len(TRIGGERS)  # every trigger there, enabled, ALWAYS

    def terminate(self) -> None:
        self.terminated = True


def _feed_over(connection: _HeartbeatThatCancels, monkeypatch: pytest.MonkeyPatch) -> PostgresNotifications:
    """A PostgreSQL feed whose every connection is `connection` (a fake of asyncpg's)."""
    asyncpg = pytest.importorskip("asyncpg")

    async def connect(*_args: Any, **_kwargs: Any) -> _HeartbeatThatCancels:
        return connection

    monkeypatch.setattr(asyncpg, "connect", connect)
    return PostgresNotifications("postgresql://nobody@127.0.0.1:1/none")


async def test_a_cancellation_landing_on_a_heartbeat_stops_the_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = _HeartbeatThatCancels()
    feed = _feed_over(connection, monkeypatch)
    feed.attach(ReadCache(NoFeed()))
    await feed.start()
    assert feed.is_up
    listener = feed._task
    assert listener is not None
    connection.victim = listener  # the next heartbeat cancels the listener as it answers

    done, _ = await asyncio.wait({listener}, timeout=3 * 1.0 + 1)
    assert done == {listener}
    assert listener.cancelled()
    assert connection.terminated
    assert not feed.is_up
    await feed.close()


class _HeartbeatThatStalls(_HeartbeatThatCancels):
    """A connection that stops answering (a partition, a stopped server): no error, no
    notification, nothing."""

    stalled = False

    async def fetchrow(self, _query: str, *_args: Any) -> tuple[int, int]:
        if self.stalled:
            await asyncio.Event().wait()
        return len(TRIGGERS), len(TRIGGERS)


async def test_a_stalled_feed_stops_vouching_for_the_cache_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """API-v2 §5: a node never serves what it cannot vouch for, and another node's change
    reaches it within 1 s: a connection that goes silent takes the cache out of service
    within VOUCH_SECONDS, long before it is found dead and redone."""
    connection = _HeartbeatThatStalls()
    feed = _feed_over(connection, monkeypatch)
    cache = ReadCache(feed)
    await feed.start()
    try:
        assert await cache.snapshot() is not None
        connection.stalled = True
        stalled_at = time.monotonic()
        while await cache.snapshot() is not None:
            assert time.monotonic() - stalled_at < 1.0, "a silent feed was still trusted after 1 s"
            await asyncio.sleep(0.01)
        assert time.monotonic() - stalled_at <= VOUCH_SECONDS + 0.1
    finally:
        await feed.close()


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's triggers and their replication roles")
async def test_a_disabled_trigger_takes_the_cache_out_of_service_until_it_is_back(
    client: AsyncClient,
    database_url: str,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Any],
) -> None:
    """A trigger switched off (a bulk load with triggers disabled, a half-applied migration)
    would leave the feed silent about its table: the node reads through instead, says so,
    and a node starting meanwhile does not wait on a feed that refuses. Re-enabled the
    usual way (origin mode only), the feed is back, with a warning about replica mode."""
    tenant = await create_tenant(client)
    cache = _cache(client)
    feed = cache.feed
    assert isinstance(feed, PostgresNotifications)
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")

    async def alter(statement: str) -> None:
        async with engine.connect() as connection:
            await connection.execute(text(f'ALTER TABLE "session" {statement} cache_session_update'))

    # On the feed's own logger: starting another app reconfigures logging (and caplog's).
    said: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("saas_app.readcache").addHandler(listener)
    try:
        await alter("DISABLE TRIGGER")
        try:
            await _until(lambda: not feed.is_up, 2)
            assert len(cache) == 0
            loads = cache.loads
            assert (
                await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
            ).status_code == 200
            assert cache.loads > loads  # read through
            assert len(cache) == 0
            assert any("change feed refused" in line for line in said)
            started = time.monotonic()
            async with make_client(make_settings()) as late:
                assert time.monotonic() - started < 2.0  # not the 3 s connect timeout
                assert not _cache(late).feed.is_up  # type: ignore[attr-defined]
            await alter("ENABLE TRIGGER")  # what most operators type: origin mode only
            await _until(lambda: feed.is_up, 8)  # the back-off grows to 5 s while it waits
            assert any("fire only in origin mode" in line for line in said)
        finally:
            await alter("ENABLE ALWAYS TRIGGER")
    finally:
        logging.getLogger("saas_app.readcache").removeHandler(listener)
        await engine.dispose()


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL: replica mode skips ordinary triggers")
async def test_a_write_in_replica_mode_still_evicts(client: AsyncClient, database_url: str) -> None:
    """A logical-replication subscriber applies rows with session_replication_role =
    replica, which silences ordinary triggers; the cache's fire ALWAYS."""
    tenant = await create_tenant(client)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text('UPDATE "session" SET revoked_at = now() WHERE user_id = :user'),
                {"user": uuid.UUID(tenant.owner.id)},
            )
    finally:
        await engine.dispose()
    refused = False
    deadline = time.monotonic() + 1.0
    while not refused and time.monotonic() < deadline:
        refused = (
            await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
        ).status_code == 401
        await asyncio.sleep(0.01)
    assert refused


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's feed is the change log table")
async def test_a_change_log_that_went_back_in_time_empties_the_cache(
    client: AsyncClient, database_url: str
) -> None:
    """A backup restored under a running worker, or the log recreated by a migration: the
    ids start again below the worker's last one. The worker notices (its last row is no
    longer there) instead of waiting for the ids to pass it, and a logout counts at once."""
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    for headers in (tenant.owner.headers, member.headers):
        assert (await client.get(tenant.path("/users/me"), headers=headers)).status_code == 200
    path = make_url(database_url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        (last,) = connection.execute("SELECT max(id) FROM cache_change").fetchone()
        assert last is not None
        connection.execute("DELETE FROM cache_change")
        connection.execute("DELETE FROM sqlite_sequence WHERE name = 'cache_change'")
    assert (await client.post(tenant.path("/auth/logout"), headers=member.headers)).status_code == 204
    with sqlite3.connect(path) as connection:
        (first_id,) = connection.execute("SELECT min(id) FROM cache_change").fetchone()
    assert first_id == 1  # the logout's row, far below the worker's last
    assert first_id < last
    assert (await client.get(tenant.path("/users/me"), headers=member.headers)).status_code == 401
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200


async def test_the_cache_is_bounded_by_size_and_pushes_out_its_oldest_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readcache, "MAX_BYTES", 10_000)
    cache = ReadCache(_AlwaysUp())
    snapshot = await cache.snapshot()
    for i in range(25):
        cache.put(("page", i), Body(b"x" * 1_000, (tag("projects", uuid.uuid4()),)), (), snapshot)
    assert cache.size <= 10_000
    assert len(cache) == 10
    assert cache.get(("page", 24), snapshot) is not None  # the newest stay
    assert cache.get(("page", 0), snapshot) is None  # the oldest went, not everything


async def test_only_the_first_page_of_a_list_is_cached(client: AsyncClient) -> None:
    """Any position a caller encodes is a valid cursor: caching per cursor would let one
    caller fill the cache (and the process) with pages of its choosing."""
    tenant = await create_tenant(client)
    for name in ("a", "b", "c"):
        created = await client.post(
            tenant.path("/projects"), json={"name": name}, headers=tenant.owner.headers
        )
        assert created.status_code == 201
    cache = _cache(client)
    first = await client.get(tenant.path("/projects"), params={"limit": 1}, headers=tenant.owner.headers)
    cursor = first.json()["next_cursor"]
    assert cursor
    entries = len(cache)
    for _ in range(3):
        page = await client.get(
            tenant.path("/projects"), params={"limit": 1, "cursor": cursor}, headers=tenant.owner.headers
        )
        assert page.status_code == 200
        assert [p["name"] for p in page.json()["items"]] != [p["name"] for p in first.json()["items"]]
    assert len(cache) == entries
    loads = cache.loads
    again = await client.get(tenant.path("/projects"), params={"limit": 1}, headers=tenant.owner.headers)
    assert again.json() == first.json()
    assert cache.loads == loads  # the first page came from the cache


@pytest.mark.skipif(not ON_POSTGRES, reason="the fence is PostgreSQL's")
async def test_an_api_keys_last_used_touch_sends_no_fence(client: AsyncClient) -> None:
    """The touch changes no cached row (its column fires no trigger), so it must not take
    PostgreSQL's notify lock at commit for a fence nobody waits for."""
    tenant = await create_tenant(client)
    key = await create_api_key(client, tenant, "projects:read")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    feed = runtime.cache.feed
    assert isinstance(feed, PostgresNotifications)
    fences: list[str] = []
    new_fence = feed.new_fence

    def counted() -> str:
        fences.append(new_fence())
        return fences[-1]

    feed.new_fence = counted  # type: ignore[method-assign]
    assert (await client.get(tenant.path("/projects"), headers=key.headers)).status_code == 200
    await runtime.key_usage.drain()
    async with runtime.engine.connect() as connection:
        used = await connection.scalar(
            text("SELECT last_used_at FROM api_key WHERE id = :id"), {"id": uuid.UUID(key.id)}
        )
    assert used is not None  # the touch happened
    assert fences == []


@pytest.mark.skipif(not ON_POSTGRES, reason="the read cache's own pool is PostgreSQL's")
async def test_a_cache_load_on_a_connection_the_server_closed_runs_again(
    client: AsyncClient, database_url: str
) -> None:
    """The loads' pool skips the ping before each use: a load that meets a connection the
    server has closed (a restart, a failover) runs again on a fresh one, not a 503."""
    tenant = await create_tenant(client)
    cache = _cache(client)
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            killed = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": READER_APPLICATION_NAME},
            )
    finally:
        await engine.dispose()
    assert killed >= 1
    cache.clear()  # the next request loads, on a pooled connection that is now dead
    loads = cache.loads
    me = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert me.status_code == 200, me.text
    assert cache.loads > loads
