"""The servers under test: start them pinned, wait until healthy, sign in, read RSS, stop."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import httpx
from sqlalchemy.engine import URL, make_url

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
PEER_PYTHON = BENCH / ".venv-peer" / "bin" / "python"
TARGETS_DIR = BENCH / "targets"
PASSWORD = "bench-password-0123"  # noqa: S105 (a throwaway account on a throwaway database)
TOKEN_MAX_AGE_S = 300  # saas_app's access tokens live 900 s; sign in again well before


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def uvicorn_command(python: Path, app: str, port: int) -> list[str]:
    """One uvicorn worker: uvloop, httptools, no access log."""
    return [
        str(python),
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(TARGETS_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    cwd: Path
    env: dict[str, str]
    health_path: str
    health_status: int = 200
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, cpus: str, logs: Path) -> None:
        self.log_path = logs / f"{self.name}.log"
        log = self.log_path.open("wb")
        self._log = log
        # taskset execs the server: the pid is the worker's own (for /proc/<pid>/status).
        self.process = subprocess.Popen(
            ["taskset", "-c", cpus, *self.command],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the runner, which stops us cleanly
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                answer = httpx.get(self.base_url + self.health_path, timeout=2.0)
                if answer.status_code == self.health_status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the worker, in kB."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values

    def loaded_modules(self) -> dict[str, bool]:
        """Whether uvloop and httptools are mapped into the worker (what uvicorn picked)."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return {"uvloop": "/uvloop/" in maps, "httptools": "/httptools/" in maps}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def bare_server(tmp: Path) -> Server:
    port = free_port()
    return Server(
        name="bare",
        command=uvicorn_command(PROJECT_PYTHON, "bare:app", port),
        port=port,
        cwd=tmp,
        env=dict(os.environ),
        health_path="/users/me",
    )


def sqlite_url(database: Path) -> str:
    return f"sqlite+aiosqlite:///{database}"


def peer_server(tmp: Path, database_url: str) -> Server:
    port = free_port()
    # PEER_FAST_HASH: a cheap password hash, only for signing users up and in (see the target).
    env = {**os.environ, "PEER_DATABASE_URL": database_url, "PEER_FAST_HASH": "1"}
    return Server(
        name="fastapi-users",
        command=uvicorn_command(PEER_PYTHON, "peer_fastapi_users:app", port),
        port=port,
        cwd=tmp,
        env=env,
        health_path="/users/me",
        health_status=401,  # alive, and refusing the anonymous caller
    )


def saas_env(database_url: str, settings_names: frozenset[str]) -> dict[str, str]:
    """The environment the issue prescribes, free of any saas_app setting the caller had."""
    env = {k: v for k, v in os.environ.items() if k not in settings_names}
    env.update(
        ENV="dev",
        DATABASE_URL=database_url,
        RATE_LIMITS_ENABLED="false",
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="12",
        PYTHONPATH=str(ROOT),
    )
    return env


def saas_migrate(env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        [str(PROJECT_PYTHON), "-m", "saas_app", "migrate"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -m saas_app migrate failed:\n{done.stderr}")


def saas_server(name: str, tmp: Path, env: dict[str, str]) -> Server:
    """`python -m saas_app serve --no-migrate`, run from a directory with no .env in it."""
    port = free_port()
    workdir = tmp / name
    workdir.mkdir(exist_ok=True)
    return Server(
        name=name,
        command=[str(PROJECT_PYTHON), "-m", "saas_app", "serve", "--no-migrate", "--port", str(port)],
        port=port,
        cwd=workdir,
        env=env,
        health_path="/readyz",
    )


# --- PostgreSQL: a fresh database per server, dropped after the run -----------------------

POSTGRES_DRIVERS = ("postgresql", "postgres", "postgresql+asyncpg")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)\S*@")


def hide_password(text: str) -> str:
    """Any `scheme://user:secret@host` in the text, with the secret replaced by ***."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def postgres_server_url(value: str) -> URL:
    """The admin URL given with --postgres (`postgresql://user@host:port/postgres`)."""
    url = make_url(value)
    if url.drivername not in POSTGRES_DRIVERS:
        raise ValueError(f"not a PostgreSQL URL (scheme {url.drivername!r}; want postgresql://...)")
    return url


class PostgresDatabases:
    """Fresh databases (`bench_<purpose>_<hex8>`) on one PostgreSQL server, for one run.

    A name is recorded before its CREATE DATABASE, so that `drop_all` (DROP ... IF EXISTS,
    WITH (FORCE) to cut off a server that did not let go) also removes one whose creation
    was interrupted. CREATE/DROP DATABASE go through asyncpg, which saas_app already uses.
    """

    def __init__(self, server_url: URL) -> None:
        self.server_url = server_url
        self.suffix = secrets.token_hex(4)
        self.names: list[str] = []
        self.version = ""

    @property
    def address(self) -> str:
        return f"{self.server_url.host or 'localhost'}:{self.server_url.port or 5432}"

    def _admin_dsn(self) -> str:
        return self.server_url.set(drivername="postgresql").render_as_string(hide_password=False)

    def url(self, name: str) -> str:
        """The SQLAlchemy URL of one of our databases, for saas_app and the peer."""
        url = self.server_url.set(drivername="postgresql+asyncpg", database=name)
        return url.render_as_string(hide_password=False)

    async def _execute(self, *statements: str) -> str:
        import asyncpg  # noqa: PLC0415 (only a PostgreSQL run needs it)

        conn = await asyncpg.connect(self._admin_dsn(), timeout=10)
        try:
            for statement in statements:
                await conn.execute(statement)
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    def connect(self) -> None:
        """Checks that the server answers, and reads its version."""
        import asyncpg  # noqa: PLC0415

        try:
            self.version = asyncio.run(self._execute()).split(" ")[0]
        except OSError as exc:
            raise RuntimeError(f"PostgreSQL at {self.address} does not answer: {exc!r}") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise RuntimeError(f"PostgreSQL at {self.address}: {exc!r}") from exc

    def create(self, purpose: str) -> str:
        """Creates `bench_<purpose>_<hex8>` and returns its SQLAlchemy (asyncpg) URL."""
        name = f"bench_{purpose}_{self.suffix}"
        self.names.append(name)
        asyncio.run(self._execute(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop_all(self) -> list[str]:
        """Drops every database of this run; returns those it could not drop, with why."""
        left: list[str] = []
        for name in self.names:
            try:
                asyncio.run(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception as exc:  # report it and go on with the others
                left.append(f"{name} ({exc!r})")
        return left


def expect(response: httpx.Response, status: int, what: str) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(f"{what}: HTTP {response.status_code} (expected {status}): {response.text[:500]}")
    return response


@dataclass
class PeerAccount:
    """One fastapi-users user, registered and signed in through its documented routes."""

    server: Server
    email: str = "bench@example.com"
    _token: str = ""

    def register(self) -> None:
        expect(
            httpx.post(
                f"{self.server.base_url}/auth/register",
                json={"email": self.email, "password": PASSWORD},
                timeout=30,
            ),
            201,
            "fastapi-users register",
        )

    def token(self) -> str:
        if not self._token:
            answer = httpx.post(
                f"{self.server.base_url}/auth/jwt/login",
                data={"username": self.email, "password": PASSWORD},
                timeout=30,
            )
            self._token = expect(answer, 200, "fastapi-users login").json()["access_token"]
        return self._token  # lives 3600 s, longer than any run


@dataclass
class SaasAccount:
    """A tenant owner of saas_app: a bearer token (renewed before it can expire) and an
    API key, both obtained through the HTTP API."""

    server: Server
    slug: str
    email: str
    password: str = PASSWORD
    api_key: str = ""
    _token: str = ""
    _token_at: float = 0.0

    @property
    def tenant_url(self) -> str:
        return f"{self.server.base_url}/t/{self.slug}"

    def create_tenant(self) -> None:
        body = {
            "slug": self.slug,
            "name": "Bench",
            "owner": {"email": self.email, "password": self.password, "full_name": "Bench Owner"},
        }
        expect(httpx.post(f"{self.server.base_url}/tenants", json=body, timeout=30), 201, "POST /tenants")

    def password_form(self) -> str:
        return urlencode({"grant_type": "password", "username": self.email, "password": self.password})

    def token(self) -> str:
        if not self._token or time.monotonic() - self._token_at > TOKEN_MAX_AGE_S:
            answer = httpx.post(
                f"{self.tenant_url}/auth/token",
                content=self.password_form(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            )
            self._token = expect(answer, 200, "password grant").json()["access_token"]
            self._token_at = time.monotonic()
        return self._token

    def create_api_key(self) -> None:
        answer = httpx.post(
            f"{self.tenant_url}/api-keys",
            json={"name": "bench", "scopes": ["projects:read"]},
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
        )
        self.api_key = expect(answer, 201, "POST /api-keys").json()["key"]
