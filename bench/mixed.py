"""The mixed workload of issue 14: many users reading while a writer writes at W per second.

Each server gets its users through its own HTTP API (saas_app: tenants, then members who
register themselves; fastapi-users: one user table), each user logged in once. wrk reads
`GET …/users/me` round-robin over all of them (bench/lua/mixed_reads.lua), and for W > 0
bench/writer.py writes W times a second meanwhile, spread over the same users: saas_app
`POST /t/{t}/projects`, fastapi-users `PATCH /users/me` (a new email address: the only
field of its own that a user can change without hashing a password).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from servers import BENCH, PASSWORD, PROJECT_PYTHON, Server, expect
from wrk import WrkJob, WrkResult

READS_SCRIPT = BENCH / "lua" / "mixed_reads.lua"
WRITER = BENCH / "writer.py"
# saas_app servers of the mixed workload: tokens that outlive any run (users log in once),
# and cheap hashing, because signing up and logging in hundreds of users at bcrypt's
# default cost would take minutes; no measured request hashes a password.
SAAS_MIXED_SETTINGS = {"BCRYPT_ROUNDS": "4", "ACCESS_TOKEN_TTL_SECONDS": "86400"}
# bench/targets/peer_fastapi_users.py's JWTStrategy lifetime: its users are not logged in
# again (the writer changes their email addresses), so a longer run would read 401s.
PEER_TOKEN_TTL_S = 3600

Kind = Literal["saas", "peer"]


@dataclass(frozen=True, slots=True)
class MixedUser:
    email: str
    slug: str  # the tenant ("" for fastapi-users, which has none)
    token: str = ""


@dataclass
class MixedServer:
    """One server under the mixed workload, with its users and their access tokens.

    `key` names its column in the report: "saas", "peer", or "cold" (saas_app with the
    read cache off).
    """

    key: str
    kind: Kind
    server: Server
    directory: Path  # where the users file (for wrk) and the writer's plan go
    users: list[MixedUser] = field(default_factory=list)
    setup_seconds: float = 0.0

    @property
    def reads_file(self) -> Path:
        return self.directory / f"{self.key}-users.txt"

    @property
    def plan_file(self) -> Path:
        return self.directory / f"{self.key}-writes.json"

    def read_path(self, user: MixedUser) -> str:
        return f"/t/{user.slug}/users/me" if self.kind == "saas" else "/users/me"

    def write_url(self, user: MixedUser) -> str:
        base = self.server.base_url
        return f"{base}/t/{user.slug}/projects" if self.kind == "saas" else f"{base}/users/me"

    def set_up(self, count: int, tenants: int) -> None:
        """Signs the users up and logs each in once, then writes wrk's and the writer's files."""
        started = time.monotonic()
        with httpx.Client(base_url=self.server.base_url, timeout=60) as client:
            if self.kind == "saas":
                self.users = saas_sign_up(client, count, tenants)
            else:
                self.users = peer_sign_up(client, count)
            self.users = [log_in(client, self.kind, user) for user in self.users]
        self.write_files()
        self.setup_seconds = time.monotonic() - started

    def write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"{self.read_path(user)} {user.token}" for user in self.users]
        self.reads_file.write_text("\n".join(lines) + "\n")
        plan = {
            "method": "POST" if self.kind == "saas" else "PATCH",
            "body": "project" if self.kind == "saas" else "email",
            "users": [{"url": self.write_url(user), "token": user.token} for user in self.users],
        }
        self.plan_file.write_text(json.dumps(plan))

    def check(self) -> None:
        """Every user's token reads its own profile (200, its email); one write answers 2xx."""
        with httpx.Client(base_url=self.server.base_url, timeout=30) as client:
            for user in self.users:
                answer = client.get(self.read_path(user), headers=bearer(user))
                expect(answer, 200, f"{self.server.name}: GET {self.read_path(user)} as {user.email}")
                if answer.json().get("email") != user.email:
                    raise RuntimeError(f"{self.server.name}: {user.email}'s token read {answer.text[:200]}")
            # The writer's first request, by hand: a refused write stops the run here.
            plan = json.loads(self.plan_file.read_text())
            first = plan["users"][0]
            body = {"name": "bench check"} if plan["body"] == "project" else {"email": "check@example.com"}
            answer = client.request(
                plan["method"], first["url"], json=body, headers={"Authorization": f"Bearer {first['token']}"}
            )
            if not answer.is_success:
                raise RuntimeError(
                    f"{self.server.name}: write check: HTTP {answer.status_code}: {answer.text}"
                )

    def reads(self, connections: int, seconds: int, cpus: str) -> WrkJob:
        return WrkJob(
            url=self.server.base_url,  # the paths come from the users file
            connections=connections,
            seconds=seconds,
            cpus=cpus,
            script=READS_SCRIPT,
            env={"BENCH_USERS_FILE": str(self.reads_file)},
        )


def bearer(user: MixedUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


def saas_sign_up(client: httpx.Client, count: int, tenants: int) -> list[MixedUser]:
    """`count` users over `tenants` tenants: each tenant's owner (POST /tenants), then members
    who register themselves (role member: projects:read and projects:write).

    Listed tenant by tenant in turn (user i is in tenant i mod tenants), so that both the
    round-robin reads and the writer move to another tenant at every request.
    """
    users = []
    for i in range(count):
        slug, n = f"mixed-{i % tenants:02d}", i // tenants
        user = MixedUser(email=f"user{n}@{slug}.example.com", slug=slug)
        if n == 0:
            owner = {"email": user.email, "password": PASSWORD, "full_name": f"Owner of {slug}"}
            body: dict[str, Any] = {"slug": slug, "name": f"Mixed {i}", "owner": owner}
            expect(client.post("/tenants", json=body), 201, "POST /tenants")
        else:
            answer = client.post(f"/t/{slug}/auth/register", json={"email": user.email, "password": PASSWORD})
            expect(answer, 201, f"POST /t/{slug}/auth/register")
        users.append(user)
    return users


def peer_sign_up(client: httpx.Client, count: int) -> list[MixedUser]:
    users = [MixedUser(email=f"mixed{i}@example.com", slug="") for i in range(count)]
    for user in users:
        answer = client.post("/auth/register", json={"email": user.email, "password": PASSWORD})
        expect(answer, 201, "fastapi-users POST /auth/register")
    return users


def log_in(client: httpx.Client, kind: Kind, user: MixedUser) -> MixedUser:
    """The password grant (saas_app) or fastapi-users' JWT login: the user's access token."""
    if kind == "saas":
        form = {"grant_type": "password", "username": user.email, "password": PASSWORD}
        answer = client.post(f"/t/{user.slug}/auth/token", data=form)
    else:
        answer = client.post("/auth/jwt/login", data={"username": user.email, "password": PASSWORD})
    token = expect(answer, 200, f"log in {user.email}").json()["access_token"]
    return MixedUser(email=user.email, slug=user.slug, token=token)


# --- one cell: reads with wrk, writes beside them --------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """One measurement: a server's round-robin reads while its writer runs at `writes`/s."""

    target: MixedServer
    writes: int

    @property
    def key(self) -> str:
        return f"mixed-{self.target.key}-w{self.writes}"

    def run(self, connections: int, seconds: int, cpus: str) -> tuple[WrkResult, dict[str, Any] | None]:
        job = self.target.reads(connections, seconds, cpus)
        if self.writes == 0:
            return job.run(), None
        writer = Writer(self.target.plan_file, self.writes, cpus, max_seconds=seconds + 60)
        writer.start()
        try:
            reads = job.run()
        finally:
            writes = writer.stop()
        return reads, writes


class Writer:
    """bench/writer.py in its own process, pinned with wrk: started before the reads, stopped
    after them, so that the writes cover the whole measurement."""

    def __init__(self, plan: Path, rate: int, cpus: str, max_seconds: int) -> None:
        self.command = [
            "taskset",
            "-c",
            cpus,
            str(PROJECT_PYTHON),
            str(WRITER),
            "--plan",
            str(plan),
            "--rate",
            str(rate),
            "--max-seconds",
            str(max_seconds),
        ]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()  # "ready": its client is set up
        if line != "ready":
            _, err = self.process.communicate(timeout=30)
            raise RuntimeError(f"bench/writer.py did not start ({line!r}):\n{err}")

    def stop(self) -> dict[str, Any]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        if self.process.returncode != 0 or not out.strip():
            raise RuntimeError(f"bench/writer.py exited {self.process.returncode}:\n{err}")
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary
