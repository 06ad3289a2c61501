"""/t/{tenant}/api-keys and the X-API-Key principal (API.md "API keys", "Principals", "Abuse
limits"; docs/decisions.md "API keys act for their creator": scopes ∩ the creator's current
permissions, a deactivated creator stops the key)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.api_keys import service as key_service
from saas_app.api_keys.models import ApiKey as ApiKeyRow
from saas_app.api_keys.service import UsageRecorder
from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.rbac.permissions import PERMISSIONS
from tests.factories import (
    DEFAULT_PASSWORD,
    ApiKey,
    Login,
    Member,
    TenantCtx,
    add_member,
    create_api_key,
    create_tenant,
    login,
)

PROBLEM_JSON = "application/problem+json"
KEY_FORMAT = re.compile(r"sk_([0-9a-f]{16})_([A-Za-z0-9_-]{43,})")
CREATED_FIELDS = {"id", "name", "key", "prefix", "scopes", "expires_at", "created_at"}


Credential = Member | Login | ApiKey  # a bearer token or an X-API-Key


@dataclass
class Api:
    """One tenant, driven through the API; its owner is signed in."""

    client: AsyncClient
    tenant: TenantCtx

    async def call(self, method: str, suffix: str, who: Credential | None = None, **kw: Any) -> Response:
        """`method` on /t/{slug}{suffix} as `who` (default: the owner)."""
        headers = (who or self.tenant.owner).headers
        return await self.client.request(method, self.tenant.path(suffix), headers=headers, **kw)

    async def projects(self, key: ApiKey, *, write: bool = False) -> Response:
        """GET /projects with the key, or POST one (which needs projects:write)."""
        if write:
            return await self.call("POST", "/projects", key, json={"name": f"p-{uuid.uuid4().hex[:6]}"})
        return await self.call("GET", "/projects", key)

    async def issue(self, body: dict[str, Any], who: Credential | None = None) -> Response:
        return await self.call("POST", "/api-keys", who, json=body)

    async def revoke(self, key_id: str) -> Response:
        return await self.call("DELETE", f"/api-keys/{key_id}")

    async def listed(self, **params: Any) -> dict[str, Any]:
        r = await self.call("GET", "/api-keys", params=params)
        assert r.status_code == 200, r.text
        page: dict[str, Any] = r.json()
        return page

    async def events(self, action: str) -> Response:
        """The audit events of one action, read with a fresh owner login (the clock may move)."""
        owner = await login(self.client, self.tenant.slug, self.tenant.owner.email)
        r = await self.call("GET", "/audit-events", owner, params={"action": action})
        assert r.status_code == 200, r.text
        return r


@pytest.fixture
async def api(client: AsyncClient) -> Api:
    return Api(client, await create_tenant(client))


@pytest.fixture
def usage(client: AsyncClient) -> UsageRecorder:
    recorder: UsageRecorder = client.app.state.runtime.key_usage  # type: ignore[attr-defined]
    return recorder


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch, clock: FrozenClock) -> None:
    """The per-process once-a-minute throttle reads time.monotonic: make it follow the clock
    (in the service module only; the event loop keeps the real one)."""
    monkeypatch.setattr(key_service, "time", SimpleNamespace(monotonic=lambda: clock.now().timestamp()))


def assert_problem(r: Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["code"] == code


def assert_forbidden(r: Response, slug: str, permission: str) -> None:
    assert_problem(r, 403, "forbidden")
    assert permission in r.json()["detail"]
    challenge = f'Bearer realm="{slug}", error="insufficient_scope", scope="{permission}"'
    assert r.headers["www-authenticate"] == challenge


def assert_invalid_token(r: Response, slug: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == f'Bearer realm="{slug}", error="invalid_token"'


# -- issuing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [None, 1, 3650], ids=["no-expiry", "1-day", "3650-days"])
async def test_create_answers_the_key_once_in_its_format(
    api: Api, clock: FrozenClock, days: int | None
) -> None:
    r = await api.issue(
        {"name": "ci", "scopes": ["projects:read"]} | ({"expires_in_days": days} if days else {})
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created.keys() >= CREATED_FIELDS
    match = KEY_FORMAT.fullmatch(created["key"])
    assert match, created["key"]
    assert created["prefix"] == f"sk_{match[1]}"
    assert created["key"].startswith(created["prefix"] + "_")
    assert (created["name"], created["scopes"]) == ("ci", ["projects:read"])
    assert datetime.fromisoformat(created["created_at"]) == clock.now()
    expected = clock.now() + timedelta(days=days) if days else None
    assert (datetime.fromisoformat(created["expires_at"]) if created["expires_at"] else None) == expected
    assert "no-store" in r.headers["cache-control"]


async def test_list_shows_keys_without_the_key_or_its_secret(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "projects:read")
    r = await api.call("GET", "/api-keys")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page.keys() == {"items", "next_cursor"}
    assert page["next_cursor"] is None
    (item,) = page["items"]
    assert (item["id"], item["prefix"], item["scopes"]) == (key.id, key.prefix, ["projects:read"])
    assert item["last_used_at"] is None
    assert not {"key", "secret", "secret_hash"} & item.keys()
    assert key.secret not in r.text


async def test_list_pages_with_a_cursor_and_hides_revoked_keys(api: Api) -> None:
    keys = [await create_api_key(api.client, api.tenant) for _ in range(3)]
    assert (await api.revoke(keys[0].id)).status_code == 204
    first = await api.listed(limit=1)
    assert len(first["items"]) == 1
    assert first["next_cursor"]
    second = await api.listed(limit=1, cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    assert {i["id"] for i in first["items"] + second["items"]} == {keys[1].id, keys[2].id}


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("member", 403), ("admin", 201)])
async def test_issuing_needs_api_keys_manage(api: Api, role: str, status: int) -> None:
    user = await add_member(api.client, api.tenant, role)
    r = await api.issue({"name": "ci", "scopes": ["projects:read"]}, user)
    assert r.status_code == status, r.text
    if status == 403:
        assert_forbidden(r, api.tenant.slug, "api_keys:manage")
        assert_forbidden(await api.call("GET", "/api-keys", user), api.tenant.slug, "api_keys:manage")


INVALID_BODIES: dict[str, dict[str, Any]] = {
    "expires-0-days": {"name": "k", "scopes": ["projects:read"], "expires_in_days": 0},
    "expires-3651-days": {"name": "k", "scopes": ["projects:read"], "expires_in_days": 3651},
    "unknown-scope": {"name": "k", "scopes": ["projects:delete"]},
    "empty-scopes": {"name": "k", "scopes": []},
    "missing-scopes": {"name": "k"},
    "blank-name": {"name": "  ", "scopes": ["projects:read"]},
    "rate-limit-often": {"name": "k", "scopes": ["projects:read"], "rate_limit": "often"},
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=list(INVALID_BODIES))
async def test_invalid_body_is_422_and_issues_nothing(api: Api, body: dict[str, Any]) -> None:
    r = await api.issue(body)
    assert_problem(r, 422, "validation_error")
    assert r.json()["errors"]
    assert (await api.listed())["items"] == []


@pytest.mark.parametrize(
    "scopes", [["tenant:manage"], ["projects:read", "tenant:manage"]], ids=["only", "mixed"]
)
async def test_a_scope_the_creator_lacks_is_403_naming_it(api: Api, scopes: list[str]) -> None:
    admin = await add_member(api.client, api.tenant, "admin")
    r = await api.issue({"name": "k", "scopes": scopes}, admin)
    assert_problem(r, 403, "forbidden")
    assert "tenant:manage" in r.json()["detail"]
    assert (await api.listed())["items"] == []


# -- using a key --------------------------------------------------------------------------------


async def test_a_key_has_exactly_its_scopes(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "projects:read")
    r = await api.projects(key)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []
    assert_forbidden(await api.projects(key, write=True), api.tenant.slug, "projects:write")
    assert_forbidden(await api.call("GET", "/api-keys", key), api.tenant.slug, "api_keys:manage")


async def test_a_users_read_key_lists_users_but_cannot_manage_them(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "users:read")
    member = await add_member(api.client, api.tenant)
    r = await api.call("GET", "/users", key)
    assert r.status_code == 200, r.text
    assert {u["email"] for u in r.json()["items"]} == {api.tenant.owner.email, member.email}
    r = await api.call("PUT", f"/users/{member.id}/roles", key, json={"roles": ["admin"]})
    assert_forbidden(r, api.tenant.slug, "roles:manage")
    r = await api.call("PATCH", f"/users/{member.id}", key, json={"is_active": False})
    assert_forbidden(r, api.tenant.slug, "users:manage")


async def test_what_a_key_does_is_attributed_to_the_key(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "projects:write", "roles:manage")
    r = await api.projects(key, write=True)
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == key.id
    r = await api.call("POST", "/roles", key, json={"name": "robots", "permissions": ["projects:write"]})
    assert r.status_code == 201, r.text
    (event,) = (await api.events("role.created")).json()["items"]
    assert event["actor"] == {"type": "api_key", "id": key.id}  # amr: ["api_key"]


async def test_a_key_issues_keys_only_within_its_own_rights(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "api_keys:manage", "projects:read")
    r = await api.issue({"name": "k", "scopes": ["projects:write"]}, key)
    assert_problem(r, 403, "forbidden")
    assert "projects:write" in r.json()["detail"]
    r = await api.issue({"name": "k", "scopes": ["projects:read"]}, key)
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == api.tenant.owner.id  # it acts for the same creator


async def test_a_key_never_does_more_than_its_creator_now(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "projects:read", "projects:write")
    assert (await api.projects(key, write=True)).status_code == 201
    co_owner = await add_member(api.client, api.tenant, "owner")
    r = await api.call("PUT", f"/users/{api.tenant.owner.id}/roles", co_owner, json={"roles": ["viewer"]})
    assert r.status_code == 200, r.text
    assert_forbidden(await api.projects(key, write=True), api.tenant.slug, "projects:write")
    assert (await api.projects(key)).status_code == 200


async def test_a_deactivated_creators_keys_stop_working(api: Api) -> None:
    admin = await add_member(api.client, api.tenant, "admin")
    key = await create_api_key(api.client, api.tenant, "projects:read", by=admin)
    assert (await api.projects(key)).status_code == 200
    r = await api.call("PATCH", f"/users/{admin.id}", json={"is_active": False})
    assert r.status_code == 200, r.text
    assert_invalid_token(await api.projects(key), api.tenant.slug)


async def test_a_key_of_tenant_a_is_401_under_tenant_b(api: Api) -> None:
    other = Api(api.client, await create_tenant(api.client))
    key = await create_api_key(api.client, api.tenant, "projects:read")
    r = await other.projects(key)
    assert_invalid_token(r, other.tenant.slug)
    assert other.tenant.id not in r.text


CREDENTIAL_PAIRS: dict[str, Callable[[TenantCtx, str], dict[str, str]]] = {
    "valid-bearer-and-valid-key": lambda t, key: {**t.owner.headers, "X-API-Key": key},
    "garbage-bearer-and-valid-key": lambda _, key: {"Authorization": "Bearer nope", "X-API-Key": key},
    "valid-bearer-and-empty-key": lambda t, _: {**t.owner.headers, "X-API-Key": ""},
}


@pytest.mark.parametrize("make_headers", CREDENTIAL_PAIRS.values(), ids=list(CREDENTIAL_PAIRS))
async def test_a_bearer_token_and_a_key_together_are_ambiguous(
    api: Api, make_headers: Callable[[TenantCtx, str], dict[str, str]]
) -> None:
    key = await create_api_key(api.client, api.tenant, "projects:read")
    r = await api.client.get(api.tenant.path("/projects"), headers=make_headers(api.tenant, key.key))
    assert_problem(r, 400, "ambiguous_credentials")


HUMAN_ONLY: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/users/me", None),
    ("PATCH", "/users/me", {"full_name": "Robot"}),
    ("POST", "/users/me/password", {"current_password": DEFAULT_PASSWORD, "new_password": "robots rule ok"}),
    ("GET", "/users/me/sessions", None),
    ("DELETE", f"/users/me/sessions/{uuid.uuid4()}", None),
    ("POST", "/users/me/mfa/totp", {"password": DEFAULT_PASSWORD}),
    ("POST", "/users/me/mfa/totp/confirm", {"code": "123456"}),
    ("DELETE", "/users/me/mfa/totp", {"code": "123456"}),
    ("POST", "/users/me/mfa/recovery-codes", {"code": "123456"}),
    ("POST", "/users/me/identities/github", None),
    ("DELETE", "/users/me/identities/github", None),
    ("POST", "/auth/logout", None),
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    HUMAN_ONLY,
    ids=[f"{m}-{s.split('/sessions/')[0]}" for m, s, _ in HUMAN_ONLY],
)
async def test_personal_routes_refuse_keys(
    api: Api, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    key = await create_api_key(api.client, api.tenant, *PERMISSIONS)  # every permission there is
    assert_problem(await api.call(method, suffix, key, json=body), 403, "human_only")
    # The owner behind the key is untouched: same name, same password, session alive.
    r = await api.call("GET", "/users/me")
    assert (r.status_code, r.json()["full_name"]) == (200, "Owner")
    await login(api.client, api.tenant.slug, api.tenant.owner.email)


# -- revocation and expiry ------------------------------------------------------------------


async def test_revocation_applies_to_the_very_next_request(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant)
    assert (await api.projects(key)).status_code == 200
    assert (await api.revoke(key.id)).status_code == 204
    assert_invalid_token(await api.projects(key), api.tenant.slug)
    assert_problem(await api.revoke(key.id), 404, "api_key_not_found")


@pytest.mark.parametrize("whose", ["other-tenant", "nobody"])
async def test_revoking_a_key_that_is_not_ours_is_404(api: Api, whose: str) -> None:
    other = Api(api.client, await create_tenant(api.client))
    theirs = await create_api_key(api.client, other.tenant)
    r = await api.revoke(theirs.id if whose == "other-tenant" else str(uuid.uuid4()))
    assert_problem(r, 404, "api_key_not_found")
    assert (await other.projects(theirs)).status_code == 200


async def test_a_key_expires_after_its_days(api: Api, clock: FrozenClock) -> None:
    key = await create_api_key(api.client, api.tenant, expires_in_days=1)
    clock.advance(days=1, seconds=-1)
    assert (await api.projects(key)).status_code == 200
    clock.advance(seconds=2)
    assert_invalid_token(await api.projects(key), api.tenant.slug)


# -- last_used_at: written in the background, at most once a minute per key ---------------------


@pytest.mark.usefixtures("monotonic")
async def test_last_used_at_lags_use_by_at_most_a_minute(
    api: Api, clock: FrozenClock, usage: UsageRecorder, database_url: str
) -> None:
    key = await create_api_key(api.client, api.tenant)
    engine, table = create_async_engine(database_url), ApiKeyRow.__table__

    async def use_then_stored() -> datetime | None:
        """Uses the key, waits for the background write, reads the raw column."""
        assert (await api.projects(key)).status_code == 200
        await usage.drain()
        async with engine.connect() as connection:
            query = select(table.c.last_used_at).where(table.c.id == uuid.UUID(key.id))
            stored: datetime | None = await connection.scalar(query)
            return stored

    try:
        first = clock.now()
        assert await use_then_stored() == first
        (item,) = (await api.listed())["items"]
        assert datetime.fromisoformat(item["last_used_at"]) == first
        clock.advance(seconds=30)
        assert await use_then_stored() == first  # no write within the minute
        clock.advance(seconds=31)
        assert await use_then_stored() == clock.now()
    finally:
        await engine.dispose()


# -- audit -------------------------------------------------------------------------------------


async def test_issuing_and_revoking_are_audited_without_the_key(api: Api) -> None:
    key = await create_api_key(api.client, api.tenant, "projects:read")
    assert (await api.revoke(key.id)).status_code == 204
    for action in ("api_key.created", "api_key.revoked"):
        r = await api.events(action)
        (event,) = r.json()["items"]
        assert event["actor"] == {"type": "user", "id": api.tenant.owner.id}
        assert event["target"] == {"type": "api_key", "id": key.id}
        assert event["details"]["prefix"] == key.prefix
        assert key.secret not in r.text


@pytest.mark.usefixtures("monotonic")
@pytest.mark.parametrize("death", ["revoked", "expired"])
async def test_uses_of_a_dead_key_are_audited_once_a_minute(
    api: Api, clock: FrozenClock, usage: UsageRecorder, death: str
) -> None:
    key = await create_api_key(api.client, api.tenant, expires_in_days=1)
    if death == "revoked":
        assert (await api.revoke(key.id)).status_code == 204
    else:
        clock.advance(days=1, seconds=1)

    async def two_uses_then_rejections() -> list[dict[str, Any]]:
        for _ in range(2):
            assert_invalid_token(await api.projects(key), api.tenant.slug)
        await usage.drain()
        r = await api.events("api_key.rejected")
        assert key.secret not in r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    (event,) = await two_uses_then_rejections()
    assert event["target"] == {"type": "api_key", "id": key.id}
    assert event["details"]["prefix"] == key.prefix
    assert event["details"]["reason"] == ("revoked" if death == "revoked" else "expired_or_creator_gone")
    clock.advance(seconds=61)
    assert len(await two_uses_then_rejections()) == 2


# -- per-key rate limit --------------------------------------------------------------------------


async def test_a_keys_rate_limit_is_enforced_per_key(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], AbstractAsyncContextManager[AsyncClient]],
) -> None:
    async with make_client(make_settings(RATE_LIMITS_ENABLED=True)) as client:
        api = Api(client, await create_tenant(client))
        limited = await create_api_key(client, api.tenant, rate_limit="2/minute")
        assert limited.body["rate_limit"] == "2/minute"
        free = await create_api_key(client, api.tenant)
        assert [(await api.projects(limited)).status_code for _ in range(2)] == [200, 200]
        r = await api.projects(limited)
        assert_problem(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert [(await api.projects(free)).status_code for _ in range(3)] == [200, 200, 200]


# -- keys made by keys (issue 13, item 5) --------------------------------------------------------


async def minting_key(api: Api, **fields: object) -> ApiKey:
    """A key of the owner that may issue keys, with `fields` (expiry, rate limit)."""
    return await create_api_key(api.client, api.tenant, "api_keys:manage", "projects:read", **fields)


async def test_a_child_key_inherits_its_parents_expiry_and_rate_limit(api: Api) -> None:
    parent = await minting_key(api, expires_in_days=5, rate_limit="10/minute")
    r = await api.issue({"name": "child", "scopes": ["projects:read"]}, parent)
    assert r.status_code == 201, r.text
    child = r.json()
    assert child["expires_at"] == parent.body["expires_at"]
    assert child["rate_limit"] == "10/minute"
    assert child["parent_id"] == parent.id
    assert child["created_by"] == api.tenant.owner.id  # it acts for the same user
    assert parent.body["parent_id"] is None


async def test_a_parent_revoked_outside_the_api_ends_its_children(api: Api) -> None:
    """revoke_key marks the whole family; a parent revoked by an operator's UPDATE (which
    marks only the parent) must end the children all the same."""
    parent = await minting_key(api)
    issued = await api.issue({"name": "child", "scopes": ["projects:read"]}, parent)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    child = ApiKey(id=body["id"], key=body["key"], prefix=body["prefix"], body=body)
    assert (await api.projects(child)).status_code == 200
    engine = api.client.app.state.runtime.engine  # type: ignore[attr-defined]
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiKeyRow).where(ApiKeyRow.id == uuid.UUID(parent.id)).values(revoked_at=datetime.now(UTC))
        )
    # A write outside the app reaches its cache through the change feed: on the next
    # request on SQLite, within API-v2 §5's 1 s on PostgreSQL.
    deadline = time.monotonic() + 1.0
    while True:
        answer = (await api.projects(child)).status_code
        if answer != 200 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.01)
    assert answer == 401


EXCEEDING = {
    "longer-expiry": {"expires_in_days": 6},
    "higher-rate": {"rate_limit": "11/minute"},
    "higher-rate-other-unit": {"rate_limit": "1/second"},
    "bigger-burst": {"rate_limit": "20/2minutes"},
}


@pytest.mark.parametrize("fields", EXCEEDING.values(), ids=list(EXCEEDING))
async def test_a_child_key_cannot_outlive_or_outpace_its_parent(api: Api, fields: dict[str, object]) -> None:
    parent = await minting_key(api, expires_in_days=5, rate_limit="10/minute")
    r = await api.issue({"name": "child", "scopes": ["projects:read"], **fields}, parent)
    assert_problem(r, 403, "key_exceeds_parent")
    assert [k["id"] for k in (await api.listed())["items"]] == [parent.id]


async def test_a_child_key_may_be_narrower_than_its_parent(api: Api) -> None:
    parent = await minting_key(api, expires_in_days=5, rate_limit="10/minute")
    body = {"name": "child", "scopes": ["projects:read"], "expires_in_days": 2, "rate_limit": "10/2minutes"}
    r = await api.issue(body, parent)
    assert r.status_code == 201, r.text
    assert r.json()["rate_limit"] == "10/2minutes"
    assert r.json()["expires_at"] < parent.body["expires_at"]


async def test_a_key_minted_by_an_unlimited_key_owes_it_nothing(api: Api) -> None:
    parent = await minting_key(api)
    body = {"name": "child", "scopes": ["projects:read"], "expires_in_days": 30, "rate_limit": "5/minute"}
    r = await api.issue(body, parent)
    assert r.status_code == 201, r.text
    assert (r.json()["rate_limit"], r.json()["parent_id"]) == ("5/minute", parent.id)


MULTI_PART = "100/minute; 3/hour"
CHILD_LIMITS = {
    "drops-the-hourly-cap": ("100/minute", 403),
    "hourly-but-looser": ("60/hour", 403),
    "minute-part-too-fast-for-the-hour": ("3/minute; 100/minute", 403),
    "the-hourly-cap-alone": ("3/hour", 201),
    "both-parts": (MULTI_PART, 201),
    "both-parts-stricter": ("50/minute;2/hour", 201),
}


@pytest.mark.parametrize(("limit", "status"), CHILD_LIMITS.values(), ids=list(CHILD_LIMITS))
async def test_a_child_key_matches_every_part_of_its_parents_limit(api: Api, limit: str, status: int) -> None:
    parent = await minting_key(api, rate_limit=MULTI_PART)
    r = await api.issue({"name": "child", "scopes": ["projects:read"], "rate_limit": limit}, parent)
    if status == 403:
        assert_problem(r, 403, "key_exceeds_parent")
        assert MULTI_PART in r.json()["detail"]
    else:
        assert r.status_code == 201, r.text
        assert r.json()["rate_limit"] == limit


def child_of(r: Response) -> ApiKey:
    assert r.status_code == 201, r.text
    return ApiKey(r.json()["id"], r.json()["key"], r.json()["prefix"], r.json())


async def test_a_key_family_shares_its_parents_budget(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], AbstractAsyncContextManager[AsyncClient]],
) -> None:
    # Minting children with the parent's own limit must not multiply that limit: each
    # child's request also spends the parent's budget (issue 13, item 5).
    async with make_client(make_settings(RATE_LIMITS_ENABLED=True)) as client:
        api = Api(client, await create_tenant(client))
        parent = await minting_key(api, rate_limit="5/minute")
        body = {"name": "child", "scopes": ["api_keys:manage", "projects:read"]}
        first = child_of(await api.issue(body, parent))  # minting costs the parent 1 request
        grandchild = child_of(await api.issue({**body, "rate_limit": "4/hour"}, first))
        assert grandchild.body["rate_limit"] == "4/hour"  # 4 per hour is stricter than 5 per minute
        spent = [(await api.projects(key)).status_code for key in (parent, first, grandchild)]
        assert spent == [200, 200, 200]  # with the two mints, five requests of the family
        for key in (parent, first, grandchild):
            assert_problem(await api.projects(key), 429, "rate_limited")
        bystander = await create_api_key(client, api.tenant, rate_limit="5/minute")
        assert (await api.projects(bystander)).status_code == 200


async def test_every_part_of_a_keys_own_limit_is_enforced(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], AbstractAsyncContextManager[AsyncClient]],
) -> None:
    async with make_client(make_settings(RATE_LIMITS_ENABLED=True)) as client:
        api = Api(client, await create_tenant(client))
        key = await create_api_key(client, api.tenant, rate_limit="100/minute; 3/hour")
        assert [(await api.projects(key)).status_code for _ in range(3)] == [200, 200, 200]
        r = await api.projects(key)
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) > 60  # the hourly window, not the minute's


async def test_revoking_a_key_revokes_its_descendants_at_once(api: Api) -> None:
    parent = await minting_key(api)
    r = await api.issue({"name": "child", "scopes": ["api_keys:manage", "projects:read"]}, parent)
    assert r.status_code == 201, r.text
    child = ApiKey(r.json()["id"], r.json()["key"], r.json()["prefix"], r.json())
    r = await api.issue({"name": "grandchild", "scopes": ["projects:read"]}, child)
    assert r.status_code == 201, r.text
    grandchild = ApiKey(r.json()["id"], r.json()["key"], r.json()["prefix"], r.json())
    bystander = await create_api_key(api.client, api.tenant, "projects:read")
    for key in (child, grandchild, bystander):  # authenticated once: now in the read cache
        assert (await api.projects(key)).status_code == 200
    assert (await api.revoke(parent.id)).status_code == 204
    for key in (parent, child, grandchild):
        assert_invalid_token(await api.projects(key), api.tenant.slug)
    assert (await api.projects(bystander)).status_code == 200
    assert [k["id"] for k in (await api.listed())["items"]] == [bystander.id]
    revoked = [e["target"]["id"] for e in (await api.events("api_key.revoked")).json()["items"]]
    assert sorted(revoked) == sorted([parent.id, child.id, grandchild.id])


async def test_the_longest_limit_the_schema_admits_is_stored(api: Api) -> None:
    # Four joined limits are what the schema's pattern allows: the column must hold them on
    # PostgreSQL too (its VARCHAR length is enforced; SQLite's is not).
    limit = "999999999 per 999999 seconds; 999999999 per 999999 minutes; 9 per 2 hours; 9/day"
    assert len(limit) > 32
    r = await api.issue({"name": "long", "scopes": ["projects:read"], "rate_limit": limit})
    assert r.status_code == 201, r.text
    assert r.json()["rate_limit"] == limit
