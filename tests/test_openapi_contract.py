"""The OpenAPI document says what validation enforces (issue 13, item 14).

A client (or a generator such as schemathesis) that sends only what the document allows must
get its request accepted, and what the document forbids must be refused. Each test reads the
constraint from the served document, then sends values on both sides of it.
"""

from __future__ import annotations

import re
from typing import Any

from httpx import AsyncClient

from tests.factories import create_tenant, login

NUL = "\x00"


async def document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    return response.json()  # type: ignore[no-any-return]


def strings(schema: Any) -> list[dict[str, Any]]:
    """Every text (sub)schema of a member, through unions and lists."""
    if not isinstance(schema, dict):
        return []
    found = [schema] if schema.get("type") == "string" else []
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key, []):
            found += strings(branch)
    return found + strings(schema.get("items"))


async def test_no_request_text_admits_nul(client: AsyncClient) -> None:
    doc = await document(client)
    bodies = [s for s in doc["components"]["schemas"].values() if s.get("additionalProperties") is False]
    assert len(bodies) > 10
    for body in bodies:
        for name, member in body["properties"].items():
            for text in strings(member):
                if "enum" in text:
                    continue
                assert "pattern" in text, (body["title"], name)
                assert not re.search(text["pattern"], f"a{NUL}b"), (body["title"], name)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            form = operation.get("requestBody", {}).get("content", {})
            form_schema = form.get("application/x-www-form-urlencoded", {}).get("schema")
            if form_schema:
                for name, member in form_schema["properties"].items():
                    if "enum" not in member:
                        assert not re.search(member["pattern"], f"a{NUL}b"), (method, path, name)


async def test_password_bounds_are_the_policys(client: AsyncClient) -> None:
    doc = await document(client)
    password = doc["components"]["schemas"]["Credentials"]["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (8, 128)
    new = doc["components"]["schemas"]["PasswordChange"]["properties"]["new_password"]
    assert (new["minLength"], new["maxLength"]) == (8, 128)
    tenant = await create_tenant(client)
    for length, status in ((7, 422), (8, 201), (128, 201), (129, 422)):
        body = {"email": f"len{length}@example.com", "password": "p" * length}
        response = await client.post(tenant.path("/auth/register"), json=body)
        assert response.status_code == status, (length, response.text)


async def test_cursor_is_base64url_and_other_text_is_refused(client: AsyncClient) -> None:
    doc = await document(client)
    params = doc["paths"]["/t/{tenant}/projects"]["get"]["parameters"]
    cursor = next(p for p in params if p["name"] == "cursor")["schema"]["anyOf"][0]
    assert cursor["pattern"] == "^[A-Za-z0-9_-]*$"
    tenant = await create_tenant(client)
    for value in ("ab+/", "a b", "ab="):
        response = await client.get(
            tenant.path("/projects"), params={"cursor": value}, headers=tenant.owner.headers
        )
        assert response.status_code == 422, value
    ok = await client.get(tenant.path("/projects"), params={"cursor": ""}, headers=tenant.owner.headers)
    assert ok.status_code == 200


async def test_project_name_may_be_left_out_but_is_never_null(client: AsyncClient) -> None:
    doc = await document(client)
    name = doc["components"]["schemas"]["ProjectUpdate"]["properties"]["name"]
    assert name["type"] == "string"
    assert "anyOf" not in name  # no null branch
    tenant = await create_tenant(client)
    created = await client.post(tenant.path("/projects"), json={"name": "P"}, headers=tenant.owner.headers)
    path = tenant.path(f"/projects/{created.json()['id']}")
    assert (await client.patch(path, json={"name": None}, headers=tenant.owner.headers)).status_code == 422
    assert (await client.patch(path, json={"name": "   "}, headers=tenant.owner.headers)).status_code == 422
    assert not re.search(name["pattern"], "   ")
    assert (
        await client.patch(path, json={"description": "d"}, headers=tenant.owner.headers)
    ).status_code == 200


async def test_rate_limit_pattern_is_what_the_limiter_parses(client: AsyncClient) -> None:
    doc = await document(client)
    member = doc["components"]["schemas"]["ApiKeyCreate"]["properties"]["rate_limit"]["anyOf"][0]
    pattern = member["pattern"]
    tenant = await create_tenant(client)
    cases = {
        "100/minute": 201,
        "5 per 2 hours": 201,
        "1per1day": 201,
        "100/minute; 1000/day": 201,
        "": 422,
        "often": 422,
        "0/second": 422,
        "1/second;;2/minute": 422,
    }
    for value, status in cases.items():
        assert bool(re.search(pattern, value)) == (status == 201), value
        body = {"name": "k", "scopes": ["projects:read"], "rate_limit": value}
        response = await client.post(tenant.path("/api-keys"), json=body, headers=tenant.owner.headers)
        assert response.status_code == status, (value, response.text)


async def test_integral_numbers_are_integers(client: AsyncClient) -> None:
    # JSON Schema's `integer` admits 1.0: so does the API, and still refuses 1.5 and "1".
    tenant = await create_tenant(client)
    for value, status in ((1.0, 201), (1.5, 422), ("1", 422)):
        body = {"name": "k", "scopes": ["projects:read"], "expires_in_days": value}
        response = await client.post(tenant.path("/api-keys"), json=body, headers=tenant.owner.headers)
        assert response.status_code == status, (value, response.text)


async def test_mfa_disable_proof_is_exactly_one_of_code_or_recovery_code(client: AsyncClient) -> None:
    doc = await document(client)
    proof = doc["components"]["schemas"]["DisableProof"]
    assert proof["oneOf"] == [{"required": ["code"]}, {"required": ["recovery_code"]}]
    assert all(m["type"] == "string" and "default" not in m for m in proof["properties"].values())
    tenant = await create_tenant(client)
    fresh = await login(client, tenant.slug, tenant.owner.email)
    for body in (
        {},
        {"code": "123456", "recovery_code": "abcd-efgh-ijkl"},
        {"code": "123456", "recovery_code": None},
    ):
        response = await client.request(
            "DELETE", tenant.path("/users/me/mfa/totp"), json=body, headers=fresh.headers
        )
        assert response.status_code == 422, (body, response.text)


async def test_role_names_in_a_roles_update_have_the_role_name_form(client: AsyncClient) -> None:
    doc = await document(client)
    items = doc["components"]["schemas"]["RolesUpdate"]["properties"]["roles"]["items"]
    role = doc["components"]["schemas"]["RoleCreate"]["properties"]["name"]
    assert items["pattern"] == role["pattern"]
    tenant = await create_tenant(client)
    path = tenant.path(f"/users/{tenant.owner.id}/roles")
    response = await client.put(path, json={"roles": ["owner", ""]}, headers=tenant.owner.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"  # refused by the schema, not as unknown_role
