"""What a committed change evicts from the read caches: tags `kind:id`.

The database names them itself: a trigger on each table the caches read (migration 0009)
sends a tag for every row a transaction changes, `pg_notify` on PostgreSQL, a row of
`cache_change` on SQLite. A cached value lists the tags it depends on, so a change evicts
exactly the values that read the changed row and nothing else (API-v2 §5).

The app needs to know which writes fire a trigger for one reason only: a writer waits, on
PostgreSQL, until its own node has heard its notifications (a fence), so its next request
sees its change. `FIRES` mirrors the migration's triggers; tests/test_change_feed.py
checks that the two agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import inspect
from sqlalchemy.orm import ORMExecuteState, Session

CHANNEL = "saas_app_cache"  # PostgreSQL's NOTIFY channel
CHANGE_LOG = "cache_change"  # SQLite's log table (not a model: the app never writes it)
FENCE = "fence:"  # a payload that only marks a point in the feed


def tag(kind: str, id_: uuid.UUID) -> str:
    """The canonical tag: `kind:` and the id's 32 hex digits (PostgreSQL sends the dashed
    form, SQLite stores bare hex; `parse` folds both into this)."""
    return f"{kind}:{id_.hex}"


def tags(kind: str, ids: Iterable[uuid.UUID | None]) -> tuple[str, ...]:
    return tuple(tag(kind, i) for i in ids if i is not None)


def parse(payload: str) -> str | None:
    """A trigger's payload as a canonical tag; None if it is not one."""
    kind, _, value = payload.partition(":")
    try:
        return tag(kind, uuid.UUID(value))
    except ValueError:
        return None


# Table -> (operations that fire its trigger, columns an UPDATE must change to fire; empty:
# any). The same as migrations/versions/0009_change_feed.py (and 0014 for `user`).
FIRES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "tenant": (frozenset({"update", "delete"}), frozenset()),
    "user": (
        frozenset({"update", "delete"}),
        frozenset({"email", "full_name", "is_active", "totp_confirmed_at", "tenant_id", "email_verified_at"}),
    ),
    "user_role": (frozenset({"insert", "update", "delete"}), frozenset()),
    "identity": (frozenset({"insert", "update", "delete"}), frozenset()),
    "role": (frozenset({"update", "delete"}), frozenset({"name", "permissions", "tenant_id"})),
    "session": (
        frozenset({"update", "delete"}),
        frozenset({"user_id", "tenant_id", "expires_at", "last_used_at", "revoked_at"}),
    ),
    "api_key": (
        frozenset({"update", "delete"}),
        frozenset(
            {
                "tenant_id",
                "prefix",
                "secret_hash",
                "scopes",
                "created_by",
                "parent_id",
                "rate_limit",
                "expires_at",
                "revoked_at",
            }
        ),
    ),
    "project": (frozenset({"insert", "update", "delete"}), frozenset()),
}


# The names of those triggers on PostgreSQL (with one AFTER TRUNCATE per table): the feed
# checks they are all there and enabled before it vouches for a cache.
TRIGGERS: tuple[str, ...] = tuple(
    f"cache_{table}_{operation}"
    for table, (operations, _) in FIRES.items()
    for operation in (*sorted(operations), "truncate")
)


def _fires(table: str, operation: str) -> bool:
    rule = FIRES.get(table)
    return rule is not None and operation in rule[0]


def flush_fires(session: Session) -> bool:
    """Whether the pending flush changes a row some trigger reports (see FIRES)."""
    for obj in session.new:
        if _fires(inspect(obj).mapper.persist_selectable.name, "insert"):
            return True
    for obj in session.deleted:
        if _fires(inspect(obj).mapper.persist_selectable.name, "delete"):
            return True
    for obj in session.dirty:
        state = inspect(obj)
        table = state.mapper.persist_selectable.name
        if not _fires(table, "update"):
            continue
        columns = FIRES[table][1]
        changed = (a.key for a in state.attrs if a.history.has_changes())
        if not columns or any(key in columns for key in changed):
            return True
    return False


def statement_fires(state: ORMExecuteState) -> bool:
    """Whether a bulk INSERT/UPDATE/DELETE targets a table some trigger watches. Its rows
    are unknown here, so any such statement counts; an UPDATE only if it may set a
    watched column (an API key's `last_used_at` touch does not)."""
    operation = "insert" if state.is_insert else "update" if state.is_update else "delete"
    target = getattr(state.statement, "table", None)
    table = str(getattr(target, "name", ""))
    if target is None or not _fires(table, operation):
        return False
    watched = FIRES[table][1]
    if operation != "update" or not watched:
        return True
    columns = _set_columns(state)
    known = {str(c.name) for c in getattr(target, "columns", ())}
    # Anything it cannot name as a column of the table counts as watched: better a fence
    # too many than a writer whose next request misses its change.
    return columns is None or not columns <= known or not columns.isdisjoint(watched)


def _set_columns(state: ORMExecuteState) -> set[str] | None:
    """The columns an UPDATE sets, when the statement says; None when it cannot be told."""
    values = getattr(state.statement, "_values", None)  # update(...).values(...)
    if values:
        return {str(getattr(column, "name", column)) for column in values}
    parameters = state.parameters  # update(Model) with a list of rows by primary key
    if isinstance(parameters, dict) and parameters:
        return {str(key) for key in parameters}
    if isinstance(parameters, list) and parameters:
        return {str(key) for row in parameters for key in row}
    return None
