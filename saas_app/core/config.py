"""Settings, read from the environment (and `.env` when present)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Accepted only in ENV=dev/test; production refuses to start with it.
SAMPLE_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me-0123456789"  # noqa: S105
SAMPLE_ENCRYPTION_KEY = "dev-only-insecure-encryption-key-change-me-012345"
SAMPLE_SECRETS = frozenset({SAMPLE_JWT_SECRET, SAMPLE_ENCRYPTION_KEY, "", "changeme", "secret"})
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    ENV: Literal["dev", "test", "prod"] = "dev"
    DATABASE_URL: str = "sqlite+aiosqlite:///./saas_app.db"
    DATABASE_POOL_SIZE: int = Field(default=10, ge=1)
    REDIS_URL: str | None = None
    PUBLIC_URL: str = "http://127.0.0.1:8000"

    JWT_SECRET: str = SAMPLE_JWT_SECRET
    JWT_ALGORITHM: Literal["HS256", "RS256", "ES256"] = "HS256"
    JWT_PRIVATE_KEY_FILE: Path | None = None
    JWT_AUDIENCE: str = "saas-app"
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=900, ge=30)
    REFRESH_TOKEN_TTL_DAYS: int = Field(default=30, ge=1)
    SESSION_IDLE_DAYS: int = Field(default=7, ge=1)
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

    TENANT_CACHE_SECONDS: float = Field(default=5.0, ge=0)

    RATE_LIMITS_ENABLED: bool = True
    # Redis down: true = count in process memory (and warn); false = answer 503.
    RATE_LIMIT_FAIL_OPEN: bool = True
    LOGIN_RATE_LIMIT: str = "10/minute"
    LOGIN_FAILURE_LIMIT: str = "5/15minutes"
    REGISTER_RATE_LIMIT: str = "5/minute"
    MFA_FAILURE_LIMIT: str = "10/15minutes"
    RATE_LIMIT_KEY_PREFIX: str = "saas_app"

    MAX_BODY_BYTES: int = Field(default=65_536, ge=1024)
    MAX_HEADER_BYTES: int = Field(default=16_384, ge=4096)
    MAX_URL_BYTES: int = Field(default=8_192, ge=1024)

    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"

    _split = field_validator("PASSWORD_SCHEMES", "OAUTH_ALLOWED_REDIRECTS", "CORS_ORIGINS", mode="before")(
        _split_csv
    )

    @field_validator("PUBLIC_URL", "GITHUB_API_URL")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("LOGIN_RATE_LIMIT", "LOGIN_FAILURE_LIMIT", "REGISTER_RATE_LIMIT", "MFA_FAILURE_LIMIT")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse  # noqa: PLC0415 (keep settings import-light)

        parse(value)  # raises ValueError on a malformed limit
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_prod(self) -> Settings:
        if self.JWT_ALGORITHM in ASYMMETRIC_ALGORITHMS and self.JWT_PRIVATE_KEY_FILE is None:
            raise ValueError(f"JWT_ALGORITHM={self.JWT_ALGORITHM} needs JWT_PRIVATE_KEY_FILE")
        if self.GITHUB_CLIENT_ID and not self.GITHUB_CLIENT_SECRET:
            raise ValueError("GITHUB_CLIENT_ID needs GITHUB_CLIENT_SECRET")
        if self.ENV != "prod":
            return self
        if self.JWT_ALGORITHM == "HS256" and (self.JWT_SECRET in SAMPLE_SECRETS or len(self.JWT_SECRET) < 32):
            raise ValueError("ENV=prod needs a JWT_SECRET of at least 32 characters")
        if self.ENCRYPTION_KEY in SAMPLE_SECRETS:
            raise ValueError("ENV=prod needs an ENCRYPTION_KEY")
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
