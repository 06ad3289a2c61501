"""End to end over real HTTP: `python -m saas_app serve` (uvicorn) on a free loopback port."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.servers import running_server

pytestmark = pytest.mark.e2e
PASSWORD = "e2e password that is long enough"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Starts the real server (migrations included) and yields its base URL."""
    env = {"DATABASE_URL": database_url, **({"REDIS_URL": REDIS_URL} if REDIS_URL else {})}
    with running_server(env, tmp_path / "server.log") as (base, _pid):
        yield base


def test_signup_login_refresh_projects_logout(server: str) -> None:
    slug = f"e2e-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server, timeout=10) as http:
        created = http.post(
            "/tenants",
            json={"slug": slug, "name": "E2E", "owner": {"email": "Ada@E2E.example", "password": PASSWORD}},
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"]

        form = {"grant_type": "password", "username": "ada@e2e.example", "password": PASSWORD}
        login = http.post(f"/t/{slug}/auth/token", data=form)
        assert login.status_code == 200, login.text
        assert login.headers["cache-control"] == "no-store"
        tokens = login.json()
        assert tokens["token_type"] == "bearer"

        refreshed = http.post(
            f"/t/{slug}/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        assert refreshed.status_code == 200, refreshed.text
        bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}

        project = http.post(f"/t/{slug}/projects", json={"name": "Apollo"}, headers=bearer)
        assert project.status_code == 201, project.text
        listing = http.get(f"/t/{slug}/projects", headers=bearer)
        assert [p["name"] for p in listing.json()["items"]] == ["Apollo"]

        assert http.post(f"/t/{slug}/auth/logout", headers=bearer).status_code == 204
        after = http.get(f"/t/{slug}/projects", headers=bearer)
        assert after.status_code == 401
        assert after.headers["www-authenticate"] == f'Bearer realm="{slug}", error="invalid_token"'
        reuse = http.post(
            f"/t/{slug}/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
        )
        assert reuse.status_code == 400
        assert reuse.json()["error"] == "invalid_grant"


def test_server_log_has_one_line_per_request_and_no_secrets(server: str, tmp_path: Path) -> None:
    slug = f"e2e-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server, timeout=10) as http:
        http.post(
            "/tenants", json={"slug": slug, "name": "L", "owner": {"email": "l@x.io", "password": PASSWORD}}
        )
        login = http.post(
            f"/t/{slug}/auth/token",
            data={"grant_type": "password", "username": "l@x.io", "password": PASSWORD},
        )
        tokens = login.json()
        http.get(f"/t/{slug}/users/me?secret=querystring", headers={"X-Request-ID": "trace-me-42"})
    log = _log_once_it_contains(tmp_path / "server.log", '"request_id": "trace-me-42"')
    assert '"path": "/t/{tenant}/users/me"' in log
    for secret in (PASSWORD, tokens["access_token"], tokens["refresh_token"], "querystring"):
        assert secret not in log


def _log_once_it_contains(path: Path, needle: str) -> str:
    """The access line is written just after the response is sent: poll for it briefly."""
    deadline = time.monotonic() + 5
    while True:
        text = path.read_text()
        if needle in text or time.monotonic() > deadline:
            assert needle in text
            return text
        time.sleep(0.05)


def test_oversized_requests_are_refused_by_the_app_not_the_parser(server: str) -> None:
    """uvicorn's parser takes up to 64 KiB of request line and more of headers: the app's
    own limits answer first, as problems (RFC 6585 §5, RFC 9110 §15.5.15)."""
    with httpx.Client(base_url=server, timeout=10) as http:
        headers = http.get("/t/any/users/me", headers={"Authorization": "Bearer " + "a" * 40_000})
        assert headers.status_code == 431
        assert headers.headers["content-type"] == "application/problem+json"
        url = http.get("/t/any/projects", params={"cursor": "a" * 20_000})
        assert url.status_code == 414
        assert url.json()["code"] == "uri_too_long"
        assert http.get("/healthz").status_code == 200  # the server is unharmed
