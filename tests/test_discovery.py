"""What a resource server finds from the issuer alone (API-v2 §2): discovery (OIDC and RFC
8414), the tenant's JWKS, userinfo, and RFC 9068 access tokens that verifiers nobody here
wrote (PyJWT's PyJWKClient, Authlib's RFC 9068 validator) accept from discovery alone,
and refuse for another tenant or a swapped algorithm."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from authlib.oauth2.rfc6750 import InvalidTokenError as AuthlibInvalidToken
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from httpx import AsyncClient

from saas_app.core.config import Settings
from saas_app.security.tokens import FIRST_PARTY_CLIENT
from tests.factories import add_member, create_api_key, create_tenant
from tests.servers import running_server


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def test_discovery_names_the_tokens_issuer_and_the_endpoints_that_exist(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    answer = await client.get(tenant.path("/.well-known/openid-configuration"))
    assert answer.status_code == 200
    document = answer.json()
    issuer = claims_of(tenant.owner.login.access_token)["iss"]
    assert document["issuer"] == issuer
    assert document["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert document["token_endpoint"] == f"{issuer}/auth/token"
    assert document["revocation_endpoint"] == f"{issuer}/auth/revoke"
    assert document["userinfo_endpoint"] == f"{issuer}/oauth/userinfo"
    assert "authorization_endpoint" not in document  # not built yet: never advertised
    assert document["introspection_endpoint"] == f"{issuer}/auth/introspect"
    assert {"password", "refresh_token"} <= set(document["grant_types_supported"])
    assert "projects:read" in document["scopes_supported"]
    assert document["subject_types_supported"] == ["public"]
    rfc8414 = await client.get(f"/.well-known/oauth-authorization-server/t/{tenant.slug}")
    assert rfc8414.json() == document
    for path in (
        tenant.path("/.well-known/openid-configuration"),
        tenant.path("/.well-known/jwks.json"),
        "/.well-known/jwks.json",
    ):
        first = await client.get(path)
        assert first.headers["cache-control"].startswith("public, max-age=")
        etag = first.headers["etag"]
        # Strong, weakened by a proxy (RFC 9110 §13.1.2 compares weakly), or `*`.
        for asked in (etag, f'"other", W/{etag}', "*"):
            again = await client.get(path, headers={"If-None-Match": asked})
            assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag), asked
        changed = await client.get(path, headers={"If-None-Match": '"not-it"'})
        assert changed.status_code == 200
    unknown = await client.get("/t/no-such-tenant/.well-known/openid-configuration")
    assert unknown.status_code == 404


async def test_access_tokens_name_their_client(client: AsyncClient) -> None:
    tenant = await create_tenant(client)
    assert claims_of(tenant.owner.login.access_token)["client_id"] == FIRST_PARTY_CLIENT


async def test_userinfo_says_who_the_token_is_for(client: AsyncClient) -> None:
    tenant, other = await create_tenant(client), await create_tenant(client)
    path = tenant.path("/oauth/userinfo")
    answer = await client.get(path, headers=tenant.owner.headers)
    assert answer.status_code == 200
    assert answer.json() == {
        "sub": tenant.owner.id,
        "email": tenant.owner.email,
        "email_verified": False,
        "name": "Owner",
    }
    member = await add_member(client, tenant)  # signed up without a name: the claim is left out
    assert set((await client.get(path, headers=member.headers)).json()) == {"sub", "email", "email_verified"}
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=other.owner.headers)).status_code == 401
    key = await create_api_key(client, tenant, "users:read")
    refused = await client.get(path, headers=key.headers)
    assert (refused.status_code, refused.json()["code"]) == (403, "human_only")


# --- verifiers nobody here wrote, against a live server signing with ES256 -------------------


@pytest.fixture
def es256_key(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "es256.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _sign_up(base: str, slug: str) -> tuple[str, str]:
    """A tenant and its owner's access token, on the live server."""
    owner = {"email": f"owner@{slug}.example.com", "password": "a long owner passphrase"}
    made = httpx.post(f"{base}/tenants", json={"slug": slug, "name": slug, "owner": owner}, timeout=30)
    assert made.status_code == 201, made.text
    form = {"grant_type": "password", "username": owner["email"], "password": owner["password"]}
    answer = httpx.post(f"{base}/t/{slug}/auth/token", data=form, timeout=30)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return f"{base}/t/{slug}", token


async def test_third_party_verifiers_accept_our_tokens_from_discovery_alone(
    database_url: str, tmp_path: Path, es256_key: Path, make_settings: Callable[..., Settings]
) -> None:
    audience = make_settings().JWT_AUDIENCE
    env = {"DATABASE_URL": database_url, "JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEY_FILE": str(es256_key)}
    with running_server(env, tmp_path / "server.log") as (base, _):
        await asyncio.to_thread(verify_from_discovery, base, audience)


def verify_from_discovery(base: str, audience: str) -> None:
    """Blocking: PyJWKClient and the validators fetch over HTTP themselves."""
    issuer, token = _sign_up(base, "acme")
    other_issuer, other_token = _sign_up(base, "globex")
    document = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]

    # PyJWT: the key by `kid` from jwks_uri, the algorithm pinned by the verifier.
    keys = jwt.PyJWKClient(document["jwks_uri"])
    signing_key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
    assert claims["client_id"] == FIRST_PARTY_CLIENT
    with pytest.raises(jwt.InvalidIssuerError):  # another tenant's token, same keys
        jwt.decode(other_token, signing_key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
    assert other_issuer != issuer

    # The alg swap (RFC 8725 §2.1): HS256 "signed" with the public key as the secret.
    public_pem = signing_key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": signing_key.key_id}
    forged = hs256(header, claims, public_pem)  # PyJWT itself refuses to make one
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(forged, signing_key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
    refused = httpx.get(f"{issuer}/users/me", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert refused.status_code == 401

    # Authlib's strict RFC 9068 validator (it requires `client_id`, `typ` at+jwt, ...).
    jwks = httpx.get(document["jwks_uri"], timeout=10).json()

    class Validator(JWTBearerTokenValidator):  # type: ignore[misc]  # untyped library
        def get_jwks(self) -> Any:
            return jwks

    validator = Validator(issuer=issuer, resource_server=audience)
    accepted = validator.authenticate_token(token)
    validator.validate_token(accepted, scopes=["projects:read"], request=None)
    assert accepted["sub"] == claims["sub"]
    foreign = Validator(issuer=other_issuer, resource_server=audience)
    with pytest.raises(AuthlibInvalidToken):
        foreign.validate_token(foreign.authenticate_token(token), scopes=[], request=None)
