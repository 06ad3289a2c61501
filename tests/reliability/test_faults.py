"""Faults injected into a running `python -m saas_app serve` (issue 7, "Faults").

Every fault is real and every service is the test's own: a throwaway PostgreSQL cluster
(initdb into a temporary directory, `postgres` on a free port, run as the `postgres` OS
user) that is shut down and started again under the running server; a redis-server of our
own that is killed and respawned; the fake GitHub of tests/fake_github.py hanging on its
token endpoint; SIGTERM while a request is in flight. The machine's shared PostgreSQL
(:5432) and Redis (:6379) are never touched, so these tests run the same in both suite
passes (SQLite and PostgreSQL + Redis) whatever DATABASE_URL says.

Every wait is bounded (subprocess timeouts, HTTP timeouts, polling deadlines) and every
process started here is stopped in a `finally`. Each test prints one `FAULT ...` line with
its figures (`pytest -rP` shows them); docs/reliability.md quotes the last run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.audit.models import AuditEvent
from saas_app.auth.models import Session
from tests.conftest import ON_POSTGRES, ROOT, TEST_JWT_SECRET
from tests.fake_github import FakeGitHub, serve_in_thread
from tests.github_helpers import CLIENT_ID, CLIENT_SECRET, COOKIE, REDIRECT
from tests.servers import free_port

pytestmark = pytest.mark.e2e

PASSWORD = "fault injection password, long enough"
REQUEST_TIMEOUT = 15.0  # "never a hang": any single request must answer within this
RECOVERY_TIMEOUT = 30.0  # the service must recover by itself within this
OUTAGE_SECONDS = 2.0  # how long PostgreSQL stays down
PROBLEM = "application/problem+json"
LEAKS = ("asyncpg", "traceback", "sqlalchemy", "psycopg", "redis.exceptions", 'file "')


# -- processes -----------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(n) for n in p.parent.parent.name.split(".") if n.isdigit()],
    )
    return found[-1].parent if found and (found[-1].parent / "postgres").exists() else None


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signals a process we started and reaps it; SIGKILL if it does not go in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Polls `check` until true; returns the seconds it took, fails the test after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


class OwnPostgres:
    """A PostgreSQL cluster of this test module's own, in a temporary directory."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="saas-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / "postgres.log"
        # Tests run as root; PostgreSQL refuses to. Its files and processes are `postgres`'s.
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self._user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run_as_postgres(self, args: list[str], timeout: float) -> None:
        subprocess.run(
            args,
            cwd=self.root,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            check=True,
            capture_output=True,
            timeout=timeout,
            **self._user,
        )

    def initdb(self) -> None:
        initdb = str(self.bin / "initdb")
        self._run_as_postgres(
            [initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8"],
            timeout=60,
        )

    def start(self) -> float:
        """Starts the postmaster; returns the seconds until it accepts connections."""
        assert self.process is None or self.process.poll() is not None
        started = time.monotonic()
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                *("-D", str(self.data), "-p", str(self.port), "-k", str(self.root)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60"),
            ],
            cwd=self.root,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C goes to pytest, which stops it itself
            **self._user,
        )
        log.close()
        _wait_for(self.is_ready, 30, "own PostgreSQL accepting connections", interval=0.1)
        return time.monotonic() - started

    def is_ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
        probe = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, timeout=10, check=False).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT, what `pg_ctl stop -m fast` sends): open transactions are
        rolled back and every client connection is closed."""
        if self.process is not None:
            _stop(self.process, signal.SIGINT, timeout=30)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def create_database(self) -> str:
        name = f"faults_{uuid.uuid4().hex[:8]}"
        psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        subprocess.run(
            [*psql, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A redis-server of our own on a free port: no persistence, nothing shared."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for(self.pong, 10, "own redis-server answering PING")

    def pong(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """The fault: the process dies at once (SIGKILL), no goodbye to its clients."""
        if self.process is not None:
            _stop(self.process, signal.SIGKILL, timeout=10)


@dataclass
class Server:
    """`python -m saas_app serve` on a free loopback port, with its log in a file."""

    name: str
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}: {self.log_text()[-3000:]}")
            try:
                return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(ready, 30, f"server {self.name} ready", interval=0.1)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_no_unhandled_errors(self) -> None:
        """Every failure was one the app meant (a 5xx it chose), never a crash it logged."""
        text = self.log_text()
        assert '"unhandled error"' not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT, **kwargs)


def spawn_server(workdir: Path, name: str, migrate: bool = True, /, **settings: str) -> Server:
    """Starts the real server without waiting for it (see Server.wait_ready). The process
    runs in `workdir`, so a developer's .env in the project cannot change its settings."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ENV": "test",
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / name}.db",
            "JWT_SECRET": TEST_JWT_SECRET,
            "BCRYPT_ROUNDS": "4",
            "RATE_LIMIT_KEY_PREFIX": f"faults-{uuid.uuid4().hex}",
            "PUBLIC_URL": base,
            "LOG_FORMAT": "json",
            **settings,
        }
    )
    log = workdir / f"{name}.log"
    args = [sys.executable, "-m", "saas_app", "serve", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args if migrate else [*args, "--no-migrate"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(name, base, process, log)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Waits for the spawned servers to be ready; stops them all on the way out."""
    try:
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            _stop(server.process)


def migrate(database_url: str, workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url, "ENV": "test"}
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "saas_app", "migrate"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[OwnPostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run PostgreSQL as")
    cluster = OwnPostgres(bin_dir)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def own_postgres(postgres_cluster: OwnPostgres) -> OwnPostgres:
    """The module's cluster, running (a failed test may have left it stopped)."""
    if not postgres_cluster.running:
        postgres_cluster.start()
    return postgres_cluster


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    redis = OwnRedis(binary, tmp_path)
    try:
        redis.start()
        yield redis
    finally:
        redis.kill()


# -- HTTP helpers --------------------------------------------------------------------------


@dataclass
class Probe:
    what: str
    status: int
    seconds: float
    body: dict[str, Any]
    content_type: str
    retry_after: str | None = None


def timed(what: str, send: Callable[[], httpx.Response], bound: float = REQUEST_TIMEOUT) -> Probe:
    started = time.monotonic()
    try:
        response = send()
    except httpx.TimeoutException:
        pytest.fail(f"{what}: no answer within {REQUEST_TIMEOUT} s (a hang)")
    seconds = time.monotonic() - started
    assert seconds < bound, f"{what}: answered in {seconds:.2f} s, bound is {bound} s"
    lowered = response.text.lower()
    leaked = [word for word in LEAKS if word in lowered]
    assert not leaked, f"{what}: body leaks {leaked}: {response.text[:500]}"
    assert response.status_code < 500 or response.status_code in {502, 503}, (
        f"{what}: {response.status_code} {response.text[:500]}"
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return Probe(
        what,
        response.status_code,
        seconds,
        body,
        response.headers.get("content-type", ""),
        response.headers.get("retry-after"),
    )


def assert_unavailable(probe: Probe, code: str = "service_unavailable") -> None:
    assert probe.status == 503, f"{probe.what}: {probe.status} {probe.body}"
    # RFC 9110 §10.2.3: a 503 says when to come back, in seconds.
    assert probe.retry_after is not None, f"{probe.what}: 503 without Retry-After"
    assert probe.retry_after.isdigit(), f"{probe.what}: Retry-After {probe.retry_after!r}"
    assert int(probe.retry_after) >= 1
    if "/auth/token" in probe.what or probe.what.startswith("login"):
        # The token endpoint answers in RFC 6749 §5.2 form (issue 13 item 12).
        assert probe.content_type == "application/json", f"{probe.what}: {probe.content_type}"
        assert probe.body.get("error") == "temporarily_unavailable", f"{probe.what}: {probe.body}"
        return
    assert probe.content_type == PROBLEM, f"{probe.what}: {probe.content_type}"
    assert probe.body.get("code") == code, f"{probe.what}: {probe.body}"
    assert probe.body.get("status") == 503


def sign_up(http: httpx.Client) -> tuple[str, str]:
    """A new tenant; returns its slug and its owner's e-mail."""
    slug = f"faults-{uuid.uuid4().hex[:8]}"
    email = f"owner@{slug}.example.com"
    owner = {"email": email, "password": PASSWORD}
    created = http.post("/tenants", json={"slug": slug, "name": "Faults", "owner": owner})
    assert created.status_code == 201, created.text
    return slug, email


def password_login(http: httpx.Client, slug: str, email: str) -> httpx.Response:
    form = {"grant_type": "password", "username": email, "password": PASSWORD}
    return http.post(f"/t/{slug}/auth/token", data=form)


def is_ready(http: httpx.Client) -> bool:
    return http.get("/readyz").status_code == 200


def bearer_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def project_names(http: httpx.Client, slug: str, headers: dict[str, str]) -> set[str]:
    names: set[str] = set()
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = http.get(f"/t/{slug}/projects", params=params, headers=headers)
        assert page.status_code == 200, page.text
        names.update(p["name"] for p in page.json()["items"])
        if not page.json()["next_cursor"]:
            return names
        params["cursor"] = page.json()["next_cursor"]


class Writer(threading.Thread):
    """Creates projects one after another until stopped, noting every answer."""

    def __init__(self, server: Server, slug: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.slug = slug
        self.headers = headers
        self.answers: list[tuple[str, int | str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with self.server.client() as http:
            for n in range(100_000):
                if self.done.is_set():
                    return
                name = f"w-{n}"
                try:
                    response = http.post(
                        f"/t/{self.slug}/projects", json={"name": name}, headers=self.headers
                    )
                    self.answers.append((name, response.status_code))
                    leaked = [word for word in LEAKS if word in response.text.lower()]
                    if response.status_code not in {201, 503} or leaked:
                        self.answers.append((name, f"body: {response.text[:300]}"))
                except httpx.HTTPError as exc:  # a hang or a dropped connection: the test fails
                    self.answers.append((name, type(exc).__name__))
                self.done.wait(0.05)

    def accepted(self) -> set[str]:
        return {name for name, status in self.answers if status == 201}


def report(line: str) -> None:
    print(f"FAULT {line}")  # the figures docs/reliability.md quotes (pytest -rP shows them)


# -- (a) PostgreSQL stopped while the service runs ----------------------------------------------


def test_postgres_down_is_503_then_recovers_without_losing_writes(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    database_url = own_postgres.create_database()
    migrate(database_url, tmp_path)
    server = spawn_server(
        tmp_path,
        "pg",
        False,  # migrated above, with `python -m saas_app migrate`
        DATABASE_URL=database_url,
        RATE_LIMITS_ENABLED="false",  # the outage also meets the tenant lookup: its cache
        # holds nothing while the change signal cannot be read
    )
    with running(server), server.client() as http:
        slug, email = sign_up(http)
        headers = bearer_of(password_login(http, slug, email))
        before = {f"before-{n}" for n in range(3)}
        for name in sorted(before):
            created = http.post(f"/t/{slug}/projects", json={"name": name}, headers=headers)
            assert created.status_code == 201, created.text

        writer = Writer(server, slug, headers)
        writer.start()
        probes: list[Probe] = []
        try:
            _wait_for(lambda: len(writer.accepted()) >= 3, 10, "writer's first projects")
            own_postgres.stop()
            down_at = time.monotonic()

            # Rounds for OUTAGE_SECONDS: the first meets the pool's dead connections, the
            # next ones refused connects, the last ones an expired tenant cache as well.
            rounds = 0
            while rounds < 2 or time.monotonic() - down_at < OUTAGE_SECONDS:
                rounds += 1
                time.sleep(0.2)
                ready = timed("GET /readyz", lambda: http.get("/readyz"))
                assert_unavailable(ready, "not_ready")
                assert "database" in ready.body["down"], ready.body
                assert "database" in ready.body["detail"]
                probes.append(ready)
                for what, send in {
                    "GET /projects": lambda: http.get(f"/t/{slug}/projects", headers=headers),
                    "GET /users/me": lambda: http.get(f"/t/{slug}/users/me", headers=headers),
                    "POST /projects": lambda: http.post(
                        f"/t/{slug}/projects", json={"name": "during-outage"}, headers=headers
                    ),
                    "POST /auth/token (password)": lambda: password_login(http, slug, email),
                }.items():
                    probe = timed(what, send)
                    assert_unavailable(probe)
                    probes.append(probe)
            outage_seconds = time.monotonic() - down_at

            back_after = own_postgres.start()
            recovered_in = _wait_for(partial(is_ready, http), RECOVERY_TIMEOUT, "/readyz 200 again")
            so_far = len(writer.accepted())
            _wait_for(lambda: len(writer.accepted()) >= so_far + 3, 10, "writes after recovery")
        finally:
            writer.done.set()
            writer.join(timeout=REQUEST_TIMEOUT + 5)
        assert not writer.is_alive()

        # The service recovered by itself: logins and writes work again.
        headers = bearer_of(password_login(http, slug, email))
        after = http.post(f"/t/{slug}/projects", json={"name": "after"}, headers=headers)
        assert after.status_code == 201, after.text

        statuses = [status for _, status in writer.answers]
        assert set(statuses) <= {201, 503}, [a for a in writer.answers if a[1] not in {201, 503}]
        accepted = before | writer.accepted() | {"after"}
        stored = project_names(http, slug, headers)
        lost = accepted - stored
        assert not lost, f"accepted writes lost: {sorted(lost)}"
        assert "during-outage" not in stored  # a 503 write was not applied either
        phantom = stored - accepted
        # A write whose commit raced the shutdown may be stored though it got 503: not lost.
        assert phantom <= {name for name, status in writer.answers if status == 503}

    server.assert_no_unhandled_errors()
    # Every failed request alike is one log line per kind per 10 s, not one per request.
    outage_lines = server.log_text().count("database unavailable")
    assert outage_lines <= 5 * (outage_seconds / 10 + 1), outage_lines
    assert len(probes) > outage_lines
    slowest = max(p.seconds for p in probes)
    report(
        f"postgres-stop: {len(probes)} probes during {outage_seconds:.1f} s outage all 503 "
        f"(slowest {slowest:.2f} s); writer {len(writer.answers)} writes: "
        f"{statuses.count(201)} x 201, {statuses.count(503)} x 503, other 0; "
        f"pg back in {back_after:.2f} s, /readyz 200 {recovered_in:.2f} s later; "
        f"accepted {len(accepted)}, lost {len(lost)}, 503-but-stored {len(phantom)}"
    )


# -- (b) Redis down ---------------------------------------------------------------------------


def test_redis_down_falls_back_or_refuses_as_configured(own_redis: OwnRedis, tmp_path: Path) -> None:
    limit = 4
    common = {
        "REDIS_URL": own_redis.url,
        "RATE_LIMITS_ENABLED": "true",
        "LOGIN_RATE_LIMIT": f"{limit}/minute",
    }
    fail_open = spawn_server(tmp_path, "open", RATE_LIMIT_FAIL_OPEN="true", **common)
    fail_closed = spawn_server(tmp_path, "closed", RATE_LIMIT_FAIL_OPEN="false", **common)
    with (
        running(fail_open, fail_closed),
        fail_open.client() as open_http,
        fail_closed.client() as closed_http,
    ):
        accounts = {}
        for http in (open_http, closed_http):
            accounts[http] = sign_up(http)
            assert password_login(http, *accounts[http]).status_code == 200
            assert http.get("/readyz").status_code == 200

        own_redis.kill()
        down_at = time.monotonic()

        # RATE_LIMIT_FAIL_OPEN=true: logins go on, counted in process memory, still limited.
        logins = [
            timed("login, redis down, fail-open", lambda: password_login(open_http, *accounts[open_http]))
        ]
        while logins[-1].status == 200 and len(logins) <= limit:
            logins.append(
                timed("login, redis down, fail-open", lambda: password_login(open_http, *accounts[open_http]))
            )
        assert [p.status for p in logins] == [200] * limit + [429], [(p.status, p.body) for p in logins]
        assert logins[-1].body["error"] == "slow_down"
        ready = timed("GET /readyz, redis down", lambda: open_http.get("/readyz"))
        assert_unavailable(ready, "not_ready")
        assert ready.body["down"] == ["redis"]

        # RATE_LIMIT_FAIL_OPEN=false: a clear 503 (temporarily_unavailable), never a 500.
        refused = timed(
            "login, redis down, fail-closed", lambda: password_login(closed_http, *accounts[closed_http])
        )
        assert_unavailable(refused)
        ready_closed = timed("GET /readyz, redis down (closed)", lambda: closed_http.get("/readyz"))
        assert_unavailable(ready_closed, "not_ready")
        assert ready_closed.body["down"] == ["redis"]
        outage_seconds = time.monotonic() - down_at

        own_redis.start()
        recovered_in = max(
            _wait_for(partial(is_ready, http), RECOVERY_TIMEOUT, "/readyz 200")
            for http in (open_http, closed_http)
        )
        # Back on Redis (whose counters died with it), not on the exhausted in-process window.
        assert password_login(open_http, *accounts[open_http]).status_code == 200
        assert password_login(closed_http, *accounts[closed_http]).status_code == 200

    assert "rate-limit storage down" in fail_open.log_text()  # the fallback is not silent
    fail_open.assert_no_unhandled_errors()
    fail_closed.assert_no_unhandled_errors()
    slowest = max(p.seconds for p in [*logins, ready, refused, ready_closed])
    report(
        f"redis-kill: fail-open {limit} logins 200 then 429 (in-process limit); fail-closed login 503; "
        f"/readyz 503 [redis]; slowest answer {slowest:.2f} s; outage {outage_seconds:.1f} s; "
        f"/readyz 200 {recovered_in:.2f} s after redis restart; 500s 0"
    )


# -- (c) GitHub hanging ------------------------------------------------------------------------


def test_a_hanging_github_does_not_slow_other_routes(tmp_path: Path) -> None:
    timeout = 2.0
    hanging = 3
    fake = FakeGitHub(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with serve_in_thread(fake) as github:
        server = spawn_server(
            tmp_path,
            "github",
            GITHUB_CLIENT_ID=CLIENT_ID,
            GITHUB_CLIENT_SECRET=CLIENT_SECRET,
            GITHUB_AUTHORIZE_URL=f"{github}/login/oauth/authorize",
            GITHUB_TOKEN_URL=f"{github}/login/oauth/access_token",
            GITHUB_API_URL=github,
            GITHUB_TIMEOUT_SECONDS=str(timeout),
            OAUTH_ALLOWED_REDIRECTS=REDIRECT,
            RATE_LIMITS_ENABLED="false",
        )
        # spawn_server picked its own port; the fake must allow that server's callbacks.
        fake.callback_url = f"{server.base}/t/"
        with running(server), server.client() as http:
            slug, email = sign_up(http)
            headers = bearer_of(password_login(http, slug, email))
            browsers = [server.client(follow_redirects=False) for _ in range(hanging)]
            callbacks: list[str] = []
            for n, browser in enumerate(browsers):
                account = fake.add_account(
                    id=7_700_000 + n, login=f"hang{n}", emails=[(f"hang{n}@example.com", True, True)]
                )
                fake.sign_in_as(account)
                start = browser.get(f"/t/{slug}/auth/github/authorize", params={"redirect_uri": REDIRECT})
                assert start.status_code == 302, start.text
                assert browser.cookies[COOKIE]
                approved = httpx.get(start.headers["location"], follow_redirects=False, timeout=5)
                assert approved.status_code == 302, approved.text
                callbacks.append(approved.headers["location"])

            fake.fail("token", hang=timeout + 0.5, times=hanging)  # over by less than the fake's drain
            answers: list[tuple[int, str, float]] = []

            def call_back(browser: httpx.Client, url: str) -> None:
                started = time.monotonic()
                response = browser.get(url)
                answers.append((response.status_code, response.text, time.monotonic() - started))

            threads = [
                threading.Thread(target=call_back, args=(b, u), daemon=True)
                for b, u in zip(browsers, callbacks, strict=True)
            ]
            try:
                for thread in threads:
                    thread.start()

                def all_exchanging() -> bool:
                    exchanges = [r for r in fake.requests if r.path == "/login/oauth/access_token"]
                    return len(exchanges) >= hanging

                _wait_for(all_exchanging, 5, "callbacks waiting on GitHub")
                probes = []
                for _ in range(3):
                    probes += [
                        timed("GET /healthz", lambda: http.get("/healthz"), bound=1.0),
                        timed(
                            "GET /users/me",
                            lambda: http.get(f"/t/{slug}/users/me", headers=headers),
                            bound=1.0,
                        ),
                        timed(
                            "POST /projects",
                            lambda: http.post(f"/t/{slug}/projects", json={"name": "x"}, headers=headers),
                            bound=1.0,
                        ),
                    ]
                assert all(p.status in {200, 201} for p in probes), [(p.what, p.status) for p in probes]
                assert all(thread.is_alive() for thread in threads)  # still hanging meanwhile
            finally:
                for thread in threads:
                    thread.join(timeout=REQUEST_TIMEOUT)
                for browser in browsers:
                    browser.close()

    assert len(answers) == hanging
    for status, text, seconds in answers:
        assert status == 502, text
        assert json.loads(text)["code"] == "github_unavailable"
        assert timeout <= seconds < timeout + 2, seconds
    server.assert_no_unhandled_errors()
    slowest = max(p.seconds for p in probes)
    report(
        f"github-hang: {hanging} callbacks hung on the token endpoint -> 502 github_unavailable in "
        f"{min(a[2] for a in answers):.2f}-{max(a[2] for a in answers):.2f} s (timeout {timeout} s); "
        f"meanwhile {len(probes)} other requests answered, slowest {slowest * 1000:.0f} ms"
    )


# -- (d) Graceful shutdown -------------------------------------------------------------------


def _claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


async def _sessions_and_login_events(database_url: str) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            sessions = set((await connection.scalars(select(Session.id))).all())
            events = select(AuditEvent.target_id).where(AuditEvent.action == "login.succeeded")
            targets = {t for t in (await connection.scalars(events)).all() if t is not None}
    finally:
        await engine.dispose()
    return sessions, targets


def _refused(base: str) -> bool:
    host, port = base.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:  # e.g. a timeout: not proof of a closed listener, ask again
        return False


def test_sigterm_finishes_the_in_flight_login_and_writes_all_or_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # On the pass's kind of database (to keep the time down): SQLite in the first suite
    # pass, PostgreSQL (our own cluster, not DATABASE_URL's) in the second.
    backend = "postgresql" if ON_POSTGRES else "sqlite"
    settings = {"BCRYPT_ROUNDS": "14", "RATE_LIMITS_ENABLED": "false"}  # a login hashes for ~1 s
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shutdown.db'}"
    if backend == "postgresql":
        database_url = request.getfixturevalue("own_postgres").create_database()
    server = spawn_server(tmp_path, "shutdown", DATABASE_URL=database_url, **settings)  # serve migrates
    try:
        server.wait_ready()
        with server.client() as http:
            slug, email = sign_up(http)
        outcome: dict[str, Any] = {}

        def log_in() -> None:
            with server.client() as client:
                try:
                    outcome["response"] = password_login(client, slug, email)
                except httpx.HTTPError as exc:
                    outcome["error"] = exc
                outcome["at"] = time.monotonic()

        login = threading.Thread(target=log_in, daemon=True)
        login.start()
        time.sleep(0.3)  # the request is in, hashing
        assert login.is_alive(), outcome
        terminated_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        refused_in = _wait_for(lambda: _refused(server.base), 3, "new connections refused after SIGTERM")
        still_in_flight = login.is_alive()
        try:
            exit_code = server.process.wait(timeout=REQUEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit within 15 s of SIGTERM")
        exited_in = time.monotonic() - terminated_at
        login.join(timeout=5)
    finally:
        _stop(server.process)

    assert "error" not in outcome, f"in-flight login failed: {outcome.get('error')!r}"
    response: httpx.Response = outcome["response"]
    assert response.status_code == 200, response.text
    assert outcome["at"] > terminated_at  # it really was in flight when SIGTERM came
    assert still_in_flight, "new connections were refused only after the login had finished"
    assert exit_code == 0, f"exit code {exit_code}: {server.log_text()[-2000:]}"

    sid = uuid.UUID(_claims(response.json()["access_token"])["sid"])
    sessions, events = asyncio.run(_sessions_and_login_events(database_url))
    assert sid in sessions
    assert sid in events
    assert sessions == events, f"half-written logins: sessions {sessions ^ events}"
    server.assert_no_unhandled_errors()
    report(
        f"sigterm[{backend}]: in-flight login 200 {outcome['at'] - terminated_at:.2f} s after SIGTERM; "
        f"new connections refused after {refused_in:.2f} s; exit {exit_code} after {exited_in:.2f} s; "
        f"sessions {len(sessions)} = login events {len(events)}"
    )
