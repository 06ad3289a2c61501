"""JWTs (RFC 7519) this service issues, one verifier per token kind.

The only module that imports `jose`. Keys are parsed once at start-up (parsing a PEM per
call costs tens of milliseconds). Verification pins the algorithm (RFC 8725 §3.1: never
trust the header's `alg`), then checks each claim with a small named rule.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError

from saas_app.core.config import Settings

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 §2.1 media type)
# RFC 9068 §2.2 requires `client_id`: the tenant's own first-party client issues the tokens
# of the password grant and of GitHub sign-in (API-v2 §2).
FIRST_PARTY_CLIENT = "first-party"
ACCESS_REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "tid", "sid", "jti")
LEEWAY_SECONDS = 30


class InvalidToken(Exception):
    """The token is not one this service issued for this use, or it is no longer valid."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: uuid.UUID
    tid: uuid.UUID
    sid: uuid.UUID
    jti: str
    iat: int
    exp: int
    scope: frozenset[str]
    amr: tuple[str, ...]
    auth_time: int


class TokenKeys:
    """The signing key and its public half, parsed once."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.JWT_ALGORITHM
        if self.algorithm == "HS256":
            self._signing: Key = jwk.construct(settings.JWT_SECRET, "HS256")
            self._verifying: Key = self._signing
            self.kid: str | None = None
            self.public_jwks: dict[str, list[dict[str, Any]]] = {"keys": []}
            return
        assert settings.JWT_PRIVATE_KEY_FILE is not None  # enforced by Settings
        pem = settings.JWT_PRIVATE_KEY_FILE.read_text()
        self._signing = jwk.construct(pem, self.algorithm)
        self._verifying = self._signing.public_key()
        public = {k: v for k, v in self._verifying.to_dict().items() if k != "alg"}
        self.kid = _thumbprint(public)
        jwk_public = {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}
        self.public_jwks = {"keys": [jwk_public]}

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        headers = {"typ": typ} | ({"kid": self.kid} if self.kid else {})
        token: str = jws.sign(dict(claims), self._signing, headers=headers, algorithm=self.algorithm)
        return token

    def verify(self, token: str, typ: str) -> dict[str, Any]:
        """Returns the claims of a token signed by our key with our algorithm and `typ`."""
        try:
            header = jws.get_unverified_header(token)
            payload = jws.verify(token, self._verifying, algorithms=[self.algorithm])
            claims = json.loads(payload)
        except (JOSEError, ValueError, TypeError, UnicodeError) as exc:
            raise InvalidToken("malformed or badly signed token") from exc
        validate_typ(header, typ)
        if not isinstance(claims, dict):
            raise InvalidToken("claims are not an object")
        return claims


def _thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, used as `kid`."""
    members = ("crv", "kty", "x", "y") if public_jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: public_jwk[m] for m in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def validate_typ(header: Mapping[str, Any], expected: str) -> None:
    # RFC 8725 §3.11: explicit typing keeps one kind of JWT from passing as another.
    if str(header.get("typ", "")).lower() != expected:
        raise InvalidToken("wrong token type")


def validate_required(claims: Mapping[str, Any], names: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in claims]
    if missing:
        raise InvalidToken(f"missing claims: {', '.join(missing)}")


def validate_iss(claims: Mapping[str, Any], issuer: str) -> None:
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer")


def validate_aud(claims: Mapping[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise InvalidToken("wrong audience")


def validate_times_shape(claims: Mapping[str, Any]) -> None:
    exp, iat = claims.get("exp"), claims.get("iat")
    # bool is an int in Python, not in JSON (RFC 7519 §2: NumericDate is a number).
    if type(exp) is not int or type(iat) is not int:
        raise InvalidToken("exp and iat must be integers")
    # RFC 7519 §4.1.5: `nbf` is optional (this service never issues it), but when present it
    # is honoured, so it must be a NumericDate like the others.
    if "nbf" in claims and type(claims["nbf"]) is not int:
        raise InvalidToken("nbf must be an integer")


def validate_times(
    claims: Mapping[str, Any], now: datetime, leeway: int = LEEWAY_SECONDS, exp_leeway: int | None = None
) -> None:
    validate_times_shape(claims)
    exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf")
    ts = int(now.timestamp())
    if exp <= ts - (leeway if exp_leeway is None else exp_leeway):
        raise InvalidToken("token expired")
    if iat > ts + leeway:
        raise InvalidToken("token issued in the future")
    # RFC 7519 §4.1.5: not accepted before `nbf` (with the same small leeway for clock skew).
    if nbf is not None and nbf > ts + leeway:
        raise InvalidToken("token not valid yet")


VERIFIED_TOKENS_KEPT = 2048  # about 1 kB each; a full table is dropped, not evicted one by one


class AccessTokens:
    """Issues and verifies access tokens (RFC 9068 profile)."""

    def __init__(self, keys: TokenKeys, settings: Settings) -> None:
        self._keys = keys
        self._audience = settings.JWT_AUDIENCE
        self._public_url = settings.PUBLIC_URL
        self.ttl_seconds = settings.ACCESS_TOKEN_TTL_SECONDS
        self._verified: dict[str, tuple[dict[str, Any], AccessClaims]] = {}

    def issuer(self, tenant_slug: str) -> str:
        return f"{self._public_url}/t/{tenant_slug}"

    def issue(
        self,
        *,
        tenant_slug: str,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        scope: frozenset[str],
        amr: tuple[str, ...],
        auth_time: datetime,
        now: datetime,
    ) -> str:
        iat = int(now.timestamp())
        claims = {
            "iss": self.issuer(tenant_slug),
            "aud": self._audience,
            "sub": str(user_id),
            "tid": str(tenant_id),
            "sid": str(session_id),
            "jti": uuid.uuid4().hex,
            "iat": iat,
            "exp": iat + self.ttl_seconds,
            "scope": " ".join(sorted(scope)),
            "amr": list(amr),
            # When the user last proved who they are (OIDC Core §2); refreshes keep it.
            "auth_time": int(auth_time.timestamp()),
            "client_id": FIRST_PARTY_CLIENT,
        }
        return self._keys.sign(claims, ACCESS_TOKEN_TYPE)

    def verify(self, token: str, *, tenant_slug: str, now: datetime) -> AccessClaims:
        """Returns the claims of a live access token issued for this tenant, or raises."""
        verified = self._verified.get(token)
        if verified is None:
            verified = self._verify_signed(token)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[token] = verified
        claims, access = verified
        # What depends on the tenant asked for and on the time is checked on every use.
        validate_iss(claims, self.issuer(tenant_slug))
        # Expiry without leeway: the service is the clock its tokens' `exp` was set by
        # (API-v2 §2). `iat` and `nbf` keep the leeway: another node's clock may run ahead.
        validate_times(claims, now, exp_leeway=0)
        return access

    def _verify_signed(self, token: str) -> tuple[dict[str, Any], AccessClaims]:
        """Signature, type, audience and claim shapes: facts of the token's exact bytes, so
        the outcome is kept per token string (a changed byte is another key, verified
        afresh). Failures are never kept."""
        claims = self._keys.verify(token, ACCESS_TOKEN_TYPE)
        validate_required(claims, ACCESS_REQUIRED_CLAIMS)
        validate_aud(claims, self._audience)
        validate_times_shape(claims)
        try:
            access = AccessClaims(
                sub=uuid.UUID(claims["sub"]),
                tid=uuid.UUID(claims["tid"]),
                sid=uuid.UUID(claims["sid"]),
                jti=str(claims["jti"]),
                iat=claims["iat"],
                exp=claims["exp"],
                scope=frozenset(str(claims.get("scope", "")).split()),
                amr=tuple(str(m) for m in claims.get("amr", [])),
                auth_time=int(claims.get("auth_time", claims["iat"])),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidToken("malformed claims") from exc
        return claims, access


class SignedValues:
    """Short-lived signed values of their own kind (e.g. OAuth `state`).

    Each kind has its own `typ` ("<kind>+jwt") and audience ("<aud>:<kind>"), so no value
    of one kind, and no access token, can ever pass as another.
    """

    REQUIRED = ("exp", "iat", "iss", "aud", "jti")

    def __init__(self, keys: TokenKeys, settings: Settings) -> None:
        self._keys = keys
        self._audience = settings.JWT_AUDIENCE
        self._issuer = settings.PUBLIC_URL

    def issue(self, kind: str, claims: Mapping[str, Any], *, ttl_seconds: int, now: datetime) -> str:
        iat = int(now.timestamp())
        body = {
            **claims,
            "iss": self._issuer,
            "aud": f"{self._audience}:{kind}",
            "iat": iat,
            "exp": iat + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return self._keys.sign(body, f"{kind}+jwt")

    def verify(self, kind: str, token: str, *, now: datetime) -> dict[str, Any]:
        """Returns the claims of a live value of this kind, or raises InvalidToken."""
        claims = self._keys.verify(token, f"{kind}+jwt")
        validate_required(claims, self.REQUIRED)
        validate_iss(claims, self._issuer)
        validate_aud(claims, f"{self._audience}:{kind}")
        validate_times(claims, now, leeway=0)
        return claims
