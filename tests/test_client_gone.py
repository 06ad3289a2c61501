"""A request whose client has gone away before its answer is rolled back, not committed
(issue 15): nobody reads the answer, and a retry must not find the work done behind its
back. Driven through the ASGI interface directly, as a server does: the body arrives,
then the client's disconnect."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI
from httpx import AsyncClient
from starlette.types import Message

from tests.factories import create_tenant, login, token


async def call_and_vanish(
    app: FastAPI, path: str, body: bytes, content_type: str, **headers: str
) -> list[Message]:
    """POSTs `body` to `path`, then disconnects at the first chance the app has to notice."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *[(name.lower().encode(), value.encode()) for name, value in headers.items()],
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _status(sent: list[Message]) -> int:
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


async def test_a_write_whose_client_went_away_is_not_committed(client: AsyncClient) -> None:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    tenant = await create_tenant(client)
    sent = await call_and_vanish(
        app,
        tenant.path("/projects"),
        json.dumps({"name": "abandoned"}).encode(),
        "application/json",
        Authorization=tenant.owner.headers["Authorization"],
    )
    assert _status(sent) == 499  # the access log's mark; no client is there to read it
    listed = await client.get(tenant.path("/projects"), headers=tenant.owner.headers)
    assert listed.json()["items"] == []
    kept = await client.post(tenant.path("/projects"), json={"name": "kept"}, headers=tenant.owner.headers)
    assert kept.status_code == 201


async def test_a_refresh_whose_answer_never_arrived_can_be_retried_without_a_theft_alarm(
    client: AsyncClient,
) -> None:
    """The client's refresh timed out and it gave up: the rotation is rolled back, so its
    retry with the same refresh token is a plain refresh, not reuse of a retired token
    (which would revoke the session and raise token.reuse_detected)."""
    app: FastAPI = client.app  # type: ignore[attr-defined]
    tenant = await create_tenant(client)
    signed_in = await login(client, tenant.slug, tenant.owner.email)
    form = urlencode({"grant_type": "refresh_token", "refresh_token": signed_in.refresh_token}).encode()
    sent = await call_and_vanish(app, tenant.path("/auth/token"), form, "application/x-www-form-urlencoded")
    assert _status(sent) == 499

    retried = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=signed_in.refresh_token
    )
    assert retried.status_code == 200, retried.text
    me = await client.get(
        tenant.path("/users/me"), headers={"Authorization": f"Bearer {retried.json()['access_token']}"}
    )
    assert me.status_code == 200  # the session lives on
    events = await client.get(
        tenant.path("/audit-events"), params={"action": "token.reuse_detected"}, headers=tenant.owner.headers
    )
    assert events.status_code == 200, events.text
    assert events.json()["items"] == []
