"""Every non-success answer of the OAuth endpoints is in RFC 6749 §5.2 form (issue 13
item 12): `{"error", "error_description"}`, `Cache-Control: no-store`, whatever refused
the request (an unknown tenant, the router, the size limits at the edge, the limiter).

A real client checks it: Authlib's `fetch_token` raises `OAuthError` on an `error`
member and otherwise hands the body back as if it were a token."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.requests_client import OAuth2Session
from httpx import ASGITransport, AsyncClient

from saas_app.core.config import Settings
from tests.conftest import REDIS_URL
from tests.factories import create_tenant
from tests.servers import running_server

PASSWORD = "oauth client password long enough"
HUGE = "x" * 100_000  # over MAX_BODY_BYTES (64 KiB)
JSON_BODY = {
    "content": json.dumps({"grant_type": "password"}),
    "headers": {"content-type": "application/json"},
}
FORM = {"grant_type": "password", "username": "nobody@example.com", "password": PASSWORD}


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    # RFC 6749 §5.2: error_description is printable ASCII without `"` and `\`.
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in body["error_description"])
    assert "code" not in body
    assert "type" not in body
    assert response.headers["cache-control"] == "no-store"


# (id, method, path under /t/{tenant}, request keyword arguments, status, error)
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("unknown-tenant", "POST", "/t/no-such-tenant/auth/token", {"data": FORM}, 404, "invalid_request"),
    ("malformed-tenant", "POST", "/t/NO_SUCH/auth/revoke", {"data": {"token": "x"}}, 404, "invalid_request"),
    # A slug of a line feed: Starlette's URL drops it (so request.url.path is /t//auth/token);
    # the raw ASGI path still names the token endpoint.
    ("newline-tenant", "POST", "/t/%0A/auth/token", {"data": FORM}, 404, "invalid_request"),
    ("get-token", "GET", "/t/{t}/auth/token", {}, 405, "invalid_request"),
    ("put-revoke", "PUT", "/t/{t}/auth/revoke", {}, 405, "invalid_request"),
    ("huge-body", "POST", "/t/{t}/auth/token", {"data": {**FORM, "username": HUGE}}, 413, "invalid_request"),
    ("huge-revoke", "POST", "/t/{t}/auth/revoke", {"data": {"token": HUGE}}, 413, "invalid_request"),
    ("long-url", "POST", "/t/{t}/auth/token?" + "a" * 10_000, {"data": FORM}, 414, "invalid_request"),
    ("big-headers", "POST", "/t/{t}/auth/token", {"data": FORM, "headers": {"x-big": "a" * 20_000}}, 431,
     "invalid_request"),
    ("json-body", "POST", "/t/{t}/auth/token", JSON_BODY, 400, "invalid_request"),
    ("json-revoke", "POST", "/t/{t}/auth/revoke", JSON_BODY, 400, "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "error"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
async def test_every_refusal_at_an_oauth_endpoint_is_an_oauth_error(
    client: AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int, error: str
) -> None:
    tenant = await create_tenant(client)
    response = await client.request(method, path.replace("{t}", tenant.slug), **kwargs)
    assert_oauth_error(response, status, error)


async def test_the_limiter_answers_in_oauth_form(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with make_client(make_settings(RATE_LIMITS_ENABLED=True, LOGIN_RATE_LIMIT="2/minute")) as client:
        tenant = await create_tenant(client)  # takes no token-endpoint slot
        for _ in range(2):
            await client.post(tenant.path("/auth/token"), data=FORM)
        response = await client.post(tenant.path("/auth/token"), data=FORM)
        assert_oauth_error(response, 429, "slow_down")
        assert int(response.headers["retry-after"]) >= 1


async def test_routes_beside_the_oauth_endpoints_keep_problem_details(client: AsyncClient) -> None:
    response = await client.post("/t/no-such-tenant/auth/register", json={})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "tenant_not_found"


async def test_authlib_async_client_raises_oauth_errors_in_process(client: AsyncClient) -> None:
    """AsyncOAuth2Client over the app itself (ASGI): the unknown tenant and a 405."""
    tenant = await create_tenant(client)
    app = client.app  # type: ignore[attr-defined]
    async with AsyncOAuth2Client(transport=ASGITransport(app=app), base_url="http://testserver") as oauth:
        with pytest.raises(OAuthError) as unknown:
            await oauth.fetch_token(
                "/t/no-such-tenant/auth/token", username="a@example.com", password=PASSWORD
            )
        assert unknown.value.error == "invalid_request"
        with pytest.raises(OAuthError) as wrong_method:
            await oauth.fetch_token(tenant.path("/auth/token"), method="GET", username="a", password="b")
        assert wrong_method.value.error == "invalid_request"
        token = await oauth.fetch_token(
            tenant.path("/auth/token"), username=tenant.owner.email, password=tenant.owner.password
        )
        assert token["token_type"] == "bearer"


# -- against a real server ----------------------------------------------------------------


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    env = {
        "DATABASE_URL": database_url,
        "LOGIN_RATE_LIMIT": "3/minute",
        **({"REDIS_URL": REDIS_URL} if REDIS_URL else {}),
    }
    with running_server(env, tmp_path / "server.log") as (base, _pid):
        yield base


@pytest.mark.e2e
def test_authlib_raises_the_right_oauth_error_against_a_real_server(server: str) -> None:
    slug = f"oauth-{uuid.uuid4().hex[:8]}"
    owner = {"email": "owner@oauth.example", "password": PASSWORD}
    created = httpx.post(
        f"{server}/tenants", json={"slug": slug, "name": "OAuth", "owner": owner}, timeout=10
    )
    assert created.status_code == 201, created.text
    token_url = f"{server}/t/{slug}/auth/token"

    def fetch(url: str = token_url, **kwargs: Any) -> str:
        with OAuth2Session(client_id=None) as session, pytest.raises(OAuthError) as raised:
            session.fetch_token(
                url, username=kwargs.pop("username", owner["email"]), password="wrong", **kwargs
            )
        return str(raised.value.error)

    assert fetch(f"{server}/t/no-such-tenant/auth/token") == "invalid_request"
    assert fetch(method="GET") == "invalid_request"
    assert fetch(username=HUGE) == "invalid_request"  # 413 at the edge
    json_body = {"Content-Type": "application/json", "Accept": "application/json"}
    assert fetch(headers=json_body) == "invalid_request"  # a body declared as JSON
    errors = [fetch() for _ in range(4)]  # LOGIN_RATE_LIMIT=3/minute
    assert errors == ["invalid_grant"] * 3 + ["slow_down"]
    revoked = httpx.get(f"{server}/t/{slug}/auth/revoke", timeout=10)
    assert_oauth_error(revoked, 405, "invalid_request")
