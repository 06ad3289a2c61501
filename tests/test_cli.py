"""The operator's CLI, run as the operator runs it: bad input is one line, exit 1, nothing made."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from saas_app.models import Base
from tests.conftest import REDIS_URL, TEST_JWT_SECRET
from tests.factories import DEFAULT_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


@dataclass
class Cli:
    database_url: str
    cwd: Path

    def run(self, *args: str, password: str = DEFAULT_PASSWORD) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENV": "test",
            "DATABASE_URL": self.database_url,
            "JWT_SECRET": TEST_JWT_SECRET,
            "BCRYPT_ROUNDS": "4",
            "LOG_FORMAT": "text",
        }
        env.pop("REDIS_URL", None)
        if REDIS_URL:
            env["REDIS_URL"] = REDIS_URL
        # Only the commands that take a password have the flag (argparse refuses it elsewhere).
        reads_password = args[0] in {"create-tenant", "create-user"}
        command = [PYTHON, "-m", "saas_app", *args, *(["--password-stdin"] if reads_password else [])]
        return subprocess.run(
            command,
            input=password + "\n",
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def counts(self) -> tuple[int, int]:
        """(tenants, users) in the database."""
        engine = create_async_engine(self.database_url)
        async with engine.connect() as connection:
            tenants = await connection.scalar(
                select(func.count()).select_from(Base.metadata.tables["tenant"])
            )
            users = await connection.scalar(select(func.count()).select_from(Base.metadata.tables["user"]))
        await engine.dispose()
        return int(tenants or 0), int(users or 0)

    async def api_keys(self) -> int:
        engine = create_async_engine(self.database_url)
        async with engine.connect() as connection:
            keys = await connection.scalar(select(func.count()).select_from(Base.metadata.tables["api_key"]))
        await engine.dispose()
        return int(keys or 0)


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    """The CLI against this test's migrated database (a temporary SQLite file by default),
    run from an empty directory so no `.env` is read."""
    return Cli(database_url, tmp_path)


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line, done.stderr
    assert "Traceback" not in line
    assert line.startswith("error: ")
    for text in expected:
        assert text in line, line


def tenant_args(slug: str = "acme", email: str = "owner@acme.example.com", *extra: str) -> list[str]:
    return ["create-tenant", "--slug", slug, "--owner-email", email, *extra]


BAD_TENANTS = {
    "upper-case-slug": (tenant_args("ACME2"), DEFAULT_PASSWORD, "--slug"),
    "slug-with-underscore": (tenant_args("acme_2"), DEFAULT_PASSWORD, "--slug"),
    "slug-leading-dash": (
        ["create-tenant", "--slug=-acme", "--owner-email", "o@acme.example.com"],
        DEFAULT_PASSWORD,
        "--slug",
    ),
    "slug-too-long": (tenant_args("a" * 64), DEFAULT_PASSWORD, "--slug"),
    "owner-not-an-email": (tenant_args("acme", "not-an-email"), DEFAULT_PASSWORD, "--owner-email"),
    "owner-invalid-once-folded": (
        tenant_args("acme", "a\ufe6bb@example.com"),
        DEFAULT_PASSWORD,
        "--owner-email",
    ),
    "short-password": (tenant_args(), "short", "password"),
    "blank-name": (
        tenant_args("acme", "owner@acme.example.com", "--name", "   "),
        DEFAULT_PASSWORD,
        "--name",
    ),
    "name-too-long": (
        tenant_args("acme", "owner@acme.example.com", "--name", "n" * 201),
        DEFAULT_PASSWORD,
        "--name",
    ),
    "owner-name-too-long": (
        tenant_args("acme", "owner@acme.example.com", "--owner-name", "n" * 201),
        DEFAULT_PASSWORD,
        "--owner-name",
    ),
}


@pytest.mark.parametrize(("args", "password", "flag"), list(BAD_TENANTS.values()), ids=list(BAD_TENANTS))
async def test_create_tenant_refuses_what_the_api_refuses(
    cli: Cli, args: list[str], password: str, flag: str
) -> None:
    done = cli.run(*args, password=password)
    assert_one_line_refusal(done, "invalid input", flag)
    assert password not in done.stderr
    assert await cli.counts() == (0, 0)


async def test_create_tenant_folds_the_owner_address(cli: Cli) -> None:
    done = cli.run(*tenant_args("acme2", "\uff2f\uff37\uff2e\uff25\uff32@Acme.example.com"))
    assert done.returncode == 0, done.stderr
    assert "tenant acme2 " in done.stdout
    assert "owner owner@acme.example.com " in done.stdout
    assert await cli.counts() == (1, 1)


def user_args(email: str, *extra: str) -> list[str]:
    return ["create-user", "--tenant", "acme", "--email", email, *extra]


BAD_USERS = {
    "not-an-email": (user_args("not-an-email"), DEFAULT_PASSWORD, "invalid input: --email"),
    "no-domain": (user_args("someone@"), DEFAULT_PASSWORD, "invalid input: --email"),
    "short-password": (user_args("new@acme.example.com"), "short", "invalid input: password"),
    "full-name-too-long": (
        user_args("new@acme.example.com", "--full-name", "n" * 201),
        DEFAULT_PASSWORD,
        "invalid input: --full-name",
    ),
    "look-alike-of-the-owner": (user_args("\uff4fwner@acme.example.com"), DEFAULT_PASSWORD, "user_exists"),
    "unknown-tenant": (
        ["create-user", "--tenant", "nope", "--email", "new@acme.example.com"],
        DEFAULT_PASSWORD,
        "tenant_not_found",
    ),
    "unknown-role": (
        user_args("new@acme.example.com", "--role", "nosuchrole"),
        DEFAULT_PASSWORD,
        "invalid input: --role: unknown role(s): nosuchrole",
    ),
}


@pytest.mark.parametrize(("args", "password", "expected"), list(BAD_USERS.values()), ids=list(BAD_USERS))
async def test_create_user_refuses_what_the_api_refuses(
    cli: Cli, args: list[str], password: str, expected: str
) -> None:
    assert cli.run(*tenant_args()).returncode == 0
    done = cli.run(*args, password=password)
    assert_one_line_refusal(done, expected)
    assert await cli.counts() == (1, 1)


async def test_create_user_stores_the_folded_address(cli: Cli) -> None:
    assert cli.run(*tenant_args()).returncode == 0
    done = cli.run(*user_args("Ｎew.User@ACME.example.com"))
    assert done.returncode == 0, done.stderr
    assert "user new.user@acme.example.com " in done.stdout
    assert await cli.counts() == (1, 2)


def key_args(*extra: str, name: str = "ci") -> list[str]:
    return ["create-api-key", "--tenant", "acme", "--name", name, "--scopes", "projects:read", *extra]


# ApiKeyCreate's rules (POST /t/{tenant}/api-keys answers 422 to each of these).
BAD_KEYS = {
    "empty-name": (key_args(name=""), "invalid input: --name"),
    "blank-name": (key_args(name="   "), "invalid input: --name"),
    "name-too-long": (key_args(name="n" * 500), "invalid input: --name"),
    "no-expiry-of-zero-days": (key_args("--expires-in-days", "0"), "invalid input: --expires-in-days"),
    "expiry-too-long": (key_args("--expires-in-days", "3651"), "invalid input: --expires-in-days"),
    "expiry-not-a-number": (key_args("--expires-in-days", "soon"), "invalid input: --expires-in-days"),
    "bad-rate-limit": (key_args("--rate-limit", "lots"), "invalid input: --rate-limit"),
    "unknown-scope": (
        ["create-api-key", "--tenant", "acme", "--name", "ci", "--scopes", "root:all"],
        "invalid input: --scopes",
    ),
    "unknown-tenant": (
        ["create-api-key", "--tenant", "nope", "--name", "ci", "--scopes", "projects:read"],
        "tenant_not_found",
    ),
}


@pytest.mark.parametrize(("args", "expected"), list(BAD_KEYS.values()), ids=list(BAD_KEYS))
async def test_create_api_key_refuses_what_the_api_refuses(cli: Cli, args: list[str], expected: str) -> None:
    assert cli.run(*tenant_args()).returncode == 0
    done = cli.run(*args)
    assert_one_line_refusal(done, expected)
    assert len(done.stderr) < 300  # not argparse's list of 3,650 allowed values
    assert await cli.api_keys() == 0


async def test_create_api_key_prints_the_key_alone_on_stdout(cli: Cli) -> None:
    assert cli.run(*tenant_args()).returncode == 0
    done = cli.run(*key_args("--expires-in-days", "30", name="  deploy bot  "))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sk_")
    assert done.stdout.count("\n") == 1
    assert await cli.api_keys() == 1


def test_bad_settings_are_one_line_without_values(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "saas_app", "migrate"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_POOL_SIZE": "plenty-please", "ENV": "test"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line_refusal(done, "settings", "DATABASE_POOL_SIZE")
    assert "plenty-please" not in done.stderr
