"""Production refuses weak secrets, every key of a list included, and never prints one."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from saas_app.core.config import SAMPLE_ENCRYPTION_KEY, SAMPLE_JWT_SECRET, Settings

ROOT = Path(__file__).resolve().parent.parent
JWT = secrets.token_urlsafe(48)
GOOD = secrets.token_urlsafe(32)
OLD = secrets.token_hex(16)  # 32 hex characters: the weakest generator we accept

WEAK_ENCRYPTION_KEYS = {
    "sample": SAMPLE_ENCRYPTION_KEY,
    "sample-then-junk": f"{SAMPLE_ENCRYPTION_KEY},x",
    "sample-with-leading-blank": f" {SAMPLE_ENCRYPTION_KEY}",
    "sample-with-trailing-newline": f"{SAMPLE_ENCRYPTION_KEY}\n",
    "good-then-sample": f"{GOOD},{SAMPLE_ENCRYPTION_KEY}",
    "jwt-sample": SAMPLE_JWT_SECRET,
    "one-letter": "k",
    "short": secrets.token_urlsafe(16)[:31],
    "good-then-short": f"{GOOD},k",
    "repeated-letter": "k" * 44,
    "two-letters": "ab" * 20,
    "placeholder-word": "please-changeme-" + secrets.token_hex(16),
    "empty": "",
    "blank": "   ",
    "empty-entry": f"{GOOD},,{OLD}",
    "trailing-comma": f"{GOOD},",
    "leading-comma": f",{GOOD}",
    "equals-jwt-secret": JWT,
    "second-equals-jwt-secret": f"{GOOD},{JWT}",
    "equals-jwt-secret-with-blanks": f" {JWT} ",
}


def _prod(**overrides: str) -> Settings:
    values = {"ENV": "prod", "JWT_SECRET": JWT, "ENCRYPTION_KEY": GOOD, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def _assert_quotes_no_secret(text: str, *values: str) -> None:
    assert "input_value" not in text
    for value in values:
        for part in value.split(","):
            # Short fragments ("k", "x") are ordinary letters of any message; the rule
            # that matters is that no real key, whole or stripped, appears.
            if len(part.strip()) >= 8:
                assert part.strip() not in text


@pytest.mark.parametrize("key", list(WEAK_ENCRYPTION_KEYS.values()), ids=list(WEAK_ENCRYPTION_KEYS))
def test_production_refuses_a_weak_encryption_key_and_does_not_quote_it(key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _prod(ENCRYPTION_KEY=key)
    message = str(caught.value)
    assert "ENCRYPTION_KEY" in message
    _assert_quotes_no_secret(message, key, JWT, GOOD, OLD)
    _assert_quotes_no_secret(repr(caught.value), key, JWT, GOOD, OLD)


WEAK_JWT_SECRETS = {
    "sample": SAMPLE_JWT_SECRET,
    "sample-with-leading-blank": f" {SAMPLE_JWT_SECRET}",
    "short": "short-but-not-sample",
    "repeated-letter": "z" * 40,
}


@pytest.mark.parametrize("jwt_secret", list(WEAK_JWT_SECRETS.values()), ids=list(WEAK_JWT_SECRETS))
def test_production_refuses_a_weak_jwt_secret_and_does_not_quote_it(jwt_secret: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _prod(JWT_SECRET=jwt_secret)
    assert "JWT_SECRET" in str(caught.value)
    _assert_quotes_no_secret(str(caught.value), jwt_secret, GOOD)


GOOD_ENCRYPTION_KEYS = {
    "one-urlsafe-key": GOOD,
    "one-hex-key": OLD,
    "rotating-two-keys": f"{GOOD},{OLD}",
    "blanks-around-entries": f" {GOOD} , {OLD} ",
}


@pytest.mark.parametrize("key", list(GOOD_ENCRYPTION_KEYS.values()), ids=list(GOOD_ENCRYPTION_KEYS))
def test_production_starts_with_random_keys(key: str) -> None:
    assert _prod(ENCRYPTION_KEY=key).ENV == "prod"


def test_other_refused_settings_are_named_not_quoted() -> None:
    url = "postgresql+asyncpg://app:hunter2-db-password@db/app"
    with pytest.raises(ValidationError) as caught:
        _prod(DATABASE_URL=url, DATABASE_POOL_SIZE="lots-of-connections", LOGIN_RATE_LIMIT="often-please")
    message = str(caught.value)
    assert "DATABASE_POOL_SIZE" in message
    assert "LOGIN_RATE_LIMIT" in message
    for value in (url, "lots-of-connections", "often-please", JWT, GOOD):
        assert value not in message


FAILED_STARTS = {
    "cli-migrate": [sys.executable, "-m", "saas_app", "migrate"],
    "uvicorn-import": [sys.executable, "-c", "import saas_app.main"],
}


@pytest.mark.parametrize("command", list(FAILED_STARTS.values()), ids=list(FAILED_STARTS))
def test_a_failed_start_logs_no_secret(command: list[str], tmp_path: Path) -> None:
    weak = f" {SAMPLE_ENCRYPTION_KEY},{GOOD}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # run from an empty directory: no .env is read
        "ENV": "prod",
        "JWT_SECRET": JWT,
        "ENCRYPTION_KEY": weak,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never.db'}",
    }
    done = subprocess.run(
        command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "ENCRYPTION_KEY entry 1 of 2 is a sample" in output
    _assert_quotes_no_secret(output, weak, JWT, GOOD)
    assert not (tmp_path / "never.db").exists()
