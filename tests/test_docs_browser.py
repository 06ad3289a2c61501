"""Swagger UI in a real browser: Authorize with a password, then Try it out, offline.

Debian's chromium (`apt-get install chromium`, which `make test` does when it can; never a
browser download), driven by Playwright, against the real server: open `/t/{t}/docs`, sign
in through the Authorize dialog (the OAuth2 password flow at the tenant's token endpoint),
Try it out -> Execute on `GET /users/me`, and expect a 200 with the user's e-mail. Every
request the page makes must stay on loopback (requests elsewhere are blocked and counted),
and the console must show no Content-Security-Policy violation. A screenshot is kept in
test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright

from tests.conftest import REDIS_URL, ROOT
from tests.servers import running_server

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "swagger password that is long enough"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def require_chromium() -> None:
    """Skips (with the reason) without Debian's chromium; under CI its absence is a failure."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    env = {"DATABASE_URL": database_url, **({"REDIS_URL": REDIS_URL} if REDIS_URL else {})}
    with running_server(env, tmp_path / "server.log") as (base, _pid):
        yield base


def test_swagger_ui_authorizes_and_tries_users_me(server: str) -> None:
    require_chromium()

    slug = f"docs-{uuid.uuid4().hex[:8]}"
    email = f"ada-{uuid.uuid4().hex[:6]}@docs.example"
    created = httpx.post(
        f"{server}/tenants",
        json={"slug": slug, "name": "Docs", "owner": {"email": email, "password": PASSWORD}},
        timeout=10,
    )
    assert created.status_code == 201, created.text

    left_loopback: list[str] = []
    console_errors: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in {"http", "https"} and urlsplit(url).hostname not in LOOPBACK:
            left_loopback.append(url)
            route.abort()
        else:
            route.continue_()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(15_000)
            page.route("**/*", only_loopback)
            page.on("console", lambda m: m.type in {"error", "warning"} and console_errors.append(m.text))
            page.on("pageerror", lambda e: console_errors.append(str(e)))

            page.goto(f"{server}/t/{slug}/docs")
            page.locator(".auth-wrapper .authorize").click()
            oauth = page.locator(".auth-container").filter(has=page.locator("#oauth_username"))
            oauth.locator("#oauth_username").fill(email)
            oauth.locator("#oauth_password").fill(PASSWORD)
            oauth.locator("button.authorize").click()
            # The token was issued: the OAuth2 section now offers to log out.
            page.locator(".auth-container", has_text="OAuth2").locator("button", has_text="Logout").wait_for()
            page.locator(".dialog-ux .close-modal").click()

            me = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/t/{tenant}/users/me"])')
            me.locator(".opblock-summary").first.click()
            me.locator(".try-out__btn").click()
            me.locator(".execute").click()
            status = me.locator(".live-responses-table .response .response-col_status").first
            status.wait_for()
            body = me.locator(".live-responses-table .response-col_description pre").first.inner_text()
            status_text = status.inner_text().strip()
            me.screenshot(path=str(ARTIFACTS / "swagger_authorize.png"))
        except Exception:
            # Where the UI stopped, for whoever reads the failure.
            page.screenshot(path=str(ARTIFACTS / "swagger_authorize_failed.png"), full_page=True)
            (ARTIFACTS / "swagger_authorize_failed.html").write_text(page.content())
            raise
        finally:
            browser.close()

    assert status_text == "200", body
    assert email in body
    assert left_loopback == []
    assert [e for e in console_errors if "Content Security Policy" in e or "Refused" in e] == []


def test_missing_chromium_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is missing"):
        require_chromium()
