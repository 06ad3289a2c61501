"""Reading the mail outbox in tests: the messages written for an address, and the token in
a message's link."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from httpx import AsyncClient
from sqlalchemy import select

from saas_app.mail.models import MailMessage
from saas_app.runtime import Runtime

PAGES = ("reset-password", "verify-email", "accept-invite")


def runtime_of(client: AsyncClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def outbox_to(client: AsyncClient, email: str, purpose: str) -> list[MailMessage]:
    """The messages of `purpose` written for `email`, oldest first."""
    async with runtime_of(client).session_factory() as session:
        found = await session.scalars(
            select(MailMessage)
            .where(MailMessage.recipient == email, MailMessage.purpose == purpose)
            .order_by(MailMessage.created_at)
        )
        return list(found.all())


def token_in(text: str, page: str) -> str:
    """The token of the one link to `page` (a tenant page, see PAGES) in a message."""
    assert page in PAGES
    (link,) = re.findall(rf"https?://\S+/{page}\?token=\S+", text)
    return parse_qs(urlsplit(link).query)["token"][0]


async def latest_token(client: AsyncClient, email: str, purpose: str, page: str) -> str:
    return token_in((await outbox_to(client, email, purpose))[-1].text_body, page)
