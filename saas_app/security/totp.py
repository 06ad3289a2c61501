"""TOTP (RFC 6238) over pyotp: SHA-1, 6 digits, 30-second steps, one step of drift.

`matching_step` returns *which* step a code belongs to, so the caller can refuse any step
at or before the last one accepted (RFC 6238 §5.2: a verifier must not accept the second
attempt of the same OTP).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from urllib.parse import quote, urlencode

import pyotp
import segno

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1  # RFC 6238 §6: accept the previous and the next step


def new_secret() -> str:
    """A 160-bit base32 secret (RFC 4226 §4 recommends 160 bits)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The otpauth:// URI of Google's "Key Uri Format": `otpauth://totp/{label}?secret=...
    &issuer=...`, with `issuer=` carrying the tenant's name unchanged.

    The format's label is `issuer:account`, where neither part may contain a colon, and a
    prefix present beside `issuer=` must equal it. A tenant name with a colon therefore
    leaves the prefix out (apps then show `issuer=`); every label character outside the
    unreserved set is percent-encoded, `/` included, so the label stays one path segment
    (pyotp's own builder leaves `/` raw).
    """
    label = quote(account, safe="")
    if ":" not in issuer:
        label = f"{quote(issuer, safe='')}:{label}"
    query = urlencode({"secret": secret, "issuer": issuer}, quote_via=quote)
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG QR code (for authenticator apps)."""
    svg: str = segno.make(uri, error="m").svg_inline(scale=4)
    return svg


def step_of(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """Returns the time step (within the drift window) whose OTP equals `code`, else None."""
    code = code.strip().replace(" ", "")
    # ASCII only: str.isdigit() also takes e.g. full-width digits, which compare_digest refuses.
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = step_of(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Compare every candidate (no early exit), each in constant time.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found
