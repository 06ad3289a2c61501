"""Pure security functions: password hashing, settings that refuse weak secrets, cursors,
the time checks of signed values."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from saas_app.core.config import SAMPLE_JWT_SECRET, Settings
from saas_app.core.pagination import decode_cursor, encode_cursor
from saas_app.security.passwords import PasswordHasher, policy_violation
from saas_app.security.tokens import InvalidToken, SignedValues, TokenKeys


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **{"ENV": "test", "BCRYPT_ROUNDS": 4, **overrides})


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("1234567", False),
        ("12345678", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("密码密码密码密码", True),
    ],
    ids=["7-chars", "8-chars", "128-chars", "129-chars", "8-cjk-chars"],
)
def test_policy_counts_characters_not_bytes(password: str, ok: bool) -> None:
    assert (policy_violation(password) is None) is ok


async def test_passwords_sharing_72_bytes_are_different() -> None:
    hasher = PasswordHasher(settings())
    first, second = "a" * 72 + "first", "a" * 72 + "second"
    stored = await hasher.hash(first)
    assert (await hasher.verify(first, stored))[0] is True
    assert (await hasher.verify(second, stored))[0] is False


async def test_unicode_forms_of_one_password_are_one_password() -> None:
    hasher = PasswordHasher(settings())
    composed, decomposed = "caf\u00e9 au lait!", "cafe\u0301 au lait!"
    stored = await hasher.hash(composed)
    assert (await hasher.verify(decomposed, stored))[0] is True


async def test_hash_made_with_fewer_rounds_is_upgraded_on_verify() -> None:
    old = await PasswordHasher(settings(BCRYPT_ROUNDS=4)).hash("a good password")
    ok, new_hash = await PasswordHasher(settings(BCRYPT_ROUNDS=5)).verify("a good password", old)
    assert ok is True
    assert new_hash is not None
    assert new_hash != old
    assert ",r=5$" in new_hash


async def test_current_hash_is_not_rewritten() -> None:
    hasher = PasswordHasher(settings())
    stored = await hasher.hash("a good password")
    assert await hasher.verify("a good password", stored) == (True, None)


@pytest.mark.parametrize("stored", [None, "", "not-a-hash", "$2b$04$tooShort"])
async def test_missing_or_foreign_hash_never_verifies(stored: str | None) -> None:
    assert await PasswordHasher(settings()).verify("a good password", stored) == (False, None)


async def test_hashing_runs_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(settings())
    seen: list[threading.Thread] = []
    real_hash = hasher._context.hash

    def spy(secret: str) -> str:
        seen.append(threading.current_thread())
        return str(real_hash(secret))

    monkeypatch.setattr(hasher._context, "hash", spy)
    await hasher.hash("a good password")
    assert seen
    assert seen[0] is not threading.main_thread()


@pytest.mark.parametrize(
    "overrides",
    [
        {"JWT_SECRET": SAMPLE_JWT_SECRET},
        {"JWT_SECRET": "short-but-not-sample"},
        {"JWT_SECRET": "z" * 40, "ENCRYPTION_KEY": "changeme"},
    ],
    ids=["sample-jwt-secret", "short-jwt-secret", "sample-encryption-key"],
)
def test_production_refuses_weak_secrets(overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **{"ENV": "prod", "ENCRYPTION_KEY": "k" * 40, **overrides})


def test_production_starts_with_real_secrets() -> None:
    jwt_secret, encryption_key = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
    prod = Settings(_env_file=None, ENV="prod", JWT_SECRET=jwt_secret, ENCRYPTION_KEY=encryption_key)
    assert prod.ENV == "prod"


def test_asymmetric_algorithm_needs_a_key_file() -> None:
    with pytest.raises(ValidationError):
        settings(JWT_ALGORITHM="RS256")


def test_malformed_rate_limit_is_refused() -> None:
    with pytest.raises(ValidationError):
        settings(LOGIN_RATE_LIMIT="often")


def test_cursor_round_trips() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415
    from uuid import uuid4  # noqa: PLC0415

    at, row_id = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC), uuid4()
    keyset = decode_cursor(encode_cursor(at, row_id))
    assert (keyset.at, keyset.id) == (at, row_id)


@pytest.mark.parametrize("cursor", ["%%%", "e30", "bm90IGpzb24", "eyJhdCI6IngiLCJpZCI6InkifQ"])
def test_malformed_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(RequestValidationError):
        decode_cursor(cursor)


NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("nbf", "ok"),
    [(-60, True), (0, True), (1, False), (3600, False), ("0", False), (0.5, False), (None, False)],
    ids=["past", "now", "one-second-ahead", "an-hour-ahead", "a-string", "a-float", "null"],
)
def test_signed_values_are_refused_before_their_not_before_time(nbf: object, ok: bool) -> None:
    # RFC 7519 §4.1.5. Signed values (the GitHub state) take no leeway; `nbf` is relative to NOW.
    config = settings()
    values = SignedValues(TokenKeys(config), config)
    claim = int(NOW.timestamp()) + nbf if type(nbf) is int else nbf
    value = values.issue("github-state", {"nbf": claim}, ttl_seconds=600, now=NOW)
    if ok:
        assert values.verify("github-state", value, now=NOW)["nbf"] == claim
    else:
        with pytest.raises(InvalidToken):
            values.verify("github-state", value, now=NOW)
