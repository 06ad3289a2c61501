"""The mail outbox and its sender (saas_app/mail/), against a real SMTP server: aiosmtpd on
a loopback port, with and without STARTTLS, implicit TLS and AUTH. Messages are counted
and parsed at the server with the standard `email` package."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import os
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from httpx import AsyncClient
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.housekeeping import purge_expired
from saas_app.mail.models import FAILED, PENDING, SENT, MailMessage
from saas_app.mail.outbox import enqueue
from saas_app.mail.sender import BATCH, MAX_BACKOFF_SECONDS, MailSender, backoff
from saas_app.mail.smtp import SmtpServer
from saas_app.runtime import Runtime
from tests.conftest import REDIS_URL, ROOT, TEST_JWT_SECRET
from tests.factories import create_tenant

PYTHON = str(ROOT / ".venv" / "bin" / "python")


class Mailbox:
    """aiosmtpd's handler: keeps what it accepts; `reply` makes it answer DATA otherwise."""

    def __init__(self, on_message: Callable[[], None] | None = None) -> None:
        self.received: list[EmailMessage] = []
        self.reply: str | None = None
        self.on_message = on_message  # called (in the server's thread) for each one accepted

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        if self.reply is not None:
            return self.reply
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(parsed)
        if self.on_message is not None:
            self.on_message()
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def smtp_server(mailbox: Mailbox, port: int | None = None, **options: Any) -> Iterator[int]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port or _free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with smtp_server(box) as port:
        yield box, port


@asynccontextmanager
async def mail_app(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], smtp_url: str, **overrides: Any
) -> AsyncIterator[tuple[AsyncClient, Runtime, MailSender]]:
    """An app whose outbox goes to `smtp_url`, with its sender driven by the test (one
    pass at a time) unless MAIL_SENDER_IN_APP is asked for."""
    settings = make_settings(SMTP_URL=smtp_url, MAIL_SENDER_IN_APP=False, **overrides)
    async with make_client(settings) as client:
        runtime: Runtime = client.app.state.runtime
        yield client, runtime, MailSender.for_runtime(runtime)


@dataclass
class Outbox:
    """An app whose outbox goes to a plain SMTP server on loopback, its sender, the server."""

    box: Mailbox
    client: AsyncClient
    runtime: Runtime
    sender: MailSender


@pytest.fixture
async def outbox(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], mailbox: tuple[Mailbox, int]
) -> AsyncIterator[Outbox]:
    box, port = mailbox
    async with mail_app(make_client, make_settings, f"smtp://127.0.0.1:{port}") as (client, runtime, sender):
        yield Outbox(box, client, runtime, sender)


def one_message(session: AsyncSession, now: dt.datetime, **fields: Any) -> MailMessage:
    """`enqueue` with plain values (no tenant, a@example.com, subject "s", body "b"),
    `fields` overriding them."""
    values: dict[str, Any] = {"tenant_id": None, "purpose": "test", "recipient": "a@example.com"}
    return enqueue(session, now=now, **{**values, "subject": "s", "text_body": "b", **fields})


async def write_messages(
    runtime: Runtime, count: int = 1, tenant_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    async with runtime.write_session_factory() as session, session.begin():
        messages = [
            one_message(
                session,
                runtime.clock.now(),
                tenant_id=tenant_id,
                recipient=f"user{n}@example.com",
                subject=f"Message {n}",
                text_body=f"Hello {n}: https://app.example.com/t/acme/reset-password?token=secret{n}",
                html_body=f"<p>Hello {n}</p>",
                sender_name="Acme",
            )
            for n in range(count)
        ]
    return [m.id for m in messages]


async def states(runtime: Runtime) -> dict[str, int]:
    async with runtime.session_factory() as session:
        rows = await session.execute(select(MailMessage.state, func.count()).group_by(MailMessage.state))
        return {state: count for state, count in rows.all()}  # noqa: C416 (Row to tuple)


async def message(runtime: Runtime, message_id: uuid.UUID) -> MailMessage:
    async with runtime.session_factory() as session:
        found = await session.get(MailMessage, message_id)
        assert found is not None
        return found


async def test_a_message_goes_out_once_with_a_text_and_an_html_part(outbox: Outbox) -> None:
    box, runtime, sender = outbox.box, outbox.runtime, outbox.sender
    tenant = await create_tenant(outbox.client)
    assert await sender.deliver_due() == 1  # the owner's verification link
    box.received.clear()
    (sent_id,) = await write_messages(runtime, tenant_id=uuid.UUID(tenant.id))
    assert await sender.deliver_due() == 1
    assert await sender.deliver_due() == 0  # nothing twice
    stored = await message(runtime, sent_id)
    assert stored.state == SENT
    assert stored.sent_at is not None
    # The body (a live one-time link, often) is not kept once it went out.
    assert (stored.text_body, stored.html_body) == ("", None)
    (received,) = box.received
    assert received["To"] == "user0@example.com"
    assert received["From"] == "Acme <no-reply@localhost>"
    assert received["Subject"] == "Message 0"
    assert received["Message-ID"] == f"<{sent_id.hex}@localhost>"  # the same on every attempt
    text, html = received.get_body(("plain",)), received.get_body(("html",))
    assert text is not None
    assert "reset-password?token=secret0" in text.get_content()
    assert html is not None
    assert html.get_content().strip() == "<p>Hello 0</p>"


async def test_names_and_subjects_beyond_ascii_arrive_as_written(outbox: Outbox) -> None:
    async with outbox.runtime.write_session_factory() as session, session.begin():
        one_message(
            session,
            outbox.runtime.clock.now(),
            sender_name="Société Générale, Ünïcode",
            subject="Réinitialisez votre mot de passe — «vite»",
            text_body="Bonjour, voilà le lien : https://example.com/t/x/reset-password?token=abc\n",
            html_body="<p>Grüße</p>",
        )
    assert await outbox.sender.deliver_due() == 1
    (received,) = outbox.box.received
    assert received["From"].addresses[0].display_name == "Société Générale, Ünïcode"
    assert received["From"].addresses[0].addr_spec == "no-reply@localhost"
    assert received["Subject"] == "Réinitialisez votre mot de passe — «vite»"
    text, html = received.get_body(("plain",)), received.get_body(("html",))
    assert text is not None
    assert html is not None
    # (as sent over SMTP, with CRLF line ends)
    assert (
        text.get_content() == "Bonjour, voilà le lien : https://example.com/t/x/reset-password?token=abc\r\n"
    )
    assert html.get_content().strip() == "<p>Grüße</p>"
    assert received.get_body(("plain",))["Content-Transfer-Encoding"] == "quoted-printable"


async def test_a_name_that_looks_like_an_encoded_word_is_shown_as_written(outbox: Outbox) -> None:
    """`=?utf-8?q?...?=` (RFC 2047) in a tenant's name or a subject would be decoded by the
    reader into other text (or a line break): it goes encoded, and reads as written."""
    trick = "=?utf-8?q?Your_bank=0D=0ABcc:_spy@example.com?="
    async with outbox.runtime.write_session_factory() as session, session.begin():
        one_message(session, outbox.runtime.clock.now(), sender_name=trick, subject=f"Hello {trick}")
    assert await outbox.sender.deliver_due() == 1
    (received,) = outbox.box.received
    assert received["From"].addresses[0].display_name == trick
    assert received["Subject"] == f"Hello {trick}"
    assert received["Bcc"] is None


async def test_a_message_of_a_rolled_back_transaction_is_never_sent(outbox: Outbox) -> None:
    box, runtime, sender = outbox.box, outbox.runtime, outbox.sender
    with pytest.raises(RuntimeError, match="the change that caused it failed"):
        await _enqueue_then_fail(runtime)
    assert await sender.deliver_due() == 0
    assert await states(runtime) == {}
    assert box.received == []


async def _enqueue_then_fail(runtime: Runtime) -> None:
    async with runtime.write_session_factory() as session, session.begin():
        one_message(
            session, runtime.clock.now(), recipient="nobody@example.com", subject="never", text_body="never"
        )
        await session.flush()
        raise RuntimeError("the change that caused it failed")


async def test_a_4xx_reply_waits_and_retries_and_a_5xx_reply_fails_the_message(
    outbox: Outbox, clock: FrozenClock
) -> None:
    box, runtime, sender = outbox.box, outbox.runtime, outbox.sender
    (later,) = await write_messages(runtime)
    box.reply = "451 4.3.0 Mailbox busy, try again later"
    assert await sender.deliver_due() == 1
    stored = await message(runtime, later)
    assert (stored.state, stored.attempts, stored.last_error) == (PENDING, 1, "reply 451")
    assert stored.next_attempt_at == clock.now() + backoff(1)
    assert await sender.deliver_due() == 0  # not due yet
    clock.advance(seconds=1)
    assert await sender.deliver_due() == 1  # second try, still refused
    stored = await message(runtime, later)
    assert (stored.attempts, stored.next_attempt_at) == (2, clock.now() + backoff(2))
    box.reply = None
    clock.advance(seconds=2)
    assert await sender.deliver_due() == 1
    assert (await message(runtime, later)).state == SENT

    (never,) = await write_messages(runtime)
    box.reply = "550 5.1.1 No such user here"
    assert await sender.deliver_due() == 1
    stored = await message(runtime, never)
    assert (stored.state, stored.last_error) == (FAILED, "reply 550")
    clock.advance(hours=1)
    assert await sender.deliver_due() == 0  # a failed message is never tried again
    assert len(box.received) == 1


async def test_a_header_with_a_line_break_is_refused_and_never_blocks_the_others(outbox: Outbox) -> None:
    """CR/LF in a header would let a subject smuggle in a Bcc: enqueue puts a subject or a
    sender's name (a tenant's name: any text) on one line within its column, and refuses
    such a recipient; a row written some other way (SQL) fails alone, and the rest of its
    batch still goes."""
    box, runtime, sender = outbox.box, outbox.runtime, outbox.sender
    async with runtime.write_session_factory() as session:
        with pytest.raises(ValueError, match="line break"):
            one_message(session, runtime.clock.now(), recipient="a@example.com\r\nBcc: victim@example.com")
        flattened = one_message(
            session,
            runtime.clock.now(),
            subject="x\r\nBcc: victim@example.com\u2028y" + "z" * 300,
            sender_name="Acme\nInc.\x85",
        )
        assert flattened.subject.startswith("x Bcc: victim@example.com yzzz")
        assert len(flattened.subject) == 200
        assert flattened.sender_name == "Acme Inc."
        await session.rollback()
    (good,) = await write_messages(runtime)
    async with runtime.write_session_factory() as session, session.begin():
        smuggled = one_message(session, runtime.clock.now())
        smuggled.subject = "x\r\nBcc: victim@example.com"  # as if written by hand
    assert await sender.deliver_due() == 2
    assert (await message(runtime, good)).state == SENT
    bad = await message(runtime, smuggled.id)
    assert (bad.state, bad.last_error) == (FAILED, "malformed message")
    assert [m["Subject"] for m in box.received] == ["Message 0"]


def test_back_off_doubles_up_to_a_minute() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 7, 8, 30)] == [1, 2, 4, 8, 60, 60, 60]
    assert MAX_BACKOFF_SECONDS == 60


async def test_with_the_server_down_messages_wait_then_all_go_out_once_it_is_back(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    box, port = Mailbox(), _free_port()
    async with mail_app(make_client, make_settings, f"smtp://127.0.0.1:{port}") as (_, runtime, sender):
        ids = await write_messages(runtime, 20)
        assert await sender.deliver_due() == 20  # nobody listening: every one waits
        assert await states(runtime) == {PENDING: 20}
        assert (await message(runtime, ids[0])).last_error == "SMTPConnectError"
        with smtp_server(box, port):
            clock.advance(seconds=1)
            assert await sender.deliver_due() == 20
            assert await sender.deliver_due() == 0
        assert await states(runtime) == {SENT: 20}
    assert sorted(m["Subject"] for m in box.received) == sorted(f"Message {n}" for n in range(20))


async def test_a_message_still_unsent_after_the_maximum_age_fails(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    url = f"smtp://127.0.0.1:{_free_port()}"  # nobody there
    async with mail_app(make_client, make_settings, url, MAIL_MAX_AGE_HOURS=0.01) as (_, runtime, sender):
        (old,) = await write_messages(runtime)
        await sender.deliver_due()
        assert (await message(runtime, old)).state == PENDING
        clock.advance(seconds=40)  # 0.01 h = 36 s
        await sender.deliver_due()
        assert (await message(runtime, old)).state == FAILED

        # One whose sender died with it (claimed, never recorded) ends too, when next due.
        (orphan,) = await write_messages(runtime)
        assert len((await sender._claim()).messages) == 1
        clock.advance(seconds=120)  # past both the lease and the maximum age
        assert await sender.deliver_due() == 0
        stored = await message(runtime, orphan)
        assert (stored.state, stored.last_error) == (FAILED, "too old")


async def test_two_senders_send_each_of_many_messages_exactly_once(outbox: Outbox) -> None:
    """Two senders (two processes' worth: each claims in its own transactions) race over
    one outbox: PostgreSQL skips rows the other holds, SQLite serialises the claims."""
    box, runtime, first = outbox.box, outbox.runtime, outbox.sender
    second = MailSender.for_runtime(runtime)
    await write_messages(runtime, 200)

    async def drain(sender: MailSender) -> int:
        total = 0
        while sent := await sender.deliver_due():
            total += sent
        return total

    shares = await asyncio.gather(drain(first), drain(second))
    assert sum(shares) == 200
    assert await states(runtime) == {SENT: 200}
    ids = [m["Message-ID"] for m in box.received]
    assert len(ids) == 200
    assert len(set(ids)) == 200


async def test_one_pass_claims_one_batch_and_leaves_the_rest_to_others(outbox: Outbox) -> None:
    """A claim is BATCH messages, never the whole outbox: another sender (another node) gets
    the rest. (PostgreSQL once ran a claim's `LIMIT` subquery again per updated row.)"""
    await write_messages(outbox.runtime, BATCH * 2 + 7)
    assert [await outbox.sender.deliver_due() for _ in range(4)] == [BATCH, BATCH, 7, 0]
    assert len(outbox.box.received) == BATCH * 2 + 7


async def test_the_sender_in_the_app_delivers_within_seconds(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    settings = make_settings(SMTP_URL=f"smtp://127.0.0.1:{port}")  # MAIL_SENDER_IN_APP: the default, on
    async with make_client(settings) as client:
        await write_messages(client.app.state.runtime, 3)
        for _ in range(50):
            if len(box.received) == 3:
                break
            await asyncio.sleep(0.1)
    assert len(box.received) == 3


async def test_delivered_and_failed_mail_is_purged_after_30_days_and_unsent_mail_never(
    outbox: Outbox, clock: FrozenClock
) -> None:
    box, runtime, sender = outbox.box, outbox.runtime, outbox.sender
    await write_messages(runtime)
    await sender.deliver_due()
    box.reply = "550 5.1.1 No such user here"
    await write_messages(runtime)
    await sender.deliver_due()
    async with runtime.write_session_factory() as session, session.begin():
        # Not due for a long while.
        one_message(
            session, clock.now() + timedelta(days=400), recipient="later@example.com", subject="later"
        )
    assert await states(runtime) == {SENT: 1, FAILED: 1, PENDING: 1}

    async def purge() -> int:
        async with runtime.write_session_factory() as session, session.begin():
            counts = await purge_expired(session=session, now=clock.now(), idle=runtime.lifetimes.idle)
            return counts["mail_message"]

    clock.advance(days=29)
    assert await purge() == 0
    clock.advance(days=2)
    assert await purge() == 2
    assert await states(runtime) == {PENDING: 1}


async def test_what_a_sender_claimed_but_could_not_try_in_its_lease_goes_back_uncharged(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """A slow server: each message takes a minute (the test's clock). The sender stops
    starting messages before its lease could run out under them, and gives the rest back,
    so no other sender ever sends one of them a second time."""
    box = Mailbox(on_message=lambda: clock.advance(seconds=60))
    with smtp_server(box) as port:
        async with mail_app(make_client, make_settings, f"smtp://127.0.0.1:{port}") as (_, runtime, sender):
            await write_messages(runtime, 5)
            assert await sender.deliver_due() == 5  # claims 5, sends 1: 60 s > the window (40 s)
            assert await states(runtime) == {SENT: 1, PENDING: 4}
            async with runtime.session_factory() as session:
                attempts = await session.scalars(
                    select(MailMessage.attempts).where(MailMessage.state == PENDING)
                )
                assert set(attempts.all()) == {0}  # never tried: not counted
            for _ in range(4):
                await sender.deliver_due()
            assert await states(runtime) == {SENT: 5}
    assert len(box.received) == 5


async def test_closing_the_sender_finishes_the_message_in_flight_and_gives_back_the_rest(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A deploy stops the app while mail goes out: nothing is sent twice afterwards."""
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slowly() -> None:  # in the server's thread: each reply takes 50 ms
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.05)

    box = Mailbox(on_message=slowly)
    with smtp_server(box) as port:
        async with mail_app(make_client, make_settings, f"smtp://127.0.0.1:{port}") as (_, runtime, sender):
            await write_messages(runtime, 30)
            sender.start()
            await started.wait()
            await sender.close()
            counts = await states(runtime)
            assert counts.get(SENT, 0) == len(box.received) >= 1
            assert counts.get(SENT, 0) + counts.get(PENDING, 0) == 30  # none left "sending"
            assert counts.get(PENDING, 0) > 0  # it did stop mid-batch
            after = MailSender.for_runtime(runtime)
            while await after.deliver_due():
                pass
            assert await states(runtime) == {SENT: 30}
    subjects = [m["Subject"] for m in box.received]
    assert sorted(subjects) == sorted(f"Message {n}" for n in range(30))  # each once


async def test_a_5xx_greeting_is_the_servers_state_and_fails_no_message(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """554 on connect (a server out of service): the messages wait, uncharged."""

    async def refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 Service currently unavailable\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with mail_app(make_client, make_settings, f"smtp://127.0.0.1:{port}") as (_, runtime, sender):
            ids = await write_messages(runtime, 5)
            await sender.deliver_due()
            assert await states(runtime) == {PENDING: 5}
            stored = await message(runtime, ids[0])
            assert (stored.attempts, stored.last_error) == (0, "reply 554")
    finally:
        server.close()
        await server.wait_closed()


async def test_a_message_goes_to_exactly_one_address() -> None:
    with pytest.raises(ValueError, match="exactly one address"):
        one_message(
            None,  # type: ignore[arg-type]  # refused before the session is used
            dt.datetime.now(dt.UTC),
            recipient="victim@example.com, attacker@evil.example",
        )


# --- TLS and AUTH ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


class Accounts:
    def __init__(self) -> None:
        self.tried: list[tuple[str, str]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.tried.append((data.login.decode(), data.password.decode()))
        # handled=False: aiosmtpd then answers a refusal itself (535).
        return AuthResult(success=(data.login, data.password) == (b"mailer", b"p@ss:word"), handled=False)


async def test_starttls_and_login_with_a_verified_certificate(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STARTTLS required, AUTH only over TLS (as aiosmtpd insists), the server's certificate
    verified against the CA the operator names with SSL_CERT_FILE."""
    box, accounts = Mailbox(), Accounts()
    tls = {"tls_context": _server_context(certificate), "require_starttls": True, "auth_require_tls": True}
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with smtp_server(box, authenticator=accounts, **tls) as port:
        url = f"smtp://mailer:p%40ss%3Aword@localhost:{port}?starttls=true"
        async with mail_app(make_client, make_settings, url) as (_, runtime, sender):
            await write_messages(runtime)
            await sender.deliver_due()
            assert await states(runtime) == {SENT: 1}
    assert accounts.tried == [("mailer", "p@ss:word")]
    assert len(box.received) == 1


async def test_an_unverifiable_certificate_is_refused_and_the_message_waits(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], certificate: tuple[Path, Path]
) -> None:
    box = Mailbox()
    tls = {"tls_context": _server_context(certificate), "require_starttls": True}
    with smtp_server(box, **tls) as port:  # no SSL_CERT_FILE: the self-signed CA is unknown
        async with mail_app(make_client, make_settings, f"smtp://localhost:{port}?starttls=true") as (
            _,
            runtime,
            sender,
        ):
            (waiting,) = await write_messages(runtime)
            await sender.deliver_due()
            assert (await message(runtime, waiting)).state == PENDING
    assert box.received == []


async def test_implicit_tls_on_smtps(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = Mailbox()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with smtp_server(box, ssl_context=_server_context(certificate)) as port:
        async with mail_app(make_client, make_settings, f"smtps://localhost:{port}") as (_, runtime, sender):
            await write_messages(runtime)
            await sender.deliver_due()
            assert await states(runtime) == {SENT: 1}
    assert len(box.received) == 1


async def test_with_a_login_starttls_is_required_unless_the_url_says_otherwise(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """A server (or whoever is in the middle) that offers no STARTTLS never sees the
    password: with credentials in SMTP_URL and no `starttls`, TLS is required."""
    box, accounts = Mailbox(), Accounts()
    with smtp_server(box, authenticator=accounts, auth_require_tls=False) as port:
        url = f"smtp://mailer:p%40ss%3Aword@127.0.0.1:{port}"
        async with mail_app(make_client, make_settings, url) as (_, runtime, sender):
            (kept,) = await write_messages(runtime)
            await sender.deliver_due()
            assert (await message(runtime, kept)).state == PENDING
    assert accounts.tried == []
    assert box.received == []


async def test_a_wrong_password_keeps_the_message_for_when_it_is_fixed(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box, accounts = Mailbox(), Accounts()
    tls = {"tls_context": _server_context(certificate), "require_starttls": True, "auth_require_tls": True}
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with smtp_server(box, authenticator=accounts, **tls) as port:
        url = f"smtp://mailer:wrong@localhost:{port}?starttls=true"
        async with mail_app(make_client, make_settings, url) as (_, runtime, sender):
            (kept,) = await write_messages(runtime)
            await sender.deliver_due()
            stored = await message(runtime, kept)
    assert (stored.state, stored.last_error) == (PENDING, "login refused 535")
    assert box.received == []


# --- settings and the command line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.example.com", "scheme"),
        ("smtp://:25", "host"),
        ("smtp://mail.example.com?starttls=maybe", "starttls"),
        ("smtps://mail.example.com?starttls=true", "smtps"),
        ("smtp://mail.example.com:99999", "port"),
    ],
)
def test_a_bad_smtp_url_is_refused_without_quoting_it(
    make_settings: Callable[..., Settings], url: str, problem: str
) -> None:
    secret_url = url.replace("://", "://mailer:hunter2-secret@", 1)
    with pytest.raises(ValidationError) as refused:
        make_settings(SMTP_URL=secret_url)
    assert problem in str(refused.value)
    assert "hunter2-secret" not in str(refused.value)


async def test_mail_list_and_show_print_the_outbox(
    client: AsyncClient, database_url: str, tmp_path: Path
) -> None:
    """Without SMTP_URL messages wait, and the operator reads them from a shell."""
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    (waiting,) = await write_messages(runtime)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ENV": "test",
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_FORMAT": "text",
    }
    env.pop("SMTP_URL", None)
    if REDIS_URL:
        env["REDIS_URL"] = REDIS_URL

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [PYTHON, "-m", "saas_app", "mail", *args]
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert str(waiting) in listed.stdout
    assert "pending" in listed.stdout
    assert "user0@example.com" in listed.stdout
    shown = cli("show", str(waiting))
    assert shown.returncode == 0, shown.stderr
    assert "Subject: Message 0" in shown.stdout
    assert "reset-password?token=secret0" in shown.stdout
    unknown = cli("show", str(uuid.uuid4()))
    assert unknown.returncode == 1
    assert "message_not_found" in unknown.stderr
    nowhere = cli("worker")
    assert nowhere.returncode == 1
    assert "SMTP_URL" in nowhere.stderr

    # A subject cannot drive the operator's terminal: control characters are spelled out.
    async with runtime.write_session_factory() as session, session.begin():
        odd = one_message(session, runtime.clock.now(), purpose="t", recipient="b@example.com")
        odd.subject = "\x1b[2J\x1b[31mURGENT"  # as if written by hand (enqueue would flatten it)
    listed = cli("list")
    assert "\\x1b[2J\\x1b[31mURGENT" in listed.stdout
    assert "\x1b" not in listed.stdout

    # A database that was never migrated: one line, not a traceback.
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    empty = cli("list")
    assert empty.returncode == 1
    assert empty.stderr.count("\n") == 1
    assert "migrate" in empty.stderr


def test_the_smtp_password_never_shows_in_a_repr() -> None:
    server = SmtpServer.parse("smtp://mailer:hunter2-secret@mail.example.com:587")
    assert server.password == "hunter2-secret"
    assert "hunter2-secret" not in repr(server)
    assert server.starttls is True  # a login: STARTTLS required
