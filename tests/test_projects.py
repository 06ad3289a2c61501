"""/t/{tenant}/projects: the guarded example domain router."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock
from tests.factories import Member, TenantCtx, add_member, create_tenant

PROBLEM_JSON = "application/problem+json"


async def new_project(
    client: AsyncClient, tenant: TenantCtx, name: str = "Apollo", **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        tenant.path("/projects"), json={"name": name, **extra}, headers=tenant.owner.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def write(
    client: AsyncClient, tenant: TenantCtx, who: Member, method: str, project_id: str
) -> Response:
    """One write request of each kind; POST ignores `project_id`."""
    if method == "POST":
        return await client.post(tenant.path("/projects"), json={"name": "New"}, headers=who.headers)
    body = {"name": "Renamed"} if method == "PATCH" else None
    return await client.request(
        method, tenant.path(f"/projects/{project_id}"), json=body, headers=who.headers
    )


# Create / read


async def test_create_project(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.post(
        tenant.path("/projects"),
        json={"name": "Apollo", "description": "To the moon"},
        headers=tenant.owner.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "name", "description", "created_by", "created_at"}
    assert body["name"] == "Apollo"
    assert body["description"] == "To the moon"
    uuid.UUID(body["id"])


async def test_description_is_optional(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant)
    assert project["description"] is None


async def test_created_by_is_the_creators_user_id(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.post(tenant.path("/projects"), json={"name": "Mine"}, headers=member.headers)
    assert response.status_code == 201, response.text
    assert response.json()["created_by"] == member.id


async def test_read_project_by_id(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant, description="d")
    response = await client.get(tenant.path(f"/projects/{project['id']}"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json() == project


async def test_list_projects(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    first = await new_project(client, tenant, "One")
    second = await new_project(client, tenant, "Two")
    response = await client.get(tenant.path("/projects"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    assert {p["id"] for p in body["items"]} == {first["id"], second["id"]}


async def test_unknown_project_is_404(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path(f"/projects/{uuid.uuid4()}"), headers=tenant.owner.headers)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == "project_not_found"


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_another_tenants_project_is_404(client: AsyncClient, method: str) -> None:
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    theirs = await new_project(client, other, "Secret")
    body = {"name": "Stolen"} if method == "PATCH" else None
    response = await client.request(
        method, tenant.path(f"/projects/{theirs['id']}"), json=body, headers=tenant.owner.headers
    )
    assert response.status_code == 404, response.text
    assert "Secret" not in response.text
    still = await client.get(other.path(f"/projects/{theirs['id']}"), headers=other.owner.headers)
    assert still.json()["name"] == "Secret"


async def test_list_never_shows_another_tenants_projects(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    await new_project(client, other, "Secret")
    response = await client.get(tenant.path("/projects"), headers=tenant.owner.headers)
    assert response.json()["items"] == []


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_malformed_project_id_is_422(client: AsyncClient, method: str) -> None:
    tenant = await create_tenant(client)
    body = {"name": "x"} if method == "PATCH" else None
    response = await client.request(
        method, tenant.path("/projects/not-a-uuid"), json=body, headers=tenant.owner.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body_json = response.json()
    assert body_json["code"] == "validation_error"
    assert ["path", "project_id"] in [error["loc"] for error in body_json["errors"]]


# Update / delete


async def test_patch_name_keeps_description(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant, description="Keep me")
    response = await client.patch(
        tenant.path(f"/projects/{project['id']}"), json={"name": "Gemini"}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Gemini"
    assert response.json()["description"] == "Keep me"
    assert response.json()["created_by"] == project["created_by"]


async def test_patch_description_keeps_name(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant, description="Old")
    response = await client.patch(
        tenant.path(f"/projects/{project['id']}"), json={"description": "New"}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Apollo"
    stored = await client.get(tenant.path(f"/projects/{project['id']}"), headers=tenant.owner.headers)
    assert stored.json()["description"] == "New"


async def test_patch_can_clear_description(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant, description="Old")
    response = await client.patch(
        tenant.path(f"/projects/{project['id']}"), json={"description": None}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["description"] is None


async def test_delete_project(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant)
    path = tenant.path(f"/projects/{project['id']}")
    response = await client.delete(path, headers=tenant.owner.headers)
    assert response.status_code == 204, response.text
    assert (await client.get(path, headers=tenant.owner.headers)).status_code == 404
    assert (await client.delete(path, headers=tenant.owner.headers)).status_code == 404


# Permissions


async def test_viewer_reads_projects(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant)
    viewer = await add_member(client, tenant, "viewer")
    listed = await client.get(tenant.path("/projects"), headers=viewer.headers)
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["items"]] == [project["id"]]
    one = await client.get(tenant.path(f"/projects/{project['id']}"), headers=viewer.headers)
    assert one.status_code == 200, one.text


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_viewer_cannot_write_projects(client: AsyncClient, method: str) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant)
    viewer = await add_member(client, tenant, "viewer")
    response = await write(client, tenant, viewer, method, project["id"])
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert "projects:write" in response.json()["detail"]
    stored = await client.get(tenant.path("/projects"), headers=tenant.owner.headers)
    assert [p["name"] for p in stored.json()["items"]] == ["Apollo"]


@pytest.mark.parametrize(("method", "status"), [("POST", 201), ("PATCH", 200), ("DELETE", 204)])
async def test_member_writes_projects(client: AsyncClient, method: str, status: int) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant)
    member = await add_member(client, tenant)
    response = await write(client, tenant, member, method, project["id"])
    assert response.status_code == status, response.text


async def test_user_without_roles_cannot_read_projects(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    await client.put(
        tenant.path(f"/users/{member.id}/roles"), json={"roles": []}, headers=tenant.owner.headers
    )
    response = await client.get(tenant.path("/projects"), headers=member.headers)
    assert response.status_code == 403, response.text
    assert "projects:read" in response.json()["detail"]


async def test_projects_need_authentication(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path("/projects"))
    assert response.status_code == 401, response.text


# Pagination


@pytest.mark.parametrize("spread", [False, True], ids=["same-instant", "distinct-instants"])
async def test_limit_walks_every_project_once(client: AsyncClient, clock: FrozenClock, spread: bool) -> None:
    tenant = await create_tenant(client)
    expected = set()
    for i in range(5):
        if spread:
            clock.advance(seconds=1)
        expected.add((await new_project(client, tenant, f"P{i}"))["id"])
    seen: list[str] = []
    cursor: str | None = None
    sizes: list[int] = []
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get(tenant.path("/projects"), params=params, headers=tenant.owner.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        sizes.append(len(page["items"]))
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


async def test_projects_are_listed_oldest_first(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    names = ["First", "Second", "Third"]
    for name in names:
        clock.advance(seconds=1)
        await new_project(client, tenant, name)
    items = (await client.get(tenant.path("/projects"), headers=tenant.owner.headers)).json()["items"]
    assert [p["name"] for p in items] == names


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "201"}, {"cursor": "garbage"}],
    ids=["limit-0", "limit-201", "cursor-garbage"],
)
async def test_bad_page_params_are_422(client: AsyncClient, params: dict[str, str]) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path("/projects"), params=params, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


# Validation


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {},
        {"name": "ok", "owner": "someone"},
        {"name": "ok", "created_by": str(uuid.uuid4())},
        {"name": 42},
    ],
    ids=["empty-name", "blank-name", "long-name", "no-name", "unknown-field", "forged-creator", "non-string"],
)
async def test_create_rejects_bad_body(client: AsyncClient, body: dict[str, Any]) -> None:
    tenant = await create_tenant(client)
    response = await client.post(tenant.path("/projects"), json=body, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    listed = await client.get(tenant.path("/projects"), headers=tenant.owner.headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [{"name": ""}, {"name": None}, {"colour": "red"}],
    ids=["empty-name", "null-name", "unknown-field"],
)
async def test_patch_rejects_bad_body(client: AsyncClient, body: dict[str, Any]) -> None:
    tenant = await create_tenant(client)
    project = await new_project(client, tenant)
    path = tenant.path(f"/projects/{project['id']}")
    response = await client.patch(path, json=body, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert (await client.get(path, headers=tenant.owner.headers)).json()["name"] == "Apollo"


async def test_a_name_is_measured_as_sent_not_once_stripped(client: AsyncClient) -> None:
    """The schema's maxLength counts the text as sent: " " + 200 letters is refused like 201
    letters (schemathesis found it accepted, and stored stripped), for every stripped name."""
    tenant = await create_tenant(client)
    padded = "\u0085" + "p" * 200  # NEL is white space to str.strip()
    cases = [
        ("/projects", {"name": padded}, tenant.owner.headers),
        ("/api-keys", {"name": " " + "k" * 100, "scopes": ["projects:read"]}, tenant.owner.headers),
    ]
    for suffix, body, headers in cases:
        refused = await client.post(tenant.path(suffix), json=body, headers=headers)
        assert refused.status_code == 422, (suffix, refused.text)
    owner = {"email": "o@padded.example.com", "password": "a long enough passphrase"}
    refused = await client.post("/tenants", json={"slug": "padded", "name": padded, "owner": owner})
    assert refused.status_code == 422, refused.text
    kept = await client.post(
        tenant.path("/projects"), json={"name": " " + "p" * 199}, headers=tenant.owner.headers
    )
    assert kept.status_code == 201, kept.text
    assert kept.json()["name"] == "p" * 199
