"""TOTP enrolment and the two-step login (API.md "The signed-in user" MFA rows, the token
endpoint's `mfa_otp` / `mfa_recovery_code` grants and "MFA challenge"). pyotp plays the
user's authenticator app; time moves with the app's frozen clock, never by sleeping."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock
from tests.factories import (
    DEFAULT_PASSWORD,
    Authenticator,
    Member,
    TenantCtx,
    add_member,
    enable_mfa,
    login,
    mfa_challenge,
    token,
)
from tests.mfa.helpers import TOTP, assert_problem

CONFIRM = "/users/me/mfa/totp/confirm"
WRONG_PASSWORD = "not the right passphrase"
# 31 unambiguous characters; 12 of them carry 12 * log2(31) ≈ 59 bits.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_CODE = re.compile(
    rf"[{RECOVERY_ALPHABET}]{{4}}-[{RECOVERY_ALPHABET}]{{4}}-[{RECOVERY_ALPHABET}]{{4}}"
)


@dataclass
class MfaUser:
    """A tenant whose owner has TOTP on; the step of the confirming code is spent."""

    client: AsyncClient
    tenant: TenantCtx
    authenticator: Authenticator

    @property
    def owner(self) -> Member:
        return self.tenant.owner

    async def challenge(self, **kwargs: Any) -> str:
        return await mfa_challenge(self.client, self.tenant.slug, self.owner.email, **kwargs)

    async def otp(self, mfa_token: str, otp: str) -> Response:
        return await token(self.client, self.tenant.slug, grant_type="mfa_otp", mfa_token=mfa_token, otp=otp)

    async def recovery(self, mfa_token: str, code: str) -> Response:
        return await token(
            self.client,
            self.tenant.slug,
            grant_type="mfa_recovery_code",
            mfa_token=mfa_token,
            recovery_code=code,
        )


@pytest.fixture
async def mfa_user(client: AsyncClient, tenant: TenantCtx, clock: FrozenClock) -> MfaUser:
    return MfaUser(client, tenant, await enable_mfa(client, tenant, tenant.owner, clock))


def claims(access_token: str) -> dict[str, Any]:
    """The JWT payload, read without verifying (the API verifies; here we only look)."""
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def start(client: AsyncClient, tenant: TenantCtx, headers: dict[str, str], **body: str) -> Response:
    return await client.post(tenant.path(TOTP), json=body, headers=headers)


async def confirm(client: AsyncClient, tenant: TenantCtx, headers: dict[str, str], code: str) -> Response:
    return await client.post(tenant.path(CONFIRM), json={"code": code}, headers=headers)


async def mfa_enabled(client: AsyncClient, tenant: TenantCtx) -> bool:
    response = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert response.status_code == 200, response.text
    enabled: bool = response.json()["mfa_enabled"]
    return enabled


def assert_invalid_grant(response: Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


# -- enrolment ----------------------------------------------------------------------------


async def test_enrolment_returns_a_secret_an_otpauth_uri_and_an_svg_qr_code(
    client: AsyncClient, tenant: TenantCtx
) -> None:
    response = await start(client, tenant, tenant.owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"secret", "otpauth_uri", "qr_svg"}
    assert len(base64.b32decode(body["secret"])) >= 20  # RFC 4226 §4: at least 128, better 160 bits
    uri = urlsplit(body["otpauth_uri"])
    query = parse_qs(uri.query)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/Tenant {tenant.slug}:{tenant.owner.email}"
    assert query["secret"] == [body["secret"]]
    assert query["issuer"] == [f"Tenant {tenant.slug}"]
    assert body["qr_svg"].startswith("<svg")


TENANT_NAMES = ["A:B/C & Co", "Ünïcode", "50% off?#x=1", "Acme"]


@pytest.mark.parametrize("name", TENANT_NAMES)
async def test_the_otpauth_uri_follows_the_key_uri_format_for_any_tenant_name(
    client: AsyncClient, tenant: TenantCtx, name: str
) -> None:
    """Issue 13 item 15 (Google "Key Uri Format"): the label is one path segment, neither
    its issuer prefix nor its account name has a colon, and a prefix equals `issuer=`."""
    renamed = await client.patch(tenant.path(), json={"name": name}, headers=tenant.owner.headers)
    assert renamed.status_code == 200, renamed.text
    response = await start(client, tenant, tenant.owner.headers)
    assert response.status_code == 200, response.text
    uri = response.json()["otpauth_uri"]
    parsed = pyotp.parse_uri(uri)  # a real client's parser
    assert (parsed.issuer, parsed.name) == (name, tenant.owner.email)
    assert parsed.secret == response.json()["secret"]
    label = urlsplit(uri).path.removeprefix("/")
    assert "/" not in label  # a raw slash would split the label into path segments
    # Apps that decode the label, then split it at its first colon, must find the account.
    prefix, _, account = unquote(label).rpartition(":")
    assert account == tenant.owner.email
    assert ":" not in prefix
    assert prefix in ("", name)  # a prefix, when present, is the issuer itself


async def test_enrolment_stays_pending_until_confirmed(client: AsyncClient, tenant: TenantCtx) -> None:
    assert (await start(client, tenant, tenant.owner.headers)).status_code == 200
    assert await mfa_enabled(client, tenant) is False
    assert (await login(client, tenant.slug, tenant.owner.email)).access_token  # password alone still works


async def test_enrolment_with_a_wrong_password_is_invalid_password(
    client: AsyncClient, tenant: TenantCtx
) -> None:
    response = await start(client, tenant, tenant.owner.headers, password=WRONG_PASSWORD)
    assert_problem(response, 400, "invalid_password")


async def test_the_right_password_allows_enrolment_with_an_old_login(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    clock.advance(minutes=11)
    response = await start(client, tenant, tenant.owner.headers, password=DEFAULT_PASSWORD)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("minutes", "status"), [(9, 200), (11, 403)], ids=["9-min-old", "11-min-old"])
async def test_enrolment_without_password_needs_a_login_of_the_last_ten_minutes(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, minutes: int, status: int
) -> None:
    clock.advance(minutes=minutes)
    response = await start(client, tenant, tenant.owner.headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, "reauthentication_required")


async def test_a_refreshed_access_token_is_not_a_fresh_login(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    clock.advance(minutes=11)
    refreshed = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=tenant.owner.login.refresh_token
    )
    assert refreshed.status_code == 200, refreshed.text
    access_token = refreshed.json()["access_token"]
    assert claims(access_token)["iat"] > claims(tenant.owner.login.access_token)["auth_time"] + 600
    response = await start(client, tenant, bearer(access_token))
    assert_problem(response, 403, "reauthentication_required")


async def test_enrolling_again_while_pending_replaces_the_secret(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    first = Authenticator((await start(client, tenant, tenant.owner.headers)).json()["secret"], clock)
    second = Authenticator((await start(client, tenant, tenant.owner.headers)).json()["secret"], clock)
    assert first.secret != second.secret
    assert_problem(await confirm(client, tenant, tenant.owner.headers, first.code()), 400, "invalid_code")
    assert (await confirm(client, tenant, tenant.owner.headers, second.code())).status_code == 200


async def test_confirm_with_a_wrong_code_is_invalid_code_and_leaves_mfa_off(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    authenticator = Authenticator((await start(client, tenant, tenant.owner.headers)).json()["secret"], clock)
    response = await confirm(client, tenant, tenant.owner.headers, authenticator.wrong_code())
    assert_problem(response, 400, "invalid_code")
    assert await mfa_enabled(client, tenant) is False


async def test_confirm_turns_mfa_on(client: AsyncClient, tenant: TenantCtx, clock: FrozenClock) -> None:
    await enable_mfa(client, tenant, tenant.owner, clock)
    assert await mfa_enabled(client, tenant) is True


async def test_confirm_shows_ten_distinct_recovery_codes_of_at_least_50_bits(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    codes = (await enable_mfa(client, tenant, tenant.owner, clock)).recovery_codes
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert len(set(RECOVERY_ALPHABET)) == 31
    for code in codes:
        assert RECOVERY_CODE.fullmatch(code), code
        assert len(code.replace("-", "")) * math.log2(len(RECOVERY_ALPHABET)) >= 50


async def test_enrolling_again_while_mfa_is_on_is_409(mfa_user: MfaUser) -> None:
    response = await start(mfa_user.client, mfa_user.tenant, mfa_user.owner.headers)
    assert_problem(response, 409, "mfa_already_enabled")


@pytest.mark.parametrize("already_on", [False, True], ids=["never-started", "already-confirmed"])
async def test_confirm_without_a_pending_enrolment_is_409(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, already_on: bool
) -> None:
    authenticator = await enable_mfa(client, tenant, tenant.owner, clock) if already_on else None
    code = authenticator.next_code() if authenticator else "123456"
    assert_problem(await confirm(client, tenant, tenant.owner.headers, code), 409, "mfa_not_pending")


# -- the two-step login -------------------------------------------------------------------


async def test_a_correct_password_of_an_mfa_user_answers_403_mfa_required(mfa_user: MfaUser) -> None:
    form = {"grant_type": "password", "username": mfa_user.owner.email, "password": DEFAULT_PASSWORD}
    response = await token(mfa_user.client, mfa_user.tenant.slug, **form)
    assert response.status_code == 403, response.text
    assert set(response.json()) == {"error", "error_description", "mfa_token"}
    assert response.json()["error"] == "mfa_required"
    assert response.headers["cache-control"] == "no-store"


async def test_the_otp_grant_issues_tokens_with_amr_pwd_otp(mfa_user: MfaUser) -> None:
    response = await mfa_user.otp(await mfa_user.challenge(), mfa_user.authenticator.next_code())
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert claims(response.json()["access_token"])["amr"] == ["pwd", "otp"]
    me = await mfa_user.client.get(
        mfa_user.tenant.path("/users/me"), headers=bearer(response.json()["access_token"])
    )
    assert me.status_code == 200, me.text


async def test_the_recovery_code_grant_issues_tokens_with_amr_pwd_recovery(mfa_user: MfaUser) -> None:
    response = await mfa_user.recovery(await mfa_user.challenge(), mfa_user.authenticator.recovery_codes[0])
    assert response.status_code == 200, response.text
    assert claims(response.json()["access_token"])["amr"] == ["pwd", "recovery"]


async def test_a_recovery_code_works_once(mfa_user: MfaUser) -> None:
    code = mfa_user.authenticator.recovery_codes[3]
    assert (await mfa_user.recovery(await mfa_user.challenge(), code)).status_code == 200
    assert_invalid_grant(await mfa_user.recovery(await mfa_user.challenge(), code))


async def test_the_mfa_token_is_single_use(mfa_user: MfaUser) -> None:
    mfa_token = await mfa_user.challenge()
    assert (await mfa_user.otp(mfa_token, mfa_user.authenticator.next_code())).status_code == 200
    assert_invalid_grant(await mfa_user.otp(mfa_token, mfa_user.authenticator.next_code()))


@pytest.mark.parametrize(("seconds", "status"), [(299, 200), (300, 400)], ids=["4m59s", "5m00s"])
async def test_the_mfa_token_lives_five_minutes(
    mfa_user: MfaUser, clock: FrozenClock, seconds: int, status: int
) -> None:
    mfa_token = await mfa_user.challenge()
    clock.advance(seconds=seconds)
    response = await mfa_user.otp(mfa_token, mfa_user.authenticator.code())
    assert response.status_code == status, response.text


@pytest.mark.parametrize(("wrong", "status"), [(4, 200), (5, 400)], ids=["after-4-wrong", "after-5-wrong"])
async def test_five_wrong_codes_kill_the_mfa_token(mfa_user: MfaUser, wrong: int, status: int) -> None:
    mfa_token = await mfa_user.challenge()
    right = mfa_user.authenticator.next_code()
    for _ in range(wrong):
        assert_invalid_grant(await mfa_user.otp(mfa_token, mfa_user.authenticator.wrong_code()))
    response = await mfa_user.otp(mfa_token, right)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] == "invalid_grant"


NOT_BEARER = [
    ("GET", "/users/me"),
    ("GET", ""),
    ("POST", TOTP),
    ("POST", "/auth/logout"),
    ("GET", "/projects"),
]


@pytest.mark.parametrize(("method", "suffix"), NOT_BEARER, ids=[f"{m} {s or '/'}" for m, s in NOT_BEARER])
async def test_the_mfa_token_is_not_a_bearer_token(mfa_user: MfaUser, method: str, suffix: str) -> None:
    headers = bearer(await mfa_user.challenge())
    response = await mfa_user.client.request(method, mfa_user.tenant.path(suffix), json={}, headers=headers)
    assert_problem(response, 401, "unauthorized")


async def test_the_mfa_token_is_not_a_refresh_token(mfa_user: MfaUser) -> None:
    mfa_token = await mfa_user.challenge()
    form = {"grant_type": "refresh_token", "refresh_token": mfa_token}
    assert_invalid_grant(await token(mfa_user.client, mfa_user.tenant.slug, **form))


@pytest.mark.parametrize("missing", ["mfa_token", "otp"])
async def test_an_incomplete_otp_grant_is_invalid_request(mfa_user: MfaUser, missing: str) -> None:
    form = {
        "grant_type": "mfa_otp",
        "mfa_token": await mfa_user.challenge(),
        "otp": mfa_user.authenticator.code(),
    }
    del form[missing]
    response = await token(mfa_user.client, mfa_user.tenant.slug, **form)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_the_code_that_confirmed_enrolment_cannot_log_in_in_the_same_step(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    authenticator = await enable_mfa(client, tenant, tenant.owner, clock)
    mfa_token = await mfa_challenge(client, tenant.slug, tenant.owner.email)
    response = await token(
        client, tenant.slug, grant_type="mfa_otp", mfa_token=mfa_token, otp=authenticator.code()
    )
    assert_invalid_grant(response)


async def test_a_code_used_for_one_login_cannot_be_used_for_another(mfa_user: MfaUser) -> None:
    code = mfa_user.authenticator.next_code()
    assert (await mfa_user.otp(await mfa_user.challenge(), code)).status_code == 200
    assert_invalid_grant(await mfa_user.otp(await mfa_user.challenge(), code))


@pytest.mark.parametrize(("steps", "status"), [(-1, 200), (1, 200), (-2, 400), (2, 400)])
async def test_one_step_of_clock_drift_is_accepted_two_are_not(
    mfa_user: MfaUser, clock: FrozenClock, steps: int, status: int
) -> None:
    clock.advance(minutes=3)  # well past the step spent by the confirmation
    response = await mfa_user.otp(await mfa_user.challenge(), mfa_user.authenticator.code(steps))
    assert response.status_code == status, response.text


async def test_enabling_mfa_does_not_end_existing_sessions(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    other = await login(client, tenant.slug, tenant.owner.email)
    await enable_mfa(client, tenant, tenant.owner, clock)
    assert (await client.get(tenant.path("/users/me"), headers=other.headers)).status_code == 200
    refreshed = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=other.refresh_token
    )
    assert refreshed.status_code == 200, refreshed.text


async def test_the_scope_asked_for_at_the_password_step_is_kept(mfa_user: MfaUser) -> None:
    mfa_token = await mfa_user.challenge(scope="projects:read")
    response = await mfa_user.otp(mfa_token, mfa_user.authenticator.next_code())
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "projects:read"
    assert claims(response.json()["access_token"])["scope"] == "projects:read"


async def test_invalid_grant_says_the_same_for_a_wrong_password_and_a_wrong_code(mfa_user: MfaUser) -> None:
    slug, email = mfa_user.tenant.slug, mfa_user.owner.email
    failures = [
        await token(mfa_user.client, slug, grant_type="password", username=email, password=WRONG_PASSWORD),
        await mfa_user.otp(await mfa_user.challenge(), mfa_user.authenticator.wrong_code()),
        await mfa_user.recovery(await mfa_user.challenge(), "aaaa-bbbb-cccc"),
        await mfa_user.otp("mfa_no-such-token", mfa_user.authenticator.next_code()),
    ]
    assert {r.status_code for r in failures} == {400}
    assert len({json.dumps(r.json(), sort_keys=True) for r in failures}) == 1


@pytest.mark.parametrize("factor", ["otp", "recovery"])
async def test_a_deactivated_user_cannot_finish_a_challenge(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, factor: str
) -> None:
    member = await add_member(client, tenant)
    authenticator = await enable_mfa(client, tenant, member, clock)
    mfa_token = await mfa_challenge(client, tenant.slug, member.email)
    deactivate = await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert deactivate.status_code == 200, deactivate.text
    if factor == "otp":
        response = await token(
            client, tenant.slug, grant_type="mfa_otp", mfa_token=mfa_token, otp=authenticator.next_code()
        )
    else:
        form = {"mfa_token": mfa_token, "recovery_code": authenticator.recovery_codes[0]}
        response = await token(client, tenant.slug, grant_type="mfa_recovery_code", **form)
    assert_invalid_grant(response)
