"""Proving an address (API-v2 §1): the link mailed at registration and on request, address
changes that apply only once the new address opens its link, and tenants that admit only
verified addresses. Attacked from outside: reused, expired, other-tenant, other-purpose and
guessed tokens, parallel uses, a stolen session changing the address."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from httpx import AsyncClient, Response

from saas_app.auth.account_tokens import EMAIL_VERIFICATION, PASSWORD_RESET
from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from tests import outbox
from tests.factories import (
    DEFAULT_PASSWORD,
    Member,
    TenantCtx,
    add_member,
    create_api_key,
    create_tenant,
    login,
    token,
)
from tests.test_mail import Mailbox, smtp_server

VERIFY_PAGE = "verify-email"


async def verify(client: AsyncClient, tenant: TenantCtx, link_token: str) -> Response:
    return await client.post(tenant.path("/auth/email/verify"), json={"token": link_token})


async def verification_token(client: AsyncClient, email: str) -> str:
    return await outbox.latest_token(client, email, EMAIL_VERIFICATION, VERIFY_PAGE)


async def me(client: AsyncClient, tenant: TenantCtx, member: Member) -> dict[str, Any]:
    answer = await client.get(tenant.path("/users/me"), headers=member.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def change_email(
    client: AsyncClient,
    tenant: TenantCtx,
    member: Member,
    email: str,
    password: str | None = DEFAULT_PASSWORD,
) -> Response:
    body = {"email": email} if password is None else {"email": email, "password": password}
    return await client.patch(tenant.path("/users/me"), json=body, headers=member.headers)


async def audit_actions(client: AsyncClient, tenant: TenantCtx, action: str) -> list[dict[str, Any]]:
    answer = await client.get(
        tenant.path("/audit-events"), params={"action": action}, headers=tenant.owner.headers
    )
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def test_registration_mails_a_link_that_verifies_the_address_once(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    assert (await me(client, tenant, member))["email_verified"] is False
    (mail,) = await outbox.outbox_to(client, member.email, EMAIL_VERIFICATION)
    assert mail.subject == f"Confirm your e-mail address for Tenant {tenant.slug}"
    assert mail.html_body is not None
    assert f"/t/{tenant.slug}/verify-email?token=" in mail.html_body
    link_token = outbox.token_in(mail.text_body, VERIFY_PAGE)

    assert (await verify(client, tenant, link_token)).status_code == 204
    assert (await me(client, tenant, member))["email_verified"] is True  # the cached answer is evicted
    again = await verify(client, tenant, link_token)
    assert (again.status_code, again.json()["code"]) == (400, "invalid_token")
    (event,) = await audit_actions(client, tenant, "email.verified")
    assert event["target"] == {"type": "user", "id": member.id}
    listed = await client.get(tenant.path(f"/users/{member.id}"), headers=tenant.owner.headers)
    assert listed.json()["email_verified"] is True


async def test_a_new_tenants_owner_gets_a_link_too(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    assert (
        await verify(client, tenant, await verification_token(client, tenant.owner.email))
    ).status_code == 204
    assert (await me(client, tenant, tenant.owner))["email_verified"] is True


async def test_asking_again_sends_a_new_link_and_the_old_one_dies(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    first = await verification_token(client, member.email)
    asked = await client.post(tenant.path("/users/me/email/verification"), headers=member.headers)
    assert (asked.status_code, asked.json()) == (202, {})
    second = await verification_token(client, member.email)
    assert second != first
    assert (await verify(client, tenant, first)).json()["code"] == "invalid_token"  # only the newest works
    assert (await verify(client, tenant, second)).status_code == 204
    verified = await client.post(tenant.path("/users/me/email/verification"), headers=member.headers)
    assert (verified.status_code, verified.json()["code"]) == (409, "already_verified")


async def test_an_api_key_cannot_ask_for_a_link(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    key = await create_api_key(client, tenant, "users:manage")
    answer = await client.post(tenant.path("/users/me/email/verification"), headers=key.headers)
    assert (answer.status_code, answer.json()["code"]) == (403, "human_only")


async def test_every_wrong_token_is_the_same_400(client: AsyncClient, clock: FrozenClock) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    member = await add_member(client, tenant)
    stranger = await add_member(client, other)
    reset_answer = await client.post(tenant.path("/auth/password/forgot"), json={"email": member.email})
    assert reset_answer.status_code == 202
    reset_link = await outbox.latest_token(client, member.email, PASSWORD_RESET, "reset-password")
    wrong = {
        "guessed": "A" * 43,
        "empty": "",
        "overlong": "x" * 5000,
        "another tenant's": await verification_token(client, stranger.email),
        "another purpose's (a reset link)": reset_link,
    }
    for label, link_token in wrong.items():
        answer = await verify(client, tenant, link_token)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_token"), label
    # ... and a verification link is no reset link.
    used_as_reset = await client.post(
        tenant.path("/auth/password/reset"),
        json={"token": await verification_token(client, member.email), "new_password": "x" * 20},
    )
    assert used_as_reset.json()["code"] == "invalid_token"
    clock.advance(hours=49)
    expired = await verify(client, tenant, await verification_token(client, member.email))
    assert expired.json()["code"] == "invalid_token"
    owner = await login(client, tenant.slug, tenant.owner.email)  # the factory's token is too old
    read = await client.get(tenant.path(f"/users/{member.id}"), headers=owner.headers)
    assert read.json()["email_verified"] is False


async def test_fifty_parallel_uses_of_one_link_verify_once(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    link_token = await verification_token(client, member.email)
    answers = await asyncio.gather(*(verify(client, tenant, link_token) for _ in range(50)))
    assert sorted(a.status_code for a in answers) == [204] + [400] * 49
    assert len(await audit_actions(client, tenant, "email.verified")) == 1


async def test_a_deactivated_users_link_is_invalid(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    link_token = await verification_token(client, member.email)
    off = await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert off.status_code == 200
    assert (await verify(client, tenant, link_token)).json()["code"] == "invalid_token"


# --- address changes -------------------------------------------------------------------------


async def test_a_change_applies_only_once_the_new_address_opens_its_link(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    new = f"moved-{member.email}"
    old_reset = await client.post(tenant.path("/auth/password/forgot"), json={"email": member.email})
    assert old_reset.status_code == 202
    reset_link = await outbox.latest_token(client, member.email, PASSWORD_RESET, "reset-password")

    asked = await change_email(client, tenant, member, new.upper())  # any spelling
    assert asked.status_code == 202, asked.text
    assert (asked.json()["email"], asked.json()["email_verified"]) == (member.email, False)  # not yet
    (notice,) = await outbox.outbox_to(client, member.email, "email_change_notice")
    assert new in notice.text_body
    (mail,) = await outbox.outbox_to(client, new, EMAIL_VERIFICATION)
    assert "The change applies once you open this link" in mail.text_body
    assert (await me(client, tenant, member))["email"] == member.email

    assert (await verify(client, tenant, outbox.token_in(mail.text_body, VERIFY_PAGE))).status_code == 204
    moved = await me(client, tenant, member)
    assert (moved["email"], moved["email_verified"]) == (new, True)
    await login(client, tenant.slug, new)
    old_login = await token(
        client, tenant.slug, grant_type="password", username=member.email, password=DEFAULT_PASSWORD
    )
    assert old_login.status_code == 400
    # The reset link that went to the old address no longer reaches the account.
    reset = await client.post(
        tenant.path("/auth/password/reset"), json={"token": reset_link, "new_password": "y" * 20}
    )
    assert reset.json()["code"] == "invalid_token"
    assert len(await audit_actions(client, tenant, "email.changed")) == 1


async def test_a_change_needs_the_password_or_a_recent_login(client: AsyncClient, clock: FrozenClock) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    assert (await change_email(client, tenant, member, "fresh@example.com", password=None)).status_code == 202
    clock.advance(minutes=11)  # the login is no longer recent (a stolen token, say)
    stale = await change_email(client, tenant, member, "thief@example.com", password=None)
    assert (stale.status_code, stale.json()["code"]) == (403, "reauthentication_required")
    wrong = await change_email(client, tenant, member, "thief@example.com", password="not the password")
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_password")
    assert await outbox.outbox_to(client, "thief@example.com", EMAIL_VERIFICATION) == []
    assert (await change_email(client, tenant, member, "mine@example.com")).status_code == 202


async def test_a_taken_address_is_refused_when_asked_and_when_opened(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    taken = await change_email(client, tenant, member, tenant.owner.email)
    assert (taken.status_code, taken.json()["code"]) == (409, "user_exists")
    assert (await change_email(client, tenant, member, "later-taken@example.com")).status_code == 202
    link_token = await verification_token(client, "later-taken@example.com")
    await add_member(client, tenant, email="later-taken@example.com")  # signs up first
    refused = await verify(client, tenant, link_token)
    assert (refused.status_code, refused.json()["code"]) == (409, "user_exists")
    assert (await me(client, tenant, member))["email"] == member.email


async def test_a_password_change_cancels_a_pending_change(client: AsyncClient) -> None:
    """What the notice to the old address tells its owner to do."""
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    assert (await change_email(client, tenant, member, "thief@example.com")).status_code == 202
    link_token = await verification_token(client, "thief@example.com")
    body = {"current_password": DEFAULT_PASSWORD, "new_password": "a changed long passphrase"}
    changed = await client.post(tenant.path("/users/me/password"), json=body, headers=member.headers)
    assert changed.status_code == 204
    assert (await verify(client, tenant, link_token)).json()["code"] == "invalid_token"
    assert (await me(client, tenant, member))["email"] == member.email


async def test_the_same_address_is_a_request_for_a_link(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    assert (await change_email(client, tenant, member, member.email)).status_code == 202
    assert len(await outbox.outbox_to(client, member.email, EMAIL_VERIFICATION)) == 2
    assert await outbox.outbox_to(client, member.email, "email_change_notice") == []
    assert (await verify(client, tenant, await verification_token(client, member.email))).status_code == 204
    again = await change_email(client, tenant, member, member.email)
    assert (again.status_code, again.json()["code"]) == (409, "already_verified")


# --- tenants that admit only verified addresses -----------------------------------------------


async def test_require_verified_email_refuses_an_unverified_login_after_the_password(
    client: AsyncClient,
) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    policy = {"require_verified_email": True}
    # Its owner first: nobody demands what they have not done (they would be locked out).
    refused = await client.patch(tenant.path(), json=policy, headers=tenant.owner.headers)
    assert (refused.status_code, refused.json()["code"]) == (403, "email_not_verified")
    owner_link = await verification_token(client, tenant.owner.email)
    assert (await verify(client, tenant, owner_link)).status_code == 204
    turned_on = await client.patch(tenant.path(), json=policy, headers=tenant.owner.headers)
    assert (turned_on.status_code, turned_on.json()["require_verified_email"]) == (200, True)

    wrong = await token(
        client, tenant.slug, grant_type="password", username=member.email, password="nope nope"
    )
    assert wrong.status_code == 400
    assert "email_not_verified" not in wrong.json()  # said only to whoever knows the password
    right = await token(
        client, tenant.slug, grant_type="password", username=member.email, password=DEFAULT_PASSWORD
    )
    assert right.status_code == 400
    assert right.json()["error"] == "invalid_grant"
    assert right.json()["email_not_verified"] is True
    # Signed out, the user cannot ask for a link: the refused login mailed a new one.
    assert len(await outbox.outbox_to(client, member.email, EMAIL_VERIFICATION)) == 2
    failures = await audit_actions(client, tenant, "login.failed")
    # (The frozen clock gives both one time: their order in the list is the ids'.)
    assert sorted(e["details"]["reason"] for e in failures) == ["bad_password", "email_not_verified"]
    assert (await verify(client, tenant, await verification_token(client, member.email))).status_code == 204
    await login(client, tenant.slug, member.email)


async def test_signing_up_a_victims_address_again_and_again_mails_it_a_few_times(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Anyone may open tenants (or sign up) with any address: each one's verification mail
    spends the address's budget, across tenants; past it the sign-up works, mailing nothing."""
    settings = make_settings(RATE_LIMITS_ENABLED=True, FORGOT_PASSWORD_RATE_LIMIT="2/hour")
    async with make_client(settings) as client:
        for n in range(4):
            owner = {"email": "victim@example.com", "password": DEFAULT_PASSWORD}
            body = {"slug": f"bomb-{n}-{uuid.uuid4().hex[:6]}", "name": "Call +1 555 0100", "owner": owner}
            assert (await client.post("/tenants", json=body)).status_code == 201
        assert len(await outbox.outbox_to(client, "victim@example.com", EMAIL_VERIFICATION)) == 2


async def test_the_link_reaches_a_real_smtp_server_and_works(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    box = Mailbox()
    with smtp_server(box) as port:
        async with make_client(make_settings(SMTP_URL=f"smtp://127.0.0.1:{port}")) as client:
            tenant = await create_tenant(client)
            for _ in range(50):
                if box.received:
                    break
                await asyncio.sleep(0.1)
            (received,) = box.received
            assert received["To"] == tenant.owner.email
            assert received["From"] == f"Tenant {tenant.slug} <no-reply@localhost>"
            text, html = received.get_body(("plain",)), received.get_body(("html",))
            assert text is not None
            assert html is not None
            link_token = outbox.token_in(text.get_content(), VERIFY_PAGE)
            assert link_token in html.get_content()
            assert (await verify(client, tenant, link_token)).status_code == 204
            assert (await me(client, tenant, tenant.owner))["email_verified"] is True
