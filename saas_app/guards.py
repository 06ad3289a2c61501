"""Where authentication, tenant match and permissions meet: the dependencies routes use.

`CurrentPrincipal` answers "who is calling?" (401 otherwise); `require(...)` answers "may
they?" (403 otherwise). Permissions are read from the user's *current* roles on every
request and intersected with the token's `scope`, so a demotion applies at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from starlette.requests import Request

from saas_app.api_keys import service as api_keys
from saas_app.audit.service import Origin, Ref
from saas_app.auth.sessions import SessionGrant, load_grant
from saas_app.core.errors import DomainError, Forbidden, PermissionDenied, Unauthorized
from saas_app.core.readcache import read_through
from saas_app.mfa import service as mfa
from saas_app.rbac.permissions import CATALOGUE
from saas_app.runtime import ClientIPDep, NowDep, Runtime, SessionDep, auth_memo, ip_of, now_of, runtime_of
from saas_app.security.tokens import AccessClaims, InvalidToken
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.deps import TenantDep, tenant_info


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling (a user or an API key) and what they may do in this tenant.

    Like starlette's split of BaseUser from AuthCredentials: identity here, the
    permissions beside it, already intersected with the credential's scope.
    """

    tenant_id: uuid.UUID
    tenant_slug: str
    user_id: uuid.UUID | None
    permissions: frozenset[str]
    amr: tuple[str, ...]
    session_id: uuid.UUID | None = None
    auth_time: int | None = None  # when the user last proved who they are (epoch seconds)
    enrolment_token: str | None = None  # set only for the enrol-only `mfa_token`
    api_key_id: uuid.UUID | None = None

    @property
    def ref(self) -> Ref:
        if self.api_key_id is not None:
            return Ref("api_key", self.api_key_id)
        return Ref("user", self.user_id)

    @property
    def id(self) -> uuid.UUID | None:
        """The acting user's or key's id (for `created_by` fields)."""
        return self.api_key_id or self.user_id


class AmbiguousCredentials(DomainError):
    status = 400
    code = "ambiguous_credentials"
    title = "Send either a bearer token or an API key, not both"


class HumanOnly(Forbidden):
    code = "human_only"
    title = "This route is for signed-in users, not API keys"


def bearer_token(request: Request) -> str | None:
    """Returns the RFC 6750 §2.1 bearer token, "" for a malformed header, None if absent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


PRINCIPAL = "saas_app.principal"  # where a request keeps its authenticated principal


@dataclass(frozen=True, slots=True)
class Accepts:
    """What a guard lets in, for the per-operation `security` of the OpenAPI document
    (core/openapi.py reads it from the guard, so the document cannot drift from the code)."""

    api_key: bool  # False: signed-in users only (an API key gets 403 `human_only`)
    scopes: tuple[str, ...] = ()  # permissions the caller must hold (OAuth2 scopes)


ACCEPTS = "openapi_accepts"  # the attribute a guard carries its Accepts in
G = TypeVar("G", bound=Callable[..., Any])


def accepts(guard: G, *, api_key: bool, scopes: tuple[str, ...] = ()) -> G:
    setattr(guard, ACCEPTS, Accepts(api_key, scopes))
    return guard


async def current_principal(request: Request, tenant: str) -> Principal:
    """Authenticates the bearer token (or the X-API-Key) against the path's tenant, once
    per request however many guards ask.

    The guards take nothing but the request and the path's slug and call this directly:
    every sub-dependency costs FastAPI a resolution per request, a large share of a
    cached answer. The database is read only when the read cache misses, in a short read
    session of its own, not the route's unit of work.
    """
    known: Principal | None = request.scope.get(PRINCIPAL)
    if known is None:
        known = request.scope[PRINCIPAL] = await _authenticate(request, tenant)
    return known


async def _authenticate(request: Request, tenant: str) -> Principal:
    runtime = runtime_of(request)
    memo = auth_memo(request)  # one change-signal read for the tenant and the credential
    info = await tenant_info(runtime, tenant, memo)
    now = now_of(request)
    token = bearer_token(request)
    api_key = request.headers.get("x-api-key")
    if api_key is not None:
        if token is not None:
            raise AmbiguousCredentials()
        return await key_principal(request, info, runtime, now, api_key, memo)
    if token is None:
        raise Unauthorized("Authentication required.", presented=False)
    return await token_principal(runtime, info, token, now, memo)


async def token_principal(
    runtime: Runtime,
    tenant: TenantInfo,
    token: str,
    now: datetime,
    memo: MutableMapping[str, Any] | None = None,
) -> Principal:
    """The principal of an access token of this tenant whose session is still live."""
    try:
        claims = runtime.access_tokens.verify(token, tenant_slug=tenant.slug, now=now)
    except InvalidToken:
        raise Unauthorized() from None
    return await claims_principal(runtime, tenant, claims, now, memo)


async def claims_principal(
    runtime: Runtime,
    tenant: TenantInfo,
    claims: AccessClaims,
    now: datetime,
    memo: MutableMapping[str, Any] | None = None,
) -> Principal:
    """The principal of a verified access token's claims, if its session is still live."""
    if claims.tid != tenant.id:
        raise Unauthorized()
    grant = await read_through(
        runtime.cache,
        runtime.reader,
        ("session", claims.sid),
        SessionGrant,
        lambda fetch: load_grant(fetch, tenant.id, claims.sid),
        SessionGrant.depends_on,
        memo,
    )
    if grant is None or grant.user_id != claims.sub or not grant.is_live(runtime.lifetimes, now):
        raise Unauthorized()
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_id=claims.sub,
        permissions=grant.held & claims.scope,
        amr=claims.amr,
        session_id=claims.sid,
        auth_time=claims.auth_time,
    )


async def key_principal(
    request: Request,
    tenant: TenantInfo,
    runtime: Runtime,
    now: datetime,
    presented: str,
    memo: MutableMapping[str, Any] | None = None,
) -> Principal:
    """An API key of this tenant, live, with its scopes clipped to its creator's rights."""
    auth, dead = await api_keys.authenticate(
        reader=runtime.reader,
        box=runtime.box,
        cache=runtime.cache,
        tenant_id=tenant.id,
        presented=presented,
        now=now,
        memo=memo,
    )
    if auth is None:
        if dead is not None:
            runtime.key_usage.rejected(dead, ip_of(request), now)
        raise Unauthorized()
    # The key's own limit and each limited ancestor's: a child spends its parent's budget
    # too, so minting children cannot multiply a limit (issue 13, item 5).
    for key_id, limit in auth.buckets:
        await runtime.limiter.enforce("api_key", limit, key_id)
    runtime.key_usage.used(auth, now)
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_id=None,
        permissions=auth.permissions or frozenset(),
        amr=("api_key",),
        api_key_id=auth.id,
    )


accepts(current_principal, api_key=True)
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def ensure_human(principal: Principal) -> Principal:
    """A signed-in user: API keys are refused (403) on personal routes."""
    if principal.user_id is None:
        raise HumanOnly()
    return principal


async def human_principal(request: Request, tenant: str) -> Principal:
    return ensure_human(await current_principal(request, tenant))


accepts(human_principal, api_key=False)
HumanPrincipal = Annotated[Principal, Depends(human_principal)]


def require(*permissions: str) -> Callable[..., Awaitable[Principal]]:
    """A guard: the caller must hold every one of `permissions` (403 otherwise)."""
    unknown = set(permissions) - CATALOGUE
    if unknown:
        raise ValueError(f"unknown permissions: {sorted(unknown)}")

    async def guard(request: Request, tenant: str) -> Principal:
        principal = await current_principal(request, tenant)
        missing = [p for p in permissions if p not in principal.permissions]
        if missing:
            raise PermissionDenied(missing)
        return principal

    return accepts(guard, api_key=True, scopes=permissions)


SECOND_FACTORS = frozenset({"otp", "recovery"})


class SecondFactorRequired(Forbidden):
    code = "second_factor_required"
    title = "Sign in with a second factor to do this"


def ensure_second_factor(principal: Principal) -> None:
    """Raises 403 unless the caller's session was authenticated with a second factor."""
    if not SECOND_FACTORS & set(principal.amr):
        raise SecondFactorRequired()


def require_mfa() -> Callable[..., Awaitable[Principal]]:
    """A guard: the caller's session must have passed a second factor (`amr` otp/recovery)."""

    async def guard(request: Request, tenant: str) -> Principal:
        principal = await current_principal(request, tenant)
        ensure_second_factor(principal)
        return principal

    # An API key never passes a second factor (its `amr` is "api_key").
    return accepts(guard, api_key=False)


# How recent a login must be for changes to the ways in (TOTP enrolment, linking GitHub).
REAUTHENTICATION_WINDOW = timedelta(minutes=10)


class ReauthenticationRequired(Forbidden):
    code = "reauthentication_required"
    title = "Confirm your password (or log in again) to do this"


def ensure_recent_login(principal: Principal, now: datetime, detail: str | None = None) -> None:
    """Raises 403 unless the caller logged in within REAUTHENTICATION_WINDOW.

    Measured from the token's `auth_time` (the login, kept across refreshes), so a refresh
    does not make a login fresh: a stolen token cannot change how its victim signs in
    (ASVS 5.0 V7.5.1).
    """
    fresh_after = (now - REAUTHENTICATION_WINDOW).timestamp()
    if principal.auth_time is None or principal.auth_time < fresh_after:
        raise ReauthenticationRequired(detail)


def require_recent_login() -> Callable[..., Awaitable[Principal]]:
    """A guard: a signed-in user (not an API key) whose login is at most 10 minutes old."""

    async def guard(request: Request, tenant: str) -> Principal:
        principal = ensure_human(await current_principal(request, tenant))
        ensure_recent_login(
            principal, now_of(request), "Log in again: this needs a login of the last 10 minutes."
        )
        return principal

    return accepts(guard, api_key=False)


async def enrolling_principal(request: Request, tenant: TenantDep, session: SessionDep) -> Principal:
    """A signed-in user, or one holding the enrolment-only `mfa_token` of a tenant that
    requires MFA (accepted here and nowhere else)."""
    token = bearer_token(request)
    if not token or not token.startswith("mfa_"):
        return ensure_human(await current_principal(request, tenant.slug))
    challenge = await mfa.find_challenge(
        session=session, tenant_id=tenant.id, token=token, purpose="enroll", now=now_of(request)
    )
    if challenge is None:
        raise Unauthorized()
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_id=challenge.user_id,
        permissions=frozenset(),
        amr=tuple(challenge.amr.split()),
        auth_time=int(challenge.created_at.timestamp()),
        enrolment_token=token,
    )


accepts(enrolling_principal, api_key=False)
EnrollingPrincipal = Annotated[Principal, Depends(enrolling_principal)]


async def origin(principal: CurrentPrincipal, ip: ClientIPDep, now: NowDep) -> Origin:
    """The audit origin of an authenticated request."""
    return Origin(actor=principal.ref, ip=ip, now=now)


async def anonymous_origin(ip: ClientIPDep, now: NowDep) -> Origin:
    """The audit origin of an unauthenticated request (sign-up, login)."""
    return Origin(actor=None, ip=ip, now=now)


async def enrolling_origin(principal: EnrollingPrincipal, ip: ClientIPDep, now: NowDep) -> Origin:
    """The audit origin of an enrolment request (access token or enrol-only token)."""
    return Origin(actor=principal.ref, ip=ip, now=now)


OriginDep = Annotated[Origin, Depends(origin)]
EnrollingOriginDep = Annotated[Origin, Depends(enrolling_origin)]
AnonymousOriginDep = Annotated[Origin, Depends(anonymous_origin)]
