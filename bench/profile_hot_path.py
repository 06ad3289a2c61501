"""Where a request's time goes, in process: no sockets, no HTTP parser, no load generator.

Calls the ASGI app directly N times per target and prints µs per request; with
`--profile`, writes a cProfile of the chosen target (open it with `python -m pstats` or
snakeviz). The bare target is bench/targets/bare.py, so the figures compare the same way
`run.py` does, minus uvicorn.

    .venv/bin/python bench/profile_hot_path.py                      # µs per request
    .venv/bin/python bench/profile_hot_path.py --profile bearer     # + bench/results/bearer.prof
    .venv/bin/python bench/profile_hot_path.py --cold --postgres postgresql://postgres@127.0.0.1/postgres

`--cold` switches the read cache off (READ_CACHE_ENABLED=false: every request reads the
database); `--postgres` runs on a fresh database on that server, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from servers import saas_migrate  # bench/servers.py, beside this script
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "targets")]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PASSWORD = "profile-password-0123"  # noqa: S105 (a throwaway account on a throwaway database)


def environment(database_url: str, cold: bool) -> None:
    os.environ.update(
        ENV="dev",
        DATABASE_URL=database_url,
        RATE_LIMITS_ENABLED="false",
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="4",
        READ_CACHE_ENABLED="false" if cold else "true",
    )


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on `server_url` (a libpq-style URL), dropped on the way out."""
    name = f"bench_profile_{uuid.uuid4().hex[:8]}"
    admin = server_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def run(statement: str) -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        async with engine.connect() as connection:
            await connection.execute(text(statement))
        await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE "{name}" WITH (FORCE)'))


def scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: ASGIApp, path: str, headers: dict[str, str]) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(path, headers), receive, send)
    return status


async def per_request_us(app: ASGIApp, path: str, headers: dict[str, str], n: int) -> tuple[float, float]:
    """Wall-clock and this process's CPU time per request, in µs (they differ by the time
    spent waiting, e.g. for the database)."""
    if (status := await call(app, path, headers)) != 200:
        raise RuntimeError(f"{path} answered {status}")
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await call(app, path, headers)
    return (time.perf_counter() - started) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def accounts(app: Any) -> tuple[str, str]:
    """A tenant owner's bearer token and an API key, made through the API."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        owner = {"email": "owner@profile.example.com", "password": PASSWORD, "full_name": "Owner"}
        (await client.post("/tenants", json={"slug": "prof", "name": "P", "owner": owner})).raise_for_status()
        form = {"grant_type": "password", "username": owner["email"], "password": PASSWORD}
        answer = await client.post("/t/prof/auth/token", data=form)
        token = answer.raise_for_status().json()["access_token"]
        answer = await client.post(
            "/t/prof/api-keys",
            json={"name": "p", "scopes": ["projects:read"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        return token, answer.raise_for_status().json()["key"]


async def main(args: argparse.Namespace) -> None:
    # Imported here, once environment() has pointed the settings at the throwaway database.
    import bare  # noqa: PLC0415 (bench/targets/bare.py)

    from saas_app.main import create_app  # noqa: PLC0415

    app = create_app()
    async with app.router.lifespan_context(app):
        token, key = await accounts(app)
        targets: dict[str, tuple[ASGIApp, str, dict[str, str]]] = {
            "bare": (bare.app, "/users/me", {}),
            "bearer": (app, "/t/prof/users/me", {"Authorization": f"Bearer {token}"}),
            "api-key": (app, "/t/prof/projects", {"X-API-Key": key}),
            "bearer-projects": (app, "/t/prof/projects", {"Authorization": f"Bearer {token}"}),
            "healthz": (app, "/healthz", {}),
        }
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # alternate, so drift affects every target alike
            for name, (target, path, headers) in targets.items():
                rounds[name].append(await per_request_us(target, path, headers, args.requests))
        bare_us = statistics.median(wall for wall, _ in rounds["bare"])
        for name, figures in rounds.items():
            us = statistics.median(wall for wall, _ in figures)
            cpu = statistics.median(cpu for _, cpu in figures)
            print(
                f"{name:>18}: {us:8.1f} µs/request, {cpu:8.1f} µs CPU  ({bare_us / us:6.1%} of bare's rate)"
            )
        if args.profile:
            target, path, headers = targets[args.profile]
            out = ROOT / "bench" / "results" / f"{args.profile}.prof"
            out.parent.mkdir(exist_ok=True)
            profiler = cProfile.Profile()
            profiler.enable()
            await per_request_us(target, path, headers, args.requests)
            profiler.disable()
            profiler.dump_stats(out)
            print(f"profile written to {out}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per target per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=["bare", "bearer", "api-key", "bearer-projects", "healthz"])
    parser.add_argument("--cold", action="store_true", help="READ_CACHE_ENABLED=false")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server instead of a SQLite file")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="saas-profile-"))
        if arguments.postgres:
            database_url = stack.enter_context(postgres_database(arguments.postgres))
        else:
            database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'saas.db'}"
        environment(database_url, arguments.cold)
        saas_migrate({**os.environ, "PYTHONPATH": str(ROOT)}, Path(tmp))
        try:
            import uvloop

            uvloop.run(main(arguments))
        except ImportError:
            asyncio.run(main(arguments))
