"""Living with MFA: turning it off, new recovery codes, the admin reset, a password change
and the audit trail (API.md "The signed-in user" MFA rows, `DELETE /t/{tenant}/users/{id}/mfa`,
"Audit actions")."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient, Response

from saas_app.core.clock import FrozenClock
from tests.factories import (
    DEFAULT_PASSWORD,
    Authenticator,
    Member,
    TenantCtx,
    add_member,
    create_api_key,
    enable_mfa,
    mfa_challenge,
    token,
)
from tests.mfa.helpers import TOTP, assert_problem, mfa_enabled, password_grant

NEW_PASSWORD = "a brand new passphrase"


async def disable(client: AsyncClient, tenant: TenantCtx, member: Member, body: dict[str, str]) -> Response:
    return await client.request("DELETE", tenant.path(TOTP), json=body, headers=member.headers)


async def recovery_login(client: AsyncClient, tenant: TenantCtx, email: str, code: str) -> Response:
    mfa_token = await mfa_challenge(client, tenant.slug, email)
    form = {"mfa_token": mfa_token, "recovery_code": code}
    return await token(client, tenant.slug, grant_type="mfa_recovery_code", **form)


# -- turning MFA off ----------------------------------------------------------------------

PROOFS: dict[str, Callable[[Authenticator], dict[str, str]]] = {
    "code": lambda a: {"code": a.next_code()},
    "recovery_code": lambda a: {"recovery_code": a.recovery_codes[0]},
}


@pytest.mark.parametrize("proof", PROOFS.values(), ids=list(PROOFS))
async def test_disabling_with_a_proof_turns_mfa_off(
    client: AsyncClient,
    tenant: TenantCtx,
    authenticator: Authenticator,
    proof: Callable[[Authenticator], dict[str, str]],
) -> None:
    response = await disable(client, tenant, tenant.owner, proof(authenticator))
    assert response.status_code == 204, response.text
    assert await mfa_enabled(client, tenant, tenant.owner.id) is False


@pytest.mark.parametrize("proof", PROOFS.values(), ids=list(PROOFS))
async def test_after_disabling_the_password_alone_logs_in_again(
    client: AsyncClient,
    tenant: TenantCtx,
    authenticator: Authenticator,
    proof: Callable[[Authenticator], dict[str, str]],
) -> None:
    assert (await disable(client, tenant, tenant.owner, proof(authenticator))).status_code == 204
    response = await password_grant(client, tenant, tenant.owner.email, DEFAULT_PASSWORD)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("both", [True, False], ids=["both", "neither"])
async def test_disabling_needs_exactly_one_proof(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator, both: bool
) -> None:
    code, recovery_code = authenticator.next_code(), authenticator.recovery_codes[0]
    response = await disable(
        client, tenant, tenant.owner, {"code": code, "recovery_code": recovery_code} if both else {}
    )
    assert_problem(response, 422, "validation_error")
    assert code not in response.text
    assert recovery_code not in response.text
    assert await mfa_enabled(client, tenant, tenant.owner.id) is True


WRONG_PROOFS: dict[str, Callable[[Authenticator], dict[str, str]]] = {
    "wrong-code": lambda a: {"code": a.wrong_code()},
    "spent-code": lambda a: {"code": a.code()},  # the step the confirmation used (RFC 6238 §5.2)
    "wrong-recovery-code": lambda _: {"recovery_code": "aaaa-bbbb-cccc"},
}


@pytest.mark.parametrize("proof", WRONG_PROOFS.values(), ids=list(WRONG_PROOFS))
async def test_disabling_with_a_wrong_proof_is_invalid_code(
    client: AsyncClient,
    tenant: TenantCtx,
    authenticator: Authenticator,
    proof: Callable[[Authenticator], dict[str, str]],
) -> None:
    assert_problem(await disable(client, tenant, tenant.owner, proof(authenticator)), 400, "invalid_code")
    assert await mfa_enabled(client, tenant, tenant.owner.id) is True


async def test_disabling_when_mfa_is_off_is_409(client: AsyncClient, tenant: TenantCtx) -> None:
    assert_problem(await disable(client, tenant, tenant.owner, {"code": "123456"}), 409, "mfa_not_enabled")


# -- recovery codes -----------------------------------------------------------------------


async def regenerate(client: AsyncClient, tenant: TenantCtx, code: str) -> Response:
    return await client.post(
        tenant.path("/users/me/mfa/recovery-codes"), json={"code": code}, headers=tenant.owner.headers
    )


async def test_regenerating_returns_ten_new_recovery_codes(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator
) -> None:
    response = await regenerate(client, tenant, authenticator.next_code())
    assert response.status_code == 200, response.text
    codes = response.json()["recovery_codes"]
    assert len(set(codes)) == 10
    assert not set(codes) & set(authenticator.recovery_codes)


async def test_after_regenerating_the_old_recovery_codes_fail_and_the_new_ones_work(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator
) -> None:
    new_codes = (await regenerate(client, tenant, authenticator.next_code())).json()["recovery_codes"]
    old = await recovery_login(client, tenant, tenant.owner.email, authenticator.recovery_codes[0])
    assert old.status_code == 400, old.text
    assert old.json()["error"] == "invalid_grant"
    new = await recovery_login(client, tenant, tenant.owner.email, new_codes[0])
    assert new.status_code == 200, new.text


async def test_regenerating_with_a_wrong_code_is_invalid_code(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator
) -> None:
    assert_problem(await regenerate(client, tenant, authenticator.wrong_code()), 400, "invalid_code")
    assert (
        await recovery_login(client, tenant, tenant.owner.email, authenticator.recovery_codes[0])
    ).status_code == 200


# -- the admin reset ----------------------------------------------------------------------

# (caller's role, whose MFA) -> status. Resetting weakens a login, so the caller must hold
# users:manage and every permission of the target (an admin lacks the owner's tenant:manage).
RESETS = {
    "member-resets-member": ("member", "member", 403),
    "admin-resets-owner": ("admin", "owner", 403),
    "admin-resets-member": ("admin", "member", 204),
    "owner-resets-member": ("owner", "member", 204),
}


@pytest.mark.parametrize(("caller_role", "target_role", "status"), RESETS.values(), ids=list(RESETS))
async def test_admin_reset_needs_users_manage_and_no_escalation(
    client: AsyncClient,
    tenant: TenantCtx,
    clock: FrozenClock,
    caller_role: str,
    target_role: str,
    status: int,
) -> None:
    target = tenant.owner if target_role == "owner" else await add_member(client, tenant)
    caller = tenant.owner if caller_role == "owner" else await add_member(client, tenant, caller_role)
    await enable_mfa(client, tenant, target, clock)
    response = await client.delete(tenant.path(f"/users/{target.id}/mfa"), headers=caller.headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, "forbidden")
    assert await mfa_enabled(client, tenant, target.id) is (status != 204)


async def test_nobody_strips_their_own_second_factor_through_the_admin_route(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator
) -> None:
    # A stolen owner token must not lift its victim's MFA without the code that
    # DELETE /users/me/mfa/totp demands (issue 13, item 2).
    response = await client.delete(tenant.path(f"/users/{tenant.owner.id}/mfa"), headers=tenant.owner.headers)
    assert_problem(response, 403, "own_mfa_reset")
    assert "/users/me/mfa/totp" in response.json()["detail"]
    assert await mfa_enabled(client, tenant, tenant.owner.id) is True
    assert await mfa_challenge(client, tenant.slug, tenant.owner.email)  # still asks for a code


async def test_resetting_anothers_mfa_needs_a_login_of_the_last_ten_minutes(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    member = await add_member(client, tenant)
    await enable_mfa(client, tenant, member, clock)
    clock.advance(minutes=11)
    refreshed = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=tenant.owner.login.refresh_token
    )
    assert refreshed.status_code == 200, refreshed.text
    stale = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    response = await client.delete(tenant.path(f"/users/{member.id}/mfa"), headers=stale)
    assert_problem(response, 403, "reauthentication_required")
    assert await mfa_enabled(client, tenant, member.id) is True


async def test_an_api_key_cannot_reset_mfa(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    member = await add_member(client, tenant)
    await enable_mfa(client, tenant, member, clock)
    key = await create_api_key(client, tenant, "users:manage", "users:read")
    response = await client.delete(tenant.path(f"/users/{member.id}/mfa"), headers=key.headers)
    assert_problem(response, 403, "human_only")
    assert await mfa_enabled(client, tenant, member.id) is True


async def test_after_an_admin_reset_the_user_logs_in_with_the_password_alone(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    member = await add_member(client, tenant)
    await enable_mfa(client, tenant, member, clock)
    reset = await client.delete(tenant.path(f"/users/{member.id}/mfa"), headers=tenant.owner.headers)
    assert reset.status_code == 204, reset.text
    assert (await password_grant(client, tenant, member.email, DEFAULT_PASSWORD)).status_code == 200


async def test_changing_the_password_never_disables_mfa(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator
) -> None:
    body = {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
    changed = await client.post(tenant.path("/users/me/password"), json=body, headers=tenant.owner.headers)
    assert changed.status_code == 204, changed.text
    assert await mfa_enabled(client, tenant, tenant.owner.id) is True
    assert await mfa_challenge(client, tenant.slug, tenant.owner.email, password=NEW_PASSWORD)


async def test_a_password_change_ends_pending_mfa_tokens(
    client: AsyncClient, tenant: TenantCtx, authenticator: Authenticator
) -> None:
    # Whoever ran the password step before the change (the old password leaked) must not
    # finish that login after it (issue 13, item 9).
    pending = await mfa_challenge(client, tenant.slug, tenant.owner.email)
    body = {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
    changed = await client.post(tenant.path("/users/me/password"), json=body, headers=tenant.owner.headers)
    assert changed.status_code == 204, changed.text
    form = {"mfa_token": pending, "otp": authenticator.next_code()}
    response = await token(client, tenant.slug, grant_type="mfa_otp", **form)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    fresh = await mfa_challenge(client, tenant.slug, tenant.owner.email, password=NEW_PASSWORD)
    form = {"mfa_token": fresh, "otp": authenticator.next_code()}
    assert (await token(client, tenant.slug, grant_type="mfa_otp", **form)).status_code == 200


async def test_deactivation_ends_pending_mfa_tokens_even_if_reactivated_at_once(
    client: AsyncClient, tenant: TenantCtx, clock: FrozenClock
) -> None:
    # The member's password step was done before an admin locked them out; unlocking them
    # a minute later must not revive that half-finished login (mfa_token lives 5 minutes).
    member = await add_member(client, tenant)
    authenticator = await enable_mfa(client, tenant, member, clock)
    pending = await mfa_challenge(client, tenant.slug, member.email)
    path = tenant.path(f"/users/{member.id}")
    for active in (False, True):
        r = await client.patch(path, json={"is_active": active}, headers=tenant.owner.headers)
        assert r.status_code == 200, r.text
    form = {"mfa_token": pending, "recovery_code": authenticator.recovery_codes[0]}
    response = await token(client, tenant.slug, grant_type="mfa_recovery_code", **form)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    # The reactivated member signs in afresh, with the very same recovery code.
    again = await recovery_login(client, tenant, member.email, authenticator.recovery_codes[0])
    assert again.status_code == 200, again.text


# -- audit --------------------------------------------------------------------------------


@dataclass
class Trail:
    events: list[dict[str, Any]]
    user_id: str
    secrets: list[str]  # long values that must appear nowhere in the trail
    otps: list[str]  # six digits: must not appear in any event's details


@pytest.fixture
async def trail(client: AsyncClient, tenant: TenantCtx, clock: FrozenClock) -> Trail:
    """A member enrols, signs in with a recovery code, renews the codes, turns MFA off,
    enrols again and is reset by the owner; returns the tenant's audit trail."""
    member = await add_member(client, tenant)
    first = await enable_mfa(client, tenant, member, clock)
    otps = [first.code()]
    assert (await recovery_login(client, tenant, member.email, first.recovery_codes[0])).status_code == 200
    otps.append(first.next_code())
    renewed = await client.post(
        tenant.path("/users/me/mfa/recovery-codes"), json={"code": otps[-1]}, headers=member.headers
    )
    assert renewed.status_code == 200, renewed.text
    otps.append(first.next_code())
    assert (await disable(client, tenant, member, {"code": otps[-1]})).status_code == 204
    second = await enable_mfa(client, tenant, member, clock)
    otps.append(second.code())
    reset = await client.delete(tenant.path(f"/users/{member.id}/mfa"), headers=tenant.owner.headers)
    assert reset.status_code == 204, reset.text
    response = await client.get(
        tenant.path("/audit-events"), params={"limit": 200}, headers=tenant.owner.headers
    )
    assert response.status_code == 200, response.text
    secrets = [first.secret, second.secret, *first.recovery_codes, *renewed.json()["recovery_codes"]]
    secrets += second.recovery_codes
    return Trail(response.json()["items"], member.id, secrets, otps)


AUDITED = [
    "mfa.enabled",
    "mfa.disabled",
    "mfa.recovery_used",
    "mfa.reset_by_admin",
    "mfa.recovery_codes_regenerated",
]


@pytest.mark.parametrize("action", AUDITED)
async def test_mfa_changes_are_audited_against_the_user(trail: Trail, action: str) -> None:
    events = [e for e in trail.events if e["action"] == action]
    assert events, f"no {action} event in {[e['action'] for e in trail.events]}"
    assert {e["target"]["id"] for e in events} == {trail.user_id}


@pytest.mark.parametrize("action", AUDITED)
async def test_mfa_audit_events_hold_no_code_or_secret(trail: Trail, action: str) -> None:
    for event in (e for e in trail.events if e["action"] == action):
        text = json.dumps(event).lower()
        leaked = [s for s in trail.secrets if s.lower() in text or s.replace("-", "").lower() in text]
        assert not leaked, event
        assert not [otp for otp in trail.otps if otp in json.dumps(event["details"])], event
