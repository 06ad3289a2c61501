"""The app wired to tests/fake_github.py, and a browser that walks the GitHub web flow.

The app's outbound client talks to the fake through `httpx.ASGITransport` (no sockets, no
timeouts); the "browser" is the app's test client, which keeps the state cookie, plus a
client of the fake for GitHub's authorize page. Tests that need a real timeout serve the
fake with `serve_in_thread` and pass `transport=None`.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from saas_app.auth.models import LoginCode, Session
from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.main import create_app
from saas_app.models import Base
from saas_app.users.models import Identity, User
from tests.factories import Login, Member, TenantCtx
from tests.fake_github import Account, FakeGitHub

PUBLIC_URL = "http://testserver"
GITHUB = "http://github.test"
CLIENT_ID = "Iv1.saasapptests"
CLIENT_SECRET = "gh-client-secret-" + "q" * 24
REDIRECT = "https://web.client.test/signed-in"
REDIRECT_WITH_QUERY = "https://web.client.test/cb?app=web&lang=en"
PROBLEM = "application/problem+json"
COOKIE = "saas_app_github"
_ids = itertools.count(9_100_000)


def github_settings(**overrides: Any) -> dict[str, Any]:
    """Settings overrides that point the app at the fake (merge into make_settings)."""
    return {
        "PUBLIC_URL": PUBLIC_URL,
        "GITHUB_CLIENT_ID": CLIENT_ID,
        "GITHUB_CLIENT_SECRET": CLIENT_SECRET,
        "GITHUB_AUTHORIZE_URL": f"{GITHUB}/login/oauth/authorize",
        "GITHUB_TOKEN_URL": f"{GITHUB}/login/oauth/access_token",
        "GITHUB_API_URL": GITHUB,
        "OAUTH_ALLOWED_REDIRECTS": [REDIRECT, REDIRECT_WITH_QUERY],
        **overrides,
    }


def new_fake() -> FakeGitHub:
    # GitHub allows redirect_uris under the registered callback URL: one app, every tenant.
    return FakeGitHub(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, callback_url=f"{PUBLIC_URL}/t/")


def add_account(
    fake: FakeGitHub, email: str | None = None, *, verified: bool = True, login: str | None = None
) -> Account:
    """A GitHub account with one primary address (none if `email` is None)."""
    account_id = next(_ids)
    emails = [(email, True, verified)] if email else []
    return fake.add_account(
        id=account_id, login=login or f"octo{account_id}", name=f"Octo {account_id}", emails=emails
    )


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def cookie_attributes(set_cookie: str) -> dict[str, str]:
    """`name=value; Attr=x; Flag` -> {"name": value, "attr": "x", "flag": ""} (lower-cased keys)."""
    pairs = [part.strip().partition("=") for part in set_cookie.split(";")]
    return {key.lower(): value for key, _, value in pairs}


def claims(access_token: str) -> dict[str, Any]:
    """The JWT payload, read without verifying (the API verifies; here we only look)."""
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def assert_problem(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


def assert_tokens(response: Response) -> dict[str, Any]:
    """A token response (RFC 6749 §5.1) and its body."""
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "bearer"
    assert body["access_token"]
    assert body["refresh_token"]
    return body


def as_member(body: dict[str, Any], email: str) -> Member:
    """The signed-in GitHub user as a factories.Member (no password)."""
    login = Login(body["access_token"], body["refresh_token"], body["scope"], body)
    return Member(claims(body["access_token"])["sub"], email, "", login)


@dataclass(frozen=True)
class Counts:
    users: int
    sessions: int
    login_codes: int
    identities: int


@dataclass
class GitHubEnv:
    """The app (`client`, which keeps cookies like a browser) and the fake behind it."""

    client: AsyncClient
    github: AsyncClient  # the browser's view of github.com
    fake: FakeGitHub
    clock: FrozenClock
    app: FastAPI

    async def authorize(self, tenant: TenantCtx, redirect_uri: str | None = None) -> Response:
        params = {"redirect_uri": redirect_uri} if redirect_uri else {}
        return await self.client.get(tenant.path("/auth/github/authorize"), params=params)

    async def at_github(self, authorize_url: str) -> str:
        """The user approves at GitHub; returns where GitHub sends the browser back."""
        response = await self.github.get(authorize_url)
        assert response.status_code == 302, response.text
        location: str = response.headers["location"]
        return location

    async def begin(
        self, tenant: TenantCtx, account: Account, redirect_uri: str | None = None
    ) -> tuple[str, str]:
        """Authorize, then approve at GitHub as `account`; returns the callback URL and the
        flow's cookie value (the PKCE verifier)."""
        self.fake.sign_in_as(account)
        response = await self.authorize(tenant, redirect_uri)
        assert response.status_code == 302, response.text
        verifier = cookie_attributes(response.headers["set-cookie"])[COOKIE]
        return await self.at_github(response.headers["location"]), verifier

    async def start(self, tenant: TenantCtx, account: Account, redirect_uri: str | None = None) -> str:
        """Authorize, then approve at GitHub as `account`; returns the callback URL."""
        return (await self.begin(tenant, account, redirect_uri))[0]

    async def sign_in(self, tenant: TenantCtx, account: Account, redirect_uri: str | None = None) -> Response:
        """The whole browser leg; returns the app's answer at the callback."""
        return await self.client.get(await self.start(tenant, account, redirect_uri))

    async def exchange(self, tenant: TenantCtx, code: str) -> Response:
        return await self.client.post(
            tenant.path("/auth/token"), data={"grant_type": "authorization_code", "code": code}
        )

    def github_tokens(self) -> list[str]:
        """Every GitHub access token the app presented to the fake's REST endpoints."""
        return [
            r.headers["authorization"].split(" ", 1)[1]
            for r in self.fake.requests
            if r.path.startswith("/user") and "authorization" in r.headers
        ]

    async def counts(self, tenant: TenantCtx) -> Counts:
        """Rows the tenant owns, read straight from the database."""
        tenant_id = uuid.UUID(tenant.id)
        async with self.app.state.runtime.session_factory() as session:
            values = [
                await session.scalar(
                    select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
                )
                for model in (User, Session, LoginCode, Identity)
            ]
        return Counts(*(int(v or 0) for v in values))

    async def database_text(self) -> str:
        """Every row of every table, as text: to prove a secret was not stored."""
        async with self.app.state.runtime.session_factory() as session:
            rows = [
                repr(row)
                for table in Base.metadata.sorted_tables
                for row in (await session.execute(select(table))).all()
            ]
        return "\n".join(rows)


@asynccontextmanager
async def github_env(
    settings: Settings, clock: FrozenClock, fake: FakeGitHub, *, over_network: bool = False
) -> AsyncIterator[GitHubEnv]:
    """Builds the app with its outbound calls going to `fake` in process, or (over_network)
    to wherever the settings' GITHUB_* URLs point, e.g. the fake served by serve_in_thread."""
    transport = None if over_network else httpx.ASGITransport(app=fake.app())
    app = create_app(settings, clock=clock, http_transport=transport)
    async with (
        LifespanManager(app) as manager,
        AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=PUBLIC_URL) as client,
        AsyncClient(transport=httpx.ASGITransport(app=fake.app()), base_url=GITHUB) as github,
    ):
        yield GitHubEnv(client, github, fake, clock, app)


EnvFactory = Callable[..., AbstractAsyncContextManager[GitHubEnv]]


def env_factory(make_settings: Callable[..., Settings], clock: FrozenClock, fake: FakeGitHub) -> EnvFactory:
    """`make(**settings_overrides)`: an async context manager of a GitHubEnv."""

    def make(*, over_network: bool = False, **overrides: Any) -> AbstractAsyncContextManager[GitHubEnv]:
        settings = make_settings(**github_settings(**overrides))
        return github_env(settings, clock, fake, over_network=over_network)

    return make


async def audit_events(env: GitHubEnv, tenant: TenantCtx, action: str) -> list[dict[str, Any]]:
    """The tenant's audit events of one action, newest first (read as the owner)."""
    response = await env.client.get(
        tenant.path("/audit-events"), params={"action": action}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def me(env: GitHubEnv, tenant: TenantCtx, access_token: str) -> dict[str, Any]:
    response = await env.client.get(tenant.path("/users/me"), headers=bearer(access_token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
