"""GitHub's OAuth web flow and the two REST calls sign-in needs, spoken as GitHub speaks.

Quirks handled here (GitHub docs, "Authorizing OAuth apps"): the token endpoint answers
errors with HTTP 200 and an `error` field, and answers form-encoded unless asked for JSON;
`/user` has `email: null` when the address is private, so `/user/emails` is the source of
the primary, verified address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from saas_app.core.config import Settings
from saas_app.core.errors import DomainError

logger = logging.getLogger("saas_app.github")
SCOPE = "read:user user:email"
API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubCodeInvalid(DomainError):
    status = 400
    code = "github_code_invalid"
    title = "GitHub refused the authorization code (bad, expired or already used)"


class GitHubUnavailable(DomainError):
    status = 502
    code = "github_unavailable"
    title = "GitHub could not be reached or gave an unusable answer"


@dataclass(frozen=True, slots=True)
class GitHubEmail:
    email: str
    primary: bool
    verified: bool


@dataclass(frozen=True, slots=True)
class GitHubProfile:
    id: int
    login: str
    name: str | None
    emails: tuple[GitHubEmail, ...]

    @property
    def verified_primary_email(self) -> str | None:
        return next((e.email for e in self.emails if e.primary and e.verified), None)

    @property
    def primary_email(self) -> str | None:
        return next((e.email for e in self.emails if e.primary), None)


class GitHubClient:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._settings = settings

    def authorize_url(self, *, redirect_uri: str, state: str, code_challenge: str) -> str:
        query = {
            "client_id": self._settings.GITHUB_CLIENT_ID,
            "redirect_uri": redirect_uri,
            "scope": SCOPE,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",  # the only PKCE method GitHub supports
            "allow_signup": "true",
        }
        return f"{self._settings.GITHUB_AUTHORIZE_URL}?{urlencode(query)}"

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> str:
        """Returns GitHub's access token for the code (RFC 6749 §4.1.3 with PKCE)."""
        form = {
            "client_id": self._settings.GITHUB_CLIENT_ID or "",
            "client_secret": self._settings.GITHUB_CLIENT_SECRET or "",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        body = await self._json(
            "POST", self._settings.GITHUB_TOKEN_URL, data=form, headers={"Accept": "application/json"}
        )
        if not isinstance(body, dict):
            raise GitHubUnavailable("GitHub's token answer was not an object.")
        error = body.get("error")
        if error == "bad_verification_code":
            raise GitHubCodeInvalid()
        if error is not None:
            logger.warning("github token endpoint error: %s", str(error)[:64])
            raise GitHubUnavailable("GitHub refused the exchange; check the OAuth app's settings.")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise GitHubUnavailable("GitHub's token answer had no access_token.")
        return token

    async def profile(self, access_token: str) -> GitHubProfile:
        """Reads the signed-in GitHub user and their e-mail addresses."""
        headers = {**API_HEADERS, "Authorization": f"Bearer {access_token}"}
        api = self._settings.GITHUB_API_URL
        user = await self._json("GET", f"{api}/user", headers=headers)
        emails = await self._json("GET", f"{api}/user/emails", headers=headers)
        try:
            return GitHubProfile(
                id=_integer(user["id"]),
                login=str(user["login"]),
                name=user.get("name") if isinstance(user.get("name"), str) else None,
                emails=tuple(
                    GitHubEmail(str(e["email"]), e.get("primary") is True, e.get("verified") is True)
                    for e in emails
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GitHubUnavailable("GitHub's user answer was not in the expected shape.") from exc

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            logger.warning("github timeout: %s %s", method, url.split("?", maxsplit=1)[0])
            raise GitHubUnavailable("GitHub did not answer in time.") from exc
        except httpx.HTTPError as exc:
            logger.warning("github transport error: %s", type(exc).__name__)
            raise GitHubUnavailable() from exc
        if response.status_code != 200:
            logger.warning(
                "github answered %s to %s %s", response.status_code, method, url.split("?", maxsplit=1)[0]
            )
            raise GitHubUnavailable(f"GitHub answered HTTP {response.status_code}.")
        try:
            return response.json()
        except ValueError as exc:
            raise GitHubUnavailable("GitHub's answer was not JSON.") from exc


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("GitHub ids are integers")
    return value
