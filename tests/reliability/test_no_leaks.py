"""No secret reaches the logs (issue 7, "No leaks").

The real server (LOG_FORMAT=json, LOG_LEVEL=DEBUG, GitHub pointed at the fake served on
its own port) is driven through a full run: tenant sign-up, password login, a failed
login, refresh, MFA enrolment and two-step logins (TOTP and recovery code), an API key,
a GitHub browser sign-in with its login code, logout, a password change and some error
paths. Every secret the client sees or sends is collected; none may appear in the
server's stdout/stderr, neither as is nor URL- or JSON-encoded. Every log line must be
JSON, and the request lines must carry method, path, status, duration and request id.

Real time here: the server's clock is the system clock, so TOTP codes come from
pyotp.TOTP(secret).now(), waiting (at most one 30 s step) when a step was already used.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pyotp
import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.github_helpers import CLIENT_SECRET, COOKIE, REDIRECT, query
from tests.servers import GitHubDeployment, github_deployment

pytestmark = pytest.mark.e2e
PASSWORD = "ünïcode owner pass phrase 🔑 & more"
NEW_PASSWORD = "the owner's brand-new pass phrase"
WRONG_PASSWORD = "a wrong guess at the owner's password"
REQUEST_FIELDS = {"method", "path", "status", "duration_ms", "request_id"}
DIGITS_ONLY = re.compile(r"^\d+$")


@dataclass
class Secrets:
    """Everything secret the client saw or sent, by kind."""

    found: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, *values: str) -> None:
        self.found.setdefault(kind, set()).update(v for v in values if v)

    def tokens(self, body: dict[str, Any]) -> dict[str, Any]:
        """Collects the tokens of a token response (and its JWT's signature) and returns it."""
        self.add("access token", body["access_token"], body["access_token"].rsplit(".", 1)[1])
        self.add("refresh token", body["refresh_token"], _random_part(body["refresh_token"]))
        return body

    def spellings(self) -> Iterator[tuple[str, str, str]]:
        """(kind, value, how it would be written in the log)."""
        for kind, values in self.found.items():
            for value in values:
                forms = {
                    value,
                    quote(value, safe=""),
                    quote_plus(value),
                    json.dumps(value)[1:-1],  # as a JSON string escapes it
                }
                for spelling in forms:
                    yield kind, value, spelling


def _random_part(opaque: str) -> str:
    """`rt_XXXX` -> `XXXX`: the part a log could print without its prefix."""
    return opaque.split("_", 1)[1] if "_" in opaque[:4] else opaque


def leaks(log: str, secrets: Secrets) -> list[str]:
    found = []
    for kind, value, spelling in secrets.spellings():
        if DIGITS_ONLY.match(spelling):  # a TOTP code: only as a number of its own
            present = re.search(rf"(?<!\d){spelling}(?!\d)", log) is not None
        else:
            present = spelling in log
        if present:
            found.append(f"{kind}: {value[:12]}...")
        assert len(value) >= 6, f"{kind} {value!r} is too short to look for"
    return sorted(set(found))


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[GitHubDeployment]:
    with github_deployment(
        database_url,
        tmp_path / "server.log",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        RATE_LIMITS_ENABLED="true",
        LOGIN_RATE_LIMIT="1000/minute",
        REGISTER_RATE_LIMIT="1000/minute",
    ) as deployment:
        yield deployment


class Authenticator:
    """pyotp on the real clock; never offers a step the server has already accepted."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step = -1

    def fresh_code(self) -> str:
        deadline = time.monotonic() + 35
        while int(time.time()) // 30 <= self.last_step:
            assert time.monotonic() < deadline, "the TOTP step did not move on"
            time.sleep(0.2)
        self.last_step = int(time.time()) // 30
        code: str = self.totp.now()
        return code


def test_a_full_run_leaves_no_secret_in_the_logs(deployment: GitHubDeployment) -> None:
    server, fake = deployment.server, deployment.fake
    secrets = Secrets()
    secrets.add("password", PASSWORD, NEW_PASSWORD, WRONG_PASSWORD)
    secrets.add("server secret", TEST_JWT_SECRET, CLIENT_SECRET)
    slug = f"leaks-{uuid.uuid4().hex[:8]}"
    email = "owner@leaks.example.com"
    sent: list[httpx.Request] = []
    hooks = {"request": [sent.append]}
    with httpx.Client(base_url=server, timeout=10, follow_redirects=False, event_hooks=hooks) as http:

        def grant(expected: int, **form: str) -> dict[str, Any]:
            response = http.post(f"/t/{slug}/auth/token", data=form)
            assert response.status_code == expected, response.text
            body: dict[str, Any] = response.json()
            if expected == 200:
                secrets.tokens(body)
            if "mfa_token" in body:
                secrets.add("mfa_token", body["mfa_token"], _random_part(body["mfa_token"]))
            return body

        # Tenant sign-up; password login; a failed login; refresh.
        owner = {"email": email, "password": PASSWORD, "full_name": "Owner"}
        created = http.post("/tenants", json={"slug": slug, "name": "Leaks", "owner": owner})
        assert created.status_code == 201, created.text
        tokens = grant(200, grant_type="password", username=email, password=PASSWORD)
        failed = grant(400, grant_type="password", username=email, password=WRONG_PASSWORD)
        assert failed["error"] == "invalid_grant"
        tokens = grant(200, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

        # MFA: enrolment (with the password) and confirmation.
        enrol = http.post(f"/t/{slug}/users/me/mfa/totp", json={"password": PASSWORD}, headers=bearer)
        assert enrol.status_code == 200, enrol.text
        totp_secret = enrol.json()["secret"]
        secrets.add("totp secret", totp_secret, enrol.json()["otpauth_uri"])
        authenticator = Authenticator(totp_secret)
        code = authenticator.fresh_code()
        secrets.add("totp code", code)
        confirmed = http.post(f"/t/{slug}/users/me/mfa/totp/confirm", json={"code": code}, headers=bearer)
        assert confirmed.status_code == 200, confirmed.text
        recovery_codes = confirmed.json()["recovery_codes"]
        secrets.add("recovery code", *recovery_codes, *(c.replace("-", "") for c in recovery_codes))

        # Two-step login with a recovery code.
        challenge = grant(403, grant_type="password", username=email, password=PASSWORD)
        grant(
            200,
            grant_type="mfa_recovery_code",
            mfa_token=challenge["mfa_token"],
            recovery_code=recovery_codes[0],
        )

        # An API key: created, then used.
        key = http.post(
            f"/t/{slug}/api-keys", json={"name": "ci", "scopes": ["projects:read"]}, headers=bearer
        )
        assert key.status_code == 201, key.text
        full_key, prefix = key.json()["key"], key.json()["prefix"]
        secrets.add("api key", full_key, full_key.removeprefix(f"{prefix}_"))
        assert http.get(f"/t/{slug}/projects", headers={"X-API-Key": full_key}).status_code == 200

        # GitHub browser sign-in; the client exchanges the one-time login code.
        account = fake.add_account(
            id=4_242_001, login="leaky", name="Leaky Octo", emails=[("leaky@example.com", True, True)]
        )
        fake.sign_in_as(account)
        start = http.get(f"/t/{slug}/auth/github/authorize", params={"redirect_uri": REDIRECT})
        assert start.status_code == 302, start.text
        secrets.add("pkce verifier", http.cookies[COOKIE])
        approved = httpx.get(start.headers["location"], follow_redirects=False, timeout=10)
        assert approved.status_code == 302, approved.text
        secrets.add("github code", query(approved.headers["location"])["code"])
        back = http.get(approved.headers["location"])
        assert back.status_code == 302, back.text
        login_code = query(back.headers["location"])["code"]
        secrets.add("login code", login_code, _random_part(login_code))
        grant(200, grant_type="authorization_code", code=login_code)
        presented = [r.headers.get("authorization", "").partition(" ")[2] for r in fake.requests]
        secrets.add("github token", *presented, *fake._tokens)  # sent by the app; issued by the fake

        # Error paths: 422 with a password in the body, 401 with bad credentials.
        for body in (
            {"email": "not-an-email", "password": "a 422 password that must not echo"},
            {"email": "long@example.com", "password": "too long to accept " * 10},
        ):
            secrets.add("password", body["password"])
            rejected = http.post(f"/t/{slug}/auth/register", json=body)
            assert rejected.status_code == 422, rejected.text
        bad_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad-signature-0123456789abcdef"
        bad_key = f"sk_{prefix.removeprefix('sk_')}_{'z' * 43}"
        secrets.add("bad credential", bad_token, bad_key)
        assert (
            http.get(f"/t/{slug}/users/me", headers={"Authorization": f"Bearer {bad_token}"}).status_code
            == 401
        )
        assert http.get(f"/t/{slug}/projects", headers={"X-API-Key": bad_key}).status_code == 401

        # Two-step login with a TOTP code (the next step: the confirming one is spent).
        challenge = grant(403, grant_type="password", username=email, password=PASSWORD)
        code = authenticator.fresh_code()
        secrets.add("totp code", code)
        tokens = grant(200, grant_type="mfa_otp", mfa_token=challenge["mfa_token"], otp=code)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

        # Password change, then logout: the old access token stops working.
        change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        assert http.post(f"/t/{slug}/users/me/password", json=change, headers=bearer).status_code == 204
        grant(403, grant_type="password", username=email, password=NEW_PASSWORD)
        assert http.post(f"/t/{slug}/auth/logout", headers=bearer).status_code == 204
        assert http.get(f"/t/{slug}/users/me", headers=bearer).status_code == 401
        revoked = http.post(f"/t/{slug}/auth/revoke", data={"token": tokens["refresh_token"]})
        assert revoked.status_code == 200, revoked.text
        last_request = http.get("/healthz", headers={"X-Request-ID": "the-last-request"})
        assert last_request.status_code == 200

    assert len(fake._tokens) >= 1
    log = _log_once_it_contains(deployment.log, "the-last-request")
    lines = [line for line in log.splitlines() if line.strip()]
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not not_json, f"{len(not_json)} log lines are not JSON, e.g. {not_json[:3]}"
    records = [json.loads(line) for line in lines]
    requests = [r for r in records if r.get("logger") == "saas_app.access" and r.get("path") != "/readyz"]
    assert len(requests) == len(sent), "one request line per request"
    for line in requests:
        assert line.keys() >= REQUEST_FIELDS, line
    assert not leaks(log, secrets), leaks(log, secrets)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _log_once_it_contains(path: Path, needle: str) -> str:
    """The access line is written just after the response is sent: poll for it briefly."""
    deadline = time.monotonic() + 5
    while True:
        text = path.read_text()
        if needle in text or time.monotonic() > deadline:
            assert needle in text, text[-2000:]
            return text
        time.sleep(0.05)
