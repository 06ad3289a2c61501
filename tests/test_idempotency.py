"""Idempotency-Key on creating requests (issue 15; draft-ietf-httpapi-idempotency-key-header):
a retry with the same key gets the first answer and creates nothing twice."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.core.clock import FrozenClock
from saas_app.runtime import _commit
from tests.conftest import ON_POSTGRES
from tests.factories import add_member, create_tenant, login


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def names(client: AsyncClient, path: str, headers: dict[str, str]) -> list[str]:
    listed = await client.get(path, headers=headers)
    assert listed.status_code == 200, listed.text
    return sorted(p["name"] for p in listed.json()["items"])


async def test_a_retry_with_the_same_key_gets_the_first_answer_and_creates_nothing(
    client: AsyncClient,
) -> None:
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, '"3f1c9e0a-retry"')  # an sf-string, as the draft writes it
    first = await client.post(tenant.path("/projects"), json={"name": "Apollo"}, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post(tenant.path("/projects"), json={"name": "Apollo"}, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await names(client, tenant.path("/projects"), tenant.owner.headers) == ["Apollo"]
    bare = await client.post(
        tenant.path("/projects"),
        json={"name": "Apollo"},
        headers=keyed(tenant.owner.headers, "3f1c9e0a-retry"),
    )
    assert bare.json() == first.json()  # the same key, written without the quotes


async def test_the_same_key_with_another_request_is_422(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, "k-1")
    assert (
        await client.post(tenant.path("/projects"), json={"name": "A"}, headers=headers)
    ).status_code == 201
    other = await client.post(tenant.path("/projects"), json={"name": "B"}, headers=headers)
    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "idempotency_key_reused"
    elsewhere = await client.post(
        tenant.path("/roles"), json={"name": "A", "permissions": []}, headers=headers
    )
    assert elsewhere.status_code == 422  # another path is another request
    assert await names(client, tenant.path("/projects"), tenant.owner.headers) == ["A"]


async def test_a_key_is_the_callers_own(client: AsyncClient) -> None:
    """Another user (or tenant) sending the same key is another request: never given the
    first caller's answer."""
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    other_tenant = await create_tenant(client)
    callers = [
        (tenant, tenant.owner.headers),
        (tenant, member.headers),
        (other_tenant, other_tenant.owner.headers),
    ]
    ids = set()
    for where, headers in callers:
        created = await client.post(
            where.path("/projects"), json={"name": "P"}, headers=keyed(headers, "shared")
        )
        assert created.status_code == 201, created.text
        assert "idempotent-replayed" not in created.headers
        ids.add(created.json()["id"])
    assert len(ids) == 3


async def test_an_api_keys_answer_is_replayed_with_its_secret_kept_sealed(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, "mint-once")
    body = {"name": "ci", "scopes": ["projects:read"]}
    first = await client.post(tenant.path("/api-keys"), json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(tenant.path("/api-keys"), json=body, headers=headers)
    assert again.status_code == 201
    assert again.json()["key"] == first.json()["key"]
    assert again.headers["cache-control"] == "no-store"
    listed = await client.get(tenant.path("/api-keys"), headers=tenant.owner.headers)
    assert [k["id"] for k in listed.json()["items"]] == [first.json()["id"]]
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT body FROM idempotent_answer"))
    assert first.json()["key"] not in stored  # encrypted at rest: it is a live credential


async def test_an_answer_is_kept_24_hours(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)

    async def create() -> Response:
        # The frozen clock jumps hours: each call signs in anew (access tokens live 15 min).
        owner = (await login(client, tenant.slug, tenant.owner.email)).headers
        return await client.post(tenant.path("/projects"), json={"name": "P"}, headers=keyed(owner, "daily"))

    assert (await create()).status_code == 201
    clock.advance(hours=23)
    assert (await create()).headers.get("idempotent-replayed") == "true"
    clock.advance(hours=1, seconds=1)
    later = await create()
    assert later.status_code == 201
    assert "idempotent-replayed" not in later.headers
    owner = (await login(client, tenant.slug, tenant.owner.email)).headers
    assert await names(client, tenant.path("/projects"), owner) == ["P", "P"]


async def test_a_malformed_key_is_400(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    for bad in (b"", b"x" * 256, "café".encode(), b"tab\there"):
        headers: dict[str, str | bytes] = {**tenant.owner.headers, "Idempotency-Key": bad}
        response = await client.post(tenant.path("/projects"), json={"name": "P"}, headers=headers)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "invalid_idempotency_key"
    assert await names(client, tenant.path("/projects"), tenant.owner.headers) == []


async def test_concurrent_duplicates_create_once(client: AsyncClient) -> None:
    """Ten copies at once: one creates; the others get 409 while it runs (PostgreSQL) or its
    answer once it is done (SQLite runs writers one at a time)."""
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, f"burst-{uuid.uuid4().hex}")
    answers = await asyncio.gather(
        *[client.post(tenant.path("/projects"), json={"name": "Once"}, headers=headers) for _ in range(10)]
    )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}, statuses
    created = [a for a in answers if a.status_code == 201]
    assert len({a.json()["id"] for a in created}) == 1
    assert sum(1 for a in created if "idempotent-replayed" not in a.headers) == 1
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["code"] == "idempotency_key_in_flight"
        assert int(refused.headers["retry-after"]) >= 1
    if not ON_POSTGRES:
        assert statuses == [201] * 10
    assert await names(client, tenant.path("/projects"), tenant.owner.headers) == ["Once"]


async def test_roles_take_the_key_too(client: AsyncClient) -> None:
    """Without the key the retry would be 409 (the name is taken); with it, the first answer."""
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, "role-1")
    body = {"name": "auditor", "permissions": ["audit:read"]}
    first = await client.post(tenant.path("/roles"), json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(tenant.path("/roles"), json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    unkeyed = await client.post(tenant.path("/roles"), json=body, headers=tenant.owner.headers)
    assert unkeyed.status_code == 409  # without the key, the retry is refused: the name is taken
    assert unkeyed.json()["code"] == "role_exists"


async def test_a_commit_whose_acknowledgement_was_lost_is_outcome_unknown_and_the_key_recovers_it(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops as COMMIT returns: the project is stored but the server cannot
    know it. It says so (503 outcome_unknown, Retry-After), and the retry with the same key
    gets the stored answer instead of a second project."""
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, "lost-ack")
    commit = AsyncSession.commit

    async def commit_then_lose_the_connection(self: AsyncSession) -> None:
        await commit(self)
        raise OperationalError("COMMIT", None, ConnectionResetError("connection reset by peer"))

    monkeypatch.setattr(AsyncSession, "commit", commit_then_lose_the_connection)
    lost = await client.post(tenant.path("/projects"), json={"name": "Apollo"}, headers=headers)
    monkeypatch.undo()
    assert lost.status_code == 503, lost.text
    assert lost.json()["code"] == "outcome_unknown"
    assert int(lost.headers["retry-after"]) >= 1
    retried = await client.post(tenant.path("/projects"), json={"name": "Apollo"}, headers=headers)
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    assert await names(client, tenant.path("/projects"), tenant.owner.headers) == ["Apollo"]


async def test_a_connection_lost_before_commit_is_a_plain_outage(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lost while the changes were still being sent: nothing can have been committed, so
    it is the ordinary 503, and the retry creates the project once."""
    tenant = await create_tenant(client)
    headers = keyed(tenant.owner.headers, "lost-early")

    async def lose_the_connection(self: AsyncSession, objects: object = None) -> None:
        raise OperationalError("INSERT", None, ConnectionResetError("connection reset by peer"))

    monkeypatch.setattr(AsyncSession, "flush", lose_the_connection)
    lost = await client.post(tenant.path("/projects"), json={"name": "Apollo"}, headers=headers)
    monkeypatch.undo()
    assert lost.status_code == 503, lost.text
    assert lost.json()["code"] == "service_unavailable"
    retried = await client.post(tenant.path("/projects"), json={"name": "Apollo"}, headers=headers)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert await names(client, tenant.path("/projects"), tenant.owner.headers) == ["Apollo"]


@pytest.mark.skipif(not ON_POSTGRES, reason="the change feed's fence is PostgreSQL's")
async def test_a_connection_lost_while_sending_the_fence_is_not_outcome_unknown(client: AsyncClient) -> None:
    """The fence goes out before COMMIT: losing the connection there is known not to have
    committed (a plain outage), not an unknown outcome."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.write_session_factory() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        session.info["saas_app.fires"] = True  # as if a watched row had changed
        async with runtime.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError):  # not OutcomeUnknown, which is no DBAPIError
            await _commit(session)
