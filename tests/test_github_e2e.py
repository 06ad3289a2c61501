"""End to end over real HTTP: `python -m saas_app serve` signing a browser in with the fake
GitHub served on its own loopback port. The "browser" is one httpx.Client that keeps
cookies and follows no redirects, so every hop of the flow is visible and checked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_github import s256
from tests.github_helpers import COOKIE, REDIRECT, claims, query
from tests.servers import GitHubDeployment, github_deployment

pytestmark = pytest.mark.e2e
PASSWORD = "e2e password that is long enough"


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[GitHubDeployment]:
    """The fake GitHub on one port and the real server, configured against it, on another."""
    with github_deployment(database_url, tmp_path / "server.log") as deployment:
        yield deployment


def test_browser_signs_in_with_github_through_the_real_server(deployment: GitHubDeployment) -> None:
    server, github, fake = deployment.server, deployment.github, deployment.fake
    slug = f"e2e-gh-{uuid.uuid4().hex[:8]}"
    account = fake.add_account(
        id=583231, login="octocat", name="The Octocat", emails=[("octocat@example.com", True, True)]
    )
    fake.sign_in_as(account)
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        owner = {"email": "owner@e2e.example", "password": PASSWORD}
        created = browser.post(f"{server}/tenants", json={"slug": slug, "name": "E2E GitHub", "owner": owner})
        assert created.status_code == 201, created.text

        # 1. The app sends the browser to GitHub, binding the flow to a cookie.
        start = browser.get(f"{server}/t/{slug}/auth/github/authorize", params={"redirect_uri": REDIRECT})
        assert start.status_code == 302, start.text
        to_github = start.headers["location"]
        assert to_github.startswith(f"{github}/login/oauth/authorize?")
        assert query(to_github)["redirect_uri"] == f"{server}/t/{slug}/auth/github/callback"
        verifier = browser.cookies[COOKIE]
        assert query(to_github)["code_challenge"] == s256(verifier)

        # 2. GitHub approves and sends the browser back to the callback.
        approved = browser.get(to_github)
        assert approved.status_code == 302, approved.text
        callback = approved.headers["location"]
        assert callback.startswith(f"{server}/t/{slug}/auth/github/callback?code=")

        # 3. The callback (with the cookie) exchanges the code and hands over a login code.
        back = browser.get(callback)
        assert back.status_code == 302, back.text
        assert back.headers["location"].startswith(REDIRECT + "?code=")
        code = query(back.headers["location"])["code"]
        assert COOKIE not in browser.cookies  # the flow's cookie is cleared

        # 4. The client exchanges the login code for tokens.
        form = {"grant_type": "authorization_code", "code": code}
        tokens = browser.post(f"{server}/t/{slug}/auth/token", data=form)
        assert tokens.status_code == 200, tokens.text
        assert tokens.headers["cache-control"] == "no-store"
        access_token = tokens.json()["access_token"]
        assert claims(access_token)["amr"] == ["github"]

        # 5. The new user is a password-less member with a GitHub identity.
        bearer = {"Authorization": f"Bearer {access_token}"}
        me = browser.get(f"{server}/t/{slug}/users/me", headers=bearer)
        assert me.status_code == 200, me.text
        user = me.json()
        assert (user["email"], user["full_name"]) == ("octocat@example.com", "The Octocat")
        assert (user["roles"], user["identities"]) == (["member"], ["github"])

        # 6. The code works once: a replay is refused and ends the session it opened.
        again = browser.post(f"{server}/t/{slug}/auth/token", data=form)
        assert again.status_code == 400
        assert again.json()["error"] == "invalid_grant"
        assert browser.get(f"{server}/t/{slug}/users/me", headers=bearer).status_code == 401

    exchange = next(r for r in fake.requests if r.path == "/login/oauth/access_token")
    assert exchange.form["code_verifier"] == verifier
    assert exchange.headers["accept"] == "application/json"
    github_token = next(r.headers["authorization"] for r in fake.requests if r.path == "/user")
    assert github_token.split(" ", 1)[1] not in back.text + tokens.text + me.text
