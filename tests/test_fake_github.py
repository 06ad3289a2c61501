"""Pins the wire format of tests/fake_github.py, quirks included (see its module docstring for
the GitHub documentation pages each behaviour comes from). If one of these fails, check the
GitHub docs before "fixing" the fake: the app under test must cope with GitHub as it is."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fake_github import CODE_TTL_SECONDS, Account, Endpoint, FakeGitHub, s256, serve_in_thread

CLIENT_ID = "Iv1.testclient"
CLIENT_SECRET = "s3cret-" + "z" * 33
CALLBACK = "http://app.test/auth/github/callback"
VERIFIER = secrets.token_urlsafe(48)


@pytest.fixture
def fake() -> FakeGitHub:
    return FakeGitHub(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


@pytest.fixture
def octocat(fake: FakeGitHub) -> Account:
    account = fake.add_account(
        id=583231,
        login="octocat",
        name="The Octocat",
        emails=[("octocat@github.com", True, True), ("old@example.com", False, False)],
        public_email=None,
    )
    fake.sign_in_as(account)
    return account


@pytest.fixture
async def client(fake: FakeGitHub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://github.test") as client:
        yield client


async def authorize(client: httpx.AsyncClient, **extra: str) -> dict[str, list[str]]:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": "read:user user:email",
        "state": "st4te",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        "allow_signup": "false",
    }
    response = await client.get("/login/oauth/authorize", params={**params, **extra})
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return parse_qs(urlsplit(location).query)


async def exchange(
    client: httpx.AsyncClient, code: str, /, *, json_answer: bool = True, **overrides: str
) -> httpx.Response:
    data = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": VERIFIER,
        **overrides,
    }
    headers = {"Accept": "application/json"} if json_answer else {}
    return await client.post("/login/oauth/access_token", data=data, headers=headers)


async def sign_in(client: httpx.AsyncClient) -> str:
    code = (await authorize(client))["code"][0]
    token: str = (await exchange(client, code)).json()["access_token"]
    return token


# -- authorize --------------------------------------------------------------------------


async def test_authorize_redirects_back_with_code_and_state(
    client: httpx.AsyncClient, octocat: Account
) -> None:
    query = await authorize(client)
    assert set(query) == {"code", "state"}
    assert query["state"] == ["st4te"]
    assert len(query["code"][0]) == 20


async def test_declined_authorize_redirects_with_access_denied_once(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    fake.deny_next = True
    query = await authorize(client)
    assert query["error"] == ["access_denied"]
    assert query["error_description"] == ["The user has denied your application access."]
    assert query["error_uri"][0].endswith("troubleshooting-authorization-request-errors/#access-denied")
    assert query["state"] == ["st4te"]
    assert "code" not in query
    assert "code" in await authorize(client)  # one-shot


async def test_authorize_accepts_only_s256(client: httpx.AsyncClient, octocat: Account) -> None:
    query = await authorize(client, code_challenge_method="plain")
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


async def test_registered_callback_url_is_the_default_and_the_limit(octocat: Account) -> None:
    fake = FakeGitHub(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, callback_url=CALLBACK)
    fake.sign_in_as(octocat)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app()), base_url="http://gh"
    ) as client:
        default = await client.get("/login/oauth/authorize", params={"client_id": CLIENT_ID, "state": "s"})
        assert default.headers["location"].startswith(CALLBACK + "?code=")
        code = parse_qs(urlsplit(default.headers["location"]).query)["code"][0]
        data = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code}  # no redirect_uri
        token = await client.post(
            "/login/oauth/access_token", data=data, headers={"Accept": "application/json"}
        )
        assert token.json()["token_type"] == "bearer"
        params = {"client_id": CLIENT_ID, "redirect_uri": "http://evil.test/cb", "state": "s"}
        elsewhere = await client.get("/login/oauth/authorize", params=params)
    query = parse_qs(urlsplit(elsewhere.headers["location"]).query)
    assert elsewhere.headers["location"].startswith(CALLBACK + "?")
    assert query["error"] == ["redirect_uri_mismatch"]
    assert query["state"] == ["s"]


# -- token exchange ---------------------------------------------------------------------


async def test_token_exchange_answers_json_with_accept_header(
    client: httpx.AsyncClient, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    response = await exchange(client, code)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "scope"}
    assert body["access_token"].startswith("gho_")
    assert body["token_type"] == "bearer"
    assert body["scope"] == "read:user,user:email"  # comma-separated, unlike the request


async def test_token_exchange_is_form_encoded_without_accept_header(
    client: httpx.AsyncClient, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    response = await exchange(client, code, json_answer=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-www-form-urlencoded")
    body = parse_qs(response.text)
    assert body["token_type"] == ["bearer"]
    assert body["scope"] == ["read:user,user:email"]
    assert body["access_token"][0].startswith("gho_")


async def test_token_exchange_accepts_a_json_request_body(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    payload = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": code,
        "code_verifier": VERIFIER,
    }
    response = await client.post(
        "/login/oauth/access_token", json=payload, headers={"Accept": "application/json"}
    )
    assert response.json()["token_type"] == "bearer"
    assert fake.requests[-1].form["code_verifier"] == VERIFIER


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_secret": "wrong"}, "incorrect_client_credentials"),
        ({"client_id": "Iv1.other"}, "incorrect_client_credentials"),
        ({"code": "0" * 20}, "bad_verification_code"),
        ({"redirect_uri": "http://app.test/elsewhere"}, "redirect_uri_mismatch"),
    ],
)
@pytest.mark.parametrize("json_answer", [True, False])
async def test_token_errors_come_back_with_http_200(
    client: httpx.AsyncClient, octocat: Account, overrides: dict[str, str], error: str, json_answer: bool
) -> None:
    code = (await authorize(client))["code"][0]
    response = await exchange(client, code, json_answer=json_answer, **overrides)
    assert response.status_code == 200
    body = response.json() if json_answer else {k: v[0] for k, v in parse_qs(response.text).items()}
    assert body["error"] == error
    assert set(body) == {"error", "error_description", "error_uri"}
    assert body["error_uri"].startswith("https://docs.github.com/")


async def test_code_expires_after_ten_minutes(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    fake.advance(CODE_TTL_SECONDS + 1)
    body = (await exchange(client, code)).json()
    assert body["error"] == "bad_verification_code"
    assert body["error_description"] == "The code passed is incorrect or expired."


@pytest.mark.parametrize("verifier", ["not-the-verifier", ""])
async def test_pkce_mismatch_is_bad_verification_code(
    client: httpx.AsyncClient, octocat: Account, verifier: str
) -> None:
    code = (await authorize(client))["code"][0]
    body = (await exchange(client, code, code_verifier=verifier)).json()
    assert body["error"] == "bad_verification_code"
    assert "code_verifier" in body["error_description"]
    assert (await exchange(client, code)).json()["token_type"] == "bearer"  # failures don't burn it


async def test_code_is_single_use(client: httpx.AsyncClient, octocat: Account) -> None:
    code = (await authorize(client))["code"][0]
    assert "access_token" in (await exchange(client, code)).json()
    assert (await exchange(client, code)).json()["error"] == "bad_verification_code"


async def test_requests_are_recorded_and_secret_stays_out_of_urls(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    await exchange(client, code)
    authorize_request, token_request = fake.requests
    assert authorize_request.query["code_challenge"] == s256(VERIFIER)
    assert token_request.method == "POST"
    assert token_request.headers["accept"] == "application/json"
    assert token_request.form["code_verifier"] == VERIFIER
    assert all(CLIENT_SECRET not in r.url for r in fake.requests)


# -- token endpoint failure switches ----------------------------------------------------


async def test_token_status_fault_is_one_shot(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    fake.fail("token", status=503)
    response = await exchange(client, code)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert (await exchange(client, code)).json()["token_type"] == "bearer"


async def test_token_malformed_and_sticky_faults(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    fake.fail("token", malformed=True, times=None)
    for _ in range(2):
        response = await exchange(client, code)
        assert response.status_code == 200
        with pytest.raises(ValueError, match="Unterminated string"):
            response.json()
    fake.clear_faults()
    assert (await exchange(client, code)).json()["token_type"] == "bearer"


async def test_token_error_fault_answers_that_error_with_200(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    code = (await authorize(client))["code"][0]
    fake.fail("token", error="unverified_user_email")
    response = await exchange(client, code)
    assert response.status_code == 200
    assert response.json()["error"] == "unverified_user_email"


# -- REST -------------------------------------------------------------------------------


async def test_user_shape_with_private_email(client: httpx.AsyncClient, octocat: Account) -> None:
    token = await sign_in(client)
    response = await client.get("/user", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["x-github-media-type"] == "github.v3; format=json"
    assert response.headers["x-ratelimit-limit"] == "5000"
    assert response.headers["x-oauth-scopes"] == "read:user, user:email"
    user = response.json()
    assert user["id"] == 583231
    assert isinstance(user["id"], int)
    assert user["login"] == "octocat"
    assert user["name"] == "The Octocat"
    assert user["email"] is None
    assert user["type"] == "User"
    assert user["html_url"] == "https://github.com/octocat"
    assert user["avatar_url"].startswith("https://avatars.githubusercontent.com/u/583231")


async def test_user_accepts_token_scheme_and_public_email(
    client: httpx.AsyncClient, fake: FakeGitHub
) -> None:
    account = fake.add_account(id=7, login="pub", emails=[("pub@x.io", True, True)], public_email="pub@x.io")
    token = fake.grant_token(account)
    user = (await client.get("/user", headers={"Authorization": f"token {token}"})).json()
    assert user["email"] == "pub@x.io"
    assert user["name"] is None
    fake.user_email_null = True
    assert (await client.get("/user", headers={"Authorization": f"token {token}"})).json()["email"] is None


@pytest.mark.parametrize("path", ["/user", "/user/emails"])
async def test_bad_credentials_is_401(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"Authorization": "Bearer gho_nope"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    missing = await client.get(path)
    assert missing.status_code == 401
    assert missing.json()["message"] == "Requires authentication"


async def test_emails_shape(client: httpx.AsyncClient, octocat: Account) -> None:
    token = await sign_in(client)
    response = await client.get("/user/emails", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == [
        {"email": "octocat@github.com", "primary": True, "verified": True, "visibility": "private"},
        {"email": "old@example.com", "primary": False, "verified": False, "visibility": None},
    ]


async def test_emails_without_user_email_scope_is_404(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account
) -> None:
    token = fake.grant_token(octocat, scope="read:user")
    response = await client.get("/user/emails", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"
    assert response.json()["status"] == "404"


@pytest.mark.parametrize("endpoint", ["user", "emails"])
async def test_rest_status_and_malformed_faults(
    client: httpx.AsyncClient, fake: FakeGitHub, octocat: Account, endpoint: Endpoint
) -> None:
    path = {"user": "/user", "emails": "/user/emails"}[endpoint]
    headers = {"Authorization": f"Bearer {fake.grant_token(octocat)}"}
    fake.fail(endpoint, status=500)
    assert (await client.get(path, headers=headers)).status_code == 500
    fake.fail(endpoint, malformed=True)
    response = await client.get(path, headers=headers)
    assert response.status_code == 200
    with pytest.raises(ValueError, match="Unterminated string"):
        response.json()
    assert (await client.get(path, headers=headers)).status_code == 200


# -- over a real socket -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "method", "path"), [("token", "POST", "/login/oauth/access_token"), ("user", "GET", "/user")]
)
async def test_hang_makes_a_short_client_timeout_fire(
    fake: FakeGitHub, octocat: Account, endpoint: Endpoint, method: str, path: str
) -> None:
    # Over a real socket: httpx.ASGITransport does not enforce timeouts.
    fake.fail(endpoint, hang=3)
    with serve_in_thread(fake) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.request(method, path)


async def test_full_flow_over_loopback(fake: FakeGitHub, octocat: Account) -> None:
    with serve_in_thread(fake) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            token = await sign_in(client)
            user = await client.get("/user", headers={"Authorization": f"Bearer {token}"})
    assert user.json()["login"] == "octocat"
