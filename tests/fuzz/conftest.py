"""What the schemathesis fuzz tests share: profiles, a populated tenant, and who calls.

Profiles (env `FUZZ_PROFILE`): `bounded` (default, run by `make test`) and `deep` (`make fuzz`).
Each fuzzed operation gets the suite's fresh database with one populated tenant in it, made
through the public API; `Callers` then decides, from each generated case's own content (so a
replayed case is sent exactly as before), whether it goes out as the tenant's owner, with an
API key, as another tenant's owner, with a forged or malformed credential, anonymously, or
untouched (random slug, no credential).
"""

from __future__ import annotations

import base64
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.core.parameters import ParameterLocation
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from saas_app.core.config import Settings
from saas_app.models import Base
from tests.conftest import REDIS_URL
from tests.factories import add_member, create_api_key, create_tenant, login
from tests.servers import running_server

PROFILE = os.environ.get("FUZZ_PROFILE", "bounded")
if PROFILE not in {"bounded", "deep"}:
    raise RuntimeError(f"FUZZ_PROFILE must be bounded or deep, not {PROFILE!r}")
DEEP = PROFILE == "deep"

# Hypothesis profiles for the fuzz tests only (applied per test, never loaded globally).
# The bounded one is derandomized (and the schema seeded), so `make test` sends much the same
# cases each run; schemathesis still steers by what the app answers.
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much]
settings.register_profile(
    "fuzz-bounded", max_examples=12, deadline=None, derandomize=True, suppress_health_check=_QUIET
)
settings.register_profile(
    "fuzz-deep", max_examples=250, deadline=None, suppress_health_check=_QUIET, stateful_step_count=12
)
FUZZ_SETTINGS = settings.get_profile(f"fuzz-{PROFILE}")

# Operations anyone may call; every other one must never answer 2xx/3xx to a caller without
# a credential of this tenant.
PUBLIC = {
    "GET /healthz",
    "GET /readyz",
    "GET /.well-known/jwks.json",
    "POST /tenants",
    "POST /t/{tenant}/auth/register",
    "POST /t/{tenant}/auth/token",
    "POST /t/{tenant}/auth/revoke",
    "POST /t/{tenant}/auth/password/forgot",
    "POST /t/{tenant}/auth/password/reset",
    "POST /t/{tenant}/auth/email/verify",
    "POST /t/{tenant}/auth/invitations/accept",
    "GET /t/{tenant}/.well-known/openid-configuration",
    "GET /.well-known/oauth-authorization-server/t/{tenant}",
    "GET /t/{tenant}/.well-known/jwks.json",
    "GET /t/{tenant}/auth/github/authorize",
    "GET /t/{tenant}/auth/github/callback",
}
ALLOWED_REDIRECT = "https://app.example.com/after-login"


def fuzz_overrides() -> dict[str, Any]:
    """Settings of the fuzzed app: GitHub configured (its routes answer, never reaching GitHub)."""
    return {
        "GITHUB_CLIENT_ID": "fuzz-client",
        "GITHUB_CLIENT_SECRET": "fuzz-secret",
        "OAUTH_ALLOWED_REDIRECTS": [ALLOWED_REDIRECT],
    }


def no_github(request: httpx.Request) -> httpx.Response:
    """The fuzzed app's outbound transport: GitHub is never reached (nor anything else)."""
    raise AssertionError(f"the fuzzed app called out to {request.url}")


@dataclass
class World:
    """One populated tenant (and a second one, whose owner is a stranger here)."""

    slug: str
    owner_token: str
    stranger_token: str
    api_key: str
    ids: dict[str, str]  # path parameter -> an id that exists
    values: dict[str, Any]  # body field -> a value that works (the owner's e-mail, password, ...)


@pytest.fixture
def fuzz_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**fuzz_overrides())


async def empty_database(url: str) -> None:
    """Deletes every row (the schema stays): a stateful scenario starts from nothing. The
    change feed's triggers (a DELETE's per row, a TRUNCATE's '*') empty every read cache."""
    engine = create_async_engine(url, poolclass=NullPool)
    data = list(Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        if url.startswith("postgresql"):
            tables = ", ".join(f'"{table.name}"' for table in data)
            await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
        else:
            for table in reversed(data):
                await connection.execute(table.delete())
    await engine.dispose()


@pytest.fixture
async def world(make_client: Callable[..., Any], fuzz_settings: Settings) -> World:
    """Made through the API in the test's fresh database, before the fuzzed app starts."""
    async with make_client(fuzz_settings) as client:
        tenant = await create_tenant(client)
        stranger = await create_tenant(client)
        owner = tenant.owner.headers
        member = await add_member(client, tenant)
        key = await create_api_key(client, tenant, "projects:read", "projects:write", "users:read")
        spare = await login(client, tenant.slug, tenant.owner.email)  # a session DELETE may end
        sessions = await client.get(tenant.path("/users/me/sessions"), headers=spare.headers)
        spare_sid = next(s["id"] for s in sessions.json()["items"] if s["current"])
        project = await client.post(tenant.path("/projects"), json={"name": "Fuzzed"}, headers=owner)
        role = await client.post(
            tenant.path("/roles"), json={"name": "fuzzer", "permissions": ["projects:read"]}, headers=owner
        )
        assert project.status_code == 201, project.text
        assert role.status_code == 201, role.text
        ids = {
            "user_id": member.id,
            "project_id": project.json()["id"],
            "key_id": key.id,
            "sid": spare_sid,
            "name": "fuzzer",
        }
        values = {
            "username": tenant.owner.email,
            "password": tenant.owner.password,
            "current_password": tenant.owner.password,
            "refresh_token": spare.refresh_token,
            "token": spare.refresh_token,
            "roles": ["fuzzer"],
        }
        return World(
            tenant.slug,
            tenant.owner.login.access_token,
            stranger.owner.login.access_token,
            key.key,
            ids,
            values,
        )


GRANT_FIELDS = {"password": ("username", "password"), "refresh_token": ("refresh_token",)}
CALLERS = ("owner", "owner", "api_key", "stranger", "forged", "anonymous", "as_generated")
CREDENTIAL_HEADERS = {"authorization", "x-api-key"}
WITHOUT_ACCESS = {"stranger", "forged", "anonymous", "as_generated"}


def forged_credentials(world: World) -> list[dict[str, str]]:
    """Credentials that must all be refused: tampered, unsigned, oversized, malformed."""
    header, claims, signature = world.owner_token.split(".")
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    return [
        {"Authorization": f"Bearer {header}.{claims}.{signature[::-1]}"},
        {"Authorization": f"Bearer {unsigned}.{claims}."},
        {"Authorization": "Bearer " + "A" * 6000},
        {"Authorization": f"Basic {base64.b64encode(b'owner:secret').decode()}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer mfa_{signature}"},
        {"X-API-Key": world.api_key[:-4]},
        {"X-API-Key": "sk_" + "\u00ff" * 16},
        {"X-API-Key": world.api_key, "Authorization": f"Bearer {world.owner_token}"},
    ]


def negative_at(case: Case, location: ParameterLocation) -> bool:
    return case.meta is not None and case.meta.is_negative_at(location)


@pytest.fixture
def fuzz_server(database_url: str, world: World, fuzz_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The real server on the test's database (with `world` in it), GitHub configured but
    pointing at a closed loopback port: no case can get that far without a valid state."""
    env = {
        "DATABASE_URL": database_url,
        "RATE_LIMIT_KEY_PREFIX": f"fuzz-{uuid.uuid4().hex}",
        "PUBLIC_URL": fuzz_settings.PUBLIC_URL,  # the issuer of the world's tokens
        "GITHUB_CLIENT_ID": "fuzz-client",
        "GITHUB_CLIENT_SECRET": "fuzz-secret",
        "GITHUB_TOKEN_URL": "http://127.0.0.1:9/login/oauth/access_token",
        "GITHUB_API_URL": "http://127.0.0.1:9",
        "OAUTH_ALLOWED_REDIRECTS": ALLOWED_REDIRECT,
        **({"REDIS_URL": REDIS_URL} if REDIS_URL else {}),
    }
    log_path = tmp_path / "server.log"
    with running_server(env, log_path) as (base, _):
        yield base
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-4000:]


@dataclass
class Callers:
    """Picks who sends each case and points it at the world's tenant, ids and secrets.

    The choice is a hash of the generated case, so a case Hypothesis replays or shrinks is
    sent the same way. Values the generator made invalid on purpose are left as they are.
    """

    world: World

    def prepare(self, case: Case) -> str:
        digest = zlib.crc32(repr((case.path_parameters, case.query, case.headers, case.body)).encode())
        caller = CALLERS[digest % len(CALLERS)]
        if caller != "as_generated":
            self._aim(case, caller, digest)
            # The document's security schemes make the generator send an Authorization or
            # X-API-Key of its own: the chosen caller's credential replaces them (both at once
            # would be 400 ambiguous_credentials every time).
            generated = {k: v for k, v in (case.headers or {}).items() if k.lower() not in CREDENTIAL_HEADERS}
            case.headers = {**generated, **self._credential(caller, digest)}
        return caller

    def _aim(self, case: Case, caller: str, digest: int) -> None:
        params = case.path_parameters
        if params and "tenant" in params and not negative_at(case, ParameterLocation.PATH):
            params["tenant"] = self.world.slug
            if caller in {"owner", "api_key"} and (digest >> 8) % 3:  # mostly ids that exist
                params.update({name: value for name, value in self.world.ids.items() if name in params})
        body = case.body
        # Half the time, the owner's real secrets (and those the body's grant needs).
        owners_secrets = caller == "owner" and (digest >> 10) % 2
        if owners_secrets and isinstance(body, dict) and not negative_at(case, ParameterLocation.BODY):
            grant = GRANT_FIELDS.get(str(body.get("grant_type")), ())
            body.update({k: v for k, v in self.world.values.items() if k in body or k in grant})
        if case.query is not None and "redirect_uri" in case.query and (digest >> 12) % 2:
            case.query["redirect_uri"] = ALLOWED_REDIRECT

    def _credential(self, caller: str, digest: int) -> dict[str, str]:
        if caller == "owner":
            return {"Authorization": f"Bearer {self.world.owner_token}"}
        if caller == "stranger":
            return {"Authorization": f"Bearer {self.world.stranger_token}"}
        if caller == "api_key":
            return {"X-API-Key": self.world.api_key}
        if caller == "forged":
            forged = forged_credentials(self.world)
            return forged[(digest >> 14) % len(forged)]
        return {}


@dataclass
class Stats:
    """What the fuzz tests sent and got back, summed over the run (printed at its end)."""

    operations: dict[str, set[int]] = field(default_factory=dict)  # label -> statuses seen
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    callers: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)

    def record(self, case: Case, caller: str, status: int) -> None:
        self.operations.setdefault(case.operation.label, set()).add(status)
        self.cases += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.callers[caller] = self.callers.get(caller, 0) + 1
        mode = case.meta.generation.mode.value if case.meta is not None else "explicit"
        self.modes[mode] = self.modes.get(mode, 0) + 1

    def summary(self) -> str:
        errors = sum(n for status, n in self.statuses.items() if status >= 500)
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        modes = ", ".join(f"{mode}: {n}" for mode, n in sorted(self.modes.items()))
        callers = ", ".join(f"{caller}: {n}" for caller, n in sorted(self.callers.items()))
        unreached = sorted(op for op, seen in self.operations.items() if not any(s < 400 for s in seen))
        return (
            f"fuzz profile {PROFILE}: {len(self.operations)} operations, {self.cases} cases, "
            f"{errors} responses >= 500\n  statuses {statuses}\n  modes {modes}\n  callers {callers}"
            f"\n  never answered < 400: {', '.join(unreached) or 'none'}"
        )


STATS: dict[str, Stats] = {}


@pytest.fixture(scope="session")
def fuzz_stats() -> Stats:
    return STATS.setdefault("in-process", Stats())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, stats in STATS.items():
        if stats.cases:
            terminalreporter.write_line(f"{name} {stats.summary()}")


def check_no_access_without_credential(case: Case, caller: str, status: int) -> None:
    """A caller without a credential of this tenant gets nothing from a non-public operation."""
    label = f"{case.method.upper()} {case.path}"
    if caller in WITHOUT_ACCESS and label not in PUBLIC:
        assert status >= 400, f"{label} answered {status} to {caller}"
