"""/t/{tenant}/roles, PUT /users/{id}/roles (no escalation, last owner) and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock
from saas_app.rbac.permissions import PERMISSIONS
from tests.factories import DEFAULT_PASSWORD, TenantCtx, add_member, create_tenant, login

BUILTINS = {
    "owner": sorted(PERMISSIONS),
    "admin": sorted(p for p in PERMISSIONS if p != "tenant:manage"),
    "member": ["projects:read", "projects:write"],
    "viewer": ["projects:read"],
}


async def create_role(client: AsyncClient, tenant: TenantCtx, name: str, *permissions: str) -> Response:
    return await client.post(
        tenant.path("/roles"),
        json={"name": name, "permissions": list(permissions)},
        headers=tenant.owner.headers,
    )


async def set_roles(client: AsyncClient, tenant: TenantCtx, user_id: str, *roles: str, **kw: Any) -> Response:
    headers = kw.get("headers", tenant.owner.headers)
    return await client.put(
        tenant.path(f"/users/{user_id}/roles"), json={"roles": list(roles)}, headers=headers
    )


async def audit_events(client: AsyncClient, tenant: TenantCtx, **params: str) -> list[dict[str, Any]]:
    response = await client.get(
        tenant.path("/audit-events"), params={"limit": "200", **params}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# GET /roles


async def test_builtin_roles_are_listed_with_their_permissions(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path("/roles"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    assert {r["name"]: sorted(r["permissions"]) for r in body["items"]} == BUILTINS
    assert all(r["builtin"] is True for r in body["items"])


async def test_listing_roles_needs_users_read(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.get(tenant.path("/roles"), headers=member.headers)
    assert response.status_code == 403, response.text
    assert "users:read" in response.json()["detail"]


# POST /roles


async def test_create_custom_role(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await create_role(client, tenant, "auditor", "audit:read", "users:read")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "auditor"
    assert sorted(body["permissions"]) == ["audit:read", "users:read"]
    assert body["builtin"] is False
    listed = (await client.get(tenant.path("/roles"), headers=tenant.owner.headers)).json()["items"]
    assert "auditor" in {r["name"] for r in listed}


@pytest.mark.parametrize(
    "name", ["auditor", "admin", "owner"], ids=["custom", "builtin-admin", "builtin-owner"]
)
async def test_create_role_with_taken_name_is_409(client: AsyncClient, name: str) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "auditor", "audit:read")
    response = await create_role(client, tenant, name, "projects:read")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "role_exists"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "r", "permissions": ["projects:delete"]},
        {"name": "r", "permissions": ["*"]},
        {"name": "Bad Name", "permissions": []},
        {"name": "r"},
    ],
    ids=["unknown-permission", "wildcard", "bad-name", "no-permissions"],
)
async def test_create_role_rejects_bad_body(client: AsyncClient, body: dict[str, Any]) -> None:
    tenant = await create_tenant(client)
    response = await client.post(tenant.path("/roles"), json=body, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_member_cannot_create_roles(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.post(
        tenant.path("/roles"), json={"name": "mine", "permissions": ["projects:read"]}, headers=member.headers
    )
    assert response.status_code == 403, response.text
    assert "roles:manage" in response.json()["detail"]


async def test_admin_cannot_create_a_role_with_tenant_manage(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    response = await client.post(
        tenant.path("/roles"), json={"name": "boss", "permissions": ["tenant:manage"]}, headers=admin.headers
    )
    assert response.status_code == 403, response.text
    assert "tenant:manage" in response.json()["detail"]
    assert 'scope="tenant:manage"' in response.headers["www-authenticate"]


# PATCH / DELETE /roles/{name}


async def test_demoting_a_role_applies_to_an_existing_token(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "reporter", "projects:read", "audit:read")
    holder = await add_member(client, tenant, "reporter")
    assert (await client.get(tenant.path("/audit-events"), headers=holder.headers)).status_code == 200
    response = await client.patch(
        tenant.path("/roles/reporter"), json={"permissions": ["projects:read"]}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["permissions"] == ["projects:read"]
    denied = await client.get(tenant.path("/audit-events"), headers=holder.headers)
    assert denied.status_code == 403, denied.text
    assert (await client.get(tenant.path("/projects"), headers=holder.headers)).status_code == 200


async def test_promoting_a_role_applies_to_tokens_issued_after(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "reporter", "projects:read")
    holder = await add_member(client, tenant, "reporter")
    await client.patch(
        tenant.path("/roles/reporter"),
        json={"permissions": ["projects:read", "audit:read"]},
        headers=tenant.owner.headers,
    )
    # Scope is a ceiling: the old token keeps its narrower grant, a new one gets the promotion.
    assert (await client.get(tenant.path("/audit-events"), headers=holder.headers)).status_code == 403
    fresh = await login(client, tenant.slug, holder.email, DEFAULT_PASSWORD)
    assert (await client.get(tenant.path("/audit-events"), headers=fresh.headers)).status_code == 200


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize("name", list(BUILTINS))
async def test_builtin_roles_cannot_be_changed(client: AsyncClient, method: str, name: str) -> None:
    tenant = await create_tenant(client)
    body = {"permissions": ["projects:read"]} if method == "PATCH" else None
    response = await client.request(
        method, tenant.path(f"/roles/{name}"), json=body, headers=tenant.owner.headers
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "builtin_role"
    roles = (await client.get(tenant.path("/roles"), headers=tenant.owner.headers)).json()["items"]
    assert {r["name"]: sorted(r["permissions"]) for r in roles}[name] == BUILTINS[name]


async def test_deleting_a_role_in_use_is_409(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "auditor", "audit:read")
    await add_member(client, tenant, "auditor")
    response = await client.delete(tenant.path("/roles/auditor"), headers=tenant.owner.headers)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "role_in_use"


async def test_deleting_an_unused_role(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "auditor", "audit:read")
    response = await client.delete(tenant.path("/roles/auditor"), headers=tenant.owner.headers)
    assert response.status_code == 204, response.text
    roles = (await client.get(tenant.path("/roles"), headers=tenant.owner.headers)).json()["items"]
    assert "auditor" not in {r["name"] for r in roles}


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_unknown_role_is_404(client: AsyncClient, method: str) -> None:
    tenant = await create_tenant(client)
    body = {"permissions": []} if method == "PATCH" else None
    response = await client.request(
        method, tenant.path("/roles/ghost"), json=body, headers=tenant.owner.headers
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "role_not_found"


# PUT /users/{id}/roles


async def test_set_roles_replaces_the_users_roles(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await set_roles(client, tenant, member.id, "viewer", "admin")
    assert response.status_code == 200, response.text
    assert sorted(response.json()["roles"]) == ["admin", "viewer"]
    assert sorted(response.json()["permissions"]) == BUILTINS["admin"]


async def test_set_unknown_role_is_422(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await set_roles(client, tenant, member.id, "viewer", "wizard")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unknown_role"
    assert "wizard" in response.json()["detail"]


async def test_set_empty_roles_is_allowed(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await set_roles(client, tenant, member.id)
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == []
    assert response.json()["permissions"] == []
    assert (await client.get(tenant.path("/projects"), headers=member.headers)).status_code == 403


async def test_removing_the_last_owner_is_409(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await set_roles(client, tenant, tenant.owner.id, "admin")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "last_owner"
    me = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert me.json()["roles"] == ["owner"]


async def test_admin_cannot_grant_owner(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    member = await add_member(client, tenant)
    response = await set_roles(client, tenant, member.id, "owner", headers=admin.headers)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert "tenant:manage" in response.json()["detail"]
    assert response.json()["missing_permissions"] == ["tenant:manage"]


async def test_admin_cannot_take_owner_away(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await add_member(client, tenant, "owner")  # so last_owner is not what stops it
    admin = await add_member(client, tenant, "admin")
    response = await set_roles(client, tenant, tenant.owner.id, "admin", headers=admin.headers)
    assert response.status_code == 403, response.text
    assert "tenant:manage" in response.json()["detail"]


async def test_member_cannot_set_roles(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await set_roles(client, tenant, member.id, "viewer", headers=member.headers)
    assert response.status_code == 403, response.text
    assert "roles:manage" in response.json()["detail"]


# GET /audit-events


async def test_audit_trail_records_role_and_user_changes(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    await create_role(client, tenant, "auditor", "audit:read")
    await client.patch(tenant.path("/roles/auditor"), json={"permissions": []}, headers=tenant.owner.headers)
    await client.delete(tenant.path("/roles/auditor"), headers=tenant.owner.headers)
    await set_roles(client, tenant, member.id, "viewer")
    await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    actions = {e["action"] for e in await audit_events(client, tenant)}
    assert {
        "role.created",
        "role.updated",
        "role.deleted",
        "user.roles_changed",
        "user.created",
        "user.deactivated",
    } <= actions


async def test_audit_event_shape(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    await set_roles(client, tenant, member.id, "viewer")
    [event] = await audit_events(client, tenant, action="user.roles_changed")
    assert set(event) == {"id", "at", "action", "actor", "target", "ip", "details"}
    assert event["actor"] == {"type": "user", "id": tenant.owner.id}
    assert event["target"] == {"type": "user", "id": member.id}
    assert event["details"] == {"before": ["member"], "after": ["viewer"]}
    assert event["ip"] == "127.0.0.1"  # httpx's ASGITransport peer


async def test_audit_filter_by_action(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "one", "audit:read")
    await create_role(client, tenant, "two", "audit:read")
    events = await audit_events(client, tenant, action="role.created")
    assert [e["action"] for e in events] == ["role.created", "role.created"]
    assert {e["details"]["name"] for e in events} == {"one", "two"}


async def test_audit_events_are_newest_first(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    for step in ("create", "update", "delete"):
        clock.advance(seconds=1)
        if step == "create":
            await create_role(client, tenant, "auditor", "audit:read")
        elif step == "update":
            await client.patch(
                tenant.path("/roles/auditor"), json={"permissions": []}, headers=tenant.owner.headers
            )
        else:
            await client.delete(tenant.path("/roles/auditor"), headers=tenant.owner.headers)
    events = await audit_events(client, tenant)
    role_actions = [e["action"] for e in events if e["action"].startswith("role.")]
    assert role_actions == ["role.deleted", "role.updated", "role.created"]
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps, reverse=True)


async def test_audit_events_never_contain_the_password(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await add_member(client, tenant)
    await client.post(
        tenant.path("/auth/token"),
        data={
            "grant_type": "password",
            "username": tenant.owner.email,
            "password": "wrong-" + DEFAULT_PASSWORD,
        },
    )
    response = await client.get(tenant.path("/audit-events"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert DEFAULT_PASSWORD not in response.text
    assert tenant.owner.login.refresh_token not in response.text


async def test_member_cannot_read_audit_events(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.get(tenant.path("/audit-events"), headers=member.headers)
    assert response.status_code == 403, response.text
    assert "audit:read" in response.json()["detail"]


async def walk(client: AsyncClient, tenant: TenantCtx, path: str, limit: int) -> list[dict[str, Any]]:
    """Follows next_cursor from the first page to the last; returns every item seen."""
    items: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": str(limit)}
    while True:
        response = await client.get(tenant.path(path), params=params, headers=tenant.owner.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


async def test_roles_pages_walk_every_role_once(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await create_role(client, tenant, "auditor", "audit:read")
    names = [r["name"] for r in await walk(client, tenant, "/roles", limit=1)]
    assert sorted(names) == sorted([*BUILTINS, "auditor"])


@pytest.mark.parametrize("spread", [False, True], ids=["same-instant", "distinct-instants"])
async def test_audit_pages_walk_every_event_once(
    client: AsyncClient, clock: FrozenClock, spread: bool
) -> None:
    tenant = await create_tenant(client)
    for name in ("one", "two", "three"):
        if spread:
            clock.advance(seconds=1)
        await create_role(client, tenant, name, "audit:read")
    everything = await audit_events(client, tenant)
    paged = await walk(client, tenant, "/audit-events", limit=2)
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    assert len({e["id"] for e in paged}) == len(paged)
