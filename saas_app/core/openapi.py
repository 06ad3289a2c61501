"""Every answer a route gives is in the OpenAPI document, its errors included.

Routes declare their error statuses with `responses=problems(...)` (RFC 9457 problem details,
`application/problem+json`) or `responses=oauth_errors(...)` (the RFC 6749 §5.2 form of the
OAuth endpoints); the shapes are declared once here. `install_openapi` files the problem
schemas under their real media type and replaces FastAPI's stock 422 body (`{"detail": [...]}`,
which this service never sends) with the problem the validation handler does send.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from saas_app.core.errors import PROBLEM_JSON
from saas_app.rbac.permissions import PERMISSIONS

JSON = "application/json"
REF = "#/components/schemas/"


class Problem(BaseModel):
    """RFC 9457 problem details. Extension members (`missing_permissions`, `down`, ...) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description='Always "about:blank": `code` tells the problems apart.')
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine code (`not_found`, `forbidden`, `tenant_exists`, ...).")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(Problem):
    """A 422: with code `validation_error`, `errors` lists what failed (never the rejected value)."""

    errors: list[FieldError] = Field(default_factory=list)


class OAuthErrorBody(BaseModel):
    """RFC 6749 §5.2 error response; `mfa_token` comes with `mfa_required` and `mfa_enrollment_required`."""

    model_config = ConfigDict(extra="allow")

    error: str
    error_description: str
    mfa_token: str | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for problem+json answers with these statuses."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else Problem,
            "description": HTTPStatus(status).phrase,
        }
        for status in statuses
    }


def oauth_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for RFC 6749 §5.2 error answers with these statuses."""
    return {
        status: {"model": OAuthErrorBody, "description": HTTPStatus(status).phrase} for status in statuses
    }


# Any route under /t/{tenant}: the slug may name no tenant.
TENANT = problems(404)
# A route that authenticates its caller: both a bearer token and an API key (400
# `ambiguous_credentials`), no or a bad credential (401), a missing permission or a credential of
# the wrong kind (403), an API key over its own rate limit (429).
AUTHENTICATED = problems(400, 401, 403, 404, 429)
# A route that changes how its user signs in also needs a recent login (guards.ensure_recent_login).
RECENT_LOGIN: dict[int | str, dict[str, Any]] = {
    403: {
        "model": Problem,
        "description": "Forbidden; `reauthentication_required` when the login is older than 10 minutes",
    }
}
# Every route: oversized input is refused before routing, a body over MAX_BODY_BYTES (413),
# a request target over MAX_URL_BYTES (414), a header section over MAX_HEADER_BYTES (431).
EVERY_ROUTE = problems(413, 414, 431)


# The security schemes (OpenAPI 3.1 §4.8.27). Clients send one credential: a bearer access
# token (got from the tenant's token endpoint, RFC 6749 §4.3) or an API key.
OAUTH2 = "OAuth2"
BEARER = "BearerToken"
API_KEY = "APIKey"
TENANT_TOKEN_URL = "/t/{tenant}/auth/token"  # noqa: S105 (a path, not a secret)
ACCEPTS = "openapi_accepts"  # the attribute guards.accepts() puts on each guard


def security_schemes(token_url: str) -> dict[str, Any]:
    return {
        OAUTH2: {
            "type": "oauth2",
            "description": "Password grant at the tenant's token endpoint; the per-tenant document "
            "(`/t/{tenant}/openapi.json`, UI at `/t/{tenant}/docs`) names the tenant's. Scopes "
            "narrow a token to some of its user's permissions; none asked, none narrowed.",
            "flows": {
                "password": {
                    "tokenUrl": token_url,
                    "refreshUrl": token_url,
                    "scopes": {p: f"the `{p}` permission" for p in PERMISSIONS},
                }
            },
        },
        BEARER: {"type": "http", "scheme": "bearer", "description": "An access token of this tenant."},
        API_KEY: {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key of this tenant.",
        },
    }


def install_openapi(app: FastAPI) -> None:
    """Wraps `app.openapi` so the document it serves tells the error bodies the way they are
    sent, and the credentials each operation takes the way its guards take them."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _fix_error_bodies(document)
            _add_security(document, app)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _is_ref(content: dict[str, Any], media_type: str, *names: str) -> bool:
    ref = content.get(media_type, {}).get("schema", {}).get("$ref", "")
    return any(ref == REF + name for name in names)


def _problem_response(status: int, model: type[Problem]) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF + model.__name__}}},
    }


def _fix_error_bodies(document: dict[str, Any]) -> None:
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses: dict[str, Any] = operation.get("responses", {})
            for response in responses.values():
                content = response.get("content", {})
                if _is_ref(content, JSON, Problem.__name__, ValidationProblem.__name__):
                    content[PROBLEM_JSON] = content.pop(JSON)
            if JSON in operation.get("requestBody", {}).get("content", {}):
                # FastAPI answers a body it cannot decode (not UTF-8, say) with a 400 problem.
                responses.setdefault("400", _problem_response(400, Problem))
            stock = responses.get("422", {}).get("content", {})
            if not _is_ref(stock, JSON, "HTTPValidationError"):
                continue
            if _is_ref(responses.get("400", {}).get("content", {}), JSON, OAuthErrorBody.__name__):
                # The OAuth endpoints read their form by hand: a bad one is 400 invalid_request, never 422.
                del responses["422"]
            else:
                responses["422"] = _problem_response(422, ValidationProblem)
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    # The replacement 422 refers to these even where no route names them in `responses=`.
    for model in (Problem, ValidationProblem):
        schema = model.model_json_schema(ref_template=REF + "{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)


def tenant_document(document: dict[str, Any], slug: str, root_path: str = "") -> dict[str, Any]:
    """The app's document for one tenant: its token endpoint as the OAuth2 token URL, and its
    slug as every `tenant` parameter's default (so Swagger UI's Authorize and Try it out work
    without typing it)."""
    document = copy.deepcopy(document)
    token_url = root_path + TENANT_TOKEN_URL.format(tenant=slug)
    document["components"]["securitySchemes"] = security_schemes(token_url)
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "tenant":
                    parameter["schema"]["default"] = slug
    return document


def _guards(dependant: Dependant) -> Iterator[Any]:
    """Every guard (a dependency marked by guards.accepts) a route depends on, however deep."""
    for dependency in dependant.dependencies:
        accepts = getattr(dependency.call, ACCEPTS, None)
        if accepts is not None:
            yield accepts
        yield from _guards(dependency)


def _requirements(accepted: list[Any]) -> list[dict[str, list[str]]]:
    """OpenAPI security requirements (alternatives): a route's guards all apply, so an API key
    works only if every guard takes one, and the scopes are all those any guard demands."""
    scopes = sorted({scope for accepts in accepted for scope in accepts.scopes}, key=PERMISSIONS.index)
    requirements = [{OAUTH2: scopes}, {BEARER: []}]
    if all(accepts.api_key for accepts in accepted):
        requirements.append({API_KEY: []})
    return requirements


def _add_security(document: dict[str, Any], app: FastAPI) -> None:
    document.setdefault("components", {})["securitySchemes"] = security_schemes(TENANT_TOKEN_URL)
    for context in iter_route_contexts(app.routes):  # included routers' routes too
        route = context.original_route
        operations = document["paths"].get(context.path_format or "", {})
        if not isinstance(route, APIRoute):
            continue
        accepted = list(_guards(route.dependant))
        for method in route.methods or ():
            if accepted and method.lower() in operations:
                # Public operations get no `security` (and there is no global default).
                operations[method.lower()]["security"] = _requirements(accepted)
