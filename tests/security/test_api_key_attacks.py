"""API keys under attack: X-API-Key values the service must refuse (all alike), what it must
never store, equal work whether or not a prefix exists, and the bootstrap CLI.

Issue 5: "Unknown prefix, right prefix with wrong secret, revoked, expired, other tenant ->
401 with the same body; timing of the unknown-prefix path does not differ by more than
noise (do the same hash work)"; "a test reads the raw table and finds no secret".
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.api_keys import service as key_service
from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.security import crypto, opaque
from saas_app.security.crypto import SecretBox
from tests.conftest import ROOT
from tests.factories import ApiKey, TenantCtx, create_api_key, create_tenant

PROBLEM_JSON = "application/problem+json"
KEY_FORMAT = re.compile(r"sk_[0-9a-f]{16}_[A-Za-z0-9_-]{43,}")


@dataclass
class Scene:
    """A tenant with a live key (and a second one), and another tenant with a key of its own."""

    client: AsyncClient
    clock: FrozenClock
    tenant: TenantCtx
    other: TenantCtx
    key: ApiKey
    sibling: ApiKey
    foreign: ApiKey

    async def get(self, presented: str | bytes) -> Response:
        value = presented if isinstance(presented, bytes) else presented.encode()
        return await self.client.get(self.tenant.path("/projects"), headers=[(b"X-API-Key", value)])

    async def revoked(self) -> str:
        dead = await create_api_key(self.client, self.tenant)
        r = await self.client.delete(
            self.tenant.path(f"/api-keys/{dead.id}"), headers=self.tenant.owner.headers
        )
        assert r.status_code == 204, r.text
        return dead.key

    async def expired(self) -> str:
        dead = await create_api_key(self.client, self.tenant, expires_in_days=1)
        assert (await self.get(dead.key)).status_code == 200
        self.clock.advance(days=1, seconds=1)
        return dead.key


@pytest.fixture
async def scene(client: AsyncClient, clock: FrozenClock) -> Scene:
    tenant, other = await create_tenant(client), await create_tenant(client)
    key, sibling = await create_api_key(client, tenant), await create_api_key(client, tenant)
    return Scene(client, clock, tenant, other, key, sibling, await create_api_key(client, other))


def unknown_prefix(s: Scene) -> str:
    return f"sk_{secrets.token_hex(8)}_{s.key.secret}"


def wrong_secret(s: Scene) -> str:
    return f"{s.key.prefix}_{secrets.token_urlsafe(32)}"


BAD_KEYS: dict[str, Callable[[Scene], str | bytes | Awaitable[str]]] = {
    "unknown-prefix": unknown_prefix,
    "right-prefix-wrong-secret": wrong_secret,
    "right-secret-another-keys-prefix": lambda s: f"{s.sibling.prefix}_{s.key.secret}",
    "truncated": lambda s: s.key.key[:-1],
    "extra-characters": lambda s: s.key.key + "A",
    "revoked": Scene.revoked,
    "expired": Scene.expired,
    "other-tenants-key": lambda s: s.foreign.key,
    "empty": lambda _: "",
    "scheme-only": lambda _: "sk_",
    "bearer-jwt-as-key": lambda s: s.tenant.owner.login.access_token,
    "10-kb": lambda _: "A" * 10_240,
    "right-prefix-10-kb-secret": lambda s: f"{s.key.prefix}_{'A' * 10_240}",
    "non-hex-prefix": lambda s: f"sk_{'g' * 16}_{s.key.secret}",
    "unicode": lambda s: f"sk_ключ{'é' * 12}_{s.key.secret}".encode(),
}


@pytest.mark.parametrize("make", BAD_KEYS.values(), ids=list(BAD_KEYS))
async def test_bad_key_is_401_with_the_same_body(
    scene: Scene, make: Callable[[Scene], str | bytes | Awaitable[str]]
) -> None:
    presented = make(scene)
    if inspect.isawaitable(presented):
        presented = await presented
    r = await scene.get(presented)
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.headers["www-authenticate"] == f'Bearer realm="{scene.tenant.slug}", error="invalid_token"'
    reference = await scene.get(unknown_prefix(scene))
    assert r.json() == reference.json()
    assert r.json().keys() == {"type", "title", "status", "detail", "code"}
    for secret in (scene.key.secret, scene.key.prefix, scene.foreign.prefix):
        assert secret not in r.text


async def test_the_valid_key_the_forgeries_derive_from_is_accepted(scene: Scene) -> None:
    for key in (scene.key, scene.sibling):
        r = await scene.get(key.key)
        assert r.status_code == 200, r.text


# -- at rest ---------------------------------------------------------------------------------


async def test_no_secret_at_rest_only_a_keyed_hash(
    scene: Scene, database_url: str, settings: Settings
) -> None:
    key = scene.key
    assert (await scene.get(key.key)).status_code == 200  # used: last_used_at written too
    await scene.client.app.state.runtime.key_usage.drain()  # type: ignore[attr-defined]
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            keys = [tuple(row) for row in await connection.execute(text("SELECT * FROM api_key"))]
            audit = [tuple(row) for row in await connection.execute(text("SELECT * FROM audit_event"))]
            (stored,) = await connection.scalars(
                text("SELECT secret_hash FROM api_key WHERE prefix = :p"), {"p": key.prefix[3:]}
            )
    finally:
        await engine.dispose()
    assert len(keys) == 3
    dump = " ".join(str(value) for row in keys + audit for value in row)
    for plaintext in (key.secret, key.key, scene.sibling.secret, scene.foreign.secret):
        assert plaintext not in dump
    assert stored not in (
        hashlib.sha256(key.secret.encode()).hexdigest(),
        hashlib.sha256(key.key.encode()).hexdigest(),
    )
    # Keyed: HMAC-SHA256 under the server's ENCRYPTION_KEY, which the table alone does not give.
    assert stored == SecretBox(settings.ENCRYPTION_KEY).keyed_digest(key.secret)
    assert stored != SecretBox("some-other-server-key").keyed_digest(key.secret)


# -- equal work ------------------------------------------------------------------------------


@dataclass
class Work:
    hmacs: int = 0
    comparisons: int = 0


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    """Counts keyed-hash computations and constant-time comparisons."""
    counted = Work()
    real_hmac, real_same = crypto._hmac, opaque.same

    def hmac(key: bytes, value: str) -> str:
        counted.hmacs += 1
        return real_hmac(key, value)

    def same(a: str, b: str) -> bool:
        counted.comparisons += 1
        return real_same(a, b)

    monkeypatch.setattr(crypto, "_hmac", hmac)
    monkeypatch.setattr(key_service, "same", same)
    return counted


ENCRYPTION_KEYS = {"one-key": "first-server-key", "rotating-two-keys": "second-server-key,first-server-key"}


@pytest.mark.parametrize("encryption_key", ENCRYPTION_KEYS.values(), ids=list(ENCRYPTION_KEYS))
async def test_an_unknown_prefix_does_the_same_hash_work_as_a_valid_key(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], AbstractAsyncContextManager[AsyncClient]],
    clock: FrozenClock,
    work: Work,
    encryption_key: str,
) -> None:
    async with make_client(make_settings(ENCRYPTION_KEY=encryption_key)) as client:
        tenant, other = await create_tenant(client), await create_tenant(client)
        key, foreign = await create_api_key(client, tenant), await create_api_key(client, other)
        s = Scene(client, clock, tenant, other, key, key, foreign)
        revoked = await s.revoked()
        cases = {
            "valid": key.key,
            "unknown-prefix": unknown_prefix(s),
            "wrong-secret": wrong_secret(s),
            "malformed": "not-a-key",
            "revoked": revoked,
            "other-tenant": foreign.key,
        }
        counts: dict[str, Work] = {}
        for name, presented in cases.items():
            work.hmacs = work.comparisons = 0
            r = await s.get(presented)
            assert r.status_code == (200 if name == "valid" else 401), (name, r.text)
            counts[name] = Work(work.hmacs, work.comparisons)
    keys = len(encryption_key.split(","))
    assert {name: c.hmacs for name, c in counts.items()} == dict.fromkeys(cases, keys)
    # A secret that matches nothing is compared under every key, found prefix or not; a
    # matching one (valid, revoked, foreign) may stop at the first digest that matches.
    unmatched = ("unknown-prefix", "wrong-secret", "malformed")
    assert [counts[name].comparisons for name in unmatched] == [keys] * len(unmatched)
    assert all(c.comparisons >= 1 for c in counts.values())


# -- the bootstrap CLI -----------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(database_url: str, settings: Settings) -> Callable[..., Awaitable[Run]]:
    """`python -m saas_app create-api-key ...` on the test database, as an operator runs it."""

    async def run(*args: str) -> Run:
        env = {
            **os.environ,
            "ENV": "test",
            "DATABASE_URL": database_url,
            "JWT_SECRET": settings.JWT_SECRET,
            "ENCRYPTION_KEY": settings.ENCRYPTION_KEY,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "saas_app", "create-api-key", *args,
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return Run(process.returncode, stdout.decode(), stderr.decode())

    return run


@pytest.fixture
async def tenant(client: AsyncClient) -> TenantCtx:
    return await create_tenant(client)


async def test_cli_prints_only_a_key_that_has_exactly_its_scopes(
    client: AsyncClient, tenant: TenantCtx, cli: Callable[..., Awaitable[Run]]
) -> None:
    run = await cli("--tenant", tenant.slug, "--name", "ci", "--scopes", "projects:read")
    assert run.returncode == 0, run.stderr
    key = run.stdout.removesuffix("\n")
    assert KEY_FORMAT.fullmatch(key), run.stdout
    assert key.split("_", 2)[2] not in run.stderr
    headers = {"X-API-Key": key}
    r = await client.get(tenant.path("/projects"), headers=headers)
    assert r.status_code == 200, r.text
    r = await client.post(tenant.path("/projects"), json={"name": "x"}, headers=headers)
    assert r.status_code == 403, r.text
    r = await client.get(tenant.path("/api-keys"), headers=tenant.owner.headers)
    (item,) = r.json()["items"]
    assert (item["name"], item["created_by"], key.startswith(item["prefix"] + "_")) == ("ci", None, True)


async def test_a_key_minted_by_a_cli_key_names_its_parent(
    client: AsyncClient, tenant: TenantCtx, cli: Callable[..., Awaitable[Run]]
) -> None:
    """A CLI key has no creator; its children must still show where they came from, stay
    within its scopes and die with it (issue 13, item 5)."""
    run = await cli("--tenant", tenant.slug, "--name", "ci", "--scopes", "api_keys:manage,projects:read")
    assert run.returncode == 0, run.stderr
    parent = {"X-API-Key": run.stdout.strip()}
    wider = {"name": "wider", "scopes": ["projects:write"]}
    r = await client.post(tenant.path("/api-keys"), json=wider, headers=parent)
    assert r.status_code == 403, r.text
    r = await client.post(
        tenant.path("/api-keys"), json={"name": "child", "scopes": ["projects:read"]}, headers=parent
    )
    assert r.status_code == 201, r.text
    child = r.json()
    listed = (await client.get(tenant.path("/api-keys"), headers=tenant.owner.headers)).json()["items"]
    (ci,) = [k for k in listed if k["name"] == "ci"]
    assert (child["created_by"], child["parent_id"]) == (None, ci["id"])
    assert (
        await client.get(tenant.path("/projects"), headers={"X-API-Key": child["key"]})
    ).status_code == 200
    revoked = await client.delete(tenant.path(f"/api-keys/{ci['id']}"), headers=tenant.owner.headers)
    assert revoked.status_code == 204, revoked.text
    assert (
        await client.get(tenant.path("/projects"), headers={"X-API-Key": child["key"]})
    ).status_code == 401


CLI_FAILURES: dict[str, Callable[[TenantCtx], list[str]]] = {
    "unknown-scope": lambda t: ["--tenant", t.slug, "--name", "ci", "--scopes", "projects:read,root"],
    "no-scope": lambda t: ["--tenant", t.slug, "--name", "ci", "--scopes", ","],
    "unknown-tenant": lambda _: ["--tenant", "no-such-tenant", "--name", "ci", "--scopes", "projects:read"],
}


@pytest.mark.parametrize("make_args", CLI_FAILURES.values(), ids=list(CLI_FAILURES))
async def test_cli_refuses_and_issues_nothing(
    client: AsyncClient,
    tenant: TenantCtx,
    cli: Callable[..., Awaitable[Run]],
    make_args: Callable[[TenantCtx], list[str]],
) -> None:
    run = await cli(*make_args(tenant))
    assert run.returncode != 0
    assert run.stdout == ""
    r = await client.get(tenant.path("/api-keys"), headers=tenant.owner.headers)
    assert r.json()["items"] == []


async def test_a_remembered_key_gives_no_way_in_to_anything_else(
    client: AsyncClient, clock: FrozenClock
) -> None:
    """A key that passed its hash check is remembered by its exact string until the
    database changes. Every attack below is made once the genuine key is remembered."""
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    key = await create_api_key(client, tenant, "projects:read", expires_in_days=1)
    assert (await client.get(tenant.path("/projects"), headers=key.headers)).status_code == 200
    changed = key.key[:-1] + ("A" if key.key[-1] != "A" else "B")
    assert (await client.get(tenant.path("/projects"), headers={"X-API-Key": changed})).status_code == 401
    assert (await client.get(other.path("/projects"), headers=key.headers)).status_code == 401
    clock.advance(days=1, seconds=1)
    assert (await client.get(tenant.path("/projects"), headers=key.headers)).status_code == 401
