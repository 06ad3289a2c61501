"""Password hashing through passlib's CryptContext (installed from libpass).

bcrypt alone truncates at 72 bytes, so the default scheme is `bcrypt_sha256`, which
pre-hashes with HMAC-SHA256: two passwords sharing their first 72 bytes stay different.
Hashing is 25-250 ms of CPU; it always runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import unicodedata

import anyio.to_thread
from passlib.context import CryptContext

from saas_app.core.config import Settings

MIN_LENGTH = 8
MAX_LENGTH = 128


def normalise(password: str) -> str:
    """NFKC, as NIST SP 800-63B §5.1.1.2 advises, so one password has one encoding."""
    return unicodedata.normalize("NFKC", password)


def policy_violation(password: str) -> str | None:
    """Returns why a password is refused, or None (8-128 characters, any Unicode)."""
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Password must be at most {MAX_LENGTH} characters."
    return None


class PasswordHasher:
    """Hashes and verifies passwords off the event loop; flags hashes that need upgrading."""

    def __init__(self, settings: Settings) -> None:
        rounds = settings.BCRYPT_ROUNDS
        self._context = CryptContext(
            schemes=settings.PASSWORD_SCHEMES,
            deprecated="auto",
            # min_rounds = default: hashes made with fewer rounds are upgraded at next login.
            bcrypt_sha256__default_rounds=rounds,
            bcrypt_sha256__min_rounds=rounds,
            bcrypt__default_rounds=rounds,
            bcrypt__min_rounds=rounds,
        )
        self._dummy_hash = self._context.hash("dummy password used for unknown accounts")

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._context.hash, normalise(password))

    async def verify(self, password: str, stored_hash: str | None) -> tuple[bool, str | None]:
        """Returns (ok, new_hash): new_hash is set when the stored hash should be replaced.

        With no stored hash (unknown e-mail, password-less user) a dummy hash is verified
        anyway, so response time does not reveal whether the account exists.
        """
        if stored_hash is None or not self._context.identify(stored_hash, required=False):
            await anyio.to_thread.run_sync(self._context.verify, normalise(password), self._dummy_hash)
            return False, None
        ok, new_hash = await anyio.to_thread.run_sync(
            self._context.verify_and_update, normalise(password), stored_hash
        )
        return bool(ok), new_hash

    def hash_sync(self, password: str) -> str:
        """For CLI and data generators only; services use `hash`."""
        hashed: str = self._context.hash(normalise(password))
        return hashed
