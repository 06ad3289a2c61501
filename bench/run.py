"""The load benchmark: saas_app beside a bare FastAPI endpoint and fastapi-users.

Every server is one uvicorn worker pinned to the server CPU (`taskset -c 1`), wrk runs
pinned to the other (`taskset -c 0`). Each target is health-checked, answered once with
its credentials, warmed up, then measured in rounds that alternate between targets
(A B C … A B C …) so that drift on a shared machine hits them all alike; the report
gives medians over rounds and the ratios of the performance issue.

    make bench                                  # both workloads, 3 rounds × 10 s × 32 connections
    make bench BENCH_ARGS="--quick"             # 1 round × 3 s per cell: a smoke test
    .venv/bin/python bench/run.py --workload mixed --writes 0,10,50   # the headline alone
    .venv/bin/python bench/run.py --rounds 5 --duration 20 --connections 64
    .venv/bin/python bench/run.py --scale       # + a 1M-user / 10k-tenant database
    .venv/bin/python bench/run.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Two workloads. "mixed" (issue 14, the headline): 200 users of 10 tenants, each logged in
once, read round-robin by wrk while bench/writer.py writes W times a second (saas_app,
fastapi-users; bare FastAPI as the reference; saas_app with its read cache off as the cold
path). "single" (issue 6): one token (or API key) reading, the login storm, --scale.
--workload all (the default) runs both in the same interleaved rounds.

SQLite files by default; with --postgres, fresh databases on that PostgreSQL server
(bench_saas_<hex8>, bench_peer_<hex8>, bench_mixed_<hex8>, bench_cold_<hex8>, with --scale
bench_scale_<hex8>), dropped at the end.
Every option also reads an environment variable (BENCH_ROUNDS, BENCH_DURATION, ...);
a flag wins over the variable. Results: bench/results/latest.md and latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from mixed import PEER_TOKEN_TTL_S, SAAS_MIXED_SETTINGS, Cell, Kind, MixedServer
from report import LABELS, Results, mixed_labels, mixed_summary, render
from servers import (
    BENCH,
    PEER_PYTHON,
    PROJECT_PYTHON,
    ROOT,
    PeerAccount,
    PostgresDatabases,
    SaasAccount,
    Server,
    bare_server,
    hide_password,
    peer_server,
    postgres_server_url,
    saas_env,
    saas_migrate,
    saas_server,
    sqlite_url,
)
from sqlalchemy.exc import ArgumentError
from wrk import WrkJob, WrkResult

LUA = BENCH / "lua"
DATA = BENCH / ".data"
TARGETS = ("bare", "fastapi-users", "saas-bearer", "saas-api-key", "saas-login")  # the single workload
WORKLOADS = ("mixed", "single", "all")
# Report order; the scale targets run only with --scale.
ORDER = (
    "bare",
    "fastapi-users",
    "saas-bearer",
    "saas-api-key",
    "scale-bearer",
    "scale-api-key",
    "saas-login",
    "healthz-storm",
)


@dataclass(frozen=True, slots=True)
class Config:
    rounds: int
    duration: int
    connections: int
    login_connections: int
    login_duration: int
    warmup: int
    quick: bool
    targets: tuple[str, ...]
    scale: bool
    scale_users: int
    scale_tenants: int
    server_cpus: str
    client_cpus: str
    hash_threads: int
    probe_delay_ms: int
    output: Path
    keep: bool
    postgres: str | None  # an admin URL of a PostgreSQL server; None: SQLite files
    workload: str = "all"
    writes: tuple[int, ...] = (0, 10, 50)  # the mixed workload's W levels, writes/s
    cold_writes: tuple[int, ...] = (0, 50)  # the levels the cold path (read cache off) runs at
    mixed_users: int = 200
    mixed_tenants: int = 10

    @property
    def mixed(self) -> bool:
        return self.workload in ("mixed", "all")


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="1 round × 3 s per cell, 1 s warm-up (env BENCH_QUICK=1)"
    )
    add_mixed_arguments(p)
    p.add_argument("--rounds", type=int, help="rounds of every target (BENCH_ROUNDS, default 3)")
    p.add_argument("--duration", type=int, help="seconds per measurement (BENCH_DURATION, default 10)")
    p.add_argument("--connections", type=int, help="wrk connections (BENCH_CONNECTIONS, default 32)")
    p.add_argument(
        "--login-connections",
        type=int,
        help="connections of the login storm (BENCH_LOGIN_CONNECTIONS, default 4)",
    )
    p.add_argument(
        "--login-duration",
        type=int,
        help="seconds per login storm (BENCH_LOGIN_DURATION, default: --duration, at least 10)",
    )
    p.add_argument("--warmup", type=int, help="warm-up seconds per target (BENCH_WARMUP, default 3)")
    p.add_argument(
        "--targets", help=f"the single workload's targets, a subset of {','.join(TARGETS)} (BENCH_TARGETS)"
    )
    p.add_argument(
        "--scale", action="store_true", help="also run bearer and API key on a big DB (BENCH_SCALE=1)"
    )
    p.add_argument(
        "--scale-users", type=int, help="users in the scale DB (BENCH_SCALE_USERS, default 1,000,000)"
    )
    p.add_argument(
        "--scale-tenants", type=int, help="tenants in the scale DB (BENCH_SCALE_TENANTS, default 10,000)"
    )
    p.add_argument("--server-cpus", help="taskset CPU list of the servers (BENCH_SERVER_CPUS, default 1)")
    p.add_argument("--client-cpus", help="taskset CPU list of wrk (BENCH_CLIENT_CPUS, default 0)")
    p.add_argument(
        "--hash-threads", type=int, help="threads of the raw verify rate (BENCH_HASH_THREADS, default 2)"
    )
    p.add_argument(
        "--probe-delay-ms", type=int, help="pause between /healthz probes (BENCH_PROBE_DELAY_MS, default 20)"
    )
    p.add_argument("--output", type=Path, help="report path (BENCH_OUTPUT, default bench/results/latest.md)")
    p.add_argument(
        "--postgres",
        metavar="URL",
        help="run on fresh databases of this PostgreSQL server, e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres (BENCH_POSTGRES_URL; default: SQLite files)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary databases and server logs")
    args = p.parse_args(argv)

    env = os.environ
    quick = args.quick or env.get("BENCH_QUICK", "") not in ("", "0")

    def pick(value: Any, name: str, default: Any, quick_default: Any = None, kind: type = int) -> Any:
        if value is not None:
            return value
        if f"BENCH_{name}" in env:
            return kind(env[f"BENCH_{name}"])
        return quick_default if quick and quick_default is not None else default

    targets = tuple(t.strip() for t in pick(args.targets, "TARGETS", ",".join(TARGETS), kind=str).split(","))
    unknown = set(targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    scale = args.scale or env.get("BENCH_SCALE", "") not in ("", "0")
    mixed = mixed_options(p, args, pick)
    if mixed["workload"] == "mixed":
        if scale:
            p.error("--scale belongs to the single workload: use --workload single or all")
        targets = ()  # the single workload's targets; bare still runs, as the mixed reference
    duration = pick(args.duration, "DURATION", 10, 3)
    postgres = pick(args.postgres, "POSTGRES_URL", None, kind=str) or None
    if postgres is not None:
        try:
            postgres_server_url(postgres)
        except (ValueError, ArgumentError) as exc:
            p.error(f"--postgres {hide_password(postgres)}: {exc}")
    return Config(
        rounds=pick(args.rounds, "ROUNDS", 3, 1),
        duration=duration,
        connections=pick(args.connections, "CONNECTIONS", 32),
        login_connections=pick(args.login_connections, "LOGIN_CONNECTIONS", 4),
        login_duration=pick(args.login_duration, "LOGIN_DURATION", max(duration, 10)),
        warmup=pick(args.warmup, "WARMUP", 3, 1),
        quick=quick,
        targets=targets,
        scale=scale,
        scale_users=pick(args.scale_users, "SCALE_USERS", 1_000_000),
        scale_tenants=pick(args.scale_tenants, "SCALE_TENANTS", 10_000),
        server_cpus=pick(args.server_cpus, "SERVER_CPUS", "1", kind=str),
        client_cpus=pick(args.client_cpus, "CLIENT_CPUS", "0", kind=str),
        hash_threads=pick(args.hash_threads, "HASH_THREADS", 2),
        probe_delay_ms=pick(args.probe_delay_ms, "PROBE_DELAY_MS", 20),
        output=pick(args.output, "OUTPUT", BENCH / "results" / "latest.md", kind=Path),
        keep=args.keep,
        postgres=postgres,
        **mixed,
    )


def add_mixed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        help="mixed (issue 14: many users, reads and writes), single (one token, read-only, "
        "login storm) or all (BENCH_WORKLOAD, default all)",
    )
    p.add_argument(
        "--writes",
        help="the mixed workload's writes/s levels, comma-separated (BENCH_WRITES, default 0,10,50)",
    )
    p.add_argument(
        "--cold-writes",
        help="levels of --writes that saas_app with READ_CACHE_ENABLED=false also runs at; '' for "
        "none (BENCH_COLD_WRITES, default 0,50)",
    )
    p.add_argument(
        "--mixed-users",
        type=int,
        help="users of the mixed workload, per server (BENCH_MIXED_USERS, default 200)",
    )
    p.add_argument(
        "--mixed-tenants",
        type=int,
        help="saas_app tenants the mixed users are spread over (BENCH_MIXED_TENANTS, default 10)",
    )


def mixed_options(
    p: argparse.ArgumentParser, args: argparse.Namespace, pick: Callable[..., Any]
) -> dict[str, Any]:
    """--workload, --writes, --cold-writes, --mixed-users and --mixed-tenants, checked."""
    workload = pick(args.workload, "WORKLOAD", "all", kind=str)
    if workload not in WORKLOADS:
        p.error(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    try:
        writes = levels(pick(args.writes, "WRITES", "0,10,50", kind=str))
        cold_writes = levels(pick(args.cold_writes, "COLD_WRITES", "0,50", kind=str))
    except ValueError as exc:
        p.error(str(exc))
    if not set(cold_writes) <= set(writes):
        p.error(f"--cold-writes {cold_writes} must be among --writes {writes} (compared at the same W)")
    if workload != "single" and not writes:
        p.error("--writes needs at least one level for the mixed workload")
    mixed_users = pick(args.mixed_users, "MIXED_USERS", 200)
    mixed_tenants = pick(args.mixed_tenants, "MIXED_TENANTS", 10)
    if mixed_tenants < 1 or mixed_users < mixed_tenants:
        p.error("the mixed workload needs at least one tenant and one user (its owner) per tenant")
    return {
        "workload": workload,
        "writes": writes,
        "cold_writes": cold_writes,
        "mixed_users": mixed_users,
        "mixed_tenants": mixed_tenants,
    }


def levels(text: str) -> tuple[int, ...]:
    """'0,10,50' as (0, 10, 50): distinct writes/s levels, in rising order."""
    try:
        values = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"writes/s levels are whole numbers, comma-separated, not {text!r}") from None
    if any(v < 0 for v in values):
        raise ValueError(f"writes/s levels cannot be negative: {text!r}")
    return tuple(sorted(values))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def preflight(config: Config) -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make bench` (it installs wrk)")
    peer = "fastapi-users" in config.targets or config.mixed
    if peer and not PEER_PYTHON.exists():
        raise SystemExit(f"no {PEER_PYTHON}: run `make bench` (it builds the peer's venv)")
    if config.postgres and peer:
        done = subprocess.run([str(PEER_PYTHON), "-c", "import asyncpg"], capture_output=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"no asyncpg in {PEER_PYTHON}: run `make bench` (it reinstalls the peer's venv)")
    cpus = os.sched_getaffinity(0)
    for cpu_list in (config.server_cpus, config.client_cpus):
        wanted = {int(c) for c in cpu_list.replace("-", ",").split(",") if c}
        if not wanted <= cpus:
            raise SystemExit(f"CPU list {cpu_list!r} is not available here (have {sorted(cpus)})")
    if config.server_cpus == config.client_cpus:
        log("warning: servers and wrk share CPUs; figures will understate the servers")
    if config.mixed and planned_seconds(config) > PEER_TOKEN_TTL_S - 300:
        log(
            f"warning: the rounds may take {planned_seconds(config) / 60:.0f} min; fastapi-users' "
            f"tokens live {PEER_TOKEN_TTL_S // 60} min, so its reads may end in 401s (counted as errors)"
        )


def planned_seconds(config: Config) -> float:
    """About how long the measured rounds take (each wrk run, plus a second or two around it)."""
    cells = 1 + 2 * len(config.writes) + len(config.cold_writes) if config.mixed else 0
    per_round = (cells + len(config.targets)) * (config.duration + 2)
    if "saas-login" in config.targets:
        per_round += 2 * config.login_duration  # the storm, then the raw verify rate
    return config.rounds * per_round


# --- servers, accounts and what is measured ------------------------------------------------


def settings_names() -> frozenset[str]:
    """saas_app's setting names, so that none leaks in from the caller's environment."""
    sys.path.insert(0, str(ROOT))
    from saas_app.core.config import Settings  # noqa: PLC0415 (only for its field names)

    return frozenset(Settings.model_fields)


def head_revision(database: Path) -> str:
    with sqlite3.connect(database) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0])


def generate_scale_data(config: Config, target: list[str], manifest: Path, names: frozenset[str]) -> None:
    """bench/gen_data.py on the target (`--sqlite PATH` or `--database-url URL`)."""
    log(f"scale DB: generating {config.scale_users:,} users across {config.scale_tenants:,} tenants")
    command = [
        str(PROJECT_PYTHON),
        str(BENCH / "gen_data.py"),
        *target,
        "--users",
        str(config.scale_users),
        "--tenants",
        str(config.scale_tenants),
        "--manifest",
        str(manifest),
    ]
    env = {k: v for k, v in os.environ.items() if k not in names} | {"BCRYPT_ROUNDS": "12"}
    subprocess.run(command, env=env, check=True)


def scale_database(config: Config, revision: str, names: frozenset[str]) -> tuple[Path, dict[str, Any]]:
    """The cached SQLite scale DB (bench/.data/) at the current schema revision; made when missing."""
    stem = DATA / f"scale-{config.scale_users}u-{config.scale_tenants}t"
    database, manifest_path = stem.with_suffix(".db"), stem.with_suffix(".json")
    if manifest_path.exists() and database.exists():
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("revision") == revision and manifest.get("bcrypt_rounds") == 12:
            log(f"scale DB: reusing {database.relative_to(ROOT)}")
            return database, manifest
        log(f"scale DB: {database.name} is stale (schema {manifest.get('revision')}, now {revision})")
    manifest_path.unlink(missing_ok=True)
    partial = stem.with_suffix(".partial.db")
    generate_scale_data(config, ["--sqlite", str(partial), "--force"], partial.with_suffix(".json"), names)
    partial.replace(database)
    partial.with_suffix(".json").replace(manifest_path)  # last: marks the cache complete
    return database, json.loads(manifest_path.read_text())


Headers = Callable[[], dict[str, str]]


def no_headers() -> dict[str, str]:
    return {}


@dataclass
class Measure:
    """One wrk target measured each round, with a single request to check it first."""

    key: str
    url: str
    script: str | None = None
    env: Headers = no_headers  # wrk's environment (the Lua scripts read credentials there)
    headers: Headers = no_headers  # the same credentials, for the check

    def check(self) -> None:
        answer = httpx.get(self.url, headers=self.headers(), timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"{self.key}: GET {self.url}: HTTP {answer.status_code}: {answer.text[:300]}")

    def job(self, config: Config, seconds: int) -> WrkJob:
        return WrkJob(
            url=self.url,
            connections=config.connections,
            seconds=seconds,
            cpus=config.client_cpus,
            script=LUA / self.script if self.script else None,
            env=self.env(),
        )


def saas_measures(prefix: str, account: SaasAccount, targets: tuple[str, ...]) -> list[Measure]:
    measures = []
    if "saas-bearer" in targets:
        measures.append(
            Measure(
                f"{prefix}-bearer",
                f"{account.tenant_url}/users/me",
                "bearer.lua",
                env=lambda: {"BENCH_TOKEN": account.token()},
                headers=lambda: {"Authorization": f"Bearer {account.token()}"},
            )
        )
    if "saas-api-key" in targets:
        measures.append(
            Measure(
                f"{prefix}-api-key",
                f"{account.tenant_url}/projects",
                "api_key.lua",
                env=lambda: {"BENCH_API_KEY": account.api_key},
                headers=lambda: {"X-API-Key": account.api_key},
            )
        )
    return measures


# --- the login storm and the raw verify rate ------------------------------------------------


def login_storm(account: SaasAccount, config: Config, seconds: int) -> tuple[WrkResult, WrkResult]:
    """wrk on the token endpoint; meanwhile a light probe of GET /healthz on the same worker."""
    storm = WrkJob(
        url=f"{account.tenant_url}/auth/token",
        connections=config.login_connections,
        seconds=seconds,
        cpus=config.client_cpus,
        script=LUA / "password_grant.lua",
        env={"BENCH_BODY": account.password_form()},
        timeout_s=60,
    )
    probe = WrkJob(
        url=f"{account.server.base_url}/healthz",
        connections=1,
        seconds=max(1, seconds - 1),
        cpus=config.client_cpus,
        script=LUA / "probe.lua",
        env={"BENCH_PROBE_DELAY_MS": str(config.probe_delay_ms)},
    )
    storm_process = storm.start()
    time.sleep(0.5)  # let the storm fill the hashing threads first
    probe_result = probe.run()
    return storm.finish(storm_process), probe_result


def check_login(account: SaasAccount) -> None:
    answer = httpx.post(
        f"{account.tenant_url}/auth/token",
        content=account.password_form(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"password grant: HTTP {answer.status_code}: {answer.text[:300]}")


def raw_verify_rate(config: Config, seconds: int) -> dict[str, Any]:
    """bench/hash_rate.py pinned to the server's CPUs: the hash alone, no HTTP."""
    command = [
        "taskset",
        "-c",
        config.server_cpus,
        str(PROJECT_PYTHON),
        str(BENCH / "hash_rate.py"),
        "--threads",
        str(config.hash_threads),
        "--seconds",
        str(seconds),
        "--json",
    ]
    env = {**os.environ, "BCRYPT_ROUNDS": "12", "PASSWORD_SCHEMES": "bcrypt_sha256"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the run -------------------------------------------------------------------------------


def command_output(command: list[str]) -> str:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False).stdout


def describe(config: Config, servers: list[Server], loads: list[str], database: str) -> list[str]:
    """The report's preamble: what ran, where, how."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    commit = command_output(["git", "rev-parse", "--short", "HEAD"]).strip() or "?"
    dirty = command_output(["git", "status", "--porcelain", "--", "saas_app"]).splitlines()
    wrk_version = command_output(["wrk", "--version"]).split(" [")[0]
    stacks = []
    for server in servers:
        mods = server.loaded_modules()
        loop = "uvloop" if mods["uvloop"] else "asyncio"
        stacks.append(f"{server.name}: {loop}+{'httptools' if mods['httptools'] else 'h11'}")
    mode = (
        f"Mode: {'quick' if config.quick else 'full'}, workload {config.workload}: "
        f"{config.rounds} round(s) × {config.duration} s per target, {config.connections} connections"
    )
    if "saas-login" in config.targets:
        mode += f"; login storm {config.login_connections} connections × {config.login_duration} s"
    lines = [f"{mode}; {config.warmup} s warm-up per target"]
    if config.mixed:
        cold = ", ".join(map(str, config.cold_writes)) or "not run"
        lines.append(
            f"Mixed workload: {config.mixed_users} users over {config.mixed_tenants} saas_app tenants "
            f"(fastapi-users: {config.mixed_users} users, no tenants), each logged in once through the API; "
            f"W = {', '.join(map(str, config.writes))} writes/s by `bench/writer.py` (taskset "
            f"-c {config.client_cpus}); cold path (saas_app with READ_CACHE_ENABLED=false) at W = {cold}"
        )
    if any(server.name == "fastapi-users" for server in servers):
        lines.append(
            "fastapi-users: the docs' example with PEER_FAST_HASH=1 (Argon2 t=1, 1 MiB: only its sign-ups "
            "and logins hash a password, and none of them is measured)"
        )
    mixed_env = ", ".join(f"{k}={v}" for k, v in SAAS_MIXED_SETTINGS.items())
    saas = "saas_app: ENV=dev, RATE_LIMITS_ENABLED=false, LOG_LEVEL=WARNING, BCRYPT_ROUNDS=12"
    if config.mixed:
        saas += f" (the mixed workload's servers: {mixed_env}; no measured request hashes)"
    return [
        *lines,
        f"Code: commit {commit}"
        + (f", with uncommitted changes in {len(dirty)} saas_app path(s)" if dirty else ""),
        f"Machine: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {wrk_version}",
        f"Pinning: servers `taskset -c {config.server_cpus}`, wrk `taskset -c {config.client_cpus}` "
        f"(`-t1 -c<N> -d<secs> --latency`); one uvicorn worker each ({', '.join(stacks)})",
        f"Database: {database}",
        saas + f"; FastAPI {metadata.version('fastapi')}, uvicorn {metadata.version('uvicorn')}",
        f"Load average (1/5/15 min) before the rounds: {loads[0]}; after: {loads[-1]}",
    ]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Bench:
    """One run: servers in a temporary directory, accounts, checks, warm-up, rounds."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pg = PostgresDatabases(postgres_server_url(config.postgres)) if config.postgres else None
        if self.pg is not None:
            try:
                self.pg.connect()
            except RuntimeError as exc:
                raise SystemExit(str(exc)) from exc
            log(f"PostgreSQL {self.pg.version} at {self.pg.address}")
        self.tmp = Path(tempfile.mkdtemp(prefix="saas-bench-"))
        self.names = settings_names()
        self.servers: list[Server] = []
        self.measures: list[Measure] = []
        self.results = Results()
        self.saas: SaasAccount | None = None  # the login storm's account
        self.mixed: list[MixedServer] = []
        self.cells: list[Cell] = []  # the mixed workload's measurements, in round order
        self.loads: list[str] = []

    @property
    def database_kind(self) -> str:
        return f"PostgreSQL {self.pg.version}" if self.pg else "SQLite"

    def database_line(self) -> str:
        """Which database each server ran on, for the report."""
        if self.pg is None:
            line = "SQLite (aiosqlite), a fresh file per server"
            if self.config.scale:
                line += "; the scale run on a copy of the cached generated file in bench/.data/"
            return line
        names = ", ".join(self.pg.names)
        fate = "kept (--keep)" if self.config.keep else "dropped after the run"
        return (
            f"PostgreSQL {self.pg.version} at {self.pg.address} (asyncpg), a fresh database per "
            f"server ({names}), {fate}"
        )

    def database_url(self, purpose: str, sqlite_file: Path) -> str:
        """A fresh database for one server: `bench_<purpose>_<hex8>` on PostgreSQL, else a file."""
        if self.pg is None:
            return sqlite_url(sqlite_file)
        log(f"PostgreSQL: CREATE DATABASE bench_{purpose}_{self.pg.suffix}")
        return self.pg.create(purpose)

    def build(self) -> None:
        """Creates the servers (not started yet), each on its own fresh database."""
        config, tmp = self.config, self.tmp
        if "bare" in config.targets or config.mixed:
            bare = bare_server(tmp)
            self.servers.append(bare)
            self.measures.append(Measure("bare", f"{bare.base_url}/users/me"))
        if "fastapi-users" in config.targets or config.mixed:
            self.servers.append(peer_server(tmp, self.database_url("peer", tmp / "peer.db")))
        saas_targets = {"saas-bearer", "saas-api-key", "saas-login"} & set(config.targets)
        if saas_targets or config.scale:
            (tmp / "saas_app").mkdir()
            small_db = tmp / "saas_app" / "saas.db"
            env = saas_env(self.database_url("saas", small_db), self.names)
            log(f"saas_app: python -m saas_app migrate (a fresh {self.database_kind} database)")
            saas_migrate(env, tmp / "saas_app")
            self.servers.append(saas_server("saas_app", tmp, env))
        if config.scale:
            (tmp / "saas_app-scale").mkdir()
            if self.pg is None:
                scale_db, self.manifest = scale_database(config, head_revision(small_db), self.names)
                copy = tmp / "saas_app-scale" / "saas.db"
                log(f"scale DB: copying {scale_db.stat().st_size / 2**20:,.0f} MB for this run")
                shutil.copyfile(scale_db, copy)
                scale_url = sqlite_url(copy)
            else:  # generated afresh each run: a database of the run, dropped with the others
                scale_url = self.database_url("scale", tmp / "unused")
                manifest = tmp / "scale.json"
                generate_scale_data(config, ["--database-url", scale_url], manifest, self.names)
                self.manifest = json.loads(manifest.read_text())
            self.servers.append(saas_server("saas_app-scale", tmp, saas_env(scale_url, self.names)))
        if config.mixed:
            self.build_mixed()

    def build_mixed(self) -> None:
        """saas_app for the mixed workload, and the same with its read cache off (the cold path).

        Servers of their own: unlike the single workload's, they hash cheaply (hundreds of
        sign-ups and logins) and issue tokens that outlive the run.
        """
        servers: list[tuple[str, str, dict[str, str]]] = [("saas_app-mixed", "mixed", {})]
        if self.config.cold_writes:
            servers.append(("saas_app-cold", "cold", {"READ_CACHE_ENABLED": "false"}))
        for name, purpose, extra in servers:
            (self.tmp / name).mkdir()
            url = self.database_url(purpose, self.tmp / name / "saas.db")
            env = saas_env(url, self.names) | SAAS_MIXED_SETTINGS | extra
            log(f"{name}: python -m saas_app migrate (a fresh {self.database_kind} database)")
            saas_migrate(env, self.tmp / name)
            self.servers.append(saas_server(name, self.tmp, env))

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def start(self) -> None:
        log(f"starting {len(self.servers)} server(s) on CPU {self.config.server_cpus}")
        logs = self.tmp / "logs"
        logs.mkdir()
        for server in self.servers:
            server.start(self.config.server_cpus, logs)
        for server in self.servers:
            server.wait_healthy()

    def set_up_accounts(self) -> None:
        log("setting up accounts through each server's HTTP API")
        targets = self.config.targets
        if "fastapi-users" in targets:
            peer = PeerAccount(self.server("fastapi-users"))
            peer.register()
            self.measures.append(
                Measure(
                    "fastapi-users",
                    f"{peer.server.base_url}/users/me",
                    "bearer.lua",
                    env=lambda: {"BENCH_TOKEN": peer.token()},
                    headers=lambda: {"Authorization": f"Bearer {peer.token()}"},
                )
            )
        if any(s.name == "saas_app" for s in self.servers):
            saas = SaasAccount(self.server("saas_app"), slug="bench", email="owner@bench.example.com")
            saas.create_tenant()
            saas.create_api_key()
            self.measures += saas_measures("saas", saas, targets)
            if "saas-login" in targets:
                self.saas = saas
        if self.config.scale:
            sample = self.manifest["sample"]
            scale = SaasAccount(
                self.server("saas_app-scale"),
                slug=sample["slug"],
                email=sample["email"],
                password=self.manifest["password"],
            )
            scale.create_api_key()  # signs in as a generated owner: checks the generated hash
            self.measures += saas_measures("scale", scale, targets)
        if self.config.mixed:
            self.set_up_mixed()

    def set_up_mixed(self) -> None:
        """The mixed workload's users on each server, and its cells: W by W, saas_app beside
        fastapi-users (and the cold path), so that the rounds interleave them."""
        config = self.config
        servers: list[tuple[str, Kind, str]] = [
            ("saas", "saas", "saas_app-mixed"),
            ("peer", "peer", "fastapi-users"),
            ("cold", "saas", "saas_app-cold"),
        ]
        for key, kind, name in servers:
            if not any(s.name == name for s in self.servers):
                continue
            target = MixedServer(key, kind, self.server(name), self.tmp / "mixed")
            target.set_up(config.mixed_users, config.mixed_tenants)
            log(f"{name}: {len(target.users)} users signed up and logged in ({target.setup_seconds:.1f} s)")
            self.mixed.append(target)
        by_key = {target.key: target for target in self.mixed}
        for writes in config.writes:
            for key in ("saas", "peer", "cold"):
                if key in by_key and (key != "cold" or writes in config.cold_writes):
                    self.cells.append(Cell(by_key[key], writes))

    def check_and_warm_up(self) -> None:
        log("checking that every target answers 200 with its credentials")
        for measure in self.measures:
            measure.check()
        if self.saas is not None:
            check_login(self.saas)
        for target in self.mixed:
            target.check()
        log(f"warming up ({self.config.warmup} s each)")
        for measure in self.measures:
            measure.job(self.config, self.config.warmup).run()
        for target in self.mixed:  # reads only: every user's answer cached where there is a cache
            target.reads(self.config.connections, self.config.warmup, self.config.client_cpus).run()
        if self.saas is not None:
            login_storm(self.saas, self.config, max(2, self.config.warmup))

    def measure_rounds(self) -> None:
        config, results = self.config, self.results
        self.loads.append(load_average())
        # bare first, then the mixed cells (the headline), then the single workload's targets.
        bare = [m for m in self.measures if m.key == "bare"]
        others = [m for m in self.measures if m.key != "bare"]
        for n in range(1, config.rounds + 1):
            tag = f"round {n}/{config.rounds}"
            for measure in bare:
                self.measure(measure, tag)
            for cell in self.cells:
                self.measure_cell(cell, tag)
            for measure in others:
                self.measure(measure, tag)
            if self.saas is not None:
                storm, probe = login_storm(self.saas, config, config.login_duration)
                results.add("saas-login", storm)
                results.add("healthz-storm", probe)
                log(
                    f"{tag} login: {storm.steady_rps:.2f}/s ({storm.requests} in {storm.seconds:.0f} s, "
                    f"errors {storm.errors}); "
                    f"/healthz p99 {probe.p99_ms:.1f} ms"
                )
                rate = raw_verify_rate(config, config.login_duration)
                results.hash.append(rate)
                log(f"{tag} raw verify: {rate['per_second']:.2f}/s")
        self.loads.append(load_average())
        for server in self.servers:
            results.memory_kb[server.name] = server.memory_kb()

    def measure(self, measure: Measure, tag: str) -> None:
        r = measure.job(self.config, self.config.duration).run()
        self.results.add(measure.key, r)
        log(
            f"{tag} {measure.key}: {r.rps:,.1f} req/s, p50 {r.p50_ms:.2f} ms, "
            f"p99 {r.p99_ms:.2f} ms, errors {r.errors}"
        )

    def measure_cell(self, cell: Cell, tag: str) -> None:
        config = self.config
        reads, writes = cell.run(config.connections, config.duration, config.client_cpus)
        self.results.add(cell.key, reads)
        line = (
            f"{tag} {cell.key}: {reads.rps:,.1f} reads/s, p50 {reads.p50_ms:.2f} ms, "
            f"p99 {reads.p99_ms:.2f} ms, errors {reads.errors}, {reads.users} users"
        )
        if writes is not None:
            self.results.add_writes(cell.key, writes)
            line += (
                f"; writes {writes['achieved']:.1f}/s of {cell.writes} "
                f"({writes['ok']} of {writes['sent']} 2xx, failed {writes['failed']})"
            )
        log(line)

    def mixed_meta(self) -> dict[str, Any] | None:
        if not self.config.mixed:
            return None
        cold = any(target.key == "cold" for target in self.mixed)
        return {
            "writes": list(self.config.writes),
            "cold_writes": list(self.config.cold_writes) if cold else [],
            "users": self.config.mixed_users,
            "tenants": self.config.mixed_tenants,
        }

    def report(self) -> str:
        meta = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": self.config.quick,
            "server_cpus": self.config.server_cpus,
            "hash_threads": self.config.hash_threads,
            "command": hide_password(shlex.join(["python", "bench/run.py", *sys.argv[1:]])),
            "database": self.database_kind,
            "lines": describe(self.config, self.servers, self.loads, self.database_line()),
            "mixed": self.mixed_meta(),
        }
        report = render(self.results, meta, [k for k in ORDER if k in self.results.http])
        write_results(self.config, report, self.results, meta)
        return report

    def close(self, failed: bool) -> None:
        try:
            for server in self.servers:
                server.stop()
            if failed:
                for server in self.servers:
                    if server.log_tail():
                        log(f"{server.name} log ({server.log_path}):\n{server.log_tail()}")
            if self.config.keep or failed:
                log(f"kept {self.tmp} ({'server logs' if self.pg else 'databases and server logs'})")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:  # even when a second Ctrl-C cuts the above short
            if self.pg is not None and self.pg.names:
                self.close_postgres()

    def close_postgres(self) -> None:
        """Drops this run's PostgreSQL databases, even after a failure or a Ctrl-C (not with --keep)."""
        assert self.pg is not None
        if self.config.keep:
            log(f"kept PostgreSQL databases on {self.pg.address}: {', '.join(self.pg.names)}")
            return
        # A second Ctrl-C or a kill must not cut the cleanup short and leave databases behind.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            left = self.pg.drop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if left:
            log(f"could not drop PostgreSQL databases on {self.pg.address}: {', '.join(left)}")
        else:
            log(f"dropped PostgreSQL databases {', '.join(self.pg.names)}")


def write_results(config: Config, report: str, results: Results, meta: dict[str, Any]) -> None:
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(report)
    raw = {
        "meta": meta,
        "config": {
            k: str(v) if isinstance(v, Path) else hide_password(v) if isinstance(v, str) else v
            for k, v in asdict(config).items()
        },
        "labels": LABELS,
        "rounds": {key: [asdict(r) for r in rounds] for key, rounds in results.http.items()},
        "writes": results.writes,
        "raw_verify": results.hash,
        "memory_kb": results.memory_kb,
    }
    mixed = meta.get("mixed")
    if mixed:
        raw["labels"] = LABELS | mixed_labels(mixed["writes"], mixed["cold_writes"], mixed["users"])
        raw["mixed"] = mixed_summary(results, mixed["writes"], mixed["cold_writes"])
    config.output.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")


def run(config: Config) -> str:
    preflight(config)
    bench = Bench(config)
    failed = True
    try:
        bench.build()
        bench.start()
        bench.set_up_accounts()
        bench.check_and_warm_up()
        bench.measure_rounds()
        report = bench.report()
        failed = False
        return report
    finally:
        bench.close(failed)


def main() -> None:
    config = parse_args()
    # A plain `kill` should stop the servers too (they run in their own sessions).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    report = run(config)
    print(report)
    log(f"written to {config.output} (and {config.output.with_suffix('.json').name})")


if __name__ == "__main__":
    main()
