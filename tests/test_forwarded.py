"""Client IPs come from the socket unless a proxy is trusted (issue 13 item 10).

uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise, so anything on the
host (or a proxy passing the header through) could pick its own IP for the per-IP limits.
These tests start the real server the way `make run` and the image do (`python -m
saas_app serve`) and speak to it from 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from saas_app.core.config import Settings
from tests.conftest import REDIS_URL
from tests.servers import running_server

pytestmark = pytest.mark.e2e
PASSWORD = "forwarded password long enough"
LIMIT = 3  # LOGIN_RATE_LIMIT per minute in these servers


@contextmanager
def server(
    database_url: str, log: Path, uvicorn_args: list[str] | None = None, **env: str
) -> Iterator[tuple[httpx.Client, str]]:
    """A real server with a tenant; yields a client and the tenant's token URL."""
    settings = {
        "DATABASE_URL": database_url,
        "LOGIN_RATE_LIMIT": f"{LIMIT}/minute",
        "LOGIN_FAILURE_LIMIT": "1000/minute",  # only the per-IP limit is under test
        **({"REDIS_URL": REDIS_URL} if REDIS_URL else {}),
        **env,
    }
    running = running_server(settings, log, uvicorn_args=uvicorn_args)
    with running as (base, _pid), httpx.Client(base_url=base, timeout=10) as http:
        slug = f"fwd-{uuid.uuid4().hex[:8]}"
        owner = {"email": "owner@fwd.example", "password": PASSWORD}
        created = http.post("/tenants", json={"slug": slug, "name": "Fwd", "owner": owner})
        assert created.status_code == 201, created.text
        yield http, f"/t/{slug}/auth/token"


def attempt(http: httpx.Client, url: str, forwarded_for: str) -> int:
    form = {"grant_type": "password", "username": "owner@fwd.example", "password": "wrong password"}
    return http.post(url, data=form, headers={"X-Forwarded-For": forwarded_for}).status_code


def test_a_forged_x_forwarded_for_does_not_escape_the_per_ip_limit(database_url: str, tmp_path: Path) -> None:
    with server(database_url, tmp_path / "server.log") as (http, url):
        statuses = [attempt(http, url, f"198.51.100.{n}") for n in range(LIMIT + 1)]
    assert statuses == [400] * LIMIT + [429]


def test_a_trusted_proxy_s_x_forwarded_for_names_the_client(database_url: str, tmp_path: Path) -> None:
    with server(database_url, tmp_path / "server.log", FORWARDED_ALLOW_IPS="127.0.0.1") as (http, url):
        statuses = [attempt(http, url, "203.0.113.7") for _ in range(LIMIT + 1)]
        assert statuses == [400] * LIMIT + [429]  # that client, counted on its own
        assert attempt(http, url, "203.0.113.8") == 400  # another client behind the proxy


# Plain `uvicorn saas_app.main:app` (API.md's "Running it"): uvicorn trusts 127.0.0.1 by
# default and rewrites the client before the app sees it, so the app cannot undo that.
# docs/deployment.md says to pass --no-proxy-headers (or --forwarded-allow-ips ''); the
# app applies FORWARDED_ALLOW_IPS itself either way, and refuses to start otherwise.
@pytest.mark.parametrize("flags", [["--no-proxy-headers"], ["--forwarded-allow-ips", ""]])
def test_plain_uvicorn_run_as_documented_keeps_the_per_ip_limit(
    database_url: str, tmp_path: Path, flags: list[str]
) -> None:
    with server(database_url, tmp_path / "server.log", flags) as (http, url):
        statuses = [attempt(http, url, f"198.51.100.{n}") for n in range(LIMIT + 1)]
    assert statuses == [400] * LIMIT + [429]


def test_plain_uvicorn_applies_the_app_s_trusted_proxies(database_url: str, tmp_path: Path) -> None:
    flags = ["--no-proxy-headers"]
    with server(database_url, tmp_path / "server.log", flags, FORWARDED_ALLOW_IPS="127.0.0.1") as (http, url):
        statuses = [attempt(http, url, "203.0.113.7") for _ in range(LIMIT + 1)]
        assert statuses == [400] * LIMIT + [429]
        assert attempt(http, url, "203.0.113.8") == 400


def rotate_under(running: AbstractContextManager[tuple[httpx.Client, str]]) -> None:
    with running as (http, url):
        statuses = [attempt(http, url, f"198.51.100.{n}") for n in range(LIMIT + 1)]
    pytest.fail(f"started, and rotating X-Forwarded-For from 127.0.0.1 gives {statuses}")


def test_plain_uvicorn_trusting_127_0_0_1_by_default_refuses_to_start(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)  # uvicorn's default: 127.0.0.1,::1
    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="server exited"):
        rotate_under(server(database_url, log, []))
    assert "--no-proxy-headers" in log.read_text()


@pytest.mark.parametrize("value", ["127.0.0.1, 10.0.0.0/8", "*", "::1", ""])
def test_forwarded_allow_ips_accepts_addresses_and_networks(value: str) -> None:
    assert [item.strip() for item in value.split(",") if item.strip()] == Settings(
        FORWARDED_ALLOW_IPS=value
    ).FORWARDED_ALLOW_IPS


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1/33", "10.0.0.1/8", "proxy.internal"])
def test_forwarded_allow_ips_refuses_what_uvicorn_would_silently_ignore(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(FORWARDED_ALLOW_IPS=value)
