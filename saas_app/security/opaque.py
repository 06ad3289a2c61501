"""Opaque credentials: random bearer strings stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

REFRESH_TOKEN_BYTES = 32  # 256 bits of randomness


def new_refresh_token() -> str:
    return "rt_" + secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def digest(value: str) -> str:
    """SHA-256 hex digest. The inputs carry >= 256 random bits, so no salt or slow hash
    is needed: a stolen table cannot be inverted or brute-forced."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
