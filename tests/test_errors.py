"""RFC 9457 problem details everywhere outside the OAuth endpoints, and X-Request-ID."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient, Response

from tests.factories import DEFAULT_PASSWORD, Member, TenantCtx, add_member, create_tenant

PROBLEM_JSON = "application/problem+json"


@dataclass
class World:
    tenant: TenantCtx
    viewer: Member


Request = Callable[[AsyncClient, World], Awaitable[Response]]


async def unknown_project(client: AsyncClient, w: World) -> Response:
    return await client.get(w.tenant.path(f"/projects/{uuid.uuid4()}"), headers=w.tenant.owner.headers)


async def unknown_route(client: AsyncClient, w: World) -> Response:
    return await client.get(w.tenant.path("/nothing-here"), headers=w.tenant.owner.headers)


async def taken_slug(client: AsyncClient, w: World) -> Response:
    owner = {"email": "x@example.com", "password": DEFAULT_PASSWORD}
    return await client.post("/tenants", json={"slug": w.tenant.slug, "name": "Dup", "owner": owner})


async def taken_email(client: AsyncClient, w: World) -> Response:
    body = {"email": w.viewer.email, "password": DEFAULT_PASSWORD}
    return await client.post(w.tenant.path("/auth/register"), json=body)


async def invalid_body(client: AsyncClient, w: World) -> Response:
    return await client.post(w.tenant.path("/projects"), json={"name": ""}, headers=w.tenant.owner.headers)


async def not_json(client: AsyncClient, w: World) -> Response:
    headers = {**w.tenant.owner.headers, "Content-Type": "application/json"}
    return await client.post(w.tenant.path("/projects"), content=b"{not json", headers=headers)


async def missing_permission(client: AsyncClient, w: World) -> Response:
    return await client.post(w.tenant.path("/projects"), json={"name": "x"}, headers=w.viewer.headers)


async def no_token(client: AsyncClient, w: World) -> Response:
    return await client.get(w.tenant.path("/projects"))


async def bad_token(client: AsyncClient, w: World) -> Response:
    return await client.get(w.tenant.path("/projects"), headers={"Authorization": "Bearer not.a.jwt"})


PROBLEMS: list[tuple[Request, int, str]] = [
    (unknown_project, 404, "project_not_found"),
    (unknown_route, 404, "not_found"),
    (taken_slug, 409, "tenant_exists"),
    (taken_email, 409, "user_exists"),
    (invalid_body, 422, "validation_error"),
    (not_json, 422, "validation_error"),
    (missing_permission, 403, "forbidden"),
    (no_token, 401, "unauthorized"),
    (bad_token, 401, "unauthorized"),
]


@pytest.fixture
async def world(client: AsyncClient) -> World:
    tenant = await create_tenant(client)
    return World(tenant, await add_member(client, tenant, "viewer"))


@pytest.mark.parametrize(("request_", "status", "code"), PROBLEMS, ids=[p[0].__name__ for p in PROBLEMS])
async def test_errors_are_problem_details(
    client: AsyncClient, world: World, request_: Request, status: int, code: str
) -> None:
    response = await request_(client, world)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]


async def test_validation_problem_lists_errors(client: AsyncClient, world: World) -> None:
    body = (await invalid_body(client, world)).json()
    assert body["errors"]
    for error in body["errors"]:
        assert set(error) == {"loc", "msg", "type"}
    assert ["body", "name"] in [error["loc"] for error in body["errors"]]


async def test_forbidden_names_the_missing_permission(client: AsyncClient, world: World) -> None:
    response = await missing_permission(client, world)
    assert "projects:write" in response.json()["detail"]
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{world.tenant.slug}", error="insufficient_scope", scope="projects:write"'
    )


async def test_missing_credentials_challenge_without_error(client: AsyncClient, world: World) -> None:
    response = await no_token(client, world)
    assert response.headers["www-authenticate"] == f'Bearer realm="{world.tenant.slug}"'


async def test_invalid_credentials_challenge_with_invalid_token(client: AsyncClient, world: World) -> None:
    response = await bad_token(client, world)
    assert (
        response.headers["www-authenticate"] == f'Bearer realm="{world.tenant.slug}", error="invalid_token"'
    )


# A 422 never echoes what was submitted (a password above all).

SECRET = "Zebra-Quartz-" + uuid.uuid4().hex


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/tenants",
            {"slug": "BAD SLUG", "name": "x", "owner": {"email": "a@example.com", "password": SECRET}},
        ),
        ("/tenants", {"slug": "ok", "name": "x", "owner": {"email": "not-an-email", "password": SECRET}}),
        (
            "/tenants",
            {"slug": "ok", "name": "x", "owner": {"email": "a@example.com", "password": SECRET[:7]}},
        ),
        (
            "/tenants",
            {"slug": "ok", "name": "x", "owner": {"email": "a@example.com", "password": SECRET * 5}},
        ),
        ("/tenants", {"slug": "ok", "name": "x", "owner": {"email": "a@example.com", "password": 12345678}}),
        (
            "/tenants",
            {
                "slug": "ok",
                "name": "x",
                "owner": {"email": "a@example.com", "password": SECRET, "pin": SECRET},
            },
        ),
        ("/t/{slug}/auth/register", {"email": "bad", "password": SECRET}),
        ("/t/{slug}/auth/register", {"email": "a@example.com", "password": SECRET[:5]}),
    ],
    ids=[
        "bad-slug",
        "bad-email",
        "short-password",
        "long-password",
        "non-string-password",
        "extra-field",
        "register-bad-email",
        "register-short-password",
    ],
)
async def test_validation_error_never_echoes_input(
    client: AsyncClient, world: World, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path.format(slug=world.tenant.slug), json=body)
    assert response.status_code == 422, response.text
    assert SECRET[:5] not in response.text
    assert "12345678" not in response.text
    assert "input" not in response.json()["errors"][0]


async def test_password_change_422_never_echoes_passwords(client: AsyncClient, world: World) -> None:
    body = {"current_password": SECRET, "new_password": "x" + SECRET[:5]}
    response = await client.post(
        world.tenant.path("/users/me/password"), json=body, headers=world.viewer.headers
    )
    assert response.status_code == 422, response.text
    assert SECRET[:5] not in response.text


# X-Request-ID


async def test_request_id_is_echoed(client: AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "req-abc.123_XYZ"})
    assert response.headers["x-request-id"] == "req-abc.123_XYZ"


async def test_request_id_is_generated_when_absent(client: AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,128}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "sent",
    ["has space", "a" * 129, "semi;colon", "<script>"],
    ids=["space", "129-chars", "semicolon", "markup"],
)
async def test_unsafe_request_id_is_replaced(client: AsyncClient, sent: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] != sent
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,128}", response.headers["x-request-id"])


async def test_request_id_is_on_error_responses(client: AsyncClient) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-404"
