"""Second factor: TOTP enrolment and checks, recovery codes, and MFA challenges.

Every one-time thing is spent with a single conditional UPDATE, so of two parallel uses
exactly one wins: a TOTP step (RFC 6238 §5.2), a recovery code, an `mfa_token`.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.core.errors import Conflict, DomainError
from saas_app.mfa.models import MfaChallenge, RecoveryCode
from saas_app.runtime import Runtime
from saas_app.security import totp
from saas_app.security.opaque import digest
from saas_app.users.models import User

RECOVERY_CODE_COUNT = 10
# 31 unambiguous characters, 12 of them: ~59 bits per code.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_GROUPS = 3
CHALLENGE_TTL = {"login": timedelta(minutes=5), "enroll": timedelta(minutes=10)}
MAX_CHALLENGE_ATTEMPTS = 5
FAILURE_BUCKET = "mfa_failures"


class MfaAlreadyEnabled(Conflict):
    code = "mfa_already_enabled"
    title = "MFA is already enabled"


class MfaNotPending(Conflict):
    code = "mfa_not_pending"
    title = "No TOTP enrolment is pending; start one first"


class MfaNotEnabled(Conflict):
    code = "mfa_not_enabled"
    title = "MFA is not enabled"


class InvalidCode(DomainError):
    status = 400
    code = "invalid_code"
    title = "The code is wrong, expired or already used"
    keep_changes = True  # a failed attempt still counts


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    otpauth_uri: str
    qr_svg: str


def new_recovery_code() -> str:
    groups = ("".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(4)) for _ in range(RECOVERY_GROUPS))
    return "-".join(groups)


def normalise_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


async def start_enrolment(*, runtime: Runtime, user: User, issuer: str) -> Enrolment:
    """Stores a new (pending) TOTP secret, replacing any earlier pending one."""
    if user.mfa_enabled:
        raise MfaAlreadyEnabled()
    secret = totp.new_secret()
    user.totp_secret = runtime.box.encrypt(secret)
    user.totp_last_step = None
    uri = totp.provisioning_uri(secret, account=user.email, issuer=issuer)
    return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=totp.qr_svg(uri))


async def confirm_enrolment(
    *, session: AsyncSession, runtime: Runtime, user: User, code: str, origin: Origin
) -> list[str]:
    """Turns MFA on once a code of the pending secret checks; returns fresh recovery codes."""
    if user.totp_secret is None or user.mfa_enabled:
        raise MfaNotPending()
    if await check_factor(session=session, runtime=runtime, user=user, otp=code, now=origin.now) is None:
        raise InvalidCode()
    user.totp_confirmed_at = origin.now
    codes = await replace_recovery_codes(session=session, runtime=runtime, user=user, now=origin.now)
    await audit.record(
        session=session,
        tenant_id=user.tenant_id,
        action="mfa.enabled",
        origin=origin,
        target=Ref("user", user.id),
    )
    return codes


async def disable(
    *,
    session: AsyncSession,
    runtime: Runtime,
    user: User,
    otp: str | None,
    recovery_code: str | None,
    origin: Origin,
) -> None:
    """Turns MFA off, proven by a current TOTP code or an unused recovery code."""
    if not user.mfa_enabled:
        raise MfaNotEnabled()
    factor = await check_factor(
        session=session, runtime=runtime, user=user, otp=otp, recovery_code=recovery_code, now=origin.now
    )
    if factor is None:
        raise InvalidCode()
    await _clear(session, user)
    await audit.record(
        session=session,
        tenant_id=user.tenant_id,
        action="mfa.disabled",
        origin=origin,
        target=Ref("user", user.id),
        details={"proof": factor},
    )


async def regenerate_recovery_codes(
    *, session: AsyncSession, runtime: Runtime, user: User, otp: str, origin: Origin
) -> list[str]:
    """Replaces every recovery code (the old ones die), proven by a current TOTP code."""
    if not user.mfa_enabled:
        raise MfaNotEnabled()
    if await check_factor(session=session, runtime=runtime, user=user, otp=otp, now=origin.now) is None:
        raise InvalidCode()
    codes = await replace_recovery_codes(session=session, runtime=runtime, user=user, now=origin.now)
    await audit.record(
        session=session,
        tenant_id=user.tenant_id,
        action="mfa.recovery_codes_regenerated",
        origin=origin,
        target=Ref("user", user.id),
    )
    return codes


async def reset_by_admin(*, session: AsyncSession, user: User, origin: Origin) -> None:
    """Removes a user's second factor (lost device); they may enrol again."""
    await _clear(session, user)
    await audit.record(
        session=session,
        tenant_id=user.tenant_id,
        action="mfa.reset_by_admin",
        origin=origin,
        target=Ref("user", user.id),
    )


async def _clear(session: AsyncSession, user: User) -> None:
    user.totp_secret = None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


async def replace_recovery_codes(
    *, session: AsyncSession, runtime: Runtime, user: User, now: datetime
) -> list[str]:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(
        RecoveryCode(
            tenant_id=user.tenant_id,
            user_id=user.id,
            code_hash=runtime.box.keyed_digest(normalise_recovery_code(code)),
            created_at=now,
        )
        for code in codes
    )
    await session.flush()
    return codes


async def check_factor(
    *,
    session: AsyncSession,
    runtime: Runtime,
    user: User,
    now: datetime,
    otp: str | None = None,
    recovery_code: str | None = None,
) -> str | None:
    """Spends a TOTP step or a recovery code; returns "otp"/"recovery", or None if wrong.

    Wrong codes are throttled per user (MFA_FAILURE_LIMIT): the attempt takes its slot
    before the check, and a success clears the bucket.
    """
    limit = runtime.settings.MFA_FAILURE_LIMIT
    await runtime.limiter.enforce(FAILURE_BUCKET, limit, str(user.tenant_id), str(user.id))
    factor = None
    if otp is not None and await _spend_totp_step(session, runtime, user, otp, now):
        factor = "otp"
    elif recovery_code is not None and await _spend_recovery_code(session, runtime, user, recovery_code, now):
        factor = "recovery"
    if factor is not None:
        await runtime.limiter.clear(FAILURE_BUCKET, limit, str(user.tenant_id), str(user.id))
    return factor


async def _spend_totp_step(
    session: AsyncSession, runtime: Runtime, user: User, code: str, now: datetime
) -> bool:
    if user.totp_secret is None:
        return False
    step = totp.matching_step(runtime.box.decrypt(user.totp_secret), code, now)
    if step is None:
        return False
    # RFC 6238 §5.2: never accept a step at or before the last one accepted.
    stmt = (
        update(User)
        .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if getattr(await session.execute(stmt), "rowcount", 0) != 1:
        return False
    user.totp_last_step = step
    return True


async def _spend_recovery_code(
    session: AsyncSession, runtime: Runtime, user: User, code: str, now: datetime
) -> bool:
    stmt = (
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash.in_(runtime.box.keyed_digests(normalise_recovery_code(code))),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return getattr(await session.execute(stmt), "rowcount", 0) == 1


async def open_challenge(
    *,
    session: AsyncSession,
    user: User,
    purpose: str,
    amr: tuple[str, ...],
    scope: frozenset[str] | None,
    user_agent: str | None,
    now: datetime,
) -> str:
    """Records what the password step proved and returns the `mfa_token` for the next step."""
    token = "mfa_" + secrets.token_urlsafe(32)
    session.add(
        MfaChallenge(
            token_hash=digest(token),
            tenant_id=user.tenant_id,
            user_id=user.id,
            purpose=purpose,
            amr=" ".join(amr),
            scope=" ".join(sorted(scope)) if scope is not None else None,
            user_agent=(user_agent or "")[:300] or None,
            attempts=0,
            created_at=now,
            expires_at=now + CHALLENGE_TTL[purpose],
        )
    )
    await session.flush()
    return token


def _live(tenant_id: uuid.UUID, token: str, purpose: str, now: datetime) -> list[ColumnElement[bool]]:
    return [
        MfaChallenge.token_hash == digest(token),
        MfaChallenge.tenant_id == tenant_id,
        MfaChallenge.purpose == purpose,
        MfaChallenge.used_at.is_(None),
        MfaChallenge.expires_at > now,
    ]


async def spend_attempt(
    *, session: AsyncSession, tenant_id: uuid.UUID, token: str, now: datetime
) -> MfaChallenge | None:
    """Counts one attempt against a live login challenge; None once it has had five."""
    stmt = (
        update(MfaChallenge)
        .where(*_live(tenant_id, token, "login", now), MfaChallenge.attempts < MAX_CHALLENGE_ATTEMPTS)
        .values(attempts=MfaChallenge.attempts + 1)
        .returning(MfaChallenge)
        .execution_options(synchronize_session=False)
    )
    challenge: MfaChallenge | None = (await session.execute(stmt)).scalar_one_or_none()
    return challenge


async def find_challenge(
    *, session: AsyncSession, tenant_id: uuid.UUID, token: str, purpose: str, now: datetime
) -> MfaChallenge | None:
    """Returns a live challenge of a still active user, without spending it."""
    stmt = (
        select(MfaChallenge)
        .join(User, User.id == MfaChallenge.user_id)
        .where(*_live(tenant_id, token, purpose, now), User.is_active.is_(True))
    )
    return await session.scalar(stmt)


async def close_challenge(*, session: AsyncSession, token: str, now: datetime) -> bool:
    """Marks a challenge used; False if a parallel request already did."""
    stmt = (
        update(MfaChallenge)
        .where(MfaChallenge.token_hash == digest(token), MfaChallenge.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return getattr(await session.execute(stmt), "rowcount", 0) == 1
