"""Limits hold across processes (issue 7, "Concurrency"): the real server with 4 uvicorn
workers sharing Redis, hit by many parallel connections. Per-account throttling cannot be
bypassed by parallel requests spread over the workers, and each per-IP limit allows N
requests in total, not N per worker.

Needs Redis (REDIS_URL); the database is the test's own (a SQLite file or PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.servers import running_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not REDIS_URL,
        reason="needs REDIS_URL (limits shared by 4 workers); e.g. REDIS_URL=redis://127.0.0.1:6379/15",
    ),
]
WORKERS = 4
CONNECTIONS = 40  # parallel connections, accepted by whichever worker the kernel picks
PASSWORD = "workers password that is long enough"
WRONG_PASSWORD = "not the right passphrase"
STEP_TIMEOUT = 60.0  # bound on any one batch of parallel requests
# Linux: /proc tells which worker holds each connection (elsewhere the spread goes unchecked).
SEE_CONNECTIONS = Path("/proc/net/tcp").exists()
Server = AbstractContextManager[tuple[str, int]]  # (base URL, pid of the server process)


@pytest.fixture
def serve(database_url: str, tmp_path: Path) -> Callable[..., Server]:
    """serve(**settings): the real server with 4 workers, Redis, rate limits on, a fresh
    limiter key prefix, and the test's database, plus `settings`."""

    def start(**settings: str) -> Server:
        assert REDIS_URL
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "RATE_LIMITS_ENABLED": "true",
            "RATE_LIMIT_FAIL_OPEN": "false",  # a Redis failure must show, not fall back per worker
            **settings,
        }
        return running_server(env, tmp_path / "server.log", workers=WORKERS)

    return start


# -- helpers ----------------------------------------------------------------------------------


async def in_parallel(
    count: int, request: Callable[[int], Awaitable[httpx.Response]]
) -> list[httpx.Response]:
    gathered = asyncio.gather(*(request(i) for i in range(count)))
    return list(await asyncio.wait_for(gathered, STEP_TIMEOUT))


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of the server side of established TCP connections on `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # TCP_ESTABLISHED
                inodes.add(fields[9])
    return inodes


def connections_per_worker(server_pid: int, port: int) -> Counter[int]:
    """How many established connections each worker process of the server holds."""
    inodes = _established_inodes(port)
    spread: Counter[int] = Counter()
    for pid in _children(server_pid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                spread[pid] += 1
    return spread


class Connections:
    """CONNECTIONS keep-alive connections to the server, one per client, opened one after
    the other: a burst of new connections would all be accepted by whichever worker wakes
    first, while connections that arrive one by one are spread by the kernel."""

    def __init__(self, base: str, server_pid: int) -> None:
        self.base, self.server_pid = base, server_pid
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.clients = [
            httpx.AsyncClient(base_url=base, limits=limits, timeout=10) for _ in range(CONNECTIONS)
        ]

    async def __aenter__(self) -> Connections:
        for client in self.clients:
            assert (await client.get("/healthz")).status_code == 200
            await asyncio.sleep(0.005)
        self.spread = self._check_spread()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.aclose()

    def __getitem__(self, i: int) -> httpx.AsyncClient:
        """The client (and so the connection) of the i-th request."""
        return self.clients[i % CONNECTIONS]

    def _check_spread(self) -> Counter[int]:
        if not SEE_CONNECTIONS:
            return Counter()
        port = httpx.URL(self.base).port
        assert port is not None
        spread = connections_per_worker(self.server_pid, port)
        assert sum(spread.values()) == CONNECTIONS, spread
        assert len(spread) >= 2, f"all connections went to one worker: {spread}"
        print(f"connections per worker: {sorted(spread.values(), reverse=True)}")
        return spread


async def create_tenant(http: httpx.AsyncClient) -> tuple[str, str]:
    slug = f"workers-{uuid.uuid4().hex[:8]}"
    email = f"owner@{slug}.example.com"
    owner = {"email": email, "password": PASSWORD}
    created = await http.post("/tenants", json={"slug": slug, "name": "Workers", "owner": owner})
    assert created.status_code == 201, created.text
    return slug, email


def assert_retry_after(response: httpx.Response, at_most: int) -> None:
    assert 1 <= int(response.headers["retry-after"]) <= at_most, response.headers


def assert_slow_down(response: httpx.Response, retry_at_most: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "slow_down"
    assert_retry_after(response, retry_at_most)


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


# -- the tests --------------------------------------------------------------------------------


async def test_parallel_guesses_over_four_workers_get_five_answers_in_total(
    serve: Callable[..., Server],
) -> None:
    """LOGIN_FAILURE_LIMIT=5/15minutes: 40 parallel wrong passwords for one account, over
    40 connections spread across the workers and each from its own (forwarded) address."""
    with serve(LOGIN_RATE_LIMIT="1000/minute", LOGIN_FAILURE_LIMIT="5/15minutes") as (base, pid):
        async with Connections(base, pid) as http:
            slug, email = await create_tenant(http[0])

            def guess(i: int) -> Awaitable[httpx.Response]:
                form = {"grant_type": "password", "username": email, "password": WRONG_PASSWORD}
                headers = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
                return http[i].post(f"/t/{slug}/auth/token", data=form, headers=headers)

            responses = await in_parallel(40, guess)
            answered = [r for r in responses if r.status_code == 400]
            assert len(answered) == 5, statuses(responses)  # at most 5, and no slot lost
            assert {r.json()["error"] for r in answered} == {"invalid_grant"}
            for response in responses:
                if response.status_code != 400:
                    assert_slow_down(response, retry_at_most=15 * 60)

            right = {"grant_type": "password", "username": email, "password": PASSWORD}
            assert_slow_down(await http[0].post(f"/t/{slug}/auth/token", data=right), 15 * 60)


async def test_the_per_ip_token_limit_allows_n_in_total_not_n_per_worker(
    serve: Callable[..., Server],
) -> None:
    """LOGIN_RATE_LIMIT=10/minute: of 40 parallel token requests from one address, 10 pass."""
    with serve(LOGIN_RATE_LIMIT="10/minute", LOGIN_FAILURE_LIMIT="1000/minute") as (base, pid):
        async with Connections(base, pid) as http:
            slug, _ = await create_tenant(http[0])

            def attempt(i: int) -> Awaitable[httpx.Response]:
                # Each for its own (unknown) account: only the per-IP limit can bind.
                form = {"grant_type": "password", "username": f"nobody-{i}@example.com", "password": PASSWORD}
                return http[i].post(f"/t/{slug}/auth/token", data=form)

            responses = await in_parallel(40, attempt)
            assert statuses(responses) == {400: 10, 429: 30}, statuses(responses)
            assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_grant"}
            for response in responses:
                if response.status_code == 429:
                    assert_slow_down(response, retry_at_most=60)


async def test_the_per_ip_register_limit_allows_n_in_total_not_n_per_worker(
    serve: Callable[..., Server],
) -> None:
    """REGISTER_RATE_LIMIT=5/minute: of 20 parallel sign-ups from one address, 5 pass."""
    with serve(REGISTER_RATE_LIMIT="5/minute") as (base, pid):
        async with Connections(base, pid) as http:
            slug, _ = await create_tenant(http[0])  # POST /tenants has its own bucket

            def register(i: int) -> Awaitable[httpx.Response]:
                body = {"email": f"signup-{i}@example.com", "password": PASSWORD}
                return http[i].post(f"/t/{slug}/auth/register", json=body)

            responses = await in_parallel(20, register)
            assert statuses(responses) == {201: 5, 429: 15}, statuses(responses)
            for response in responses:
                if response.status_code == 429:
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["code"] == "rate_limited"
                    assert_retry_after(response, 60)
