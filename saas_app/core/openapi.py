"""Every answer a route gives is in the OpenAPI document, its errors included.

Routes declare their error statuses with `responses=problems(...)` (RFC 9457 problem details,
`application/problem+json`) or `responses=oauth_errors(...)` (the RFC 6749 §5.2 form of the
OAuth endpoints); the shapes are declared once here. `install_openapi` files the problem
schemas under their real media type and replaces FastAPI's stock 422 body (`{"detail": [...]}`,
which this service never sends) with the problem the validation handler does send.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from saas_app.core.errors import PROBLEM_JSON

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


def install_openapi(app: FastAPI) -> None:
    """Wraps `app.openapi` so the document it serves tells the error bodies the way they are sent."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _fix_error_bodies(generate())
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
