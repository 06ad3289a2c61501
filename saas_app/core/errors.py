"""Domain errors and their rendering as RFC 9457 problem details (or RFC 6749 §5.2)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from saas_app.core.logging import REPEATS

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("saas_app.errors")

# -- the OAuth endpoints' error form --------------------------------------------------------
# A client of the token and revocation endpoints (RFC 6749 §3.2, RFC 7009 §2) reads every
# non-success answer as `{"error", "error_description"}` (RFC 6749 §5.2): a problem
# document there would be taken for a token. So whatever refuses a request at these paths
# (the tenant lookup, the router, the size limits, the limiter, an outage) answers in that
# form; the status stays. Codes: `invalid_request` for anything wrong with the request
# itself (unknown tenant, method, size, media type), `slow_down` for 429 (the code our
# token endpoint already uses, after RFC 8628 §3.5), and the codes RFC 6749 §4.1.2.1
# defines for the server's side, `server_error` and `temporarily_unavailable`.
OAUTH_ENDPOINT = re.compile(r"/t/[^/]+/auth/(?:token|revoke)/?")
OAUTH_ERROR_BY_STATUS = {429: "slow_down", 500: "server_error", 503: "temporarily_unavailable"}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
NOT_IN_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def is_oauth_endpoint(path: str) -> bool:
    """Whether `path` is a tenant's token or revocation endpoint."""
    return OAUTH_ENDPOINT.fullmatch(path) is not None


def oauth_description(text: str) -> str:
    """`text` with every character RFC 6749 §5.2 forbids in error_description replaced."""
    return NOT_IN_DESCRIPTION.sub("?", text) or "Error."


def oauth_error_body(status: int, description: str, error: str | None = None) -> dict[str, str]:
    """An RFC 6749 §5.2 error body; `error` defaults to the code fitting `status`."""
    code = error or OAUTH_ERROR_BY_STATUS.get(status, "invalid_request")
    return {"error": code, "error_description": oauth_description(description)}


class DomainError(Exception):
    """A failure a client can act on; one handler renders every subclass."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str | None] = None
    keep_changes: ClassVar[bool] = False

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        super().__init__(detail or self.default_detail())
        self.detail = detail or self.default_detail()
        self.headers = dict(headers or {})

    @classmethod
    def default_detail(cls) -> str:
        return cls.title or HTTPStatus(cls.status).phrase

    def extra(self) -> dict[str, Any]:
        """Extension members added to the problem body."""
        return {}

    def challenge(self, realm: str) -> str | None:
        """The WWW-Authenticate value for this error (RFC 6750 §3), if it needs one."""
        return None


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Unauthorized(DomainError):
    """No credential, or one that is invalid, expired or revoked (RFC 6750 §3.1)."""

    status = 401
    code = "unauthorized"

    def __init__(self, detail: str | None = None, *, presented: bool = True) -> None:
        super().__init__(detail or "Missing, invalid or expired credentials.")
        self.presented = presented

    def challenge(self, realm: str) -> str | None:
        value = f'Bearer realm="{realm}"'
        return value + ', error="invalid_token"' if self.presented else value


class PermissionDenied(Forbidden):
    """A valid principal lacks a permission (RFC 6750 §3.1 insufficient_scope)."""

    def __init__(self, missing: list[str] | str, detail: str | None = None) -> None:
        self.missing = [missing] if isinstance(missing, str) else list(missing)
        super().__init__(detail or f"Missing permission: {' '.join(self.missing)}.")

    def extra(self) -> dict[str, Any]:
        return {"missing_permissions": self.missing}

    def challenge(self, realm: str) -> str | None:
        scope = " ".join(self.missing)
        return f'Bearer realm="{realm}", error="insufficient_scope", scope="{scope}"'


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    keep_changes = True

    def __init__(self, retry_after: int, detail: str | None = None):
        super().__init__(detail or "Too many requests; retry later.")
        self.retry_after = max(1, retry_after)
        self.headers["Retry-After"] = str(self.retry_after)


# How long a client is asked to wait before retrying an answer of 503 (RFC 9110 §10.2.3):
# long enough not to hammer a database on its way back, short against an outage's length.
RETRY_UNAVAILABLE_SECONDS = 2
RETRY_UNAVAILABLE: Mapping[str, str] = {"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)}


class ServiceUnavailable(DomainError):
    status = 503
    code = "service_unavailable"

    def __init__(self, detail: str | None = None):
        super().__init__(detail)
        self.headers.update(RETRY_UNAVAILABLE)


class OutcomeUnknown(ServiceUnavailable):
    """The connection was lost while COMMIT was under way: the change may or may not have
    been stored, and nothing here can tell. The client is told so, and to retry with the
    same Idempotency-Key (a creating request that committed is then answered, not redone)."""

    code = "outcome_unknown"

    def __init__(self) -> None:
        super().__init__(
            "The database connection was lost while committing; the change may or may not have"
            " been stored. Retry with the same Idempotency-Key, or check before repeating it."
        )


class ClientClosedRequest(Exception):
    """The client went away before its answer; its transaction was rolled back."""


# nginx's 499 "client closed request": never delivered, it marks the access log line.
CLIENT_CLOSED_REQUEST = 499


async def _client_closed(request: Request, exc: Exception) -> Response:
    logger.info("client went away before the answer; its changes were rolled back")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Returns an RFC 9457 problem details response."""
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Keeps loc/msg/type of pydantic errors; the rejected input is never echoed."""
    return [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
    ]


def answer(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem document, or on the OAuth endpoints their RFC 6749 §5.2 form."""
    if is_oauth_endpoint(request.scope.get("path", "")):
        return JSONResponse(
            oauth_error_body(status, detail), status_code=status, headers={**(headers or {}), **NO_STORE}
        )
    return problem(status, code, detail, title=title, headers=headers, **extra)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = dict(exc.headers)
    challenge = exc.challenge(str(request.path_params.get("tenant", "saas_app")))
    if challenge:
        headers["WWW-Authenticate"] = challenge
    return answer(request, exc.status, exc.code, exc.detail, title=exc.title, headers=headers, **exc.extra())


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return answer(
        request,
        422,
        "validation_error",
        "The request is not valid.",
        errors=validation_errors(exc.errors()),
    )


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"))
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route that matched the path only;
        # RFC 9110 §15.5.6 wants every method the resource supports.
        headers["Allow"] = ", ".join(allowed_methods(request))
        if is_oauth_endpoint(request.scope.get("path", "")):
            detail = "The token and revocation endpoints accept POST only (RFC 6749 section 3.2)."
    return answer(request, exc.status_code, code, detail, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches at this request's path."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


# SQLSTATE classes meaning "the database cannot serve anyone right now" (PostgreSQL docs,
# Appendix A): 08 connection exception, 53 insufficient resources, 57P operator intervention
# (57P01 admin_shutdown, 57P03 cannot_connect_now: "the database system is shutting down /
# starting up", which asyncpg raises while connecting, as a plain DBAPIError).
# And the bounds of core/db.py: 57014 query_canceled (statement_timeout), 55P03
# lock_not_available (lock_timeout): the request waited as long as it may; retry later.
UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "57014", "55P03")
# Class 22, data exception: a value the database refuses to store (a NUL in text on
# PostgreSQL, an out-of-range number). The input is at fault: 422, never a 500. Routes
# validate such input first; this is the net under them.
DATA_EXCEPTION = "22"


async def _database_error(request: Request, exc: Exception) -> Response:
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    lost_connection = (
        isinstance(exc, OperationalError | PoolTimeout | OSError)
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    )
    if sqlstate.startswith(DATA_EXCEPTION):
        logger.warning("database refused a value: sqlstate %s", sqlstate)
        return answer(
            request, 422, "validation_error", "The request contains a value that cannot be stored.", errors=[]
        )
    if not lost_connection:
        return await _unexpected(request, exc)
    # The SQLSTATE tells a timeout (57014, 55P03) from a lost server (08...), where known.
    kind = f"{type(exc).__name__} {sqlstate}".strip()
    REPEATS.log(logger, logging.ERROR, f"database:{kind}", "database unavailable: %s", kind)
    return answer(
        request,
        503,
        "service_unavailable",
        "The database is unavailable; retry later.",
        headers=RETRY_UNAVAILABLE,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return answer(request, 500, "internal_error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientClosedRequest, _client_closed)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in (DBAPIError, PoolTimeout, OSError):
        app.add_exception_handler(error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
