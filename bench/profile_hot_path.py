"""Where a request's time goes, in process: no sockets, no HTTP parser, no load generator.

Calls the ASGI app directly N times per target and prints µs per request; with
`--profile`, writes a cProfile of the chosen target (open it with `python -m pstats` or
snakeviz). The bare target is bench/targets/bare.py, so the figures compare the same way
`run.py` does, minus uvicorn.

    .venv/bin/python bench/profile_hot_path.py                      # µs per request
    .venv/bin/python bench/profile_hot_path.py --profile bearer     # + bench/results/bearer.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from servers import saas_migrate  # bench/servers.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "targets")]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PASSWORD = "profile-password-0123"  # noqa: S105 (a throwaway account on a throwaway database)


def environment(database: Path) -> None:
    os.environ.update(
        ENV="dev",
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        RATE_LIMITS_ENABLED="false",
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="4",
    )


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


async def per_request_us(app: ASGIApp, path: str, headers: dict[str, str], n: int) -> float:
    if (status := await call(app, path, headers)) != 200:
        raise RuntimeError(f"{path} answered {status}")
    started = time.perf_counter()
    for _ in range(n):
        await call(app, path, headers)
    return (time.perf_counter() - started) / n * 1e6


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
        rounds: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # alternate, so drift affects every target alike
            for name, (target, path, headers) in targets.items():
                rounds[name].append(await per_request_us(target, path, headers, args.requests))
        bare_us = statistics.median(rounds["bare"])
        for name, figures in rounds.items():
            us = statistics.median(figures)
            print(f"{name:>18}: {us:8.1f} µs/request  ({bare_us / us:6.1%} of bare's rate)")
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
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    with tempfile.TemporaryDirectory(prefix="saas-profile-") as tmp:
        database = Path(tmp) / "saas.db"
        environment(database)
        saas_migrate({**os.environ, "PYTHONPATH": str(ROOT)}, Path(tmp))
        try:
            import uvloop

            uvloop.run(main(arguments))
        except ImportError:
            asyncio.run(main(arguments))
