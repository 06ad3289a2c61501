"""Token-endpoint errors, rendered in the RFC 6749 §5.2 form rather than problem+json."""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400
    # A failed grant still commits its audit event and counters.
    keep_changes: ClassVar[bool] = True

    def __init__(self, description: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class InvalidScope(OAuthError):
    error = "invalid_scope"
    # Rolls back: a refresh asking for too much must not retire the presented token.
    keep_changes = False


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class SlowDown(OAuthError):
    """Throttled (429 with Retry-After); the code mirrors RFC 8628 §3.5's `slow_down`."""

    error = "slow_down"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many attempts; retry later.", headers={"Retry-After": str(max(1, retry_after))})


BAD_CREDENTIALS = "Invalid credentials or grant."


async def oauth_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **exc.headers})
