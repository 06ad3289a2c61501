"""change feed: triggers name what each committed change evicts from the read caches

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Replaces `cache_epoch` (0006), a counter every writing transaction bumped: one row lock all
writers queued on, and any commit anywhere emptied every cache. Now a trigger on each table
the caches read says exactly what a change touches, as a tag `kind:id`:

    tenant      UPDATE, DELETE                                 tenant:<id>
    user        UPDATE OF what a cached answer shows, DELETE   user:<id>
    user_role   INSERT, UPDATE, DELETE                         user:<user_id>
    identity    INSERT, UPDATE, DELETE                         user:<user_id>
    role        UPDATE OF name, permissions; DELETE            role:<id>
    session     UPDATE OF what a grant holds, DELETE           session:<id>
    api_key     UPDATE OF all but last_used_at, DELETE         api_key:<id>
    project     INSERT, UPDATE, DELETE                         projects:<tenant_id>

Inserts of users, roles, sessions and keys evict nothing: no cached answer depends on a
row that did not exist. A login, an audit event, a `last_used_at` touch or a TOTP step
fires nothing at all.

PostgreSQL: the trigger calls `pg_notify('saas_app_cache', tag)`, which is transactional:
delivered to every listening node only when the transaction commits, in commit order, and
never if it rolls back. A TRUNCATE of any of these tables says `*`: drop everything. The
triggers are ENABLE ALWAYS: they fire under `session_replication_role = replica` too (as a
logical-replication subscriber applies changes), and the feed refuses to vouch for its
cache while any of them is missing or disabled.

SQLite: the trigger appends the tag to `cache_change` in the same transaction; each worker
reads the rows past its last one when `PRAGMA data_version` moves. Each row carries a
random `nonce`, so a worker notices a log that went back in time (a backup restored, the
table recreated) by its last row no longer being the one it read.

Triggers, not application code, so that no write path can forget (the CLI, a bulk UPDATE,
a cascade, an operator's psql session). See docs/decisions.md, "The change feed".

The tables and columns are copied here, not imported, so this revision never changes when
the app does (saas_app/core/changes.py holds the app's copy; a test compares the two).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "saas_app_cache"
# (table, tag kind, the column whose value the tag carries, events, columns an UPDATE must
# touch to fire; empty = any)
WATCHED: list[tuple[str, str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("tenant", "tenant", "id", ("UPDATE", "DELETE"), ()),
    (
        "user",
        "user",
        "id",
        ("UPDATE", "DELETE"),
        ("email", "full_name", "is_active", "totp_confirmed_at", "tenant_id"),
    ),
    ("user_role", "user", "user_id", ("INSERT", "UPDATE", "DELETE"), ()),
    ("identity", "user", "user_id", ("INSERT", "UPDATE", "DELETE"), ()),
    ("role", "role", "id", ("UPDATE", "DELETE"), ("name", "permissions", "tenant_id")),
    (
        "session",
        "session",
        "id",
        ("UPDATE", "DELETE"),
        ("user_id", "tenant_id", "expires_at", "last_used_at", "revoked_at"),
    ),
    (
        "api_key",
        "api_key",
        "id",
        ("UPDATE", "DELETE"),
        (
            "tenant_id",
            "prefix",
            "secret_hash",
            "scopes",
            "created_by",
            "parent_id",
            "rate_limit",
            "expires_at",
            "revoked_at",
        ),
    ),
    ("project", "projects", "tenant_id", ("INSERT", "UPDATE", "DELETE"), ()),
]


def _event(event: str, columns: tuple[str, ...]) -> str:
    if event == "UPDATE" and columns:
        return "UPDATE OF " + ", ".join(f'"{c}"' for c in columns)
    return event


def _upgrade_postgresql() -> None:
    # One function for every table: the tag's kind and column come as trigger arguments.
    # An UPDATE that moves the row (a user_role to another user) evicts both owners.
    op.execute(f"""
        CREATE FUNCTION saas_app_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            new_value text;
            old_value text;
        BEGIN
            IF TG_OP <> 'DELETE' THEN
                new_value := to_jsonb(NEW) ->> TG_ARGV[1];
                PERFORM pg_notify('{CHANNEL}', TG_ARGV[0] || ':' || new_value);
            END IF;
            IF TG_OP <> 'INSERT' THEN
                old_value := to_jsonb(OLD) ->> TG_ARGV[1];
                IF old_value IS DISTINCT FROM new_value THEN
                    PERFORM pg_notify('{CHANNEL}', TG_ARGV[0] || ':' || old_value);
                END IF;
            END IF;
            RETURN NULL;
        END
        $$
    """)
    # TRUNCATE fires no row trigger: it says '*', and every node drops its whole cache.
    op.execute(f"""
        CREATE FUNCTION saas_app_cache_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '*');
            RETURN NULL;
        END
        $$
    """)
    for table, kind, column, events, columns in WATCHED:
        for event in events:
            op.execute(
                f'CREATE TRIGGER "cache_{table}_{event.lower()}" AFTER {_event(event, columns)}'
                f' ON "{table}" FOR EACH ROW'
                f" EXECUTE FUNCTION saas_app_cache_notify('{kind}', '{column}')"
            )
        op.execute(
            f'CREATE TRIGGER "cache_{table}_truncate" AFTER TRUNCATE ON "{table}"'
            " FOR EACH STATEMENT EXECUTE FUNCTION saas_app_cache_notify_all()"
        )
        # A trigger that stays silent is a cache that stays stale: fire in replica mode too.
        for event in (*events, "TRUNCATE"):
            op.execute(f'ALTER TABLE "{table}" ENABLE ALWAYS TRIGGER "cache_{table}_{event.lower()}"')


def _upgrade_sqlite() -> None:
    # AUTOINCREMENT: ids only ever grow (a plain rowid reuses the largest after a delete),
    # so a reader tells "nothing new" from "pruned past me" by a gap in the ids.
    op.create_table(
        "cache_change",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tag", sa.String(100), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False, server_default=sa.text("(random())")),
        sqlite_autoincrement=True,
    )
    # The log keeps its last 10,000 changes; a worker that falls further behind sees a gap
    # and drops its whole cache.
    op.execute("""
        CREATE TRIGGER cache_change_prune AFTER INSERT ON cache_change WHEN NEW.id % 1000 = 0
        BEGIN DELETE FROM cache_change WHERE id <= NEW.id - 10000; END
    """)
    # S608: every name below is a constant of this file, none comes from input.
    for table, kind, column, events, columns in WATCHED:
        for event in events:
            new = f"INSERT INTO cache_change (tag) VALUES ('{kind}:' || NEW.\"{column}\");"  # noqa: S608
            old = f"INSERT INTO cache_change (tag) VALUES ('{kind}:' || OLD.\"{column}\");"  # noqa: S608
            moved = (
                f"INSERT INTO cache_change (tag) SELECT '{kind}:' || OLD.\"{column}\""
                f' WHERE OLD."{column}" IS NOT NEW."{column}";'
            )
            inserts = {"INSERT": new, "UPDATE": new + " " + moved, "DELETE": old}[event]
            op.execute(
                f'CREATE TRIGGER "cache_{table}_{event.lower()}" AFTER {_event(event, columns)}'
                f' ON "{table}" FOR EACH ROW BEGIN {inserts} END'
            )


def upgrade() -> None:
    op.drop_table("cache_epoch")
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, _kind, _column, events, _columns in WATCHED:
        on = f' ON "{table}"' if postgresql else ""
        for event in (*events, "TRUNCATE") if postgresql else events:
            op.execute(f'DROP TRIGGER IF EXISTS "cache_{table}_{event.lower()}"{on}')
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS saas_app_cache_notify()")
        op.execute("DROP FUNCTION IF EXISTS saas_app_cache_notify_all()")
    else:
        op.drop_table("cache_change")  # its prune trigger goes with it
    table = op.create_table(
        "cache_epoch",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_epoch")),
    )
    op.bulk_insert(table, [{"id": 1, "n": 0}])
