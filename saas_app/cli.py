"""`python -m saas_app`: serve, migrate, create-tenant, create-user, create-api-key."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging.config
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from saas_app import housekeeping
from saas_app.api_keys import service as api_keys
from saas_app.api_keys.schemas import ApiKeyCreate
from saas_app.audit.service import Origin, Ref
from saas_app.core.clock import SystemClock
from saas_app.core.config import Settings, get_settings
from saas_app.core.errors import DomainError
from saas_app.core.logging import configure_logging, server_log_config
from saas_app.mail import commands as mail
from saas_app.rbac import service as rbac
from saas_app.rbac.permissions import BUILTIN_ROLES, CATALOGUE
from saas_app.runtime import Runtime, close_runtime
from saas_app.tenancy import service as tenancy
from saas_app.tenancy.schemas import TenantCreate
from saas_app.users import service as users
from saas_app.users.schemas import Credentials

ROOT = Path(__file__).resolve().parent.parent
CLI_ACTOR = Ref("system")
# Schema fields as the operator typed them (a body field's path → its command-line flag).
M = TypeVar("M", bound=BaseModel)
FLAGS: dict[tuple[str | int, ...], str] = {
    ("slug",): "--slug",
    ("name",): "--name",
    ("owner", "email"): "--owner-email",
    ("owner", "full_name"): "--owner-name",
    ("owner", "password"): "password",
    ("email",): "--email",
    ("full_name",): "--full-name",
    ("password",): "password",
    ("scopes",): "--scopes",
    ("expires_in_days",): "--expires-in-days",
    ("rate_limit",): "--rate-limit",
}


class InvalidInput(Exception):
    """Operator input the API's own schemas refuse; its message is one line for stderr."""


def validated(schema: type[M], values: dict[str, Any]) -> M:
    """Validates CLI input with the API's request schema: one source of truth for slugs,
    addresses (folded), names and the password policy, so the CLI cannot create what no
    request could (a tenant `ACME2` no URL reaches, a user `not-an-email`)."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise InvalidInput(describe(exc, FLAGS)) from None


def describe(exc: ValidationError, names: dict[tuple[str | int, ...], str]) -> str:
    """One line naming each refused field and why, never its value (it may be a password)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(error["loc"])
        name = names.get(loc, ".".join(str(part) for part in loc) or "input")
        parts.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def migrate(settings: Settings) -> None:
    """Brings the database schema to the latest revision (`alembic upgrade head`)."""
    from alembic import command  # noqa: PLC0415 (only this command needs Alembic)
    from alembic.config import Config  # noqa: PLC0415

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.DATABASE_URL)
    log_config = server_log_config(settings)
    if log_config is not None:  # JSON logs: not alembic.ini's text layout
        logging.config.dictConfig(log_config)
        config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415

    if not args.no_migrate:
        migrate(settings)
    # uvicorn drains in-flight requests on SIGTERM, then raises the signal again under the
    # handler it found; with the default one the process dies by signal (exit -15) though
    # the shutdown was clean. Exit 0 instead, as `--workers N` (uvicorn's supervisor) does.
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    uvicorn.run(
        "saas_app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        # Off: the app applies FORWARDED_ALLOW_IPS itself (saas_app/core/proxy.py); uvicorn's
        # own default would trust X-Forwarded-For from 127.0.0.1 (ASVS 5.0 V4.1.3).
        proxy_headers=False,
        access_log=False,  # saas_app logs each request itself, without query strings
        log_config=server_log_config(settings) or LOGGING_CONFIG,
    )


def _exit_after_graceful_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


@asynccontextmanager
async def operator_runtime(settings: Settings) -> AsyncIterator[tuple[Runtime, Origin]]:
    """The app's runtime for one CLI command, acting as "system" in the audit trail."""
    runtime = Runtime.build(settings, SystemClock())
    try:
        yield runtime, Origin(actor=CLI_ACTOR, ip=None, now=runtime.clock.now())
    finally:
        await close_runtime(runtime)


def read_password(args: argparse.Namespace) -> str:
    """From --password-stdin, $SAAS_APP_PASSWORD or a prompt; never from argv (ps shows it)."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("SAAS_APP_PASSWORD") or getpass.getpass("Password: ")
    return password  # checked with the rest of the input, by the API's schema


async def create_tenant(args: argparse.Namespace, settings: Settings) -> None:
    body = validated(
        TenantCreate,
        {
            "slug": args.slug,
            "name": args.slug if args.name is None else args.name,
            "owner": {
                "email": args.owner_email,
                "password": read_password(args),
                "full_name": args.owner_name,
            },
        },
    )
    async with operator_runtime(settings) as (runtime, origin):
        password_hash = await runtime.hasher.hash(body.owner.password)
        async with runtime.write_session_factory() as session, session.begin():
            tenant, owner, _ = await tenancy.create_tenant(
                session=session,
                slug=body.slug,
                name=body.name,
                owner_email=body.owner.email,
                owner_password_hash=password_hash,
                owner_full_name=body.owner.full_name,
                origin=origin,
            )
        print(f"tenant {tenant.slug} {tenant.id}; owner {owner.email} {owner.id}")


async def create_user(args: argparse.Namespace, settings: Settings) -> None:
    body = validated(
        Credentials, {"email": args.email, "password": read_password(args), "full_name": args.full_name}
    )
    async with operator_runtime(settings) as (runtime, origin):
        password_hash = await runtime.hasher.hash(body.password)
        async with runtime.write_session_factory() as session, session.begin():
            tenant = await tenancy.get_by_slug(session=session, slug=args.tenant)
            known = {r.name for r in (await rbac.list_all_roles(session=session, tenant_id=tenant.id))}
            unknown = set(args.role) - known
            if unknown:
                raise InvalidInput(f"--role: unknown role(s): {', '.join(sorted(unknown))}")
            user, roles = await users.create_user(
                session=session,
                tenant_id=tenant.id,
                email=body.email,
                password_hash=password_hash,
                full_name=body.full_name,
                role_names=args.role,
                origin=origin,
            )
        print(f"user {user.email} {user.id} roles {','.join(r.name for r in roles)}")


def api_key_body(args: argparse.Namespace) -> ApiKeyCreate:
    """The key as POST /t/{tenant}/api-keys would take it: ApiKeyCreate's rules (a name of
    1-100 characters, 1-3650 days, a valid limit), so the CLI cannot issue what no request
    could."""
    scopes = sorted({s.strip() for s in args.scopes.split(",") if s.strip()})
    if set(scopes) - CATALOGUE or not scopes:
        raise InvalidInput(f"--scopes: must be some of: {', '.join(sorted(CATALOGUE))}")
    return validated(
        ApiKeyCreate,
        {
            "name": args.name,
            "scopes": scopes,
            "expires_in_days": _integer_if_it_is_one(args.expires_in_days),
            "rate_limit": args.rate_limit,
        },
    )


def _integer_if_it_is_one(value: str | None) -> int | str | None:
    """Command-line text to the schema's strict integer; anything else is left for the
    schema to refuse in its one line (argparse's `type=int` would print usage too)."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value


async def create_api_key(args: argparse.Namespace, settings: Settings) -> None:
    body = api_key_body(args)
    async with operator_runtime(settings) as (runtime, origin):
        async with runtime.write_session_factory() as session, session.begin():
            tenant = await tenancy.get_by_slug(session=session, slug=args.tenant)
            key, full_key = await api_keys.create_key(
                session=session,
                box=runtime.box,
                tenant_id=tenant.id,
                name=body.name,
                scopes=list(body.scopes),
                grantor=None,  # the operator of the server is trusted
                created_by=None,
                expires_in_days=body.expires_in_days,
                rate_limit=body.rate_limit,
                origin=origin,
            )
        print(f"api key {key.id} sk_{key.prefix} scopes {','.join(key.scopes)}", file=sys.stderr)
        print(full_key)  # alone on stdout, for scripts: KEY=$(python -m saas_app create-api-key ...)


async def purge_expired(settings: Settings) -> None:
    async with operator_runtime(settings) as (runtime, _):
        async with runtime.write_session_factory() as session, session.begin():
            counts = await housekeeping.purge_expired(
                session=session, now=runtime.clock.now(), idle=runtime.lifetimes.idle
            )
        print(" ".join(f"{table}={n}" for table, n in counts.items()))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m saas_app", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    serve_cmd = sub.add_parser("serve", help="migrate, then serve the API with uvicorn")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--workers", type=int, default=1)
    serve_cmd.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head`")

    sub.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    sub.add_parser("purge-expired", help="delete expired one-time records and long-ended sessions")

    tenant_cmd = sub.add_parser("create-tenant", help="create a tenant and its owner")
    tenant_cmd.add_argument("--slug", required=True)
    tenant_cmd.add_argument("--name")
    tenant_cmd.add_argument("--owner-email", required=True)
    tenant_cmd.add_argument("--owner-name")
    tenant_cmd.add_argument("--password-stdin", action="store_true")

    user_cmd = sub.add_parser("create-user", help="create a user in a tenant")
    user_cmd.add_argument("--tenant", required=True, help="tenant slug")
    user_cmd.add_argument("--email", required=True)
    user_cmd.add_argument("--full-name")
    user_cmd.add_argument(
        "--role", action="append", default=[], help=f"repeatable; built-ins: {', '.join(BUILTIN_ROLES)}"
    )
    user_cmd.add_argument("--password-stdin", action="store_true")
    mail_cmd = sub.add_parser("mail", help="the mail outbox: list, show ID, worker")
    mail_sub = mail_cmd.add_subparsers(dest="mail_command", required=True)
    mail_sub.add_parser("list", help=f"the newest {mail.LISTED} messages and their state")
    mail_sub.add_parser("show", help="one message: headers and text").add_argument("id")
    mail_sub.add_parser("worker", help="send the outbox over SMTP_URL until stopped")

    key_cmd = sub.add_parser("create-api-key", help="issue an API key (printed once, on stdout)")
    key_cmd.add_argument("--tenant", required=True, help="tenant slug")
    key_cmd.add_argument("--name", required=True)
    key_cmd.add_argument("--scopes", required=True, help="comma-separated permissions")
    key_cmd.add_argument("--expires-in-days", metavar="1..3650")  # checked by ApiKeyCreate
    key_cmd.add_argument("--rate-limit", help='e.g. "100/minute"')
    return root


async def _mail(args: argparse.Namespace, settings: Settings) -> None:
    configure_logging(settings)  # the worker's per-message lines, as the server logs them
    async with operator_runtime(settings) as (runtime, _):
        if args.mail_command != "worker" and not await mail.outbox_exists(runtime):
            raise InvalidInput(
                "the database has no outbox (run `python -m saas_app migrate`) or is unreachable"
            )
        if args.mail_command == "list":
            await mail.list_messages(runtime)
        elif args.mail_command == "show":
            await mail.show_message(runtime, args.id)
        else:
            await mail.worker(runtime)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:  # values are never shown: they may be secrets
        print(f"error: settings: {describe(exc, {})}", file=sys.stderr)
        return 1
    try:
        if args.command == "serve":
            serve(args, settings)
        elif args.command == "migrate":
            migrate(settings)
        elif args.command == "purge-expired":
            asyncio.run(purge_expired(settings))
        elif args.command == "create-tenant":
            asyncio.run(create_tenant(args, settings))
        elif args.command == "create-api-key":
            asyncio.run(create_api_key(args, settings))
        elif args.command == "mail":
            asyncio.run(_mail(args, settings))
        elif args.command == "create-user":
            args.role = args.role or ["member"]
            asyncio.run(create_user(args, settings))
    except DomainError as exc:
        print(f"error: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    except InvalidInput as exc:
        print(f"error: invalid input: {exc}", file=sys.stderr)
        return 1
    return 0
