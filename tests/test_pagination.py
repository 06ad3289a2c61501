"""Cursors are client input: any malformed one is a 422 on every list route, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from httpx import AsyncClient

from saas_app.core.pagination import decode_cursor, encode_cursor
from tests.factories import create_tenant

LIST_ROUTES = ["/users", "/users/me/sessions", "/roles", "/api-keys", "/audit-events", "/projects"]
AN_ID = str(uuid.uuid4())
AN_AT = "2024-01-01T00:00:00+00:00"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(payload: object) -> str:
    return _b64(json.dumps(payload).encode())


# Each decodes (base64, then JSON, mostly) but does not name a real position in a list.
CRAFTED_CURSORS = {
    "naive-timestamp": _cursor({"at": "2024-01-01T00:00:00", "id": AN_ID}),
    "date-only": _cursor({"at": "2024-01-01", "id": AN_ID}),
    "at-is-number": _cursor({"at": 1_700_000_000, "id": AN_ID}),
    "at-is-bool": _cursor({"at": True, "id": AN_ID}),
    "at-is-null": _cursor({"at": None, "id": AN_ID}),
    "at-is-object": _cursor({"at": {"y": 2024}, "id": AN_ID}),
    "at-overflows-utc": _cursor({"at": "9999-12-31T23:59:59-14:00", "id": AN_ID}),
    "at-underflows-utc": _cursor({"at": "0001-01-01T00:00:00+14:00", "id": AN_ID}),
    "at-month-13": _cursor({"at": "2024-13-01T00:00:00+00:00", "id": AN_ID}),
    "at-with-nul": _cursor({"at": AN_AT + "\u0000", "id": AN_ID}),
    "id-is-number": _cursor({"at": AN_AT, "id": 5}),
    "id-is-huge-number": _cursor({"at": AN_AT, "id": 10**40}),
    "id-is-list": _cursor({"at": AN_AT, "id": [1, 2]}),
    "id-not-a-uuid": _cursor({"at": AN_AT, "id": "not-a-uuid"}),
    "id-too-short": _cursor({"at": AN_AT, "id": AN_ID[:-1]}),
    "id-missing": _cursor({"at": AN_AT}),
    "at-missing": _cursor({"id": AN_ID}),
    "extra-field": _cursor({"at": AN_AT, "id": AN_ID, "x": 1}),
    "json-list": _cursor([AN_AT, AN_ID]),
    "json-string": _cursor("cursor"),
    "json-number": _cursor(5),
    "json-null": _cursor(None),
    "json-nan": _b64(b'{"at": NaN, "id": NaN}'),
    "not-json": _b64(b"{not json"),
    "not-utf8": _b64(b'{"at": "\xff\xfe"}'),
    "not-base64": "%%%%",
    "bad-padding": "abcde",
    "non-ascii": "\u00e9\u00e9\u00e9\u00e9",
    "deeply-nested": _b64(b"[" * 190 + b"]" * 190),
}


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize("cursor", list(CRAFTED_CURSORS.values()), ids=list(CRAFTED_CURSORS))
async def test_a_crafted_cursor_is_a_422_on_every_list_route(
    client: AsyncClient, route: str, cursor: str
) -> None:
    tenant = await create_tenant(client)
    response = await client.get(tenant.path(route), params={"cursor": cursor}, headers=tenant.owner.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_error"
    # One error, on the cursor: the schema's pattern refuses what is not base64url, the
    # decoder everything else ("Malformed cursor").
    assert [error["loc"] for error in body["errors"]] == [["query", "cursor"]]
    assert cursor not in response.text
    # The connection stays usable: the next request on it is answered normally.
    again = await client.get(tenant.path(route), headers=tenant.owner.headers)
    assert again.status_code == 200, again.text


def test_a_cursor_round_trips_as_utc() -> None:
    at, row_id = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), uuid.uuid4()
    keyset = decode_cursor(encode_cursor(at, row_id))
    assert (keyset.at, keyset.id) == (at, row_id)
    assert keyset.at.tzinfo is UTC
