"""Mail benchmarks (issue 16), against a real server and real SMTP servers on loopback:

1. `POST /t/{t}/auth/password/forgot` for existing and for unknown addresses, interleaved at
   random, one request at a time, while the in-app sender talks to an SMTP server that
   takes `--smtp-delay-ms` to accept each message: the medians of the two kinds (do they
   differ? that would tell an attacker which addresses have accounts) and their p99 (does
   a request ever wait for SMTP?).
2. Sending: `--messages` messages written to the outbox, then one `python -m saas_app mail
   worker` process delivers them to a local SMTP server that accepts at once: messages/s.

    .venv/bin/python bench/mail.py                      # SQLite (the embedded default)
    .venv/bin/python bench/mail.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Rate limits are off (as in every benchmark here); the setup signs users up with
BCRYPT_ROUNDS=4, which nothing measured here hashes with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import settings_names
from bench.servers import (
    PROJECT_PYTHON,
    PostgresDatabases,
    expect,
    free_port,
    postgres_server_url,
    saas_env,
    saas_migrate,
    saas_server,
    sqlite_url,
)

SLUG = "mailbench"
PASSWORD = "bench-password-0123"  # noqa: S105 (a throwaway account)
USERS = 20
LINE = "A line of text, about as long as the service's own mails."


class Counting:
    """An SMTP server's handler: counts messages (with the time of each), after `delay_s`."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.times: list[float] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # slow, but serving every connection at once
        with self.lock:
            self.times.append(time.perf_counter())
        return "250 OK"


@contextmanager
def smtp(handler: Counting) -> Iterator[int]:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def forgot_timing(base: str, requests: int) -> dict[str, dict[str, float]]:
    known = [f"user{n}@{SLUG}.example.com" for n in range(USERS)]
    with httpx.Client(base_url=base, timeout=30) as client:
        owner = {"email": known[0], "password": PASSWORD}
        expect(
            client.post("/tenants", json={"slug": SLUG, "name": "Mail bench", "owner": owner}), 201, "tenant"
        )
        for email in known[1:]:
            expect(
                client.post(f"/t/{SLUG}/auth/register", json={"email": email, "password": PASSWORD}),
                201,
                email,
            )
        kinds = ["existing"] * requests + ["unknown"] * requests
        random.Random(16).shuffle(kinds)
        timings: dict[str, list[float]] = {"existing": [], "unknown": []}
        for warm_up in range(200):  # both paths, so that neither compiles its statements in the count
            email = known[warm_up % USERS] if warm_up % 2 else f"warm{warm_up}@example.com"
            client.post(f"/t/{SLUG}/auth/password/forgot", json={"email": email})
        for n, kind in enumerate(kinds):
            email = known[n % USERS] if kind == "existing" else f"nobody{n}@{SLUG}.example.com"
            started = time.perf_counter()
            answer = client.post(f"/t/{SLUG}/auth/password/forgot", json={"email": email})
            timings[kind].append((time.perf_counter() - started) * 1000)
            expect(answer, 202, f"forgot {kind}")
    return {
        kind: {
            "median_ms": statistics.median(values),
            "p99_ms": percentile(values, 0.99),
            "max_ms": max(values),
        }
        for kind, values in timings.items()
    }


async def fill_outbox(database_url: str, count: int) -> None:
    import saas_app.models  # noqa: F401, PLC0415 (every table, for the foreign keys)
    from saas_app.mail.outbox import enqueue  # noqa: PLC0415 (after the path is set)

    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        for n in range(count):
            enqueue(
                session,
                tenant_id=None,
                purpose="bench",
                recipient=f"user{n}@example.com",
                subject=f"Message {n}",
                text_body="Hello,\n\nA line of text, about as long as the service's own mails.\n" * 8,
                html_body="<p>Hello,</p>"
                + "<p>A line of text, about as long as the service's own mails.</p>" * 8,
                sender_name="Mail bench",
                now=now,
            )
    await engine.dispose()


def send_rate(env: dict[str, str], database_url: str, messages: int, workdir: Path) -> dict[str, float]:
    asyncio.run(fill_outbox(database_url, messages))
    handler = Counting()
    with smtp(handler) as port:
        worker_env = {**env, "SMTP_URL": f"smtp://127.0.0.1:{port}", "LOG_LEVEL": "WARNING"}
        started = time.perf_counter()
        worker = subprocess.Popen(
            ["taskset", "-c", "0", str(PROJECT_PYTHON), "-m", "saas_app", "mail", "worker"],
            env=worker_env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600
            while len(handler.times) < messages and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    received = len(handler.times)
    if received < messages:
        raise RuntimeError(f"the worker sent {received} of {messages} messages")
    first, last = handler.times[0], handler.times[-1]
    return {
        "messages": received,
        "per_second_sending": (received - 1) / (last - first),
        "per_second_with_start": received / (last - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a fresh database is made on it")
    parser.add_argument("--requests", type=int, default=500, help="forgot requests of each kind")
    parser.add_argument("--messages", type=int, default=2000, help="messages for the send rate")
    parser.add_argument(
        "--smtp-delay-ms", type=float, default=500, help="the slow server's delay per message"
    )
    args = parser.parse_args()
    # The servers and the worker run on CPU 0; this process (the client, the SMTP servers) on 1.
    os.sched_setaffinity(0, {1})
    databases = PostgresDatabases(postgres_server_url(args.postgres)) if args.postgres else None
    with tempfile.TemporaryDirectory(prefix="mailbench-") as tmp_name:
        tmp = Path(tmp_name)
        if databases is not None:
            databases.connect()
            database_url = databases.create("mail")
        else:
            database_url = sqlite_url(tmp / "mail.db")
        env = {
            **saas_env(database_url, settings_names()),
            "BCRYPT_ROUNDS": "4",
            "PUBLIC_URL": "http://127.0.0.1",
        }
        try:
            saas_migrate(env, tmp)
            slow = Counting(args.smtp_delay_ms / 1000)
            with smtp(slow) as port:
                server = saas_server("saas", tmp, {**env, "SMTP_URL": f"smtp://127.0.0.1:{port}"})
                server.start("0", tmp)
                try:
                    server.wait_healthy()
                    timing = forgot_timing(server.base_url, args.requests)
                finally:
                    server.stop()
            rate = send_rate(env, database_url, args.messages, tmp)
        finally:
            if databases is not None:
                databases.drop_all()
    database = "PostgreSQL" if databases is not None else "SQLite"
    existing, unknown = timing["existing"], timing["unknown"]
    gap = abs(existing["median_ms"] - unknown["median_ms"]) / min(existing["median_ms"], unknown["median_ms"])
    delay = f"SMTP {args.smtp_delay_ms:g} ms/message"
    print(f"## Mail, {database}: forgot-password timing ({args.requests} each, {delay})")
    print("| address | median ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for kind, figures in timing.items():
        print(f"| {kind} | {figures['median_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['max_ms']:.2f} |")
    print(f"medians differ by {gap * 100:.1f} %; slow mails delivered meanwhile: {len(slow.times)}")
    print(
        f"send rate, one worker: {rate['per_second_sending']:.0f} messages/s"
        f" ({rate['per_second_with_start']:.0f}/s counting its start), {rate['messages']:.0f} messages"
    )


if __name__ == "__main__":
    main()
