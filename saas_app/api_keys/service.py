"""API keys: issue, list, revoke, and authenticate them on the hot path.

Authentication costs one indexed query and one HMAC; an unknown prefix does the same
HMAC and comparison against a dummy, so timing does not tell whether a prefix exists.
The only write is `last_used_at`, at most once a minute per key and process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from limits import parse_many
from sqlalchemy import ColumnElement, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from saas_app.api_keys.models import ApiKey
from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.core.changes import tags
from saas_app.core.errors import Forbidden, NotFound, Unauthorized
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.core.readcache import ReadCache, read_through, snapshot_of
from saas_app.core.readers import Fetch, Query, Reader, Row, first
from saas_app.rbac import service as rbac
from saas_app.rbac.models import Role, UserRole
from saas_app.rbac.permissions import ordered
from saas_app.security import api_keys as key_format
from saas_app.security.crypto import SecretBox
from saas_app.security.opaque import same
from saas_app.users.models import User

logger = logging.getLogger("saas_app.api_keys")
TOUCH_INTERVAL = timedelta(minutes=1)
DUMMY_HASH = "0" * 64
MAX_LINEAGE = 64  # a bound on walking up parents, should a cycle ever be written by hand


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    title = "API key not found"


class KeyExceedsParent(Forbidden):
    code = "key_exceeds_parent"
    title = "A key cannot issue a key that outlives or outpaces it"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a new key may do besides its scopes: when it expires and how fast it may go."""

    expires_at: datetime | None
    rate_limit: str | None


def no_looser(child: str, parent: str) -> bool:
    """Whether rate limit `child` admits no more than `parent`, every part of it.

    Each part of the parent (`"100/minute; 3/hour"` has two) must be matched by a part of
    the child that lets through at most as many requests in any window of the parent's
    length. A moving window of `c` per `w` admits at most `c * ceil(W / w)` requests in a
    window of length `W`, so a child part (c, w) covers a parent part (p, W) when that
    product is at most `p`. A child that leaves out the hourly cap is refused, however
    slow its per-minute part (issue 13, item 5).
    """
    children = [(item.amount, item.get_expiry()) for item in parse_many(child)]
    return all(
        any(amount * -(-item.get_expiry() // window) <= item.amount for amount, window in children)
        for item in parse_many(parent)
    )


def clip_to_parent(wanted: Limits, parent: ApiKey) -> Limits:
    """A child inherits what it leaves unset and may ask for less, never more: a key must
    not mint an escape from its own expiry or rate limit (issue 13, item 5)."""
    expires_at = wanted.expires_at or parent.expires_at
    if parent.expires_at is not None and expires_at is not None and expires_at > parent.expires_at:
        raise KeyExceedsParent(
            f"The issuing key expires at {parent.expires_at.isoformat()}; ask for no later."
        )
    rate_limit = wanted.rate_limit or parent.rate_limit
    if (
        parent.rate_limit is not None
        and rate_limit is not None
        and not no_looser(rate_limit, parent.rate_limit)
    ):
        raise KeyExceedsParent(f"The issuing key is limited to {parent.rate_limit}; ask for no more.")
    return Limits(expires_at=expires_at, rate_limit=rate_limit)


async def create_key(
    *,
    session: AsyncSession,
    box: SecretBox,
    tenant_id: uuid.UUID,
    name: str,
    scopes: list[str],
    grantor: frozenset[str] | None,
    created_by: uuid.UUID | None,
    expires_in_days: int | None,
    rate_limit: str | None,
    origin: Origin,
    parent_id: uuid.UUID | None = None,
) -> tuple[ApiKey, str]:
    """Issues a key whose scopes the grantor holds (None: the CLI); returns it and the key.

    A key issued by a key (`parent_id`) acts for the parent's creator and is clipped to
    the parent: scopes within its scopes, expiry and rate limit no looser than its own.
    """
    if grantor is not None:
        rbac.ensure_grantable(scopes, grantor)
    limits = Limits(
        expires_at=origin.now + timedelta(days=expires_in_days) if expires_in_days else None,
        rate_limit=rate_limit,
    )
    if parent_id is not None:
        parent = await _lock_live_lineage(session, tenant_id, parent_id, origin.now)
        rbac.ensure_grantable(scopes, frozenset(parent.scopes))
        limits = clip_to_parent(limits, parent)
        created_by = parent.created_by
    for _ in range(3):  # a 64-bit prefix collision is astronomically rare, but not impossible
        full_key, parts = key_format.new_key()
        key = ApiKey(
            tenant_id=tenant_id,
            name=name,
            prefix=parts.prefix,
            secret_hash=box.keyed_digest(parts.secret),
            scopes=ordered(set(scopes)),
            created_by=created_by,
            parent_id=parent_id,
            rate_limit=limits.rate_limit,
            created_at=origin.now,
            expires_at=limits.expires_at,
        )
        try:
            async with session.begin_nested():
                session.add(key)
                await session.flush()
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover
        raise RuntimeError("could not allocate an API key prefix")
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="api_key.created",
        origin=origin,
        target=Ref("api_key", key.id),
        details={
            "name": name,
            "prefix": f"sk_{key.prefix}",
            "scopes": key.scopes,
            "parent_id": str(parent_id) if parent_id else None,
        },
    )
    return key, full_key


async def _lock_live_lineage(
    session: AsyncSession, tenant_id: uuid.UUID, parent_id: uuid.UUID, now: datetime
) -> ApiKey:
    """The issuing key, re-read live inside the minting transaction, with its ancestors.

    The caller authenticated with the parent before this transaction began; a revocation
    may have committed since. Each key of the lineage is locked root first (`FOR UPDATE`
    on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), the order in which
    `revoke_key` takes them, so either the revocation committed first and this answers 401,
    or it waits for this mint and its sweep finds the new child (issue 13, item 5).
    """
    lineage = [parent_id, *(k.id for k in await session.run_sync(_ancestors, tenant_id, parent_id))]
    parent: ApiKey | None = None
    for key_id in reversed(lineage):
        parent = await session.scalar(
            select(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, *_live_at(now))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if parent is None:
            raise Unauthorized()
    assert parent is not None  # the lineage holds at least the parent
    return parent


def _live_at(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


def _ancestors(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> list[ApiKey]:
    """The keys above `key_id`, nearest first (one query per generation; lineages are short
    and never change once minted). Synchronous: also run inside the read cache's loads."""
    found: list[ApiKey] = []
    parent_id = session.scalar(select(ApiKey.parent_id).where(ApiKey.id == key_id))
    while parent_id is not None and len(found) < MAX_LINEAGE:
        parent = session.scalar(select(ApiKey).where(ApiKey.id == parent_id, ApiKey.tenant_id == tenant_id))
        if parent is None:
            break
        found.append(parent)
        parent_id = parent.parent_id
    return found


async def list_keys(
    *, session: AsyncSession, tenant_id: uuid.UUID, page: PageParams
) -> tuple[list[ApiKey], str | None]:
    """Returns a page of the tenant's keys that are not revoked."""
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
    return split_page(
        list((await session.scalars(keyset_page(stmt, page, ApiKey.created_at, ApiKey.id))).all()), page
    )


async def revoke_key(
    *, session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID, origin: Origin
) -> None:
    """Revokes a key and every key issued under it, in this transaction: the very next
    request with any of them is 401 (the commit moves the read cache's version)."""
    # Lock the key before reading its descendants: a mint under it holds the same row lock
    # until it commits, so the sweep below (a later statement, a fresh READ COMMITTED
    # snapshot) sees every child committed before this revocation took effect.
    key = await session.scalar(
        select(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        .with_for_update()
    )
    if key is None:
        raise ApiKeyNotFound()
    for revoked in [key, *await _descendants(session, tenant_id, key.id)]:
        if revoked.revoked_at is not None:
            continue
        revoked.revoked_at = origin.now
        details = {"name": revoked.name, "prefix": f"sk_{revoked.prefix}"}
        if revoked is not key:
            details["with"] = str(key.id)  # revoked because an ancestor was
        await audit.record(
            session=session,
            tenant_id=tenant_id,
            action="api_key.revoked",
            origin=origin,
            target=Ref("api_key", revoked.id),
            details=details,
        )


async def _descendants(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> list[ApiKey]:
    """Every key issued under `key_id`, children first, one query per generation."""
    found: list[ApiKey] = []
    frontier = [key_id]
    while frontier:
        stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.parent_id.in_(frontier))
        generation = list((await session.scalars(stmt)).all())
        found.extend(generation)
        frontier = [k.id for k in generation]
    return found


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What authenticating a key needs, read in one query (and cached while unchanged)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    prefix: str
    secret_hash: str
    rate_limit: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    # (key id, rate limit) of this key and each rate-limited ancestor: a request counts in
    # every one of these buckets, so a family of keys shares its ancestors' budget.
    buckets: tuple[tuple[str, str], ...]
    # Scopes clipped to the creator's current permissions; None when the creator is gone.
    permissions: frozenset[str] | None
    # The rows it was read from, as change-feed tags: the key and its ancestors, the
    # creator and the creator's roles (saas_app/core/changes.py).
    depends_on: tuple[str, ...] = ()

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


# What a record needs of a key's row (the key itself and each ancestor).
KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.tenant_id,
    ApiKey.prefix,
    ApiKey.secret_hash,
    ApiKey.scopes,
    ApiKey.created_by,
    ApiKey.parent_id,
    ApiKey.rate_limit,
    ApiKey.expires_at,
    ApiKey.revoked_at,
    ApiKey.last_used_at,
)
# The key, its creator's activity and the creator's roles, in one statement built once.
KEY_QUERY = Query(
    select(*KEY_COLUMNS, User.is_active, Role.id.label("role_id"), Role.permissions)
    .outerjoin(User, (User.id == ApiKey.created_by) & (User.tenant_id == ApiKey.tenant_id))
    .outerjoin(UserRole, UserRole.user_id == User.id)
    .outerjoin(Role, Role.id == UserRole.role_id)
    .where(ApiKey.prefix == bindparam("prefix"))
)
PARENT_QUERY = Query(
    select(*KEY_COLUMNS).where(ApiKey.id == bindparam("id"), ApiKey.tenant_id == bindparam("tid"))
)


async def load_record(fetch: Fetch, prefix: str) -> KeyRecord | None:
    """The key, its creator's activity and roles, and its lineage (a read-cache load)."""
    rows = await fetch.all(KEY_QUERY, {"prefix": prefix})
    if not rows:
        return None
    key = rows[0]
    scopes = frozenset(key.scopes)
    if key.created_by is None:
        permissions: frozenset[str] | None = scopes  # made by the CLI: exactly its scopes
    elif not key.is_active:
        permissions = None  # the creator is deactivated or gone
    else:
        permissions = scopes & frozenset(p for row in rows if row.permissions for p in row.permissions)
    lineage = [key, *await _ancestor_rows(fetch, key)]
    # A key lives no longer than any key above it: revoke_key marks the descendants too,
    # but a parent revoked or expired by other means (an operator's UPDATE) still ends them.
    revoked = [k.revoked_at for k in lineage if k.revoked_at is not None]
    expiries = [k.expires_at for k in lineage if k.expires_at is not None]
    return KeyRecord(
        id=key.id,
        tenant_id=key.tenant_id,
        prefix=key.prefix,
        secret_hash=key.secret_hash,
        rate_limit=key.rate_limit,
        expires_at=min(expiries, default=None),
        revoked_at=min(revoked, default=None),
        last_used_at=key.last_used_at,
        buckets=tuple((str(k.id), k.rate_limit) for k in lineage if k.rate_limit),
        permissions=permissions,
        depends_on=(
            *tags("api_key", (k.id for k in lineage)),
            *tags("user", (key.created_by,)),
            *tags("role", {row.role_id for row in rows}),
        ),
    )


async def _ancestor_rows(fetch: Fetch, key: Row) -> list[Row]:
    """`_ancestors` for a load: the rows of the keys above `key`, nearest first."""
    found: list[Row] = []
    parent_id = key.parent_id
    while parent_id is not None and len(found) < MAX_LINEAGE:
        parent = await first(fetch, PARENT_QUERY, {"id": parent_id, "tid": key.tenant_id})
        if parent is None:
            break
        found.append(parent)
        parent_id = parent.parent_id
    return found


async def authenticate(
    *,
    reader: Reader,
    box: SecretBox,
    cache: ReadCache,
    tenant_id: uuid.UUID,
    presented: str,
    now: datetime,
    memo: MutableMapping[str, Any] | None = None,
) -> tuple[KeyRecord | None, KeyRecord | None]:
    """Returns (the authenticated key, None), or (None, the key if it was a dead one)."""
    # A string that matched its key's hash is remembered until a row the record was read
    # from changes, like a verified access token: a repeat call skips the parse and the
    # HMAC. Only the exact string hits, so the fast path tells a caller nothing it did not
    # already hold.
    memo = {} if memo is None else memo  # one snapshot serves both lookups below
    snapshot = await snapshot_of(cache, memo)
    known = cache.get(("api_key_presented", presented), snapshot)
    if isinstance(known, KeyRecord):
        return _live(known, tenant_id, now)
    parts = key_format.parse(presented)
    record = None
    if parts is not None:
        prefix = parts.prefix
        record = await read_through(
            cache,
            reader,
            ("api_key", prefix),
            KeyRecord,
            lambda fetch: load_record(fetch, prefix),
            lambda r: r.depends_on,
            memo,
        )
    secret = parts.secret if parts else presented
    expected = record.secret_hash if record else DUMMY_HASH
    # Compare every candidate digest (no short-circuit), so every path does equal work.
    results = [same(digest, expected) for digest in box.keyed_digests(secret)]
    if record is None or not any(results):
        return None, None
    cache.put(("api_key_presented", presented), record, record.depends_on, snapshot)
    return _live(record, tenant_id, now)


def _live(
    record: KeyRecord, tenant_id: uuid.UUID, now: datetime
) -> tuple[KeyRecord | None, KeyRecord | None]:
    if record.tenant_id != tenant_id:
        return None, None
    if not record.is_live(now) or record.permissions is None:
        return None, record
    return record, None


Work = Callable[[AsyncSession], Awaitable[object]]


class UsageRecorder:
    """Writes `last_used_at` at most once a minute per key (per process) and audits uses of
    dead keys at most once a minute per key.

    The writes run as background tasks in their own transactions: the request never
    waits for them, and on SQLite it could not (it may hold the write lock itself).
    """

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._touched: dict[uuid.UUID, float] = {}
        self._rejected: dict[uuid.UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        """Waits for pending writes (at shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def used(self, key: KeyRecord, now: datetime) -> None:
        if not _due(self._touched, key.id) or (
            key.last_used_at is not None and key.last_used_at > now - TOUCH_INTERVAL
        ):
            return
        stmt = (
            update(ApiKey)
            .where(
                ApiKey.id == key.id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_INTERVAL),
            )
            .values(last_used_at=now)
        )
        self._spawn(lambda session: session.execute(stmt))

    def rejected(self, key: KeyRecord, ip: str | None, now: datetime) -> None:
        if not _due(self._rejected, key.id):
            return
        reason = "revoked" if key.revoked_at is not None else "expired_or_creator_gone"
        origin = Origin(actor=Ref("api_key", key.id), ip=ip, now=now)

        async def record(session: AsyncSession) -> None:
            await audit.record(
                session=session,
                tenant_id=key.tenant_id,
                action="api_key.rejected",
                origin=origin,
                target=Ref("api_key", key.id),
                details={"reason": reason, "prefix": f"sk_{key.prefix}", "sampled": "1/minute"},
            )

        self._spawn(record)

    def _spawn(self, work: Work) -> None:
        task = asyncio.get_running_loop().create_task(self._write(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, work: Work) -> None:
        try:
            async with self._factory() as session, session.begin():
                await work(session)
        except Exception as exc:  # bookkeeping must never fail, nor leak into a request
            logger.warning("api key bookkeeping skipped: %s", type(exc).__name__)


def _due(last: dict[uuid.UUID, float], key_id: uuid.UUID) -> bool:
    now = time.monotonic()
    if now - last.get(key_id, float("-inf")) < TOUCH_INTERVAL.total_seconds():
        return False
    last[key_id] = now
    if len(last) > 10_000:  # bound the memory of a long-lived process
        last.clear()
    return True
