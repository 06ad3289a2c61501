"""Invitations (API-v2 §1): an admin invites an address with roles, the link is mailed, the
invitee joins with a password, verified, even while sign-up is closed. Attacked from
outside: roles beyond the inviter, reused, revoked, expired, other-tenant and guessed links,
fifty parallel accepts, an inviter who lost their authority."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from httpx import AsyncClient, Response

from saas_app.auth.account_tokens import EMAIL_VERIFICATION
from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.invitations.service import PURPOSE
from saas_app.rbac.permissions import PERMISSIONS
from tests import outbox
from tests.factories import Member, TenantCtx, add_member, create_api_key, create_tenant, login
from tests.test_mail import Mailbox, smtp_server

ADMIN_PERMISSIONS = [p for p in PERMISSIONS if p != "tenant:manage"]
PAGE = "accept-invite"
PASSWORD = "an invited long passphrase"


async def invite(
    client: AsyncClient, tenant: TenantCtx, email: str, roles: list[str], by: Member | None = None
) -> Response:
    headers = (by or tenant.owner).headers
    return await client.post(
        tenant.path("/invitations"), json={"email": email, "roles": roles}, headers=headers
    )


async def invitation_token(client: AsyncClient, email: str) -> str:
    return await outbox.latest_token(client, email, PURPOSE, PAGE)


async def accept(client: AsyncClient, tenant: TenantCtx, link_token: str, **extra: str) -> Response:
    body = {"token": link_token, "password": PASSWORD, **extra}
    return await client.post(tenant.path("/auth/invitations/accept"), json=body)


async def listed(client: AsyncClient, tenant: TenantCtx, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    answer = await client.get(tenant.path("/invitations"), params=params, headers=tenant.owner.headers)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def test_an_invitee_joins_with_the_roles_and_a_verified_address(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    closed = await client.patch(tenant.path(), json={"allow_signup": False}, headers=tenant.owner.headers)
    assert closed.status_code == 200  # accepting works even so
    created = await invite(client, tenant, "New.Hire@Example.com", ["viewer", "member"])
    assert created.status_code == 201, created.text
    invitation = created.json()
    assert set(invitation) == {"id", "email", "roles", "status", "invited_by", "expires_at", "created_at"}
    assert invitation["email"] == "new.hire@example.com"
    assert sorted(invitation["roles"]) == ["member", "viewer"]
    assert (invitation["status"], invitation["invited_by"]) == ("pending", tenant.owner.id)
    (mail,) = await outbox.outbox_to(client, "new.hire@example.com", PURPOSE)
    assert mail.subject == f"You are invited to join Tenant {tenant.slug}"
    assert "Owner invited you" in mail.text_body  # the inviter's name

    joined = await accept(client, tenant, outbox.token_in(mail.text_body, PAGE), full_name="New Hire")
    assert joined.status_code == 201, joined.text
    user = joined.json()
    assert (user["email"], user["email_verified"], user["full_name"]) == (
        "new.hire@example.com",
        True,
        "New Hire",
    )
    assert sorted(user["roles"]) == ["member", "viewer"]
    assert await outbox.outbox_to(client, "new.hire@example.com", EMAIL_VERIFICATION) == []  # proven already
    await login(client, tenant.slug, "new.hire@example.com", PASSWORD)
    (accepted,) = await listed(client, tenant, "accepted")
    assert accepted["id"] == invitation["id"]
    assert await listed(client, tenant, "pending") == []
    events = await client.get(tenant.path("/audit-events"), headers=tenant.owner.headers)
    actions = [e["action"] for e in events.json()["items"]]
    assert {"invitation.created", "invitation.accepted"} <= set(actions)


async def test_roles_are_clipped_to_the_inviter(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    beyond = await invite(client, tenant, "boss@example.com", ["owner"], by=admin)
    assert beyond.status_code == 403
    assert beyond.json()["missing_permissions"] == ["tenant:manage"]
    unknown = await invite(client, tenant, "boss@example.com", ["wizard"], by=admin)
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_role")
    assert await outbox.outbox_to(client, "boss@example.com", PURPOSE) == []
    assert (await invite(client, tenant, "helper@example.com", ["admin"], by=admin)).status_code == 201
    member = await add_member(client, tenant)
    no_right = await invite(client, tenant, "x@example.com", ["viewer"], by=member)
    assert no_right.status_code == 403


async def test_one_pending_invitation_per_address_and_none_for_a_member(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    exists = await invite(client, tenant, member.email.upper(), ["viewer"])
    assert (exists.status_code, exists.json()["code"]) == (409, "user_exists")
    assert (await invite(client, tenant, "twice@example.com", ["viewer"])).status_code == 201
    again = await invite(client, tenant, "twice@example.com", ["member"])
    assert (again.status_code, again.json()["code"]) == (409, "invitation_exists")
    parallel = await asyncio.gather(
        *(invite(client, tenant, "race@example.com", ["viewer"]) for _ in range(10))
    )
    assert sorted(a.status_code for a in parallel) == [201] + [409] * 9


async def test_a_revoked_invitations_link_stops_working(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    created = (await invite(client, tenant, "gone@example.com", ["viewer"])).json()
    link_token = await invitation_token(client, "gone@example.com")
    path = tenant.path(f"/invitations/{created['id']}")
    assert (await client.delete(path, headers=tenant.owner.headers)).status_code == 204
    refused = await accept(client, tenant, link_token)
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_token")
    again = await client.delete(path, headers=tenant.owner.headers)
    assert (again.status_code, again.json()["code"]) == (404, "invitation_not_found")
    (revoked,) = await listed(client, tenant, "revoked")
    assert revoked["id"] == created["id"]
    assert (await invite(client, tenant, "gone@example.com", ["viewer"])).status_code == 201  # a new one


async def test_only_someone_holding_its_roles_revokes_an_invitation(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    owners = (await invite(client, tenant, "co-owner@example.com", ["owner"])).json()
    refused = await client.delete(tenant.path(f"/invitations/{owners['id']}"), headers=admin.headers)
    assert refused.status_code == 403
    assert [i["id"] for i in await listed(client, tenant, "pending")] == [owners["id"]]


async def test_an_expired_invitation_is_refused_and_listed_as_such(
    client: AsyncClient, clock: FrozenClock
) -> None:
    tenant = await create_tenant(client)
    await invite(client, tenant, "late@example.com", ["viewer"])
    link_token = await invitation_token(client, "late@example.com")
    clock.advance(days=8)
    owner = await login(client, tenant.slug, tenant.owner.email)
    tenant.owner.login = owner
    assert (await accept(client, tenant, link_token)).json()["code"] == "invalid_token"
    (expired,) = await listed(client, tenant, "expired")
    assert expired["status"] == "expired"
    assert (await invite(client, tenant, "late@example.com", ["viewer"])).status_code == 201


async def test_fifty_parallel_accepts_create_one_user(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await invite(client, tenant, "popular@example.com", ["viewer"])
    link_token = await invitation_token(client, "popular@example.com")
    answers = await asyncio.gather(*(accept(client, tenant, link_token) for _ in range(50)))
    assert sorted(a.status_code for a in answers) == [201] + [400] * 49
    users = await client.get(tenant.path("/users"), params={"q": "popular"}, headers=tenant.owner.headers)
    assert len(users.json()["items"]) == 1


async def test_an_invitation_does_not_outlive_its_inviters_authority(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    for email in ("a@example.com", "b@example.com"):
        assert (await invite(client, tenant, email, ["admin"], by=admin)).status_code == 201
    demoted = await client.put(
        tenant.path(f"/users/{admin.id}/roles"), json={"roles": ["member"]}, headers=tenant.owner.headers
    )
    assert demoted.status_code == 200
    assert (await accept(client, tenant, await invitation_token(client, "a@example.com"))).status_code == 400
    restored = await client.put(
        tenant.path(f"/users/{admin.id}/roles"), json={"roles": ["admin"]}, headers=tenant.owner.headers
    )
    assert restored.status_code == 200
    off = await client.patch(
        tenant.path(f"/users/{admin.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert off.status_code == 200
    assert (await accept(client, tenant, await invitation_token(client, "b@example.com"))).status_code == 400


async def test_a_key_made_invitation_ends_with_the_keys_authority(client: AsyncClient) -> None:
    """An admin's key invites an admin; the admin is demoted: the invitation is void (the
    key acts within its creator's current permissions). A revoked key's as well."""
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    key = await create_api_key(client, tenant, *ADMIN_PERMISSIONS, by=admin)
    for email in ("x@example.com", "y@example.com"):
        made = await client.post(
            tenant.path("/invitations"), json={"email": email, "roles": ["admin"]}, headers=key.headers
        )
        assert made.status_code == 201, made.text
    demoted = await client.put(
        tenant.path(f"/users/{admin.id}/roles"), json={"roles": ["member"]}, headers=tenant.owner.headers
    )
    assert demoted.status_code == 200
    assert (await accept(client, tenant, await invitation_token(client, "x@example.com"))).status_code == 400
    restored = await client.put(
        tenant.path(f"/users/{admin.id}/roles"), json={"roles": ["admin"]}, headers=tenant.owner.headers
    )
    assert restored.status_code == 200
    revoked = await client.delete(tenant.path(f"/api-keys/{key.id}"), headers=tenant.owner.headers)
    assert revoked.status_code == 204
    assert (await accept(client, tenant, await invitation_token(client, "y@example.com"))).status_code == 400


async def test_an_inviter_who_may_no_longer_invite_leaves_a_void_invitation(client: AsyncClient) -> None:
    """Demoted to member (who still holds what a viewer may do, but not users:manage):
    their invitation of a viewer goes with the right to invite."""
    tenant = await create_tenant(client)
    admin = await add_member(client, tenant, "admin")
    assert (await invite(client, tenant, "v@example.com", ["viewer"], by=admin)).status_code == 201
    demoted = await client.put(
        tenant.path(f"/users/{admin.id}/roles"), json={"roles": ["member"]}, headers=tenant.owner.headers
    )
    assert demoted.status_code == 200
    refused = await accept(client, tenant, await invitation_token(client, "v@example.com"))
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_token")


async def test_a_role_deleted_since_voids_the_invitation(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    role = {"name": "temp", "permissions": ["projects:read"]}
    assert (
        await client.post(tenant.path("/roles"), json=role, headers=tenant.owner.headers)
    ).status_code == 201
    await invite(client, tenant, "temp@example.com", ["temp"])
    assert (await client.delete(tenant.path("/roles/temp"), headers=tenant.owner.headers)).status_code == 204
    refused = await accept(client, tenant, await invitation_token(client, "temp@example.com"))
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_token")


async def test_invitations_to_one_address_are_limited_like_any_mail_to_it(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(RATE_LIMITS_ENABLED=True, FORGOT_PASSWORD_RATE_LIMIT="2/hour")
    async with make_client(settings) as client:
        tenant = await create_tenant(client)
        for _ in range(2):  # invite, revoke, invite again ...
            made = await invite(client, tenant, "victim@example.com", ["viewer"])
            assert made.status_code == 201
            path = tenant.path(f"/invitations/{made.json()['id']}")
            assert (await client.delete(path, headers=tenant.owner.headers)).status_code == 204
        third = await invite(client, tenant, "victim@example.com", ["viewer"])
        assert (third.status_code, third.json()["code"]) == (429, "rate_limited")
        assert len(await outbox.outbox_to(client, "victim@example.com", PURPOSE)) == 2


async def test_an_address_that_joined_meanwhile_keeps_the_invitation_pending(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await invite(client, tenant, "eager@example.com", ["viewer"])
    link_token = await invitation_token(client, "eager@example.com")
    await add_member(client, tenant, email="eager@example.com")
    taken = await accept(client, tenant, link_token)
    assert (taken.status_code, taken.json()["code"]) == (409, "user_exists")
    assert [i["email"] for i in await listed(client, tenant, "pending")] == ["eager@example.com"]


async def test_wrong_links_are_one_400(client: AsyncClient) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    await invite(client, other, "elsewhere@example.com", ["viewer"])
    await invite(client, tenant, "here@example.com", ["viewer"])
    member = await add_member(client, tenant)
    wrong = {
        "guessed": "A" * 43,
        "empty": "",
        "overlong": "x" * 5000,
        "another tenant's": await invitation_token(client, "elsewhere@example.com"),
        "another purpose's (a verification link)": await outbox.latest_token(
            client, member.email, EMAIL_VERIFICATION, "verify-email"
        ),
    }
    for label, link_token in wrong.items():
        answer = await accept(client, tenant, link_token)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_token"), label
    # ... and an invitation link is no verification link.
    here = await invitation_token(client, "here@example.com")
    as_verification = await client.post(tenant.path("/auth/email/verify"), json={"token": here})
    assert as_verification.json()["code"] == "invalid_token"
    weak = await accept(client, tenant, here, password="short")
    assert weak.status_code == 422  # the password policy holds, and the link stays good
    assert (await accept(client, tenant, here)).status_code == 201


async def test_an_api_key_invites_without_an_inviting_user(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    key = await create_api_key(
        client, tenant, "users:manage", "users:read", "projects:read", "projects:write"
    )
    body = {"email": "bot-invited@example.com", "roles": ["member"]}
    created = await client.post(tenant.path("/invitations"), json=body, headers=key.headers)
    assert created.status_code == 201, created.text
    assert created.json()["invited_by"] is None
    (mail,) = await outbox.outbox_to(client, "bot-invited@example.com", PURPOSE)
    assert f"An administrator of Tenant {tenant.slug} invited you" in mail.text_body
    beyond = await client.post(
        tenant.path("/invitations"), json={"email": "x@example.com", "roles": ["admin"]}, headers=key.headers
    )
    assert beyond.status_code == 403


async def test_the_invitation_reaches_a_real_smtp_server_and_its_link_works(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    box = Mailbox()
    with smtp_server(box) as port:
        async with make_client(make_settings(SMTP_URL=f"smtp://127.0.0.1:{port}")) as client:
            tenant = await create_tenant(client)
            assert (await invite(client, tenant, "real@example.com", ["viewer"])).status_code == 201
            for _ in range(50):
                if any(m["To"] == "real@example.com" for m in box.received):
                    break
                await asyncio.sleep(0.1)
            (received,) = [m for m in box.received if m["To"] == "real@example.com"]
            text = received.get_body(("plain",))
            assert text is not None
            joined = await accept(client, tenant, outbox.token_in(text.get_content(), PAGE))
            assert joined.status_code == 201, joined.text
            assert joined.json()["roles"] == ["viewer"]
