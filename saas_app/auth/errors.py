"""Token-endpoint errors, rendered in the RFC 6749 §5.2 form rather than problem+json."""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from saas_app.core.errors import NO_STORE, oauth_error_body

__all__ = ["NO_STORE"]


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
        return oauth_error_body(self.status, self.description, self.error)


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class EmailNotVerified(InvalidGrant):
    """The password was right, but the tenant admits only verified addresses (API-v2 §1).
    Said only after a correct password: to anyone else it is the usual invalid_grant."""

    def __init__(self) -> None:
        super().__init__("Confirm your e-mail address first: open the latest link mailed to it.")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "email_not_verified": True}


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


class RefreshSlowDown(SlowDown):
    """A session over REFRESH_RATE_LIMIT. Rolls back: the presented refresh token was
    already retired in this transaction and must stay usable for the retry."""

    keep_changes = False


class MfaRequired(OAuthError):
    """The password was right; a second factor must follow (403 with an `mfa_token`)."""

    error = "mfa_required"
    status = 403

    def __init__(self, mfa_token: str, description: str | None = None) -> None:
        super().__init__(
            description
            or "A second factor is required: send grant_type=mfa_otp (or mfa_recovery_code) "
            "with this mfa_token within 5 minutes."
        )
        self.mfa_token = mfa_token

    def body(self) -> dict[str, Any]:
        return {**super().body(), "mfa_token": self.mfa_token}


class MfaEnrollmentRequired(MfaRequired):
    """The tenant requires MFA and the user has none: the token only allows enrolment."""

    error = "mfa_enrollment_required"

    def __init__(self, mfa_token: str) -> None:
        super().__init__(
            mfa_token,
            "This tenant requires MFA. Use this mfa_token as a bearer token on "
            "POST users/me/mfa/totp and .../confirm within 10 minutes, then log in again.",
        )


BAD_CREDENTIALS = "Invalid credentials or grant."


async def oauth_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **exc.headers})
