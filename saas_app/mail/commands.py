"""`python -m saas_app mail list|show ID|worker`: the outbox from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid

from sqlalchemy import inspect, select
from sqlalchemy.exc import OperationalError

from saas_app.core.clock import SystemClock
from saas_app.core.config import Settings
from saas_app.core.db import create_engine
from saas_app.core.errors import DomainError, NotFound
from saas_app.mail.models import MailMessage
from saas_app.mail.outbox import as_email
from saas_app.mail.sender import MailSender
from saas_app.runtime import Runtime, close_runtime

LISTED = 50


class MessageNotFound(NotFound):
    code = "message_not_found"
    title = "No such message in the outbox"


async def outbox_exists(settings: Settings) -> bool:
    """Whether the database has the outbox's table (it has been migrated this far)."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: inspect(sync).has_table(MailMessage.__tablename__))
    except (OperationalError, OSError):
        return False
    finally:
        await engine.dispose()


async def list_messages(settings: Settings) -> None:
    """The newest messages: id, when written, state, recipient, subject."""
    runtime = Runtime.build(settings, SystemClock())
    try:
        async with runtime.session_factory() as session:
            rows = await session.scalars(
                select(MailMessage).order_by(MailMessage.created_at.desc(), MailMessage.id).limit(LISTED)
            )
            for m in rows:
                shown = f"{m.state:<7}  {shown_safely(m.recipient)}  {shown_safely(m.subject)}"
                print(f"{m.id}  {m.created_at:%Y-%m-%d %H:%M:%S}  {shown}")
    finally:
        await close_runtime(runtime)


async def show_message(settings: Settings, message_id: str) -> None:
    """The message as it is (or would be) sent: headers, then the text part."""
    try:
        wanted = uuid.UUID(message_id)
    except ValueError:
        raise MessageNotFound("Not a message id.") from None
    runtime = Runtime.build(settings, SystemClock())
    try:
        async with runtime.session_factory() as session:
            message = await session.get(MailMessage, wanted)
            if message is None:
                raise MessageNotFound()
        try:
            email = as_email(message, settings.MAIL_FROM, message.created_at)
        except ValueError:
            raise MalformedMessage() from None
        for name in ("From", "To", "Subject", "Date"):
            print(f"{name}: {shown_safely(str(email[name]))}")
        print(f"State: {message.state} ({message.attempts} attempt(s){_why(message)})\n")
        text = email.get_body(("plain",))
        print(shown_safely(text.get_content(), keep="\n") if text is not None else "")
    finally:
        await close_runtime(runtime)


class MalformedMessage(DomainError):
    status = 422
    code = "malformed_message"
    title = "The message has a header no server would take (it fails when sent)"


def shown_safely(text: str, keep: str = "") -> str:
    """`text` with control characters spelled out: a subject cannot move the cursor,
    recolour the terminal or start a line of its own."""
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def _why(message: MailMessage) -> str:
    return f", last: {message.last_error}" if message.last_error else ""


async def worker(settings: Settings) -> None:
    """Sends the outbox until SIGTERM or SIGINT (for MAIL_SENDER_IN_APP=false deployments)."""
    if settings.SMTP_URL is None:
        raise NotFound("SMTP_URL is not set: there is nowhere to send to.")
    runtime = Runtime.build(settings, SystemClock())
    sender = MailSender(runtime.session_factory, runtime.write_session_factory, settings, runtime.clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sender.start()
    try:
        await stop.wait()
    finally:
        await sender.close()
        with contextlib.suppress(Exception):
            await close_runtime(runtime)
