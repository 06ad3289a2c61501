"""Access tokens the service must refuse (RFC 8725, RFC 9068 §4), and the ones it must honour.

Every forged token is presented as `Authorization: Bearer` on GET /t/{slug}/users/me and
must be a 401 `invalid_token` (RFC 6750 §3.1). Tokens "signed correctly" use the server's
own secret, so only the claim or session check stands between them and a 200; the
controls at the end prove that such a token is accepted when nothing is wrong with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from httpx import AsyncClient, Response
from jose import jwk, jwt

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.security.tokens import ACCESS_REQUIRED_CLAIMS, LEEWAY_SECONDS
from tests.conftest import TEST_JWT_SECRET
from tests.factories import Member, TenantCtx, add_member, create_tenant, login

PROBLEM_JSON = "application/problem+json"
DROP = object()  # a claim value meaning "leave this claim out"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@dataclass(frozen=True)
class KeyMaterial:
    """PEM files for the server's asymmetric keys, and a key an attacker controls."""

    directory: Path
    attacker_rsa_pem: bytes

    def private_key_file(self, algorithm: str) -> Path:
        return self.directory / f"{algorithm}.pem"

    def public_pem(self, algorithm: str) -> bytes:
        private = serialization.load_pem_private_key(self.private_key_file(algorithm).read_bytes(), None)
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="session")
def key_material(tmp_path_factory: pytest.TempPathFactory) -> KeyMaterial:
    directory = tmp_path_factory.mktemp("jwt-keys")
    (directory / "RS256.pem").write_bytes(
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    (directory / "ES256.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    attacker = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return KeyMaterial(directory, attacker)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: object) -> str:
    """The JWS signing input: base64url(header) "." base64url(payload)."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"


def hmac_signed(header: dict[str, Any], payload: object, key: bytes = TEST_JWT_SECRET.encode()) -> str:
    """An HMAC-signed JWS built by hand, for what jose refuses to make (no typ, a PEM as secret)."""
    signing_input = compact(header, payload)
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


@dataclass
class Scene:
    """An app, a tenant, a member whose identity the forged tokens borrow, and another tenant."""

    client: AsyncClient
    settings: Settings
    clock: FrozenClock
    keys: KeyMaterial
    tenant: TenantCtx
    other: TenantCtx
    member: Member

    @property
    def claims(self) -> dict[str, Any]:
        """The claims of the member's real access token."""
        claims: dict[str, Any] = jwt.get_unverified_claims(self.member.login.access_token)
        return claims

    @property
    def kid(self) -> str | None:
        kid: str | None = jwt.get_unverified_header(self.member.login.access_token).get("kid")
        return kid

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def issuer(self, tenant: TenantCtx | None = None) -> str:
        return f"{self.settings.PUBLIC_URL}/t/{(tenant or self.tenant).slug}"

    def sign(
        self, claims: Any = None, *, key: str = TEST_JWT_SECRET, algorithm: str = "HS256", **headers: Any
    ) -> str:
        """`claims` (default: the member's) signed by jose; `typ` is at+jwt unless overridden."""
        claims = self.claims if claims is None else claims
        return bearer(jwt.encode(claims, key, algorithm=algorithm, headers={"typ": "at+jwt", **headers}))

    def resign(self, **changes: Any) -> str:
        """The member's claims with `changes` (DROP removes one), correctly signed with HS256."""
        return self.sign({k: v for k, v in {**self.claims, **changes}.items() if v is not DROP})

    async def assert_accepted(self, authorization: str) -> None:
        r = await self.client.get(self.tenant.path("/users/me"), headers={"Authorization": authorization})
        assert r.status_code == 200, r.text


OpenScene = Callable[[str], AbstractAsyncContextManager[Scene]]


@pytest.fixture
def open_scene(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], AbstractAsyncContextManager[AsyncClient]],
    clock: FrozenClock,
    key_material: KeyMaterial,
) -> OpenScene:
    @asynccontextmanager
    async def open_(algorithm: str) -> AsyncIterator[Scene]:
        overrides: dict[str, Any] = {}
        if algorithm != "HS256":
            overrides = {
                "JWT_ALGORITHM": algorithm,
                "JWT_PRIVATE_KEY_FILE": key_material.private_key_file(algorithm),
            }
        settings = make_settings(**overrides)
        async with make_client(settings) as client:
            tenant = await create_tenant(client)
            other = await create_tenant(client)
            member = await add_member(client, tenant)
            yield Scene(client, settings, clock, key_material, tenant, other, member)

    return open_


def assert_invalid_token(response: Response, slug: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.headers["www-authenticate"] == f'Bearer realm="{slug}", error="invalid_token"'
    assert response.json()["status"] == 401


# --- forgeries that need the app to do something first --------------------------------------


async def other_users_sub_with_my_sid(s: Scene) -> str:
    # The owner's id as `sub`, the member's session as `sid`: a session names its user.
    await s.assert_accepted(s.resign())
    return s.resign(sub=s.tenant.owner.id)


async def after(s: Scene, method: str, suffix: str, status: int, **request: Any) -> str:
    """The member's real token, accepted before `request` runs and (it should end) refused after."""
    token = bearer(s.member.login.access_token)
    await s.assert_accepted(token)
    r = await s.client.request(method, s.tenant.path(suffix), **request)
    assert r.status_code == status, r.text
    return token


def deactivated(s: Scene) -> Awaitable[str]:
    body, owner = {"is_active": False}, s.tenant.owner.headers
    return after(s, "PATCH", f"/users/{s.member.id}", 200, json=body, headers=owner)


def logged_out(s: Scene) -> Awaitable[str]:
    return after(s, "POST", "/auth/logout", 204, headers=s.member.headers)


def revoked(s: Scene, token: str) -> Awaitable[str]:
    return after(s, "POST", "/auth/revoke", 200, data={"token": token})


def expired_by_the_clock(s: Scene) -> str:
    # No leeway on `exp`: the service set it by its own clock (API-v2 §2).
    s.clock.advance(seconds=s.settings.ACCESS_TOKEN_TTL_SECONDS)
    return bearer(s.member.login.access_token)


def tampered_payload(s: Scene) -> str:
    header, _, signature = s.member.login.access_token.split(".")
    payload = b64url(json.dumps({**s.claims, "scope": "tenant:manage"}).encode())
    return bearer(f"{header}.{payload}.{signature}")


def hmac_with_public_pem(s: Scene) -> str:
    # RFC 8725 §2.1: a verifier that lets the header pick the algorithm would take the
    # public key (which anyone can fetch) as an HMAC secret.
    algorithm = s.settings.JWT_ALGORITHM
    header = {"alg": "HS256", "typ": "at+jwt", "kid": s.kid}
    return bearer(hmac_signed(header, s.claims, s.keys.public_pem(algorithm)))


def attacker_rsa_key(s: Scene, *, embed_jwk: bool = False) -> str:
    headers: dict[str, Any] = {"kid": s.kid}
    if embed_jwk:  # RFC 7515 §4.1.3: a key in the header is not a key we trust
        headers["jwk"] = jwk.construct(s.keys.attacker_rsa_pem, "RS256").public_key().to_dict()
    return s.sign(key=s.keys.attacker_rsa_pem.decode(), algorithm="RS256", **headers)


def without(claim: str) -> Callable[[Scene], str]:
    """Drops one required claim and signs correctly: only the claim check can refuse it."""
    return lambda s: s.resign(**{claim: DROP})


@dataclass(frozen=True)
class Forged:
    id: str
    make: Callable[[Scene], str | Awaitable[str]]
    algorithm: str = "HS256"  # what the server runs


NONE_HEADER = {"alg": "none", "typ": "at+jwt"}
FORGED: list[Forged] = [
    Forged("alg-none-trailing-dot", lambda s: bearer(compact(NONE_HEADER, s.claims) + ".")),
    Forged("alg-none-no-trailing-dot", lambda s: bearer(compact(NONE_HEADER, s.claims))),
    Forged("alg-None-capitalised", lambda s: bearer(compact({**NONE_HEADER, "alg": "None"}, s.claims) + ".")),
    Forged("alg-none-with-real-signature", lambda s: bearer(hmac_signed(NONE_HEADER, s.claims))),
    Forged("hs256-other-secret", lambda s: s.sign(key="another-secret-" + "y" * 40)),
    Forged("hs384-our-secret", lambda s: s.sign(algorithm="HS384")),  # the algorithm is pinned
    Forged("tampered-payload", tampered_payload),
    Forged("rs256-server-hs256-signed-with-public-pem", hmac_with_public_pem, "RS256"),
    Forged("es256-server-hs256-signed-with-public-pem", hmac_with_public_pem, "ES256"),
    Forged("rs256-server-attacker-key-same-kid", attacker_rsa_key, "RS256"),
    Forged("rs256-server-attacker-key-embedded-jwk", lambda s: attacker_rsa_key(s, embed_jwk=True), "RS256"),
    Forged(
        "expired-beyond-leeway",
        lambda s: s.resign(exp=s.now() - LEEWAY_SECONDS - 1, iat=s.now() - LEEWAY_SECONDS - 901),
    ),
    # Its own tokens' `exp` gets no leeway at all: a second past it is past it.
    Forged("expired-one-second-ago", lambda s: s.resign(exp=s.now() - 1, iat=s.now() - 901)),
    Forged("expiring-this-second", lambda s: s.resign(exp=s.now(), iat=s.now() - 900)),
    Forged("expired-real-token-after-clock-moves", expired_by_the_clock),
    Forged("iat-far-in-future", lambda s: s.resign(iat=s.now() + 3600, exp=s.now() + 4500)),
    # RFC 7519 §4.1.5: not before `nbf`; the service never issues one but honours it.
    Forged("nbf-beyond-leeway", lambda s: s.resign(nbf=s.now() + LEEWAY_SECONDS + 1)),
    Forged("nbf-an-hour-ahead", lambda s: s.resign(nbf=s.now() + 3600)),
    Forged("nbf-a-string", lambda s: s.resign(nbf=str(s.now() - 60))),
    Forged("nbf-a-float", lambda s: s.resign(nbf=s.now() - 60.5)),
    Forged("nbf-a-boolean", lambda s: s.resign(nbf=True)),
    Forged("nbf-null", lambda s: s.resign(nbf=None)),
    Forged("iss-other-tenant", lambda s: s.resign(iss=s.issuer(s.other))),
    Forged("iss-other-host", lambda s: s.resign(iss=f"https://evil.example.com/t/{s.tenant.slug}")),
    Forged("iss-trailing-slash", lambda s: s.resign(iss=s.issuer() + "/")),
    Forged("aud-wrong", lambda s: s.resign(aud="another-app")),
    Forged("aud-list-without-ours", lambda s: s.resign(aud=["another-app", "third-app"])),
    Forged("typ-JWT", lambda s: s.sign(typ="JWT")),
    Forged("typ-missing", lambda s: bearer(hmac_signed({"alg": "HS256"}, s.claims))),
    *[Forged(f"missing-{claim}", without(claim)) for claim in ACCESS_REQUIRED_CLAIMS],
    Forged("sub-not-a-uuid", lambda s: s.resign(sub="admin")),
    Forged("exp-a-string", lambda s: s.resign(exp=str(s.now() + 600))),
    Forged(
        "claims-not-an-object", lambda s: bearer(hmac_signed({"alg": "HS256", "typ": "at+jwt"}, [s.claims]))
    ),
    Forged("tid-other-tenant-with-our-iss", lambda s: s.resign(tid=s.other.id)),
    Forged(
        "sub-and-sid-of-other-tenant-with-our-iss-and-tid",
        lambda s: s.resign(
            sub=s.other.owner.id, sid=jwt.get_unverified_claims(s.other.owner.login.access_token)["sid"]
        ),
    ),
    Forged("other-tenants-real-token", lambda s: s.other.owner.headers["Authorization"]),
    Forged("refresh-token-as-bearer", lambda s: bearer(s.member.login.refresh_token)),
    Forged("random-string", lambda s: bearer(secrets.token_urlsafe(32))),
    Forged("three-empty-segments", lambda s: bearer("..")),
    Forged("empty-bearer", lambda s: "Bearer "),
    Forged("basic-scheme", lambda s: "Basic " + b64url(f"{s.member.email}:{s.member.password}".encode())),
    Forged("other-users-sub-with-my-sid", other_users_sub_with_my_sid),
    Forged("deactivated-user", deactivated),
    Forged("session-ended-by-logout", logged_out),
    Forged("session-ended-by-revoking-refresh-token", lambda s: revoked(s, s.member.login.refresh_token)),
    Forged("session-ended-by-revoking-access-token", lambda s: revoked(s, s.member.login.access_token)),
]


@pytest.mark.parametrize("forge", FORGED, ids=[f.id for f in FORGED])
async def test_forged_token_is_refused(forge: Forged, open_scene: OpenScene) -> None:
    async with open_scene(forge.algorithm) as s:
        authorization = forge.make(s)
        if inspect.isawaitable(authorization):
            authorization = await authorization
        r = await s.client.get(s.tenant.path("/users/me"), headers={"Authorization": authorization})
        assert_invalid_token(r, s.tenant.slug)
        assert s.member.email not in r.text


ACCEPTED: list[Forged] = [
    Forged("hs256-re-signed-real-claims", lambda s: s.resign()),
    Forged("lowercase-bearer-scheme", lambda s: "bearer " + s.member.login.access_token),
    Forged("nbf-in-the-past", lambda s: s.resign(nbf=s.now() - 60)),
    Forged("nbf-within-leeway", lambda s: s.resign(nbf=s.now() + LEEWAY_SECONDS)),
    Forged(
        "rs256-re-signed-with-server-key",
        lambda s: s.sign(key=s.keys.private_key_file("RS256").read_text(), algorithm="RS256", kid=s.kid),
        "RS256",
    ),
]


@pytest.mark.parametrize("forge", ACCEPTED, ids=[f.id for f in ACCEPTED])
async def test_control_token_is_accepted(forge: Forged, open_scene: OpenScene) -> None:
    """The forgeries above differ from these in one way only; these must work."""
    async with open_scene(forge.algorithm) as s:
        authorization = forge.make(s)
        assert isinstance(authorization, str)
        r = await s.client.get(s.tenant.path("/users/me"), headers={"Authorization": authorization})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == s.member.id


async def test_no_credentials_is_401_without_error_attribute(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    r = await client.get(tenant.path("/users/me"))
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    # RFC 6750 §3.1: no error code when the request carried no credential at all.
    assert r.headers["www-authenticate"] == f'Bearer realm="{tenant.slug}"'


@pytest.mark.parametrize(("algorithm", "kty"), [("RS256", "RSA"), ("ES256", "EC")])
async def test_asymmetric_token_verifies_with_published_jwks(
    algorithm: str, kty: str, open_scene: OpenScene
) -> None:
    async with open_scene(algorithm) as s:
        token = s.tenant.owner.login.access_token
        header = jwt.get_unverified_header(token)
        assert header["alg"] == algorithm
        assert header["typ"] == "at+jwt"
        assert header.get("kid")
        r = await s.client.get("/.well-known/jwks.json")
        assert r.status_code == 200, r.text
        keys = r.json()["keys"]
        assert [k["kid"] for k in keys] == [header["kid"]]
        (key,) = keys
        assert key["kty"] == kty
        assert key["alg"] == algorithm
        assert not PRIVATE_JWK_MEMBERS & key.keys(), "the JWKS must publish only the public half"
        claims = jwt.decode(token, key, algorithms=[algorithm], audience="saas-app", issuer=s.issuer())
        assert claims["sub"] == s.tenant.owner.id
        assert claims["tid"] == s.tenant.id
        r = await s.client.get(s.tenant.path("/users/me"), headers=s.tenant.owner.headers)
        assert r.status_code == 200, r.text


async def test_jwks_is_empty_under_hs256(client: AsyncClient) -> None:
    r = await client.get("/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    assert r.json() == {"keys": []}


# role, method, path suffix, body, the permission the role lacks
FORBIDDEN = [
    ("viewer", "POST", "/projects", {"name": "x"}, "projects:write"),
    ("member", "GET", "/users", None, "users:read"),
    ("member", "GET", "/audit-events", None, "audit:read"),
    ("member", "POST", "/roles", {"name": "r", "permissions": ["projects:read"]}, "roles:manage"),
    ("admin", "PATCH", "", {"name": "Renamed"}, "tenant:manage"),
]


@pytest.mark.parametrize(
    ("role", "method", "suffix", "body", "permission"),
    FORBIDDEN,
    ids=[f"{role}-{method}-{suffix or '/'}" for role, method, suffix, _, _ in FORBIDDEN],
)
async def test_missing_permission_is_403_insufficient_scope(
    client: AsyncClient, role: str, method: str, suffix: str, body: dict[str, Any] | None, permission: str
) -> None:
    tenant = await create_tenant(client)
    user = await add_member(client, tenant, role)
    r = await client.request(method, tenant.path(suffix), json=body, headers=user.headers)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    problem = r.json()
    assert problem["code"] == "forbidden"
    assert permission in problem["detail"]
    assert r.headers["www-authenticate"] == (
        f'Bearer realm="{tenant.slug}", error="insufficient_scope", scope="{permission}"'
    )


async def test_demotion_applies_to_an_already_issued_token(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    member = await add_member(client, tenant, "member")
    r = await client.post(tenant.path("/projects"), json={"name": "before"}, headers=member.headers)
    assert r.status_code == 201, r.text
    r = await client.put(
        tenant.path(f"/users/{member.id}/roles"), json={"roles": ["viewer"]}, headers=tenant.owner.headers
    )
    assert r.status_code == 200, r.text
    # Same token, very next request.
    r = await client.post(tenant.path("/projects"), json={"name": "after"}, headers=member.headers)
    assert r.status_code == 403, r.text
    assert 'scope="projects:write"' in r.headers["www-authenticate"]
    r = await client.get(tenant.path("/projects"), headers=member.headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("scope", ["projects:read", None], ids=["explicit-scope", "default-scope"])
async def test_promotion_does_not_widen_an_issued_token(client: AsyncClient, scope: str | None) -> None:
    tenant = await create_tenant(client)
    viewer = await add_member(client, tenant, "viewer")
    narrow = await login(client, tenant.slug, viewer.email, scope=scope)
    assert narrow.scope == "projects:read"
    r = await client.put(
        tenant.path(f"/users/{viewer.id}/roles"), json={"roles": ["member"]}, headers=tenant.owner.headers
    )
    assert r.status_code == 200, r.text
    r = await client.post(tenant.path("/projects"), json={"name": "x"}, headers=narrow.headers)
    assert r.status_code == 403, r.text
    # A token issued after the promotion carries the new permission.
    fresh = await login(client, tenant.slug, viewer.email)
    r = await client.post(tenant.path("/projects"), json={"name": "x"}, headers=fresh.headers)
    assert r.status_code == 201, r.text
