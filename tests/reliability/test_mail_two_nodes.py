"""Two app processes on one PostgreSQL database, each with its in-app mail sender, race over
one outbox of 500 messages: each message reaches the SMTP server exactly once (counted at
the server), and every row ends `sent`. SQLite runs one sender (docs/decisions.md)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from saas_app.core.config import Settings
from saas_app.mail.models import SENT, MailMessage
from saas_app.mail.outbox import enqueue
from saas_app.runtime import Runtime
from tests.conftest import ON_POSTGRES
from tests.servers import running_server
from tests.test_mail import Mailbox, smtp_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not ON_POSTGRES, reason="several senders on one outbox is PostgreSQL's"),
]
MESSAGES = 500


async def _write(runtime: Runtime, count: int) -> None:
    async with runtime.write_session_factory() as session, session.begin():
        for _ in range(count):
            enqueue(
                session,
                tenant_id=None,
                purpose="test",
                recipient="user@example.com",
                subject="Message",
                text_body="Hello",
                now=runtime.clock.now(),
            )


async def test_two_processes_send_each_of_500_messages_exactly_once(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    # A server that takes 10 ms a message: long enough that both nodes' senders wake up
    # (each polls once a second when idle) while the outbox is still full.
    box = Mailbox(on_message=lambda: time.sleep(0.01))
    with smtp_server(box) as port:
        async with make_client(make_settings()) as client:
            runtime: Runtime = client.app.state.runtime
            env = {"DATABASE_URL": database_url, "SMTP_URL": f"smtp://127.0.0.1:{port}", "LOG_FORMAT": "text"}
            with ExitStack() as nodes:
                for name in ("a", "b"):
                    nodes.enter_context(running_server(env, tmp_path / f"node-{name}.log"))
                # Written once both senders poll, so they race for every row.
                await _write(runtime, MESSAGES)
                for _ in range(600):
                    if len(box.received) >= MESSAGES:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1)  # anything sent twice would arrive now
            async with runtime.session_factory() as session:
                by_state = select(MailMessage.state, func.count()).group_by(MailMessage.state)
                states = dict((await session.execute(by_state)).all())
    ids = Counter(m["Message-ID"] for m in box.received)
    assert len(ids) == MESSAGES
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    assert states == {SENT: MESSAGES}
    logs = [(tmp_path / f"node-{name}.log").read_text() for name in ("a", "b")]
    shares = [log.count(": sent after") for log in logs]
    assert sum(shares) == MESSAGES, shares  # every delivery logged once, by the node that made it
    assert all(shares), shares  # both nodes sent: they raced, and neither sent what the other held
    assert all("Hello" not in log for log in logs)  # bodies never logged
