"""Fills a saas_app database with N users across M tenants, fast, for the scale run.

The schema comes from `python -m saas_app migrate` (run first, on the target database);
rows go in with SQLAlchemy core bulk inserts through the app's own table definitions,
so every value is stored exactly as the app stores it. Each tenant looks as if it had
signed up through the API: the tenant, its four built-in roles, an owner holding
`owner`, then self-registered users holding `member`, and the audit events those
requests write (`tenant.created`, `user.created`). All users share one password, hashed
once with the configured scheme and cost (PASSWORD_SCHEMES, BCRYPT_ROUNDS).

    .venv/bin/python bench/gen_data.py --sqlite bench/.data/scale.db               # 1M / 10k
    .venv/bin/python bench/gen_data.py --sqlite /tmp/small.db --users 2000 --tenants 20
    DATABASE_URL=postgresql+asyncpg://root@127.0.0.1/test .venv/bin/python bench/gen_data.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # saas_app's models, when run as `python bench/gen_data.py`

from servers import saas_migrate  # noqa: E402 (bench/servers.py, beside this script)
from sqlalchemy import Table, event, func, insert, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine  # noqa: E402

from saas_app.audit.models import AuditEvent  # noqa: E402
from saas_app.core.config import Settings  # noqa: E402
from saas_app.rbac.models import Role, UserRole  # noqa: E402
from saas_app.rbac.permissions import BUILTIN_ROLES, MEMBER, OWNER  # noqa: E402
from saas_app.security.passwords import PasswordHasher  # noqa: E402
from saas_app.tenancy.models import Tenant  # noqa: E402
from saas_app.users.models import User  # noqa: E402

DEFAULT_PASSWORD = "bench-password-0123"  # noqa: S105 (every generated user's; test data)
TENANT_TABLE: Table = Tenant.__table__  # type: ignore[assignment]
ROLE_TABLE: Table = Role.__table__  # type: ignore[assignment]
USER_TABLE: Table = User.__table__  # type: ignore[assignment]
USER_ROLE_TABLE: Table = UserRole.__table__  # type: ignore[assignment]
AUDIT_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
SIGNUP_IP = "127.0.0.1"


@dataclass(slots=True)
class Rows:
    """One chunk of tenants, as rows per table (insert order respects foreign keys)."""

    tenants: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    user_roles: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def tables(self) -> list[tuple[Table, list[dict[str, Any]]]]:
        return [
            (TENANT_TABLE, self.tenants),
            (ROLE_TABLE, self.roles),
            (USER_TABLE, self.users),
            (USER_ROLE_TABLE, self.user_roles),
            (AUDIT_TABLE, self.audit),
        ]

    def count(self) -> int:
        return sum(len(rows) for _, rows in self.tables())


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    tenants: int
    slug_prefix: str
    password_hash: str
    audit: bool
    start: datetime

    def slug(self, tenant: int) -> str:
        return f"{self.slug_prefix}-{tenant:06d}"

    def users_in(self, tenant: int) -> int:
        """Users per tenant, the owner included; the remainder goes to the first tenants."""
        base, extra = divmod(self.users, self.tenants)
        return base + (1 if tenant < extra else 0)

    def owner_email(self, tenant: int) -> str:
        return f"owner@{self.slug(tenant)}.example.com"


def audit_row(
    tenant_id: uuid.UUID, at: datetime, action: str, target: tuple[str, uuid.UUID], details: dict[str, Any]
) -> dict[str, Any]:
    """What audit.record() adds for an anonymous request (sign-up, registration)."""
    return {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "created_at": at,
        "action": action,
        "actor_type": None,
        "actor_id": None,
        "target_type": target[0],
        "target_id": target[1],
        "ip": SIGNUP_IP,
        "details": details,
    }


def tenant_rows(plan: Plan, tenant: int, rows: Rows) -> None:
    """POST /tenants (tenancy.service.create_tenant), then POST /auth/register per user."""
    at = plan.start + timedelta(seconds=tenant)
    tenant_id = uuid.uuid4()
    slug = plan.slug(tenant)
    rows.tenants.append(
        {
            "id": tenant_id,
            "slug": slug,
            "name": f"Generated tenant {tenant}",
            "allow_signup": True,
            "mfa_required": False,
            "created_at": at,
        }
    )
    role_ids: dict[str, uuid.UUID] = {}
    for name, permissions in BUILTIN_ROLES.items():  # rbac.service.create_builtin_roles
        role_ids[name] = uuid.uuid4()
        rows.roles.append(
            {
                "id": role_ids[name],
                "tenant_id": tenant_id,
                "name": name,
                "permissions": list(permissions),
                "is_builtin": True,
                "created_at": at,
            }
        )
    if plan.audit:
        rows.audit.append(audit_row(tenant_id, at, "tenant.created", ("tenant", tenant_id), {"slug": slug}))
    for n in range(plan.users_in(tenant)):
        role = OWNER if n == 0 else MEMBER
        user_id = uuid.uuid4()
        user_at = at + timedelta(milliseconds=n)
        rows.users.append(
            {
                "id": user_id,
                "tenant_id": tenant_id,
                "email": plan.owner_email(tenant) if n == 0 else f"user{n}@{slug}.example.com",
                "full_name": None,
                "password_hash": plan.password_hash,
                "is_active": True,
                "created_at": user_at,
            }
        )
        rows.user_roles.append({"tenant_id": tenant_id, "user_id": user_id, "role_id": role_ids[role]})
        if plan.audit:
            rows.audit.append(
                audit_row(tenant_id, user_at, "user.created", ("user", user_id), {"roles": [role]})
            )


def chunks(plan: Plan, users_per_chunk: int) -> Iterator[Rows]:
    rows = Rows()
    for tenant in range(plan.tenants):
        tenant_rows(plan, tenant, rows)
        if len(rows.users) >= users_per_chunk:
            yield rows
            rows = Rows()
    if rows.tenants:
        yield rows


def migrate(database_url: str) -> None:
    """`python -m saas_app migrate` on the database, outside any stray .env."""
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as cwd:
        try:
            saas_migrate(env, Path(cwd))
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None


def make_engine(database_url: str) -> AsyncEngine:
    engine = create_async_engine(database_url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _fast_bulk_load(dbapi_connection: Any, _record: Any) -> None:
            # A throwaway bulk load: no fsync, a big page cache. The file stays in WAL mode,
            # as the app leaves it.
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

    return engine


async def insert_chunk(conn: AsyncConnection, rows: Rows, batch: int) -> None:
    for table, table_rows in rows.tables():
        for i in range(0, len(table_rows), batch):
            await conn.execute(insert(table), table_rows[i : i + batch])


async def generate(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    settings = Settings(_env_file=None, DATABASE_URL=database_url)
    started = time.perf_counter()
    password_hash = PasswordHasher(settings).hash_sync(args.password)
    plan = Plan(
        users=args.users,
        tenants=args.tenants,
        slug_prefix=args.slug_prefix,
        password_hash=password_hash,
        audit=not args.no_audit,
        start=datetime.now(UTC) - timedelta(days=30),
    )
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            taken = await conn.scalar(
                select(func.count())
                .select_from(TENANT_TABLE)
                .where(TENANT_TABLE.c.slug.like(f"{args.slug_prefix}-%"))
            )
            if taken:
                raise SystemExit(f"the database already has {taken} tenants named {args.slug_prefix}-*")
            revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        load_started = time.perf_counter()
        total = users_done = 0
        for rows in chunks(plan, args.chunk_users):
            async with engine.begin() as conn:
                await insert_chunk(conn, rows, args.batch)
            total += rows.count()
            users_done += len(rows.users)
            elapsed = time.perf_counter() - load_started
            print(
                f"  {users_done:>9,} users  {total:>10,} rows  {total / elapsed:>9,.0f} rows/s",
                file=sys.stderr,
                flush=True,
            )
        load_seconds = time.perf_counter() - load_started
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:  # what autovacuum would have done on a live database
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("ANALYZE")
    finally:
        await engine.dispose()
    middle = args.tenants // 2
    return {
        "users": args.users,
        "tenants": args.tenants,
        "rows": total,
        "audit": plan.audit,
        "load_seconds": round(load_seconds, 2),
        "rows_per_second": round(total / load_seconds),
        "total_seconds": round(time.perf_counter() - started, 2),
        "revision": revision,
        "password_scheme": settings.PASSWORD_SCHEMES[0],
        "bcrypt_rounds": settings.BCRYPT_ROUNDS,
        "password": args.password,
        "slug_prefix": args.slug_prefix,
        # A tenant owner to sign in as (the scale run creates its API key through the API).
        "sample": {
            "slug": plan.slug(middle),
            "email": plan.owner_email(middle),
            "users": plan.users_in(middle),
        },
    }


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.resolve()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000, help="users in all (default 1,000,000)")
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants (default 10,000)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--sqlite", type=Path, help="a new SQLite file (default: DATABASE_URL)")
    target.add_argument("--database-url", help="an async SQLAlchemy URL (default: $DATABASE_URL)")
    parser.add_argument("--force", action="store_true", help="replace an existing --sqlite file")
    parser.add_argument("--slug-prefix", default="gen", help="tenant slugs are PREFIX-000000...")
    parser.add_argument("--password", default=DEFAULT_PASSWORD, help="every generated user's password")
    parser.add_argument("--no-audit", action="store_true", help="skip the sign-up audit events")
    parser.add_argument("--chunk-users", type=int, default=20_000, help="users per transaction")
    parser.add_argument("--batch", type=int, default=5_000, help="rows per INSERT executemany")
    parser.add_argument("--manifest", type=Path, help="write what was generated as JSON here")
    args = parser.parse_args()
    if args.tenants < 1 or args.users < args.tenants:
        parser.error("need at least one tenant and one user (the owner) per tenant")

    if args.sqlite is not None:
        if args.sqlite.exists() and not args.force:
            parser.error(f"{args.sqlite} exists (use --force to replace it)")
        args.sqlite.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.sqlite}{suffix}").unlink(missing_ok=True)
        database_url = sqlite_url(args.sqlite)
    else:
        database_url = args.database_url or os.environ.get("DATABASE_URL", "")
        if not database_url:
            parser.error("give --sqlite PATH, --database-url URL or set DATABASE_URL")

    print(f"migrating {database_url.split('@')[-1]} ...", file=sys.stderr)
    migrate(database_url)
    print(f"generating {args.users:,} users across {args.tenants:,} tenants ...", file=sys.stderr)
    manifest = asyncio.run(generate(args, database_url))
    print(
        f"{manifest['rows']:,} rows in {manifest['load_seconds']:.1f} s: "
        f"{manifest['rows_per_second']:,} rows/s "
        f"({args.users / manifest['load_seconds']:,.0f} users/s; "
        f"{manifest['total_seconds']:.1f} s with the hash and checkpoint)"
    )
    if args.manifest is not None:
        args.manifest.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
