"""Secrets at rest: authenticated encryption (Fernet) and keyed hashes of short codes.

ENCRYPTION_KEY may list several comma-separated keys: the first encrypts and keys new
hashes, all of them decrypt and verify, so keys can be rotated without a flag day.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    def __init__(self, encryption_keys: str) -> None:
        keys = [k.strip() for k in encryption_keys.split(",") if k.strip()]
        if not keys:
            raise ValueError("ENCRYPTION_KEY is empty")
        self._hmac_keys = [_derive(key, b"saas_app/hmac") for key in keys]
        self._fernet = MultiFernet(
            [Fernet(base64.urlsafe_b64encode(_derive(key, b"saas_app/fernet"))) for key in keys]
        )

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise ValueError("undecryptable secret (wrong ENCRYPTION_KEY?)") from exc

    def keyed_digest(self, value: str) -> str:
        """HMAC-SHA256 under the primary key: a stolen table alone cannot be brute-forced."""
        return _hmac(self._hmac_keys[0], value)

    def keyed_digests(self, value: str) -> list[str]:
        """The digest under every key, primary first (for lookups during rotation)."""
        return [_hmac(key, value) for key in self._hmac_keys]


def _derive(key: str, purpose: bytes) -> bytes:
    """A 32-byte subkey per purpose, so one secret never serves two algorithms."""
    return hmac.new(key.encode(), purpose, hashlib.sha256).digest()


def _hmac(key: bytes, value: str) -> str:
    return hmac.digest(key, value.encode(), "sha256").hex()  # one-shot: no HMAC object
