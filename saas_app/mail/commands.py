"""`python -m saas_app mail list|show ID|worker`: the outbox from a shell."""

from __future__ import annotations

import asyncio
import signal
import uuid
from email.utils import format_datetime, formataddr

from sqlalchemy import inspect, select
from sqlalchemy.exc import OperationalError

from saas_app.core.errors import DomainError, NotFound
from saas_app.mail.models import FAILED, SENT, MailMessage
from saas_app.mail.outbox import as_email
from saas_app.mail.sender import MailSender
from saas_app.runtime import Runtime

LISTED = 50


class MessageNotFound(NotFound):
    code = "message_not_found"
    title = "No such message in the outbox"


async def outbox_exists(runtime: Runtime) -> bool:
    """Whether the database has the outbox's table (it has been migrated this far)."""
    try:
        async with runtime.engine.connect() as connection:
            return await connection.run_sync(lambda sync: inspect(sync).has_table(MailMessage.__tablename__))
    except (OperationalError, OSError):
        return False


async def list_messages(runtime: Runtime) -> None:
    """The newest messages: id, when written, state, recipient, subject."""
    async with runtime.session_factory() as session:
        rows = await session.scalars(
            select(MailMessage).order_by(MailMessage.created_at.desc(), MailMessage.id).limit(LISTED)
        )
        for m in rows:
            shown = f"{m.state:<7}  {shown_safely(m.recipient)}  {shown_safely(m.subject)}"
            print(f"{m.id}  {m.created_at:%Y-%m-%d %H:%M:%S}  {shown}")


async def show_message(runtime: Runtime, message_id: str) -> None:
    """The message as it is (or would be) sent: headers, then the text part."""
    try:
        wanted = uuid.UUID(message_id)
    except ValueError:
        raise MessageNotFound("Not a message id.") from None
    async with runtime.session_factory() as session:
        message = await session.get(MailMessage, wanted)
        if message is None:
            raise MessageNotFound()
    try:
        as_email(message, runtime.settings.MAIL_FROM, message.created_at)  # what the sender would do
    except ValueError:
        raise MalformedMessage() from None
    headers = {
        "From": formataddr((message.sender_name or "", runtime.settings.MAIL_FROM)),
        "To": message.recipient,
        "Subject": message.subject,
        "Date": format_datetime(message.created_at),
    }
    for name, value in headers.items():
        print(f"{name}: {shown_safely(value)}")
    print(f"State: {message.state} ({message.attempts} attempt(s){_why(message)})\n")
    if message.state in (SENT, FAILED):
        print("(The body is removed once a message is sent or has failed: it held a one-time link.)")
    else:
        print(shown_safely(message.text_body, keep="\n"))


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


async def worker(runtime: Runtime) -> None:
    """Sends the outbox until SIGTERM or SIGINT (for MAIL_SENDER_IN_APP=false deployments)."""
    if runtime.settings.SMTP_URL is None:
        raise NotFound("SMTP_URL is not set: there is nowhere to send to.")
    sender = MailSender.for_runtime(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sender.start()
    try:
        await stop.wait()
    finally:
        await sender.close()
