"""GitHub matching compares addresses folded, as the rest of the app does (security.emails)."""

from __future__ import annotations

from tests.factories import add_member, create_tenant
from tests.github_helpers import EnvFactory, add_account, assert_problem


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() and c.isascii() else c for c in text)


async def test_a_look_alike_github_address_is_the_existing_account(make_env: EnvFactory) -> None:
    async with make_env(GITHUB_LINK_BY_EMAIL=False) as env:
        tenant = await create_tenant(env.client)
        member = await add_member(env.client, tenant)
        local, domain = member.email.split("@")
        look_alike = f"{_full_width(local).upper()}@{domain}"
        before = await env.counts(tenant)
        response = await env.sign_in(tenant, add_account(env.fake, look_alike))
        # Not a second account under a spelling that reads as the member's address.
        assert_problem(response, 409, "account_exists")
        assert await env.counts(tenant) == before
