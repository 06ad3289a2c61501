"""A local fake of GitHub's OAuth web flow and the REST user endpoints, for tests.

Wire format follows GitHub's documentation:

- "Authorizing OAuth apps" (web application flow): ``GET /login/oauth/authorize`` redirects
  back with ``?code=...&state=...``; the code expires after 10 minutes; PKCE accepts only
  ``code_challenge_method=S256``; ``POST /login/oauth/access_token`` answers
  ``access_token=...&scope=...&token_type=bearer`` form-encoded by default and JSON only
  with ``Accept: application/json``.
- "Troubleshooting authorization request errors": a declined request redirects with
  ``error=access_denied&error_description=...&error_uri=...&state=...``.
- "Troubleshooting OAuth app access token request errors": token errors come back with
  HTTP 200 and ``error``/``error_description``/``error_uri`` (``incorrect_client_credentials``,
  ``redirect_uri_mismatch``, ``bad_verification_code``). GitHub documents no PKCE-specific
  error, so a verifier that does not match the challenge is ``bad_verification_code``.
- "REST API endpoints for users" / "REST API endpoints for emails": ``GET /user`` and
  ``GET /user/emails`` (the latter needs the ``user:email`` or ``user`` scope).
- "Authenticating to the REST API": ``Authorization: Bearer`` and ``Authorization: token``
  both work; invalid credentials give 401, missing scope gives 404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

CODE_TTL_SECONDS = 600
DOCS = "https://docs.github.com"
_TOKEN_ERRORS_URI = f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
_AUTHORIZE_ERRORS_URI = f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
TOKEN_ERRORS: dict[str, tuple[str, str]] = {
    "incorrect_client_credentials": (
        "The client_id and/or client_secret passed are incorrect.",
        f"{_TOKEN_ERRORS_URI}#incorrect-client-credentials",
    ),
    "redirect_uri_mismatch": (
        "The redirect_uri MUST match the registered callback URL for this application.",
        f"{_AUTHORIZE_ERRORS_URI}#redirect-uri-mismatch2",
    ),
    "bad_verification_code": (
        "The code passed is incorrect or expired.",
        f"{_TOKEN_ERRORS_URI}#bad-verification-code",
    ),
}
JSON = "application/json; charset=utf-8"
PKCE_MISMATCH = "The code_verifier does not match the code_challenge supplied in the authorization request."
Endpoint = Literal["token", "user", "emails"]


@dataclass
class Email:
    email: str
    primary: bool
    verified: bool


@dataclass
class Account:
    id: int
    login: str
    name: str | None
    emails: list[Email]
    public_email: str | None


@dataclass
class Fault:
    """What the next matching request(s) do instead of answering normally."""

    status: int | None = None
    malformed: bool = False
    hang: float | None = None
    error: str | None = None
    times: int | None = 1  # None: sticky until clear_faults()


@dataclass
class RecordedRequest:
    method: str
    path: str
    url: str
    headers: dict[str, str]
    query: dict[str, str]
    form: dict[str, str]  # body parameters, form-encoded or JSON


@dataclass
class _Grant:
    account: Account
    redirect_uri: str | None
    scope: list[str]
    code_challenge: str | None
    issued_at: float
    used: bool = False


@dataclass
class _Token:
    account: Account
    scope: list[str]


@dataclass
class FakeGitHub:
    """GitHub's github.com OAuth endpoints and api.github.com user endpoints in one app.

    State: one registered OAuth app (``client_id``/``client_secret``, optional
    ``callback_url`` used when authorize gets no ``redirect_uri``), accounts from
    ``add_account``, the account that approves at authorize (``sign_in_as``).

    Switches:
      - ``deny_next``: one-shot; the next authorize redirects with ``error=access_denied``.
      - ``fail(endpoint, status=N | malformed=True | hang=seconds | error="...", times=1)``:
        ``endpoint`` is "token", "user" or "emails". One-shot by default, ``times=N`` for N
        requests, ``times=None`` sticky until ``clear_faults()``. ``hang`` sleeps (anyio)
        and then answers as the other fields say, or normally. A token ``status`` fault
        answers HTML (github.com), a REST one a GitHub JSON error. ``error`` is
        token-only and answers that OAuth error with HTTP 200.
      - ``user_email_null``: sticky; ``GET /user`` reports ``"email": null`` for everyone.
      - ``advance(seconds)``: moves the fake's clock, e.g. past the 10-minute code expiry.

    Every request is appended to ``requests``. Failed token exchanges never burn the code;
    a ``redirect_uri`` is checked only when given at both steps, as GitHub does.
    """

    client_id: str = "Iv1.fakeclientid"
    client_secret: str = "fake-client-secret"
    callback_url: str | None = None
    deny_next: bool = False
    user_email_null: bool = False
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    accounts: dict[int, Account] = field(default_factory=dict, init=False)
    faults: dict[str, Fault] = field(default_factory=dict, init=False)
    signed_in: Account | None = field(default=None, init=False)
    _grants: dict[str, _Grant] = field(default_factory=dict, init=False)
    _tokens: dict[str, _Token] = field(default_factory=dict, init=False)
    _skew: float = field(default=0.0, init=False)

    # -- set-up -------------------------------------------------------------------------
    def add_account(
        self,
        *,
        id: int,
        login: str,
        name: str | None = None,
        emails: list[tuple[str, bool, bool]] | None = None,
        public_email: str | None = None,
    ) -> Account:
        listed = [Email(e, primary, verified) for e, primary, verified in emails or []]
        if public_email is not None and public_email not in {e.email for e in listed}:
            raise ValueError("public_email must be one of the account's emails")
        account = Account(id, login, name, listed, public_email)
        self.accounts[id] = account
        return account

    def sign_in_as(self, account: Account) -> None:
        self.signed_in = account

    def grant_token(self, account: Account, scope: str = "read:user,user:email") -> str:
        """An access token without the web flow, for tests of the REST side only."""
        token = "gho_" + secrets.token_urlsafe(27)[:36]
        self._tokens[token] = _Token(account, [s for s in scope.split(",") if s])
        return token

    def fail(
        self,
        endpoint: Endpoint,
        *,
        status: int | None = None,
        malformed: bool = False,
        hang: float | None = None,
        error: str | None = None,
        times: int | None = 1,
    ) -> None:
        if error is not None and endpoint != "token":
            raise ValueError("error= applies to the token endpoint only")
        self.faults[endpoint] = Fault(status, malformed, hang, error, times)

    def clear_faults(self) -> None:
        self.faults.clear()

    def advance(self, seconds: float) -> None:
        self._skew += seconds

    # -- the ASGI app ---------------------------------------------------------------------
    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/login/oauth/authorize", self._authorize, methods=["GET"]),
                Route("/login/oauth/access_token", self._access_token, methods=["POST"]),
                Route("/user", self._user, methods=["GET"]),
                Route("/user/emails", self._emails, methods=["GET"]),
            ]
        )

    def _now(self) -> float:
        return time.monotonic() + self._skew

    async def _record(self, request: Request) -> dict[str, str]:
        body = await request.body()
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/json") and body:
            decoded = json.loads(body)
            form = {k: str(v) for k, v in decoded.items()} if isinstance(decoded, dict) else {}
        elif body:
            form = dict(parse_qsl(body.decode()))
        query = dict(request.query_params)
        self.requests.append(
            RecordedRequest(
                request.method, request.url.path, str(request.url), dict(request.headers), query, form
            )
        )
        return {**query, **form}

    async def _take_fault(self, endpoint: Endpoint) -> Fault | None:
        fault = self.faults.get(endpoint)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[endpoint]
        if fault.hang:
            await anyio.sleep(fault.hang)
        return fault

    async def _authorize(self, request: Request) -> Response:
        params = await self._record(request)
        if params.get("client_id") != self.client_id:
            return HTMLResponse("<h1>404 Not Found</h1>", status_code=404)
        redirect_uri = params.get("redirect_uri") or self.callback_url
        if redirect_uri is None:
            return HTMLResponse("<p>No redirect_uri and no registered callback URL.</p>", status_code=400)
        state = {"state": params["state"]} if "state" in params else {}
        refusal = self._refusal(params, redirect_uri, state)
        if refusal is not None:
            return refusal
        if self.signed_in is None:
            return HTMLResponse("<h1>Sign in to GitHub</h1>")
        code = secrets.token_hex(10)
        scope = params.get("scope", "").replace(",", " ").split()
        challenge = params.get("code_challenge")
        redirect_given = params.get("redirect_uri")
        self._grants[code] = _Grant(self.signed_in, redirect_given, scope, challenge, self._now())
        return _redirect(redirect_uri, code=code, **state)

    def _refusal(self, params: dict[str, str], redirect_uri: str, state: dict[str, str]) -> Response | None:
        if self.callback_url and not redirect_uri.startswith(self.callback_url):
            description = TOKEN_ERRORS["redirect_uri_mismatch"][0]
            return _redirect(self.callback_url, error="redirect_uri_mismatch", error_description=description,
                             error_uri=f"{_AUTHORIZE_ERRORS_URI}#redirect-uri-mismatch", **state)  # fmt: skip
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if (challenge or method) and (not challenge or method != "S256"):
            # GitHub documents only S256 but not this error; its shape is RFC 7636's.
            return _redirect(redirect_uri, error="invalid_request",
                             error_description="code_challenge_method must be S256.", **state)  # fmt: skip
        if self.deny_next:
            self.deny_next = False
            return _redirect(redirect_uri, error="access_denied",
                             error_description="The user has denied your application access.",
                             error_uri=f"{_AUTHORIZE_ERRORS_URI}#access-denied", **state)  # fmt: skip
        return None

    async def _access_token(self, request: Request) -> Response:
        params = await self._record(request)
        wants_json = "application/json" in request.headers.get("accept", "")
        fault = await self._take_fault("token")
        if fault and fault.status:
            return HTMLResponse(f"<h1>{fault.status}</h1>", status_code=fault.status)
        if fault and fault.malformed:
            return Response('{"access_token": "gho_', media_type=JSON)
        error, description = (fault.error, None) if fault and fault.error else self._refuse_exchange(params)
        if error is not None:
            return _oauth_error(error, wants_json, description)
        grant = self._grants[params["code"]]
        grant.used = True
        token = self.grant_token(grant.account, ",".join(grant.scope))
        answer = {"access_token": token, "token_type": "bearer", "scope": ",".join(grant.scope)}
        return _oauth_answer(answer, wants_json)

    def _refuse_exchange(self, params: dict[str, str]) -> tuple[str | None, str | None]:
        """The OAuth error (and a non-default description) a token request earns, if any."""
        if params.get("client_id") != self.client_id or not hmac.compare_digest(
            params.get("client_secret", ""), self.client_secret
        ):
            return "incorrect_client_credentials", None
        grant = self._grants.get(params.get("code", ""))
        if grant is None or grant.used or self._now() - grant.issued_at > CODE_TTL_SECONDS:
            return "bad_verification_code", None
        if grant.redirect_uri and params.get("redirect_uri") not in (None, grant.redirect_uri):
            return "redirect_uri_mismatch", None
        if grant.code_challenge is not None and not hmac.compare_digest(
            s256(params.get("code_verifier", "")), grant.code_challenge
        ):
            return "bad_verification_code", PKCE_MISMATCH
        return None, None

    def _authenticate(self, request: Request) -> _Token | Response:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            return _rest_error(401, "Requires authentication", "/rest/users/users#get-the-authenticated-user")
        token = self._tokens.get(credential.strip()) if scheme.lower() in {"bearer", "token"} else None
        return token if token is not None else _rest_error(401, "Bad credentials", "/rest")

    async def _user(self, request: Request) -> Response:
        await self._record(request)
        fault = await self._take_fault("user")
        if fault and (fault.status or fault.malformed):
            return _rest_fault(fault)
        token = self._authenticate(request)
        if isinstance(token, Response):
            return token
        a = token.account
        email = None if self.user_email_null else a.public_email
        # fmt: off
        return _rest_json(token, {
            "login": a.login, "id": a.id, "node_id": base64.b64encode(f"04:User{a.id}".encode()).decode(),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{a.id}?v=4", "gravatar_id": "",
            "url": f"https://api.github.com/users/{a.login}", "html_url": f"https://github.com/{a.login}",
            "type": "User", "site_admin": False, "name": a.name, "company": None, "blog": "",
            "location": None, "email": email, "hireable": None, "bio": None, "twitter_username": None,
            "public_repos": 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": "2011-01-25T18:44:36Z", "updated_at": "2024-01-01T00:00:00Z",
        })
        # fmt: on

    async def _emails(self, request: Request) -> Response:
        await self._record(request)
        fault = await self._take_fault("emails")
        if fault and (fault.status or fault.malformed):
            return _rest_fault(fault)
        token = self._authenticate(request)
        if isinstance(token, Response):
            return token
        if not {"user", "user:email"} & set(token.scope):
            doc = "/rest/users/emails#list-email-addresses-for-the-authenticated-user"
            return _rest_error(404, "Not Found", doc)
        a = token.account
        # Visibility is a property of the primary address only; the others report null.
        # fmt: off
        return _rest_json(token, [
            {"email": e.email, "primary": e.primary, "verified": e.verified,
             "visibility": ("public" if e.email == a.public_email else "private") if e.primary else None}
            for e in a.emails
        ])
        # fmt: on


def s256(verifier: str) -> str:
    """PKCE S256: BASE64URL(SHA256(verifier)) without padding (RFC 7636, section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _redirect(target: str, **params: str) -> RedirectResponse:
    parts = urlsplit(target)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=302)


def _oauth_answer(payload: dict[str, str], wants_json: bool) -> Response:
    if wants_json:
        return Response(json.dumps(payload), media_type=JSON)
    return Response(urlencode(payload), media_type="application/x-www-form-urlencoded; charset=utf-8")


def _oauth_error(error: str, wants_json: bool, description: str | None = None) -> Response:
    known_description, uri = TOKEN_ERRORS.get(error, (f"Fake GitHub error: {error}.", _TOKEN_ERRORS_URI))
    payload = {"error": error, "error_description": description or known_description, "error_uri": uri}
    return _oauth_answer(payload, wants_json)


def _rest_headers(scope: list[str] | None = None) -> dict[str, str]:
    headers = {
        "x-github-media-type": "github.v3; format=json",
        "x-github-api-version-selected": "2022-11-28",
        "x-github-request-id": secrets.token_hex(8).upper(),
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4999",
        "x-ratelimit-used": "1",
        "x-ratelimit-resource": "core",
        "x-ratelimit-reset": str(int(time.time()) + 3600),
    }
    if scope is not None:
        headers["x-oauth-scopes"] = ", ".join(scope)
    return headers


def _rest_json(token: _Token, payload: Any) -> Response:
    return Response(json.dumps(payload), media_type=JSON, headers=_rest_headers(token.scope))


def _rest_error(status: int, message: str, doc_path: str) -> Response:
    payload = {"message": message, "documentation_url": DOCS + doc_path, "status": str(status)}
    return Response(json.dumps(payload), status_code=status, media_type=JSON, headers=_rest_headers())


def _rest_fault(fault: Fault) -> Response:
    if fault.status:
        return _rest_error(fault.status, "Server Error" if fault.status >= 500 else "Error", "/rest")
    return Response('{"login": "octo', media_type=JSON, headers=_rest_headers())


@contextmanager
def serve_in_thread(fake: FakeGitHub) -> Iterator[str]:
    """Serves ``fake.app()`` with uvicorn on a free 127.0.0.1 port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(fake.app(), lifespan="off", log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake GitHub server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
