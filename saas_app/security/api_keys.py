"""API key format: `sk_<prefix>_<secret>`. The prefix (16 hex characters) finds the row;
the secret (256 bits) is stored only as a keyed hash and compared in constant time."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX_CHARS = 16  # 64 bits: unique across every tenant without a second look
SCHEME = "sk_"
PREFIX = re.compile(f"[0-9a-f]{{{PREFIX_CHARS}}}")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    prefix: str
    secret: str


def new_key() -> tuple[str, ParsedKey]:
    """Returns the full key (shown once) and its parts."""
    parts = ParsedKey(prefix=secrets.token_hex(PREFIX_CHARS // 2), secret=secrets.token_urlsafe(32))
    return f"{SCHEME}{parts.prefix}_{parts.secret}", parts


def parse(key: str) -> ParsedKey | None:
    """Splits a presented key; None when it cannot be one of ours."""
    if not key.startswith(SCHEME) or len(key) > 200:
        return None
    prefix, sep, secret = key[len(SCHEME) :].partition("_")
    if not sep or not secret or not PREFIX.fullmatch(prefix):
        return None
    return ParsedKey(prefix=prefix, secret=secret)
