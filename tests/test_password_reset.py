"""Forgotten passwords (API-v2 §1): POST /auth/password/forgot mails a reset link through the
outbox, POST /auth/password/reset spends it. Attacked from outside: reused, expired,
other-tenant and guessed tokens, 50 parallel uses of one, and address enumeration."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import func, select

from saas_app.auth.account_tokens import PASSWORD_RESET
from saas_app.auth.models import AccountToken
from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.mail.models import MailMessage
from tests import outbox
from tests.factories import DEFAULT_PASSWORD, TenantCtx, add_member, create_tenant, login, token
from tests.test_mail import Mailbox, smtp_server

NEW_PASSWORD = "a brand new passphrase 42"


async def forgot(client: AsyncClient, tenant: TenantCtx, email: str) -> Response:
    return await client.post(tenant.path("/auth/password/forgot"), json={"email": email})


async def reset(
    client: AsyncClient, tenant: TenantCtx, reset_token: str, password: str = NEW_PASSWORD
) -> Response:
    body = {"token": reset_token, "new_password": password}
    return await client.post(tenant.path("/auth/password/reset"), json=body)


async def password_grant(client: AsyncClient, tenant: TenantCtx, email: str, password: str) -> Response:
    return await token(client, tenant.slug, grant_type="password", username=email, password=password)


async def outbox_to(client: AsyncClient, email: str) -> list[MailMessage]:
    return await outbox.outbox_to(client, email, PASSWORD_RESET)


def token_in(text: str) -> str:
    return outbox.token_in(text, "reset-password")


async def reset_token(client: AsyncClient, tenant: TenantCtx, email: str) -> str:
    answer = await forgot(client, tenant, email)
    assert answer.status_code == 202, answer.text
    return token_in((await outbox_to(client, email))[-1].text_body)


async def test_a_reset_link_by_mail_sets_a_new_password_and_ends_every_session(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    answer = await forgot(client, tenant, member.email.upper())  # any spelling of the address
    assert answer.status_code == 202
    assert answer.json() == {}
    (mail,) = await outbox_to(client, member.email)
    assert mail.subject == f"Reset your Tenant {tenant.slug} password"
    assert mail.sender_name == f"Tenant {tenant.slug}"
    assert f"/t/{tenant.slug}/reset-password?token=" in mail.text_body
    assert mail.html_body is not None
    assert 'href="http://127.0.0.1:8000/t/' in mail.html_body

    done = await reset(client, tenant, token_in(mail.text_body))
    assert done.status_code == 204, done.text
    assert (await client.get(tenant.path("/users/me"), headers=member.headers)).status_code == 401
    refreshed = await token(
        client, tenant.slug, grant_type="refresh_token", refresh_token=member.login.refresh_token
    )
    assert refreshed.status_code == 400
    old = await token(
        client, tenant.slug, grant_type="password", username=member.email, password=DEFAULT_PASSWORD
    )
    assert old.status_code == 400
    fresh = await login(client, tenant.slug, member.email, NEW_PASSWORD)
    # The link came to the address: it is the user's now, verified.
    assert (await client.get(tenant.path("/users/me"), headers=fresh.headers)).json()[
        "email_verified"
    ] is True
    events = await client.get(tenant.path("/audit-events"), headers=tenant.owner.headers)
    actions = [e["action"] for e in events.json()["items"]]
    assert "password.reset_requested" in actions
    assert "password.reset" in actions


async def test_forgot_answers_the_same_for_an_unknown_address_and_mails_nobody(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    known = await forgot(client, tenant, tenant.owner.email)
    unknown = await forgot(client, tenant, "nobody@example.com")
    assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
    varying = {"date", "x-request-id"}
    assert {k: v for k, v in known.headers.items() if k not in varying} == {
        k: v for k, v in unknown.headers.items() if k not in varying
    }
    assert await outbox_to(client, "nobody@example.com") == []
    assert len(await outbox_to(client, tenant.owner.email)) == 1


async def test_a_deactivated_user_gets_no_mail_and_an_old_token_stops_working(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    earlier = await reset_token(client, tenant, member.email)
    later = await reset_token(client, tenant, member.email)
    assert (await reset(client, tenant, earlier)).json()["code"] == "invalid_token"  # only the newest works
    off = await client.patch(
        tenant.path(f"/users/{member.id}"), json={"is_active": False}, headers=tenant.owner.headers
    )
    assert off.status_code == 200, off.text
    assert (await reset(client, tenant, later)).json()["code"] == "invalid_token"
    assert (await forgot(client, tenant, member.email)).status_code == 202
    assert len(await outbox_to(client, member.email)) == 2  # nothing new


async def test_every_wrong_token_is_the_same_400(client: AsyncClient, clock: FrozenClock) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    member = await add_member(client, tenant)
    spent = await reset_token(client, tenant, member.email)
    assert (await reset(client, tenant, spent)).status_code == 204
    fresh = await reset_token(client, tenant, member.email)
    guessed = "A" * 43
    wrong = {
        "spent": await reset(client, tenant, spent),
        "another tenant's": await reset(client, other, fresh),
        "guessed": await reset(client, tenant, guessed),
        "too long": await reset(client, tenant, fresh + "x" * 300),
    }
    clock.advance(minutes=31)
    wrong["expired"] = await reset(client, tenant, fresh)
    wrong["empty"] = await reset(client, tenant, "")
    for case, answer in wrong.items():
        assert answer.status_code == 400, case
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_token", case
    assert len({w.json()["detail"] for w in wrong.values()}) == 1


async def test_a_weak_new_password_is_refused_and_the_token_is_kept(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    kept = await reset_token(client, tenant, tenant.owner.email)
    weak = await reset(client, tenant, kept, password="short")
    assert weak.status_code == 422
    assert (await reset(client, tenant, kept)).status_code == 204


async def test_fifty_parallel_uses_of_one_token_reset_once(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    once = await reset_token(client, tenant, tenant.owner.email)
    answers = await asyncio.gather(*(reset(client, tenant, once, f"{NEW_PASSWORD} {n}") for n in range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(204) == 1, statuses
    assert set(statuses) == {204, 400}  # the losers are refused at once: no hash, no wait
    (winner,) = [n for n, a in enumerate(answers) if a.status_code == 204]
    await login(client, tenant.slug, tenant.owner.email, f"{NEW_PASSWORD} {winner}")


async def test_a_reset_clears_the_accounts_login_throttle(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        RATE_LIMITS_ENABLED=True, LOGIN_FAILURE_LIMIT="2/hour", REGISTER_RATE_LIMIT="100/minute"
    )
    async with make_client(settings) as client:
        tenant = await create_tenant(client)
        for _ in range(2):
            bad = await token(
                client, tenant.slug, grant_type="password", username=tenant.owner.email, password="no"
            )
            assert bad.status_code == 400
        locked = await token(
            client, tenant.slug, grant_type="password", username=tenant.owner.email, password=DEFAULT_PASSWORD
        )
        assert locked.status_code == 429
        assert (
            await reset(client, tenant, await reset_token(client, tenant, tenant.owner.email))
        ).status_code == 204
        await login(client, tenant.slug, tenant.owner.email, NEW_PASSWORD)


async def test_forgot_is_limited_per_address_whether_or_not_it_exists(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(RATE_LIMITS_ENABLED=True, FORGOT_PASSWORD_RATE_LIMIT="2/hour")
    async with make_client(settings) as client:
        tenant = await create_tenant(client)
        for address in (tenant.owner.email, "nobody@example.com"):
            assert [(await forgot(client, tenant, address)).status_code for _ in range(3)] == [202, 202, 429]
        assert len(await outbox_to(client, tenant.owner.email)) == 2


async def test_the_mail_reaches_a_real_smtp_server_and_its_link_works(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """End to end: the in-app sender delivers to aiosmtpd; the link is read from the message
    as a person's mail program would show it, and followed."""
    box = Mailbox()
    with smtp_server(box) as port:
        async with make_client(make_settings(SMTP_URL=f"smtp://127.0.0.1:{port}")) as client:
            tenant = await create_tenant(client)
            assert (await forgot(client, tenant, tenant.owner.email)).status_code == 202
            for _ in range(50):
                if len(box.received) == 2:  # the owner's verification link, then the reset link
                    break
                await asyncio.sleep(0.1)
            (received,) = [m for m in box.received if m["Subject"].startswith("Reset")]
            assert received["To"] == tenant.owner.email
            text = received.get_body(("plain",))
            assert text is not None
            assert (await reset(client, tenant, token_in(text.get_content()))).status_code == 204
            await login(client, tenant.slug, tenant.owner.email, NEW_PASSWORD)


async def test_a_link_dies_with_a_password_change_and_with_a_deactivation(client: AsyncClient) -> None:
    """A link mailed before the password changed, or before the account was switched off,
    must not work after (not even once the account is switched on again)."""
    tenant = await create_tenant(client)
    member = await add_member(client, tenant)
    before_change = await reset_token(client, tenant, member.email)
    change = {"current_password": DEFAULT_PASSWORD, "new_password": "a changed long passphrase"}
    changed = await client.post(tenant.path("/users/me/password"), json=change, headers=member.headers)
    assert changed.status_code == 204, changed.text
    assert (await reset(client, tenant, before_change)).json()["code"] == "invalid_token"

    before_deactivation = await reset_token(client, tenant, member.email)
    for active in (False, True):
        switched = await client.patch(
            tenant.path(f"/users/{member.id}"), json={"is_active": active}, headers=tenant.owner.headers
        )
        assert switched.status_code == 200, switched.text
    assert (await reset(client, tenant, before_deactivation)).json()["code"] == "invalid_token"


async def test_parallel_requests_leave_one_live_link(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    await asyncio.gather(*(forgot(client, tenant, tenant.owner.email) for _ in range(10)))
    async with outbox.runtime_of(client).session_factory() as session:
        live = await session.scalar(
            select(func.count())
            .select_from(AccountToken)
            .where(AccountToken.used_at.is_(None), AccountToken.purpose == PASSWORD_RESET)
        )
    assert live == 1
    links = [token_in(m.text_body) for m in await outbox_to(client, tenant.owner.email)]
    assert [(await reset(client, tenant, link)).status_code for link in links].count(204) == 1


async def test_the_per_address_limit_spans_tenants(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Anyone can open a tenant with any owner address: a victim's inbox gets at most the
    limit, however many tenants ask."""
    settings = make_settings(RATE_LIMITS_ENABLED=True, FORGOT_PASSWORD_RATE_LIMIT="2/hour")
    async with make_client(settings) as client:
        first, second = await create_tenant(client), await create_tenant(client)
        victim = "victim@mail.example"
        for tenant in (first, second):
            answer = await client.post(
                "/tenants",
                json={
                    "slug": f"{tenant.slug}-v",
                    "name": "Totally Your Bank",
                    "owner": {"email": victim, "password": DEFAULT_PASSWORD},
                },
            )
            assert answer.status_code == 201, answer.text
        v1, v2 = (TenantCtx(t.id, f"{t.slug}-v", t.owner) for t in (first, second))
        statuses = [(await forgot(client, t, victim)).status_code for t in (v1, v2, v1)]
        assert statuses == [202, 202, 429]
        assert len(await outbox_to(client, victim)) == 2
