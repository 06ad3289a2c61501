"""/t/{tenant}/users/me (profile, sessions) and user administration under /t/{tenant}/users."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from httpx import AsyncClient

from saas_app.core.clock import FrozenClock
from tests.factories import DEFAULT_PASSWORD, add_member, create_api_key, create_tenant, login, token

PROBLEM_JSON = "application/problem+json"


def sid_of(access_token: str) -> str:
    """The session id (`sid` claim) of an access token, read without verification."""
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# /users/me


async def test_me_returns_the_signed_in_user(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.get(tenant.path("/users/me"), headers=member.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == member.id
    assert body["email"] == member.email
    assert body["roles"] == ["member"]
    assert sorted(body["permissions"]) == ["projects:read", "projects:write"]
    assert body["is_active"] is True


async def test_patch_me_changes_full_name(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.patch(
        tenant.path("/users/me"), json={"full_name": "Ada Lovelace"}, headers=member.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Ada Lovelace"
    again = await client.get(tenant.path("/users/me"), headers=member.headers)
    assert again.json()["full_name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    "body",
    [{"full_name": "x" * 201}, {"email": "not an address"}, {"is_active": False}],
    ids=["name-too-long", "email-not-an-address", "activation-not-editable"],
)
async def test_patch_me_rejects_bad_body(client: AsyncClient, body: dict[str, object]) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.patch(tenant.path("/users/me"), json=body, headers=member.headers)
    assert response.status_code == 422, response.text
    me = await client.get(tenant.path("/users/me"), headers=member.headers)
    assert me.json()["email"] == member.email
    assert me.json()["is_active"] is True


# /users/me/sessions


async def test_two_logins_list_two_sessions(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)  # first login
    second = await login(client, tenant.slug, member.email)
    response = await client.get(tenant.path("/users/me/sessions"), headers=member.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    assert {s["id"] for s in body["items"]} == {
        sid_of(member.login.access_token),
        sid_of(second.access_token),
    }
    assert set(body["items"][0]) == {"id", "created_at", "last_used_at", "user_agent", "current"}


async def test_only_the_callers_session_is_current(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    second = await login(client, tenant.slug, member.email)
    for caller in (member.login, second):
        items = (await client.get(tenant.path("/users/me/sessions"), headers=caller.headers)).json()["items"]
        assert [s["id"] for s in items if s["current"]] == [sid_of(caller.access_token)]


async def test_sessions_list_only_the_callers_own(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    items = (await client.get(tenant.path("/users/me/sessions"), headers=member.headers)).json()["items"]
    assert [s["id"] for s in items] == [sid_of(member.login.access_token)]


async def test_sessions_paginate(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    logins = [member.login] + [await login(client, tenant.slug, member.email) for _ in range(2)]
    path = tenant.path("/users/me/sessions")
    first = (await client.get(path, params={"limit": "2"}, headers=member.headers)).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"] is not None
    params = {"limit": "2", "cursor": first["next_cursor"]}
    second = (await client.get(path, params=params, headers=member.headers)).json()
    assert second["next_cursor"] is None
    seen = [s["id"] for s in first["items"] + second["items"]]
    assert sorted(seen) == sorted(sid_of(x.access_token) for x in logins)


async def test_deleting_a_session_ends_its_access_token(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    other = await login(client, tenant.slug, member.email)
    response = await client.delete(
        tenant.path(f"/users/me/sessions/{sid_of(other.access_token)}"), headers=member.headers
    )
    assert response.status_code == 204, response.text
    assert (await client.get(tenant.path("/users/me"), headers=other.headers)).status_code == 401
    assert (await client.get(tenant.path("/users/me"), headers=member.headers)).status_code == 200


async def test_deleting_a_session_ends_its_refresh_token(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    other = await login(client, tenant.slug, member.email)
    await client.delete(
        tenant.path(f"/users/me/sessions/{sid_of(other.access_token)}"), headers=member.headers
    )
    response = await token(client, tenant.slug, grant_type="refresh_token", refresh_token=other.refresh_token)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


async def test_deleting_an_ended_session_is_404(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    other = await login(client, tenant.slug, member.email)
    path = tenant.path(f"/users/me/sessions/{sid_of(other.access_token)}")
    assert (await client.delete(path, headers=member.headers)).status_code == 204
    response = await client.delete(path, headers=member.headers)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_deleting_an_unknown_session_is_404(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.delete(
        tenant.path(f"/users/me/sessions/{uuid.uuid4()}"), headers=tenant.owner.headers
    )
    assert response.status_code == 404, response.text


async def test_deleting_another_users_session_is_404(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    owner_sid = sid_of(tenant.owner.login.access_token)
    response = await client.delete(tenant.path(f"/users/me/sessions/{owner_sid}"), headers=member.headers)
    assert response.status_code == 404, response.text
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200


# GET /users


async def test_admin_lists_users(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.get(tenant.path("/users"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    assert {u["id"] for u in body["items"]} == {tenant.owner.id, member.id}


async def test_viewer_cannot_list_users(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    viewer = await add_member(client, tenant, "viewer")
    response = await client.get(tenant.path("/users"), headers=viewer.headers)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert "users:read" in response.json()["detail"]


async def test_list_users_never_shows_another_tenants_users(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    stranger = await add_member(client, other)
    items = (await client.get(tenant.path("/users"), headers=tenant.owner.headers)).json()["items"]
    assert stranger.id not in {u["id"] for u in items}


@pytest.mark.parametrize("q", ["alice", "ALICE", "Smith@EX"], ids=["lower", "upper", "mixed-domain"])
async def test_q_filters_by_email_substring_ignoring_case(client: AsyncClient, q: str) -> None:
    tenant = await create_tenant(client)
    alice = await add_member(client, tenant, email="Alice.Smith@example.com")
    await add_member(client, tenant, email="bob@example.com")
    response = await client.get(tenant.path("/users"), params={"q": q}, headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert [u["id"] for u in response.json()["items"]] == [alice.id]


async def test_q_treats_like_wildcards_literally(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await add_member(client, tenant, email="bob@example.com")
    response = await client.get(tenant.path("/users"), params={"q": "%"}, headers=tenant.owner.headers)
    assert response.json()["items"] == []


@pytest.mark.parametrize("spread", [False, True], ids=["same-instant", "distinct-instants"])
async def test_limit_walks_every_user_once(client: AsyncClient, clock: FrozenClock, spread: bool) -> None:
    tenant = await create_tenant(client)
    expected = {tenant.owner.id}
    for _ in range(4):
        if spread:
            clock.advance(seconds=1)
        expected.add((await add_member(client, tenant)).id)
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get(tenant.path("/users"), params=params, headers=tenant.owner.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [u["id"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": "0"}, ["query", "limit"]),
        ({"limit": "201"}, ["query", "limit"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"cursor": "!!!not-a-cursor"}, ["query", "cursor"]),
        ({"cursor": b64("not json")}, ["query", "cursor"]),
        ({"cursor": b64('{"at": "yesterday", "id": "x"}')}, ["query", "cursor"]),
        ({"cursor": b64('{"id": "00000000-0000-0000-0000-000000000000"}')}, ["query", "cursor"]),
    ],
    ids=[
        "limit-0",
        "limit-201",
        "limit-text",
        "cursor-garbage",
        "cursor-not-json",
        "cursor-bad-values",
        "cursor-no-at",
    ],
)
async def test_bad_page_params_are_422(client: AsyncClient, params: dict[str, str], loc: list[str]) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path("/users"), params=params, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "validation_error"
    assert loc in [error["loc"] for error in body["errors"]]


# GET /users/{id}


async def test_read_user_by_id(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant, "viewer")
    response = await client.get(tenant.path(f"/users/{member.id}"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == member.email
    assert response.json()["roles"] == ["viewer"]


USER_ROUTES = [("GET", "", None), ("PATCH", "", {"is_active": False}), ("PUT", "/roles", {"roles": []})]


@pytest.mark.parametrize(("method", "suffix", "body"), USER_ROUTES, ids=["read", "update", "set-roles"])
async def test_unknown_user_is_404(client: AsyncClient, method: str, suffix: str, body: object) -> None:
    tenant = await create_tenant(client)
    path = tenant.path(f"/users/{uuid.uuid4()}{suffix}")
    response = await client.request(method, path, json=body, headers=tenant.owner.headers)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "user_not_found"


@pytest.mark.parametrize(("method", "suffix", "body"), USER_ROUTES, ids=["read", "update", "set-roles"])
async def test_malformed_user_id_is_422(client: AsyncClient, method: str, suffix: str, body: object) -> None:
    tenant = await create_tenant(client)
    path = tenant.path(f"/users/not-a-uuid{suffix}")
    response = await client.request(method, path, json=body, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert ["path", "user_id"] in [error["loc"] for error in response.json()["errors"]]


async def test_read_another_tenants_user_is_404(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    other = await create_tenant(client)
    response = await client.get(tenant.path(f"/users/{other.owner.id}"), headers=tenant.owner.headers)
    assert response.status_code == 404, response.text
    assert other.owner.email not in response.text


# PATCH /users/{id}


async def test_deactivation_answers_the_inactive_user(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False


async def test_deactivation_needs_users_manage(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    response = await client.patch(
        tenant.path(f"/users/{tenant.owner.id}"), json={"is_active": False}, headers=member.headers
    )
    assert response.status_code == 403, response.text
    assert "users:manage" in response.json()["detail"]


async def test_deactivation_ends_the_users_access_tokens(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    second = await login(client, tenant.slug, member.email)
    await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    for session in (member.login, second):
        response = await client.get(tenant.path("/users/me"), headers=session.headers)
        assert response.status_code == 401, response.text


async def test_deactivation_ends_the_users_refresh_tokens(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    response = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=member.login.refresh_token
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


async def test_deactivated_user_cannot_sign_in(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    response = await token(
        client, tenant.slug, grant_type="password", username=member.email, password=DEFAULT_PASSWORD
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


async def test_reactivated_user_signs_in_again(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    path = tenant.path(f"/users/{member.id}")
    await client.patch(path, json={"is_active": False}, headers=tenant.owner.headers)
    response = await client.patch(path, json={"is_active": True}, headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is True
    await login(client, tenant.slug, member.email)  # asserts 200


async def test_reactivation_does_not_revive_ended_sessions(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    path = tenant.path(f"/users/{member.id}")
    await client.patch(path, json={"is_active": False}, headers=tenant.owner.headers)
    await client.patch(path, json={"is_active": True}, headers=tenant.owner.headers)
    assert (await client.get(tenant.path("/users/me"), headers=member.headers)).status_code == 401
    refresh = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=member.login.refresh_token
    )
    assert refresh.status_code == 400, refresh.text
    assert refresh.json()["error"] == "invalid_grant"


# An admin lacks the owner's tenant:manage, so is refused before the last-owner rule.
@pytest.mark.parametrize(
    ("actor", "status", "code"), [("owner", 409, "last_owner"), ("admin", 403, "forbidden")]
)
async def test_deactivating_the_only_owner_is_refused(
    client: AsyncClient, actor: str, status: int, code: str
) -> None:
    tenant = await create_tenant(client)
    headers = (
        tenant.owner.headers if actor == "owner" else (await add_member(client, tenant, "admin")).headers
    )
    response = await client.patch(
        tenant.path(f"/users/{tenant.owner.id}"), json={"is_active": False}, headers=headers
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert (await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)).status_code == 200


async def test_deactivating_an_owner_is_allowed_while_another_remains(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    co_owner = await add_member(client, tenant, "owner")
    response = await client.patch(
        tenant.path(f"/users/{tenant.owner.id}"), json={"is_active": False}, headers=co_owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False


# Acting on a user needs every permission they hold, as role changes do (issue 13, item 3).


@pytest.mark.parametrize("is_active", [False, True], ids=["deactivate", "reactivate"])
@pytest.mark.parametrize("credential", ["admin", "admins-key"])
async def test_an_admin_cannot_deactivate_or_reactivate_an_owner(
    client: AsyncClient, is_active: bool, credential: str
) -> None:
    tenant = await create_tenant(client)
    co_owner = await add_member(client, tenant, "owner")  # so last_owner never decides
    admin = await add_member(client, tenant, "admin")
    if is_active:  # an owner deactivated by the other owner; the admin tries to bring them back
        deactivated = await client.patch(
            tenant.path(f"/users/{co_owner.id}"), json={"is_active": False}, headers=tenant.owner.headers
        )
        assert deactivated.status_code == 200, deactivated.text
    headers = admin.headers
    if credential == "admins-key":
        headers = (await create_api_key(client, tenant, "users:manage", "users:read", by=admin)).headers
    response = await client.patch(
        tenant.path(f"/users/{co_owner.id}"), json={"is_active": is_active}, headers=headers
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert "tenant:manage" in response.json()["missing_permissions"]
    state = await client.get(tenant.path(f"/users/{co_owner.id}"), headers=tenant.owner.headers)
    assert state.json()["is_active"] is not is_active


async def test_an_admin_still_deactivates_a_member(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    member = await add_member(client, tenant)
    response = await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False


async def test_nobody_deactivates_themselves(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    response = await client.patch(
        tenant.path(f"/users/{admin.id}"), json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "self_deactivation"
    assert (await client.get(tenant.path("/users/me"), headers=admin.headers)).status_code == 200
