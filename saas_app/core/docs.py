"""The API's Swagger UI: `/docs` for the whole document, `/t/{tenant}/docs` for one tenant.

The UI's files come from the `fastapi-swagger` package (a pinned Swagger UI build) and are
served from here: nothing is fetched from a CDN, so the docs work offline and under a strict
Content-Security-Policy. The pages carry no inline script or style (the UI is started by
`static/swagger-init.js`, which reads the document's URL from the page), so the policy needs
no 'unsafe-inline' (OWASP ASVS 5.0 V3.4.3).

The per-tenant document (`/t/{tenant}/openapi.json`) names the tenant's own token endpoint as
the OAuth2 password flow's token URL, so Authorize (username and password) then Try it out
works in the browser; an unknown tenant is a 404.
"""

from __future__ import annotations

import os
from html import escape
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from saas_app.core.openapi import tenant_document
from saas_app.runtime import runtime_of
from saas_app.tenancy.deps import tenant_info

UI_ASSETS = "/docs/assets/ui"  # the Swagger UI build, as the package ships it
OWN_ASSETS = "/docs/assets/app"  # this app's start-up script
# Only this origin's scripts, styles, images and API calls; no inline code, no framing, no
# forms posting elsewhere. Swagger UI draws a few icons as data: URIs.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{root}{ui}/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}{ui}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{root}{ui}/swagger-ui-bundle.js"></script>
<script src="{root}{own}/swagger-init.js"></script>
</body>
</html>
"""


class RevalidatedFiles(StaticFiles):
    """Static files a browser may keep but must revalidate (`no-cache` + the ETag, so a
    repeat visit costs a 304, not the 1.6 MB bundle), instead of the edge layer's default
    `no-store`, which is for answers carrying credentials or personal data: these carry
    neither, and stay fresh across an upgrade of the pinned package."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def swagger_ui_directory() -> Path:
    return Path(str(files("fastapi_swagger") / "resources"))


def docs_page(request: Request, title: str, openapi_url: str) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    html = PAGE.format(
        title=escape(title),
        root=escape(root),
        ui=UI_ASSETS,
        own=OWN_ASSETS,
        openapi_url=escape(root + openapi_url),
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_CSP})


def install_docs(app: FastAPI) -> None:
    """Serves the UI's files, `/docs`, and the per-tenant document and UI (none in the schema)."""
    app.mount(UI_ASSETS, RevalidatedFiles(directory=swagger_ui_directory()), name="swagger-ui")
    app.mount(OWN_ASSETS, RevalidatedFiles(directory=Path(__file__).parent / "static"), name="docs-app")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return docs_page(request, f"{app.title} - API", app.openapi_url or "/openapi.json")

    @app.get("/t/{tenant}/docs", include_in_schema=False)
    async def tenant_docs(request: Request, tenant: str) -> HTMLResponse:
        info = await tenant_info(runtime_of(request), tenant)  # 404 for an unknown tenant
        return docs_page(request, f"{app.title} - {info.slug}", f"/t/{info.slug}/openapi.json")

    @app.get("/t/{tenant}/openapi.json", include_in_schema=False)
    async def tenant_openapi(request: Request, tenant: str) -> JSONResponse:
        info = await tenant_info(runtime_of(request), tenant)
        root = request.scope.get("root_path", "").rstrip("/")
        document: dict[str, Any] = tenant_document(app.openapi(), info.slug, root)
        return JSONResponse(document)
