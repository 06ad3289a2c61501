"""GitHub sign-in: the bound `state`, and sign-in / link / create by API.md's rules.

No server session holds the flow. The browser keeps the PKCE verifier in an HttpOnly
cookie; `state` is a signed value of its own kind carrying the tenant, the mode and the
verifier's S256 challenge. A callback is accepted only when the state verifies, names the
path's tenant, matches the cookie, and has not been seen before (RFC 9700 §4.7, §2.1.1).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.core.errors import Conflict, DomainError, Forbidden, NotFound
from saas_app.github.client import GitHubClient, GitHubProfile
from saas_app.github.models import SpentState
from saas_app.rbac.permissions import MEMBER
from saas_app.runtime import Runtime
from saas_app.security.opaque import same
from saas_app.security.tokens import InvalidToken
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.service import SignupClosed
from saas_app.users import service as users
from saas_app.users.models import Identity, User

PROVIDER = "github"
STATE_KIND = "github-state"
STATE_TTL_SECONDS = 600


class GitHubNotConfigured(NotFound):
    code = "github_not_configured"
    title = "GitHub sign-in is not configured on this server"


class InvalidState(DomainError):
    status = 400
    code = "invalid_state"
    title = "The sign-in state is missing, expired, replayed or not this browser's"


class RedirectNotAllowed(DomainError):
    status = 400
    code = "redirect_not_allowed"
    title = "redirect_uri is not in OAUTH_ALLOWED_REDIRECTS"


class GitHubDenied(DomainError):
    status = 400
    code = "github_denied"
    title = "The GitHub sign-in was declined"


class EmailUnverified(DomainError):
    status = 400
    code = "github_email_unverified"
    title = "GitHub reports no verified primary e-mail for this account"


class AccountExists(Conflict):
    code = "account_exists"
    title = "An account with this e-mail exists; sign in and link GitHub from it"


HAS_ANOTHER_IDENTITY = (
    "An account with this e-mail already has a GitHub identity; sign in and manage it from the account."
)


class IdentityInUse(Conflict):
    code = "identity_in_use"
    title = "This GitHub account is linked to another user"


class IdentityAlreadyLinked(Conflict):
    code = "identity_already_linked"
    title = "Another GitHub account is already linked; unlink it first"


class IdentityNotLinked(NotFound):
    code = "identity_not_found"
    title = "No GitHub account is linked"


class LastSignInMethod(Conflict):
    code = "last_sign_in_method"
    title = "Unlinking would leave no way to sign in; set a password first"


class AccountDisabled(Forbidden):
    code = "account_disabled"
    title = "This account is deactivated"


@dataclass(frozen=True, slots=True)
class FlowStart:
    authorize_url: str
    verifier: str  # goes into the HttpOnly cookie


@dataclass(frozen=True, slots=True)
class FlowState:
    jti: str
    expires_at: datetime
    mode: str  # "login" | "link"
    user_id: uuid.UUID | None
    redirect_uri: str | None


def callback_url(runtime: Runtime, tenant_slug: str) -> str:
    return f"{runtime.settings.PUBLIC_URL}/t/{tenant_slug}/auth/github/callback"


def s256(verifier: str) -> str:
    """RFC 7636 §4.2 code_challenge for S256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def client(runtime: Runtime) -> GitHubClient:
    if not runtime.settings.github_enabled:
        raise GitHubNotConfigured()
    return GitHubClient(runtime.http, runtime.settings)


def check_redirect(runtime: Runtime, redirect_uri: str | None) -> None:
    # Exact match only: prefix or pattern matching is how open redirectors happen.
    if redirect_uri is not None and redirect_uri not in runtime.settings.OAUTH_ALLOWED_REDIRECTS:
        raise RedirectNotAllowed()


def start_flow(
    *,
    runtime: Runtime,
    tenant: TenantInfo,
    mode: str,
    redirect_uri: str | None,
    user_id: uuid.UUID | None = None,
    now: datetime,
) -> FlowStart:
    """Returns GitHub's authorize URL (with state and PKCE) and the verifier for the cookie."""
    github = client(runtime)
    check_redirect(runtime, redirect_uri)
    verifier = secrets.token_urlsafe(48)  # 64 characters, RFC 7636 §4.1
    challenge = s256(verifier)
    claims = {
        "tid": str(tenant.id),
        "mode": mode,
        "uid": str(user_id) if user_id else None,
        "ruri": redirect_uri,
        "cc": challenge,
    }
    state = runtime.signed.issue(STATE_KIND, claims, ttl_seconds=STATE_TTL_SECONDS, now=now)
    url = github.authorize_url(
        redirect_uri=callback_url(runtime, tenant.slug), state=state, code_challenge=challenge
    )
    return FlowStart(authorize_url=url, verifier=verifier)


def read_state(
    *, runtime: Runtime, tenant: TenantInfo, state: str | None, verifier: str | None, now: datetime
) -> FlowState:
    """Checks the callback's state against the tenant and this browser's cookie."""
    if not state or not verifier:
        raise InvalidState()
    try:
        claims = runtime.signed.verify(STATE_KIND, state, now=now)
        if claims.get("tid") != str(tenant.id) or not same(s256(verifier), str(claims.get("cc"))):
            raise InvalidState()
        uid = claims.get("uid")
        return FlowState(
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            mode="link" if claims.get("mode") == "link" else "login",
            user_id=uuid.UUID(uid) if uid else None,
            redirect_uri=claims.get("ruri"),
        )
    except (InvalidToken, ValueError, UnicodeError) as exc:
        raise InvalidState() from exc


async def spend_state(*, session: AsyncSession, tenant: TenantInfo, flow: FlowState) -> None:
    """Records the state as used; a second callback with it is a replay."""
    session.add(SpentState(jti=flow.jti, tenant_id=tenant.id, expires_at=flow.expires_at))
    try:
        await session.flush()
    except IntegrityError as exc:
        raise InvalidState() from exc


async def _identity_owner(session: AsyncSession, tenant_id: uuid.UUID, profile: GitHubProfile) -> User | None:
    stmt = (
        select(User)
        .join(Identity, Identity.user_id == User.id)
        .where(
            Identity.tenant_id == tenant_id,
            Identity.provider == PROVIDER,
            Identity.subject == str(profile.id),
        )
    )
    return await session.scalar(stmt)


async def _link(
    session: AsyncSession, user: User, profile: GitHubProfile, origin: Origin, *, how: str
) -> None:
    session.add(
        Identity(
            tenant_id=user.tenant_id,
            user_id=user.id,
            provider=PROVIDER,
            subject=str(profile.id),
            login=profile.login[:100],
            created_at=origin.now,
        )
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise IdentityInUse() from exc
    await audit.record(
        session=session,
        tenant_id=user.tenant_id,
        action="identity.linked",
        origin=origin,
        target=Ref("user", user.id),
        details={"provider": PROVIDER, "subject": str(profile.id), "how": how},
    )


async def sign_in(
    *, session: AsyncSession, runtime: Runtime, tenant: TenantInfo, profile: GitHubProfile, origin: Origin
) -> User:
    """Finds, links or creates the user for a GitHub account (API.md rules 1-4)."""
    user = await _identity_owner(session, tenant.id, profile)
    if user is None:
        user = await _link_or_create(session, runtime, tenant, profile, origin)
    if not user.is_active:
        raise AccountDisabled()
    return user


def _may_link_by_email(user: User) -> bool:
    """Rule 2 needs both sides verified. GitHub's: anyone can add an unverified address to
    a GitHub account. Ours: anyone can register the victim's address with a password of
    their own and wait for the victim's GitHub sign-in to land in that account
    (pre-account-takeover; ASVS 5.0 V6.8.1, "Pre-hijacking", Sudhodanan & Paverd 2022)."""
    return user.email_verified_at is not None


async def _link_or_create(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, profile: GitHubProfile, origin: Origin
) -> User:
    verified = profile.verified_primary_email
    for email in {e for e in (verified, profile.primary_email) if e}:
        existing = await users.find_by_email(session=session, tenant_id=tenant.id, email=email)
        if existing is None:
            continue
        if email == verified and runtime.settings.GITHUB_LINK_BY_EMAIL and _may_link_by_email(existing):
            if await _linked_identity(session, existing) is not None:
                # One GitHub identity per user: rule 2 cannot apply, and this account is
                # linked to nobody, so `identity_in_use` would be wrong (API.md: 409
                # account_exists when rule 2 does not apply).
                raise AccountExists(HAS_ANOTHER_IDENTITY)
            await _link(session, existing, profile, origin, how="verified_email")
            return existing
        raise AccountExists()
    if not tenant.allow_signup:
        raise SignupClosed("This tenant does not allow self sign-up.")
    if verified is None:
        raise EmailUnverified()
    user, _ = await users.create_user(
        session=session,
        tenant_id=tenant.id,
        email=verified,
        password_hash=None,
        full_name=profile.name,
        role_names=[MEMBER],
        origin=origin,
        email_verified=True,  # GitHub's verified primary address
    )
    await _link(session, user, profile, origin, how="sign_up")
    return user


async def link(
    *, session: AsyncSession, tenant: TenantInfo, user_id: uuid.UUID, profile: GitHubProfile, origin: Origin
) -> User:
    """Links a GitHub account to the user who started the flow."""
    user = await users.get_user(session=session, tenant_id=tenant.id, user_id=user_id)
    if not user.is_active:  # deactivated while the flow was at GitHub
        raise AccountDisabled()
    owner = await _identity_owner(session, tenant.id, profile)
    if owner is not None and owner.id != user.id:
        raise IdentityInUse()
    if owner is None:
        if await _linked_identity(session, user) is not None:
            raise IdentityAlreadyLinked()
        await _link(session, user, profile, origin, how="account")
    return user


async def _linked_identity(session: AsyncSession, user: User) -> Identity | None:
    stmt = select(Identity).where(Identity.user_id == user.id, Identity.provider == PROVIDER)
    linked: Identity | None = await session.scalar(stmt)
    return linked


async def unlink(*, session: AsyncSession, user: User, origin: Origin) -> None:
    """Removes the user's GitHub identity, unless it is their only way to sign in."""
    identity = await _linked_identity(session, user)
    if identity is None:
        raise IdentityNotLinked()
    if user.password_hash is None:
        raise LastSignInMethod()
    await session.delete(identity)
    await audit.record(
        session=session,
        tenant_id=user.tenant_id,
        action="identity.unlinked",
        origin=origin,
        target=Ref("user", user.id),
        details={"provider": PROVIDER, "subject": identity.subject},
    )
