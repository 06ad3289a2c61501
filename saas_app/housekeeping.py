"""Deletes one-time records nobody can use any more (run `python -m saas_app purge-expired`
from cron, e.g. hourly). Nothing here changes what any request can do."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Delete, Update, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth.models import AccountToken, LoginCode, RefreshToken, Session
from saas_app.github.models import SpentState
from saas_app.idempotency.models import IdempotentAnswer
from saas_app.invitations.models import Invitation
from saas_app.mail.models import FAILED, SENT, MailMessage
from saas_app.mfa.models import MfaChallenge

# Ended sessions stay listed this long for investigations before their rows go; so do
# delivered and failed mail (`python -m saas_app mail list` shows them until then).
ENDED_SESSION_RETENTION = timedelta(days=30)
MAIL_RETENTION = timedelta(days=30)
MAX_REFRESH_GRACE = timedelta(seconds=300)  # the largest REFRESH_REUSE_GRACE_SECONDS allowed


def purges(now: datetime, idle: timedelta) -> dict[str, Delete | Update]:
    """The DELETE of each table (and the one UPDATE), keyed by what it clears."""
    horizon = now - ENDED_SESSION_RETENTION
    ended = or_(
        Session.revoked_at < horizon, Session.expires_at < horizon, Session.last_used_at < horizon - idle
    )
    return {
        "spent_state": delete(SpentState).where(SpentState.expires_at < now),
        "login_code": delete(LoginCode).where(LoginCode.expires_at < now),
        "mfa_challenge": delete(MfaChallenge).where(MfaChallenge.expires_at < now),
        "idempotent_answer": delete(IdempotentAnswer).where(IdempotentAnswer.expires_at < now),
        "account_token": delete(AccountToken).where(AccountToken.expires_at < now),
        # Listed (`GET /invitations`) for as long as ended sessions are, then gone.
        "invitation": delete(Invitation).where(
            or_(
                Invitation.accepted_at < horizon,
                Invitation.revoked_at < horizon,
                Invitation.expires_at < horizon,
            )
        ),
        # Never one still to send: the sender fails those itself after MAIL_MAX_AGE_HOURS.
        "mail_message": delete(MailMessage).where(
            MailMessage.state.in_((SENT, FAILED)), MailMessage.created_at < now - MAIL_RETENTION
        ),
        # A retired refresh token keeps its successor (sealed) only for the grace of
        # REFRESH_REUSE_GRACE_SECONDS (at most 300 s): past it, the live token it names goes.
        "refresh_successor": update(RefreshToken)
        .where(RefreshToken.successor.is_not(None), RefreshToken.used_at < now - MAX_REFRESH_GRACE)
        .values(successor=None),
        "refresh_token": delete(RefreshToken).where(
            RefreshToken.session_id.in_(select(Session.id).where(ended))
        ),
        "session": delete(Session).where(ended),
    }


async def purge_expired(*, session: AsyncSession, now: datetime, idle: timedelta) -> dict[str, int]:
    """Deletes expired one-time records and long-ended sessions; returns rows per table."""
    counts = {}
    for table, stmt in purges(now, idle).items():
        result = await session.execute(stmt.execution_options(synchronize_session=False))
        counts[table] = int(getattr(result, "rowcount", 0))
    return counts
