"""What a resource server or a client finds from the issuer alone (API-v2 §2): the tenant's
OpenID Connect Discovery 1.0 document (also at its RFC 8414 address), its JWKS, and the
signed-in user's `userinfo`.

The documents are built from settings and the tenant's slug, served from memory, and
cacheable (`Cache-Control`, a strong `ETag`; `If-None-Match` gets 304). Only endpoints that
exist are listed: client credentials and the authorization endpoint join the document
when they are built.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from saas_app.core.conditional import NOT_MODIFIED, cacheable
from saas_app.core.openapi import AUTHENTICATED, TENANT
from saas_app.guards import HumanPrincipal
from saas_app.rbac.permissions import PERMISSIONS
from saas_app.runtime import Runtime, RuntimeDep, SessionDep
from saas_app.tenancy.deps import TenantDep
from saas_app.users import service as users

router = APIRouter(tags=["discovery"], responses=TENANT)
# Resource servers refetch on an unknown `kid`; a key is published JWKS_MAX_AGE before use
# (API-v2 §2: JWT_KEY_PUBLISH_SECONDS ≥ this).
JWKS_MAX_AGE = 300
DISCOVERY_MAX_AGE = 3600
GRANT_TYPES = ("password", "refresh_token", "mfa_otp", "mfa_recovery_code")


def configuration(runtime: Runtime, slug: str) -> dict[str, Any]:
    """The tenant's metadata; `issuer` is exactly the `iss` of its tokens."""
    issuer = runtime.access_tokens.issuer(slug)
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/auth/token",
        "revocation_endpoint": f"{issuer}/auth/revoke",
        # RFC 7662; the caller presents a bearer token or an API key with tokens:introspect.
        "introspection_endpoint": f"{issuer}/auth/introspect",
        "userinfo_endpoint": f"{issuer}/oauth/userinfo",
        "grant_types_supported": list(GRANT_TYPES),
        "scopes_supported": list(PERMISSIONS),
        # No authorization endpoint yet (API-v2 §3): no response type is served.
        "response_types_supported": [],
        "code_challenge_methods_supported": ["S256"],
        # The password grant's clients are public (the first-party app): no client secret.
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": [runtime.keys.algorithm],
        "subject_types_supported": ["public"],
        "claims_supported": ["sub", "email", "email_verified", "name"],
    }


@router.get("/t/{tenant}/.well-known/openid-configuration", responses=NOT_MODIFIED)
async def openid_configuration(tenant: TenantDep, runtime: RuntimeDep, request: Request) -> Response:
    """OpenID Connect Discovery 1.0: where the tenant's endpoints and keys are."""
    return cacheable(request, configuration(runtime, tenant.slug), DISCOVERY_MAX_AGE)


@router.get("/.well-known/oauth-authorization-server/t/{tenant}", responses=NOT_MODIFIED)
async def authorization_server(tenant: TenantDep, runtime: RuntimeDep, request: Request) -> Response:
    """RFC 8414 metadata (the same document; the path inserts the well-known part first)."""
    return cacheable(request, configuration(runtime, tenant.slug), DISCOVERY_MAX_AGE)


@router.get("/t/{tenant}/.well-known/jwks.json", responses=NOT_MODIFIED)
async def tenant_jwks(tenant: TenantDep, runtime: RuntimeDep, request: Request) -> Response:
    """The public keys that verify the tenant's tokens (none under HS256)."""
    return cacheable(request, runtime.keys.public_jwks, JWKS_MAX_AGE)


class UserInfo(BaseModel):
    sub: str
    email: str
    email_verified: bool
    name: str | None = None  # left out when the user has none (OIDC Core §5.3.2)


@router.get("/t/{tenant}/oauth/userinfo", responses=AUTHENTICATED, response_model_exclude_none=True)
async def userinfo(principal: HumanPrincipal, tenant: TenantDep, session: SessionDep) -> UserInfo:
    """OpenID Connect UserInfo: who the access token's user is."""
    assert principal.user_id is not None  # a human principal
    user = await users.get_user(session=session, tenant_id=tenant.id, user_id=principal.user_id)
    return UserInfo(
        sub=str(user.id), email=user.email, email_verified=user.email_verified, name=user.full_name
    )
