"""Settings, read from the environment (and `.env` when present)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Accepted only in ENV=dev/test; production refuses to start with it.
SAMPLE_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me-0123456789"  # noqa: S105
SAMPLE_ENCRYPTION_KEY = "dev-only-insecure-encryption-key-change-me-012345"
SAMPLE_SECRETS = frozenset({SAMPLE_JWT_SECRET, SAMPLE_ENCRYPTION_KEY, "", "changeme", "secret"})
# Words that mark a value copied from an example rather than generated.
PLACEHOLDER_MARKERS = ("changeme", "change-me", "change_me", "dev-only", "insecure", "placeholder")
MIN_SECRET_LENGTH = 32
# token_hex(16), the weakest generator we document, shows >= 8 distinct characters in all but
# ~1 of 10^5 draws; "kkkk..." or "abab..." show 1 or 2. A heuristic against typed keys.
MIN_DISTINCT_CHARACTERS = 8
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def secret_weakness(secret: str) -> str | None:
    """Why a production secret is unacceptable, or None; the reason never quotes it.

    ASVS 6.4.1/2.10.4: no default or guessable keys; the comparison ignores surrounding
    blanks, so " <sample>" is the sample (it is what a reader of the list would use).
    """
    value = secret.strip()
    if not value:
        return "is empty"
    folded = value.casefold()
    if value in SAMPLE_SECRETS or any(marker in folded for marker in PLACEHOLDER_MARKERS):
        return "is a sample or placeholder value"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"has fewer than {MIN_DISTINCT_CHARACTERS} distinct characters (not random)"
    return None


def encryption_key_problems(keys: str, jwt_secret: str) -> list[str]:
    """Every reason the comma-separated ENCRYPTION_KEY list is unfit for production."""
    entries = keys.split(",")
    problems = []
    for n, entry in enumerate(entries, start=1):
        name = "ENCRYPTION_KEY" if len(entries) == 1 else f"ENCRYPTION_KEY entry {n} of {len(entries)}"
        weakness = secret_weakness(entry)
        if weakness is None and entry.strip() == jwt_secret.strip():
            weakness = "equals JWT_SECRET (one secret must not serve two purposes)"
        if weakness is not None:
            problems.append(f"{name} {weakness}")
    return problems


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting is named, never printed (it may be a secret,
    # or a DATABASE_URL with a password), neither in the error nor in a failed start's log.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True)

    ENV: Literal["dev", "test", "prod"] = "dev"
    DATABASE_URL: str = "sqlite+aiosqlite:///./saas_app.db"
    DATABASE_POOL_SIZE: int = Field(default=10, ge=1)
    # Bounded waits (all shorter than a proxy's usual 30-60 s, so the service answers 503
    # with Retry-After itself rather than leaving a client to time out): one statement on
    # PostgreSQL; waiting for a lock (PostgreSQL lock_timeout, SQLite's busy timeout);
    # opening a connection; waiting for a free one in the pool.
    DATABASE_STATEMENT_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0, le=300)
    DATABASE_LOCK_TIMEOUT_SECONDS: float = Field(default=2.0, gt=0, le=300)
    DATABASE_CONNECT_TIMEOUT_SECONDS: float = Field(default=3.0, gt=0, le=60)
    DATABASE_POOL_TIMEOUT_SECONDS: float = Field(default=3.0, gt=0, le=60)
    REDIS_URL: str | None = None
    # The exact read cache of principals, tenants and hot answers (saas_app/core/readcache.py).
    # false: every request reads the database (the benchmark's cold path; a diagnostic).
    READ_CACHE_ENABLED: bool = True
    PUBLIC_URL: str = "http://127.0.0.1:8000"

    JWT_SECRET: str = SAMPLE_JWT_SECRET
    JWT_ALGORITHM: Literal["HS256", "RS256", "ES256"] = "HS256"
    JWT_PRIVATE_KEY_FILE: Path | None = None
    JWT_AUDIENCE: str = "saas-app"
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=900, ge=30)
    REFRESH_TOKEN_TTL_DAYS: int = Field(default=30, ge=1)
    SESSION_IDLE_DAYS: int = Field(default=7, ge=1)
    # 0 (the default): a refresh token works once, and presenting it again revokes its
    # session as theft (RFC 9700 §4.14.2). N > 0: within N seconds of its rotation, while
    # the token that replaced it is still unused, it gets that same next token again, for a
    # client whose answer was lost (Auth0's "reuse interval").
    REFRESH_REUSE_GRACE_SECONDS: int = Field(default=0, ge=0, le=300)
    ENCRYPTION_KEY: str = SAMPLE_ENCRYPTION_KEY

    PASSWORD_SCHEMES: Annotated[list[str], NoDecode] = ["bcrypt_sha256"]
    BCRYPT_ROUNDS: int = Field(default=12, ge=4, le=31)

    GITHUB_CLIENT_ID: str | None = None
    GITHUB_CLIENT_SECRET: str | None = None
    GITHUB_AUTHORIZE_URL: str = "https://github.com/login/oauth/authorize"
    GITHUB_TOKEN_URL: str = "https://github.com/login/oauth/access_token"  # noqa: S105 (a URL)
    GITHUB_API_URL: str = "https://api.github.com"
    GITHUB_LINK_BY_EMAIL: bool = False
    GITHUB_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0, le=60)

    TENANT_SIGNUP: Literal["open", "closed"] = "open"
    OAUTH_ALLOWED_REDIRECTS: Annotated[list[str], NoDecode] = []
    CORS_ORIGINS: Annotated[list[str], NoDecode] = []
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks,
    # comma-separated; `*` trusts any). Empty: none, the socket's peer is the client.
    FORWARDED_ALLOW_IPS: Annotated[list[str], NoDecode] = []

    RATE_LIMITS_ENABLED: bool = True
    # Redis down: true = count in process memory (and warn); false = answer 503.
    RATE_LIMIT_FAIL_OPEN: bool = True
    LOGIN_RATE_LIMIT: str = "10/minute"
    # Refresh grants per session (not per IP: one proxy refreshes for many users).
    REFRESH_RATE_LIMIT: str = "60/minute"
    LOGIN_FAILURE_LIMIT: str = "5/15minutes"
    REGISTER_RATE_LIMIT: str = "5/minute"
    # Reset mails per address (each IP also spends REGISTER_RATE_LIMIT).
    FORGOT_PASSWORD_RATE_LIMIT: str = "3/hour"  # noqa: S105 (a rate, not a password)
    MFA_FAILURE_LIMIT: str = "10/15minutes"
    RATE_LIMIT_KEY_PREFIX: str = "saas_app"

    MAX_BODY_BYTES: int = Field(default=65_536, ge=1024)
    MAX_HEADER_BYTES: int = Field(default=16_384, ge=4096)
    MAX_URL_BYTES: int = Field(default=8_192, ge=1024)

    # Mail (API-v2 §1; saas_app/mail/). Without SMTP_URL messages wait in the outbox, and
    # `python -m saas_app mail list|show ID` prints them.
    SMTP_URL: str | None = None  # smtp://user:pass@host:587?starttls=true, smtps://host:465
    MAIL_FROM: str = "no-reply@localhost"
    MAIL_MAX_AGE_HOURS: float = Field(default=24.0, gt=0)
    SMTP_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=120)
    # false: this process only writes mail; `python -m saas_app mail worker` sends it.
    MAIL_SENDER_IN_APP: bool = True
    # Lifetimes of the links mail carries; fractions allowed (tests watch them expire).
    PASSWORD_RESET_TTL_MINUTES: float = Field(default=30.0, gt=0, le=24 * 60)
    EMAIL_VERIFICATION_TTL_HOURS: float = Field(default=48.0, gt=0, le=30 * 24)
    INVITATION_TTL_DAYS: float = Field(default=7.0, gt=0, le=90)

    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"

    _split = field_validator(
        "PASSWORD_SCHEMES", "OAUTH_ALLOWED_REDIRECTS", "CORS_ORIGINS", "FORWARDED_ALLOW_IPS", mode="before"
    )(_split_csv)

    @field_validator("FORWARDED_ALLOW_IPS")
    @classmethod
    def _valid_proxies(cls, value: list[str]) -> list[str]:
        # uvicorn keeps an entry it cannot parse as a literal that no peer ever matches: a
        # typo would silently trust nobody (or, worse, be taken for a host name). Refuse it.
        for entry in value:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry)  # an address is a network of one
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network") from None
        return value

    @field_validator("SMTP_URL")
    @classmethod
    def _valid_smtp_url(cls, value: str | None) -> str | None:
        from saas_app.mail.smtp import SmtpServer  # noqa: PLC0415 (keep settings import-light)

        if value:
            SmtpServer.parse(value)  # its errors never quote the URL (it may hold a password)
        return value or None

    @field_validator("PUBLIC_URL", "GITHUB_API_URL")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator(
        "LOGIN_RATE_LIMIT",
        "REFRESH_RATE_LIMIT",
        "LOGIN_FAILURE_LIMIT",
        "REGISTER_RATE_LIMIT",
        "FORGOT_PASSWORD_RATE_LIMIT",
        "MFA_FAILURE_LIMIT",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse  # noqa: PLC0415 (keep settings import-light)

        try:
            parse(value)
        except ValueError:
            raise ValueError('not a rate limit such as "10/minute"') from None  # limits quotes it
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_prod(self) -> Settings:
        if self.JWT_ALGORITHM in ASYMMETRIC_ALGORITHMS and self.JWT_PRIVATE_KEY_FILE is None:
            raise ValueError("an asymmetric JWT_ALGORITHM needs JWT_PRIVATE_KEY_FILE")
        if self.GITHUB_CLIENT_ID and not self.GITHUB_CLIENT_SECRET:
            raise ValueError("GITHUB_CLIENT_ID needs GITHUB_CLIENT_SECRET")
        if self.ENV != "prod":
            return self
        problems = encryption_key_problems(self.ENCRYPTION_KEY, self.JWT_SECRET)
        jwt_weakness = secret_weakness(self.JWT_SECRET) if self.JWT_ALGORITHM == "HS256" else None
        if jwt_weakness is not None:
            problems.insert(0, f"JWT_SECRET {jwt_weakness}")
        if problems:
            raise ValueError(f"ENV=prod refuses weak secrets: {'; '.join(problems)}")
        return self

    @property
    def github_enabled(self) -> bool:
        return bool(self.GITHUB_CLIENT_ID and self.GITHUB_CLIENT_SECRET)

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """Returns the process-wide settings read from the environment."""
    return Settings()
