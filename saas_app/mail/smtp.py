"""The SMTP server named by SMTP_URL, and one delivery session to it (aiosmtplib)."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
# The setting's words for STARTTLS: required, refused, or (absent) used when offered.
STARTTLS_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """`smtp://user:pass@host:587?starttls=true` or `smtps://host:465` (implicit TLS).

    TLS verifies the server's certificate against the system store (OpenSSL's defaults,
    so `SSL_CERT_FILE` adds a private CA); there is no switch to turn verification off."""

    host: str
    port: int
    username: str | None
    password: str | None = field(default=None, repr=False)  # never in a log line or a traceback
    implicit_tls: bool = False
    starttls: bool | None = None  # None: STARTTLS when offered (only without a login)

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        """Raises ValueError naming what is wrong, never quoting the URL (it holds a password)."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError("the scheme must be smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("a host is required")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        options = {key: values[-1].lower() for key, values in parse_qs(parts.query).items()}
        starttls = options.get("starttls")
        if starttls is not None and starttls not in STARTTLS_WORDS:
            raise ValueError("starttls must be true or false")
        implicit = parts.scheme == "smtps"
        if implicit and starttls is not None and STARTTLS_WORDS[starttls]:
            raise ValueError("smtps:// is TLS from the start: starttls does not apply")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
            starttls=False if implicit else _starttls(starttls, has_login=bool(parts.username)),
        )


def _starttls(word: str | None, *, has_login: bool) -> bool | None:
    if word is not None:
        return STARTTLS_WORDS[word]
    # Absent: required when there is a password to send (a server, or whoever stands
    # between, that does not offer STARTTLS would otherwise get it in clear); otherwise
    # used when offered, as a local relay on port 25 may not offer it.
    return True if has_login else None


class SmtpSession:
    """One connection, several messages: `async with SmtpSession(server, timeout) as s`."""

    def __init__(self, server: SmtpServer, timeout: float) -> None:
        self._client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.implicit_tls,
            start_tls=server.starttls,
            timeout=timeout,
        )

    async def __aenter__(self) -> SmtpSession:
        await self._client.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client.is_connected:
            try:
                await self._client.quit()
            except aiosmtplib.SMTPException:
                self._client.close()

    async def send(self, message: Message, *, sender: str, recipient: str) -> None:
        # The envelope is given, never read from the headers: one recipient, always.
        await self._client.send_message(message, sender=sender, recipients=[recipient])
