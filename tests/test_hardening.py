"""HTTP hardening: security headers, body limits, and rate limits when Redis is down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient

from saas_app.core.config import Settings
from saas_app.core.errors import ServiceUnavailable
from saas_app.core.ratelimit import RateLimiter
from tests.factories import DEFAULT_PASSWORD, create_tenant, token

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize("path", ["/healthz", "/t/nope/users/me", "/tenants"])
async def test_every_answer_has_nosniff_and_no_store(client: AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


async def test_credential_answers_are_never_cacheable(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert response.headers["cache-control"] == "no-store"


async def test_a_route_keeps_its_own_caching(client: AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_oversized_json_body_is_413_before_parsing(client: AsyncClient) -> None:
    big = {"slug": "x", "name": "y" * 70_000, "owner": {"email": "a@b.io", "password": "p" * 8}}
    response = await client.post("/tenants", json=big)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"


async def test_oversized_chunked_body_is_413(client: AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 8192

    response = await client.post("/t/any/auth/token", content=chunks())
    assert response.status_code == 413


async def test_body_under_the_limit_passes(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await token(
        client, tenant.slug, grant_type="password", username=tenant.owner.email, password=DEFAULT_PASSWORD
    )
    assert response.status_code == 200


async def test_logins_work_while_redis_is_down(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(REDIS_URL=UNREACHABLE_REDIS, RATE_LIMITS_ENABLED=True)
    async with make_client(settings) as client:
        tenant = await create_tenant(client)
        response = await token(
            client, tenant.slug, grant_type="password", username=tenant.owner.email, password=DEFAULT_PASSWORD
        )
        assert response.status_code == 200, response.text


async def test_limits_still_hold_in_process_while_redis_is_down(
    make_settings: Callable[..., Settings],
) -> None:
    limiter = RateLimiter(make_settings(REDIS_URL=UNREACHABLE_REDIS, RATE_LIMITS_ENABLED=True))
    verdicts = [(await limiter.hit("bucket", "3/minute", "k")).allowed for _ in range(4)]
    assert verdicts == [True, True, True, False]


async def test_redis_down_can_be_configured_to_fail_closed(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        REDIS_URL=UNREACHABLE_REDIS, RATE_LIMITS_ENABLED=True, RATE_LIMIT_FAIL_OPEN=False
    )
    with pytest.raises(ServiceUnavailable):
        await RateLimiter(settings).hit("bucket", "3/minute", "k")


async def test_oversized_headers_are_431_before_routing(client: AsyncClient) -> None:
    # RFC 6585 §5. The bearer header of a real client is a few hundred bytes; 16 KiB is a lot.
    response = await client.get("/t/any/users/me", headers={"Authorization": "Bearer " + "a" * 20_000})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "headers_too_large"
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_headers_under_the_limit_pass(client: AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Padding": "a" * 12_000})
    assert response.status_code == 200


async def test_a_long_request_target_is_414(client: AsyncClient) -> None:
    response = await client.get("/t/any/projects", params={"cursor": "a" * 9_000})
    assert response.status_code == 414
    assert response.json()["code"] == "uri_too_long"


async def test_a_malformed_content_length_is_413(client: AsyncClient) -> None:
    response = await client.post("/tenants", content=b"{}", headers={"Content-Length": "12x"})
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/t/{slug}/docs/", "/t/{slug}/projects/", "/tenants/"])
async def test_a_trailing_slash_is_not_redirected_to_the_host_header(client: AsyncClient, path: str) -> None:
    # Starlette's slash redirect would answer `Location: http://evil.example/...`, built from
    # a Host header the client chose; a cache in front could serve it to everyone.
    tenant = await create_tenant(client)
    response = await client.get(
        path.format(slug=tenant.slug), headers={**tenant.owner.headers, "Host": "evil.example"}
    )
    assert response.status_code in {404, 405}, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("application/problem+json")
