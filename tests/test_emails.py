"""Look-alike spellings of an address are the same account: stored, found and compared folded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient

from saas_app.security.emails import canonical_email, normalize_email
from tests.factories import DEFAULT_PASSWORD, TenantCtx, create_tenant, token, unique_slug


def _full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() and c.isascii() else c for c in text)


def look_alikes(address: str) -> dict[str, str]:
    local, domain = address.split("@")
    return {
        "full-width-first-letter": _full_width(local[0]) + local[1:] + "@" + domain,
        "full-width-local-part": _full_width(local) + "@" + domain,
        "upper-case": address.upper(),
        "full-width-upper-case": _full_width(local.upper()) + "@" + domain,
        "full-width-domain": local + "@" + _full_width(domain),
    }


OWNER_LOOK_ALIKES = list(look_alikes("owner@x.example.com"))
# A login form is not syntax-checked: blanks around the username are ignored there too.
LOGIN_LOOK_ALIKES = [*OWNER_LOOK_ALIKES, "blank-around"]
# "ﬁ" (U+FB01) and "ﬀ" (U+FB00) are compatibility ligatures: NFKC spells them out.
LIGATURES = {
    "fi-ligature": ("finance@example.com", "\ufb01nance@example.com"),
    "ff-ligature": ("staff@example.com", "sta\ufb00@example.com"),
}


def _owner_look_alike(tenant: TenantCtx, kind: str) -> str:
    return {**look_alikes(tenant.owner.email), "blank-around": f"  {tenant.owner.email} "}[kind]


async def _me(client: AsyncClient, tenant: TenantCtx, username: str) -> str:
    response = await token(
        client, tenant.slug, grant_type="password", username=username, password=DEFAULT_PASSWORD
    )
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    me = await client.get(tenant.path("/users/me"), headers=headers)
    assert me.status_code == 200, me.text
    return str(me.json()["id"])


@pytest.mark.parametrize("kind", OWNER_LOOK_ALIKES)
async def test_a_look_alike_of_a_member_cannot_register(client: AsyncClient, kind: str) -> None:
    tenant = await create_tenant(client)
    response = await client.post(
        tenant.path("/auth/register"),
        json={"email": _owner_look_alike(tenant, kind), "password": "another good password"},
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "user_exists"


@pytest.mark.parametrize("kind", LOGIN_LOOK_ALIKES)
async def test_a_look_alike_signs_in_to_the_same_account(client: AsyncClient, kind: str) -> None:
    tenant = await create_tenant(client)
    assert await _me(client, tenant, _owner_look_alike(tenant, kind)) == tenant.owner.id


@pytest.mark.parametrize(("plain", "ligature"), list(LIGATURES.values()), ids=list(LIGATURES))
async def test_a_ligature_spelling_is_the_same_address(
    client: AsyncClient, plain: str, ligature: str
) -> None:
    tenant = await create_tenant(client)
    first = await client.post(
        tenant.path("/auth/register"), json={"email": ligature, "password": DEFAULT_PASSWORD}
    )
    assert first.status_code == 201, first.text
    assert first.json()["email"] == plain
    again = await client.post(
        tenant.path("/auth/register"), json={"email": plain, "password": DEFAULT_PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["code"] == "user_exists"
    assert await _me(client, tenant, plain) == first.json()["id"]


async def test_a_tenant_owner_is_stored_folded(client: AsyncClient) -> None:
    slug = unique_slug()
    response = await client.post(
        "/tenants",
        json={
            "slug": slug,
            "name": "Look-alike",
            "owner": {"email": _full_width("BOSS") + "@Example.COM", "password": DEFAULT_PASSWORD},
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["owner"]["email"] == "boss@example.com"


async def test_user_search_folds_the_query(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    for query in (_full_width("OWNER"), "OwNeR@" + tenant.slug.upper()):
        response = await client.get(tenant.path("/users"), params={"q": query}, headers=tenant.owner.headers)
        assert response.status_code == 200, response.text
        assert [u["id"] for u in response.json()["items"]] == [tenant.owner.id], query


async def test_look_alikes_share_the_accounts_failure_limit(
    make_client: Callable[..., Any], make_settings: Callable[..., Any]
) -> None:
    settings = make_settings(
        RATE_LIMITS_ENABLED=True, LOGIN_FAILURE_LIMIT="3/15minutes", LOGIN_RATE_LIMIT="100/minute"
    )
    async with make_client(settings) as client:
        tenant = await create_tenant(client)
        spellings = list(look_alikes(tenant.owner.email).values())
        statuses = []
        for username in spellings[:4]:
            response = await token(
                client, tenant.slug, grant_type="password", username=username, password="wrong password!"
            )
            statuses.append(response.status_code)
        assert statuses[-1] == 429, statuses


FOLDS = {
    "full-width": ("ｏwner@example.com", "owner@example.com"),
    "upper-case": ("OWNER@EXAMPLE.COM", "owner@example.com"),
    "sharp-s": ("STRAẞE@example.com", "strasse@example.com"),
    "ligature": ("\ufb01nance@example.com", "finance@example.com"),
    "already-folded": ("owner@example.com", "owner@example.com"),
}


@pytest.mark.parametrize(("given", "folded"), list(FOLDS.values()), ids=list(FOLDS))
def test_normalize_email_folds_and_is_stable(given: str, folded: str) -> None:
    assert canonical_email(given) == folded
    assert normalize_email(folded) == folded


@pytest.mark.parametrize("address", ["not-an-email", "a\ufe6bb@example.com", "owner＠example.com"])
def test_an_address_invalid_before_or_after_folding_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        canonical_email(address)
