from httpx import AsyncClient

from tests.factories import add_member, create_tenant


async def test_walkthrough(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    r = await client.get(tenant.path("/users/me"), headers=tenant.owner.headers)
    assert r.status_code == 200, r.text
    assert r.json()["roles"] == ["owner"]
    member = await add_member(client, tenant, "viewer")
    r = await client.post(tenant.path("/projects"), json={"name": "x"}, headers=member.headers)
    assert r.status_code == 403, r.text
    r = await client.post(tenant.path("/projects"), json={"name": "x"}, headers=tenant.owner.headers)
    assert r.status_code == 201, r.text
    r = await client.get(tenant.path("/projects"), headers=member.headers)
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
