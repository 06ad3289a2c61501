"""Client IPs come from the socket unless a proxy is trusted (issue 13 item 10).

uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise, so anything on the
host (or a proxy passing the header through) could pick its own IP for the per-IP limits.
These tests start the real server the way `make run` and the image do (`python -m
saas_app serve`) and speak to it from 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
def server(database_url: str, log: Path, **env: str) -> Iterator[tuple[httpx.Client, str]]:
    """A real server with a tenant; yields a client and the tenant's token URL."""
    settings = {
        "DATABASE_URL": database_url,
        "LOGIN_RATE_LIMIT": f"{LIMIT}/minute",
        "LOGIN_FAILURE_LIMIT": "1000/minute",  # only the per-IP limit is under test
        **({"REDIS_URL": REDIS_URL} if REDIS_URL else {}),
        **env,
    }
    with running_server(settings, log) as (base, _pid), httpx.Client(base_url=base, timeout=10) as http:
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


@pytest.mark.parametrize("value", ["127.0.0.1, 10.0.0.0/8", "*", "::1", ""])
def test_forwarded_allow_ips_accepts_addresses_and_networks(value: str) -> None:
    assert [item.strip() for item in value.split(",") if item.strip()] == Settings(
        FORWARDED_ALLOW_IPS=value
    ).FORWARDED_ALLOW_IPS


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1/33", "10.0.0.1/8", "proxy.internal"])
def test_forwarded_allow_ips_refuses_what_uvicorn_would_silently_ignore(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(FORWARDED_ALLOW_IPS=value)
