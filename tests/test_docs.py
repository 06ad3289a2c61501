"""The OpenAPI document tells clients how to authenticate, and the docs pages stand alone.

From a client's side: Swagger UI (or any generator) reads `securitySchemes` and each
operation's `security` to know which credential to send; a page that pulls its script from
a CDN is blank offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

import re

from httpx import AsyncClient

from tests.factories import create_tenant
from tests.fuzz.conftest import PUBLIC

BASE = "http://testserver"


async def test_document_declares_oauth2_bearer_and_api_key(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    password = schemes["OAuth2"]["flows"]["password"]
    assert password["tokenUrl"] == "/t/{tenant}/auth/token"
    assert "users:manage" in password["scopes"]
    assert schemes["BearerToken"] == {**schemes["BearerToken"], "type": "http", "scheme": "bearer"}
    assert schemes["APIKey"] == {**schemes["APIKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert "security" not in document  # no global default: public operations need nothing


async def test_every_guarded_operation_lists_its_credentials(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            # PUBLIC is the fuzz tests' list, checked there against the answers themselves.
            assert ("security" in operation) == (label not in PUBLIC), label
    projects = document["paths"]["/t/{tenant}/projects"]["post"]["security"]
    assert projects == [{"OAuth2": ["projects:write"]}, {"BearerToken": []}, {"APIKey": []}]
    # Personal routes refuse API keys (403 human_only): the document does not offer them.
    me = document["paths"]["/t/{tenant}/users/me"]["get"]["security"]
    assert me == [{"OAuth2": []}, {"BearerToken": []}]
    # So does the admin MFA reset (a key with users:manage gets 403 human_only there).
    reset = document["paths"]["/t/{tenant}/users/{user_id}/mfa"]["delete"]["security"]
    assert reset == [{"OAuth2": ["users:manage"]}, {"BearerToken": []}]


async def test_tenant_document_names_the_tenants_token_endpoint(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    response = await client.get(f"/t/{tenant.slug}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    flow = document["components"]["securitySchemes"]["OAuth2"]["flows"]["password"]
    assert flow["tokenUrl"] == f"/t/{tenant.slug}/auth/token"
    me = document["paths"]["/t/{tenant}/users/me"]["get"]
    tenant_param = next(p for p in me["parameters"] if p["name"] == "tenant")
    assert tenant_param["schema"]["default"] == tenant.slug
    # The app's own document is left as it was.
    shared = (await client.get("/openapi.json")).json()
    assert shared["components"]["securitySchemes"]["OAuth2"]["flows"]["password"]["tokenUrl"] == (
        "/t/{tenant}/auth/token"
    )


async def test_unknown_tenant_has_no_docs(client: AsyncClient) -> None:
    for path in ("/t/no-such-tenant/openapi.json", "/t/no-such-tenant/docs"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"


async def test_docs_pages_load_nothing_from_elsewhere_and_run_no_inline_script(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    for path in ("/docs", f"/t/{tenant.slug}/docs"):
        response = await client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        page = response.text
        assert "//" not in re.sub(r"<!doctype html>", "", page, flags=re.I)  # no absolute URL at all
        sources = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sources
        assert all(s.startswith("/docs/assets/") for s in sources), sources
        assert re.search(r"<script>", page) is None  # every script has a src
        for source in sources:
            asset = await client.get(source)
            assert asset.status_code == 200, source
    page = (await client.get(f"/t/{tenant.slug}/docs")).text
    assert f'data-openapi-url="/t/{tenant.slug}/openapi.json"' in page


async def test_fastapis_cdn_pages_are_gone(client: AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404
    assert (await client.get("/docs/oauth2-redirect")).status_code == 404


async def test_the_ui_files_are_revalidated_not_downloaded_again(client: AsyncClient) -> None:
    # 1.6 MB of Swagger UI on every docs visit would be a waste: the files carry no
    # credential, so the browser keeps them and asks with their ETag (304 when unchanged).
    first = await client.get("/docs/assets/ui/swagger-ui-bundle.js")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    again = await client.get(
        "/docs/assets/ui/swagger-ui-bundle.js", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
