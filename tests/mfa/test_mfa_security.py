"""MFA properties a reviewer would attack: nothing usable at rest, one winner per one-time
thing under parallel requests (on SQLite and PostgreSQL), and RFC 6238 itself."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
from httpx import AsyncClient, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from saas_app.core.clock import FrozenClock
from saas_app.mfa.models import MfaChallenge, RecoveryCode
from saas_app.security import totp
from saas_app.security.crypto import SecretBox
from saas_app.users.models import User
from tests.factories import Authenticator, TenantCtx, enable_mfa, mfa_challenge, token
from tests.mfa.helpers import TOTP


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A connection of our own to the app's database, to read rows as they are stored."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


async def raw_rows(
    engine: AsyncEngine, model: type[User | RecoveryCode | MfaChallenge], user_id: str
) -> list[dict[str, Any]]:
    """The stored rows of `model`'s table for one user, values as the driver returns them."""
    column = User.id if model is User else model.user_id  # type: ignore[union-attr]
    async with engine.connect() as connection:
        result = await connection.execute(select(model.__table__).where(column == uuid.UUID(user_id)))
        return [dict(row) for row in result.mappings()]


def spellings(value: str) -> set[str]:
    """The ways a plaintext could sit in a column: as shown, lower/upper case, without dashes."""
    bare = value.replace("-", "")
    return {value, value.lower(), value.upper(), bare, bare.lower(), bare.upper()}


def assert_nowhere_in(rows: list[dict[str, Any]], plaintexts: list[str]) -> None:
    stored = " ".join(str(value) for row in rows for value in row.values())
    found = [p for p in plaintexts for s in spellings(p) if s in stored]
    assert not found, f"plaintext {found} stored in {rows}"


async def in_parallel(count: int, request: Callable[[int], Awaitable[Response]]) -> list[Response]:
    """Sends `count` requests at once (request(i) makes the i-th) and returns the answers."""
    return list(await asyncio.gather(*(request(i) for i in range(count))))


def assert_one_winner(responses: list[Response]) -> None:
    assert [r.status_code for r in responses].count(200) == 1, [r.text for r in responses]


# -- at rest ------------------------------------------------------------------------------


@pytest.mark.parametrize("confirmed", [False, True], ids=["pending", "confirmed"])
async def test_the_totp_secret_is_encrypted_in_the_user_row(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, engine: AsyncEngine, confirmed: bool
) -> None:
    started = await client.post(tenant.path(TOTP), json={}, headers=tenant.owner.headers)
    secret = started.json()["secret"]
    if confirmed:
        code = Authenticator(secret, clock).code()
        response = await client.post(
            tenant.path(f"{TOTP}/confirm"), json={"code": code}, headers=tenant.owner.headers
        )
        assert response.status_code == 200, response.text
    rows = await raw_rows(engine, User, tenant.owner.id)
    assert rows[0]["totp_secret"], "no secret stored at all"
    assert_nowhere_in(rows, [secret, base64.b32decode(secret).hex()])


async def test_recovery_codes_are_stored_only_as_hashes(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, engine: AsyncEngine
) -> None:
    codes = (await enable_mfa(client, tenant, tenant.owner, clock)).recovery_codes
    rows = await raw_rows(engine, RecoveryCode, tenant.owner.id)
    assert len(rows) == 10
    assert_nowhere_in(rows, codes)


async def test_the_mfa_token_is_stored_only_as_a_hash(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, engine: AsyncEngine
) -> None:
    await enable_mfa(client, tenant, tenant.owner, clock)
    mfa_token = await mfa_challenge(client, tenant.slug, tenant.owner.email)
    rows = await raw_rows(engine, MfaChallenge, tenant.owner.id)
    assert len(rows) == 1
    assert_nowhere_in(rows, [mfa_token, mfa_token.removeprefix("mfa_")])


# -- one winner under parallel requests ---------------------------------------------------


async def test_of_ten_parallel_otp_grants_on_one_mfa_token_exactly_one_wins(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    authenticator = await enable_mfa(client, tenant, tenant.owner, clock)
    mfa_token = await mfa_challenge(client, tenant.slug, tenant.owner.email)
    code = authenticator.next_code()
    form = {"grant_type": "mfa_otp", "mfa_token": mfa_token, "otp": code}
    assert_one_winner(await in_parallel(10, lambda _: token(client, tenant.slug, **form)))


async def test_of_ten_parallel_logins_with_one_code_on_fresh_mfa_tokens_exactly_one_wins(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    authenticator = await enable_mfa(client, tenant, tenant.owner, clock)
    mfa_tokens = [await mfa_challenge(client, tenant.slug, tenant.owner.email) for _ in range(10)]
    code = authenticator.next_code()

    def otp_grant(i: int) -> Awaitable[Response]:
        return token(client, tenant.slug, grant_type="mfa_otp", mfa_token=mfa_tokens[i], otp=code)

    assert_one_winner(await in_parallel(10, otp_grant))


async def test_of_ten_parallel_logins_with_one_recovery_code_exactly_one_wins(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    recovery_code = (await enable_mfa(client, tenant, tenant.owner, clock)).recovery_codes[0]
    mfa_tokens = [await mfa_challenge(client, tenant.slug, tenant.owner.email) for _ in range(10)]

    def recovery_grant(i: int) -> Awaitable[Response]:
        form = {"mfa_token": mfa_tokens[i], "recovery_code": recovery_code}
        return token(client, tenant.slug, grant_type="mfa_recovery_code", **form)

    assert_one_winner(await in_parallel(10, recovery_grant))


async def test_of_ten_parallel_grants_with_different_recovery_codes_on_one_mfa_token_exactly_one_wins(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    recovery_codes = (await enable_mfa(client, tenant, tenant.owner, clock)).recovery_codes
    mfa_token = await mfa_challenge(client, tenant.slug, tenant.owner.email)

    def recovery_grant(i: int) -> Awaitable[Response]:
        form = {"mfa_token": mfa_token, "recovery_code": recovery_codes[i]}
        return token(client, tenant.slug, grant_type="mfa_recovery_code", **form)

    # Every proof is valid: only the single use of the mfa_token can stop the other nine.
    assert_one_winner(await in_parallel(10, recovery_grant))


async def test_of_ten_parallel_confirmations_with_one_code_exactly_one_wins(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, engine: AsyncEngine
) -> None:
    started = await client.post(tenant.path(TOTP), json={}, headers=tenant.owner.headers)
    code = Authenticator(started.json()["secret"], clock).code()

    def confirm(_: int) -> Awaitable[Response]:
        return client.post(tenant.path(f"{TOTP}/confirm"), json={"code": code}, headers=tenant.owner.headers)

    responses = await in_parallel(10, confirm)
    assert_one_winner(responses)
    # The losers changed nothing: one set of recovery codes, the winner's.
    assert len(await raw_rows(engine, RecoveryCode, tenant.owner.id)) == 10


# -- input that is not a code --------------------------------------------------------------


async def send_code(client: AsyncClient, tenant: TenantCtx, where: str, code: str) -> Response:
    headers = tenant.owner.headers
    if where == "token":
        mfa_token = await mfa_challenge(client, tenant.slug, tenant.owner.email)
        return await token(client, tenant.slug, grant_type="mfa_otp", mfa_token=mfa_token, otp=code)
    if where == "disable":
        return await client.request("DELETE", tenant.path(TOTP), json={"code": code}, headers=headers)
    return await client.post(
        tenant.path("/users/me/mfa/recovery-codes"), json={"code": code}, headers=headers
    )


@pytest.mark.parametrize(
    ("where", "error"),
    [("token", "invalid_grant"), ("disable", "invalid_code"), ("regenerate", "invalid_code")],
)
async def test_a_code_in_non_ascii_digits_is_a_wrong_code_not_a_server_error(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock, where: str, error: str
) -> None:
    authenticator = await enable_mfa(client, tenant, tenant.owner, clock)
    # The right code, in full-width digits: six characters that str.isdigit() accepts.
    full_width = authenticator.next_code().translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})
    response = await send_code(client, tenant, where, full_width)
    assert response.status_code == 400, response.text
    assert response.json().get("error", response.json().get("code")) == error


# -- RFC 6238 -----------------------------------------------------------------------------

# RFC 6238 Appendix B, SHA-1 rows (seed "12345678901234567890"): time -> 8-digit TOTP.
# With 6 digits, the dynamic truncation (RFC 4226 §5.3) is taken mod 10**6 instead of
# mod 10**8, i.e. the code is the last six digits of the listed value.
RFC6238_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC6238_SHA1 = {
    59: "94287082",
    1111111109: "07081804",
    1111111111: "14050471",
    1234567890: "89005924",
    2000000000: "69279037",
    20000000000: "65353130",
}


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@pytest.mark.parametrize(("epoch", "eight_digits"), RFC6238_SHA1.items(), ids=[str(t) for t in RFC6238_SHA1])
async def test_the_rfc_6238_sha1_vectors_match_their_step(epoch: int, eight_digits: str) -> None:
    code = eight_digits[-6:]
    assert pyotp.TOTP(RFC6238_SECRET, digits=6).at(epoch) == code  # the 6-digit reading of the vector
    assert totp.matching_step(RFC6238_SECRET, code, at(epoch)) == epoch // 30


@pytest.mark.parametrize(("steps", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)])
async def test_matching_step_allows_one_step_of_drift(steps: int, accepted: bool) -> None:
    now = at(1234567890)
    code = pyotp.TOTP(RFC6238_SECRET).at(now, counter_offset=steps)
    expected = totp.step_of(now) + steps if accepted else None
    assert totp.matching_step(RFC6238_SECRET, code, now) == expected


@pytest.mark.parametrize("code", ["", "89005", "0089005924", "8900592", "89005a", "８９００５９"])
async def test_matching_step_refuses_codes_that_are_not_six_digits(code: str) -> None:
    # "８９００５９" is the right code in full-width digits: str.isdigit() alone would let it in.
    assert totp.matching_step(RFC6238_SECRET, code, at(1234567890)) is None


async def test_a_new_secret_has_160_bits() -> None:
    assert len(base64.b32decode(totp.new_secret())) == 20


# -- the secret box -----------------------------------------------------------------------


async def test_a_secret_encrypted_under_one_key_does_not_open_under_another() -> None:
    sealed = SecretBox("key-one-" + "a" * 32).encrypt(RFC6238_SECRET)
    with pytest.raises(ValueError, match="undecryptable"):
        SecretBox("key-two-" + "b" * 32).decrypt(sealed)


async def test_after_key_rotation_old_secrets_still_open() -> None:
    old, new = "key-one-" + "a" * 32, "key-two-" + "b" * 32
    sealed = SecretBox(old).encrypt(RFC6238_SECRET)
    assert SecretBox(f"{new},{old}").decrypt(sealed) == RFC6238_SECRET
