"""The mixed workload's writer: W writes a second, on a fixed schedule, until stopped.

    python bench/writer.py --plan plan.json --rate 50 [--max-seconds 600]

The plan (run.py writes it) names the method, the kind of body and one URL and bearer
token per user; write n goes to user n mod len(users), so writes spread over every user
(and tenant). The schedule is open-loop: write n is sent at start + n / W whether or not
earlier ones have answered, so a slow server does not quietly lower the rate; what was
achieved is reported instead. The writer prints `ready` once it is about to start, runs
until SIGTERM or SIGINT (or --max-seconds, so that it always ends), lets the writes in
flight finish (up to --timeout) and prints one JSON line: how many were sent, how many
answered 2xx, which failed and with what, the achieved rate and the write latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Plan:
    method: str
    body: str  # "project": {"name": ...}; "email": {"email": ...}, a fresh address each time
    users: list[dict[str, str]]  # {"url": ..., "token": ...}

    @classmethod
    def load(cls, path: Path) -> Plan:
        raw = json.loads(path.read_text())
        if raw["body"] not in ("project", "email") or not raw["users"]:
            raise SystemExit(f"{path}: a plan needs body 'project' or 'email' and at least one user")
        return cls(method=raw["method"], body=raw["body"], users=raw["users"])


@dataclass(slots=True)
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    max_lag_ms: float = 0.0  # how late the schedule ran (an overloaded client, not the server)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))


@dataclass(frozen=True, slots=True)
class Summary:
    rate: float
    seconds: float
    sent: int
    ok: int
    failed: int  # non-2xx answers, transport errors and writes unfinished at the end
    statuses: dict[str, int]
    achieved: float  # 2xx writes per second over the writer's window
    p50_ms: float | None
    p99_ms: float | None
    max_lag_ms: float


def body(plan: Plan, n: int, tag: str) -> dict[str, str]:
    # The tag (one per writer process) keeps names and addresses unique across rounds.
    if plan.body == "project":
        return {"name": f"bench {tag} write {n}"}
    return {"email": f"w{n}-{tag}@example.com"}  # fastapi-users refuses a taken address


async def send(client: httpx.AsyncClient, plan: Plan, n: int, tag: str, tally: Tally) -> None:
    user = plan.users[n % len(plan.users)]
    started = time.perf_counter()
    try:
        answer = await client.request(
            plan.method,
            user["url"],
            json=body(plan, n, tag),
            headers={"Authorization": f"Bearer {user['token']}"},
        )
    except httpx.HTTPError as exc:
        tally.statuses[f"error {type(exc).__name__}"] += 1
        return
    tally.latencies_ms.append((time.perf_counter() - started) * 1e3)
    tally.statuses[str(answer.status_code)] += 1


def percentile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0], 2) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


async def run(plan: Plan, rate: float, max_seconds: float, write_timeout: float) -> Summary:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tally, tag, tasks = Tally(), secrets.token_hex(3), set[asyncio.Task[None]]()
    # Enough connections that a few slow answers do not hold up the schedule.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=write_timeout, limits=limits) as client:
        print("ready", flush=True)
        started = loop.time()
        n = 0
        while not stop.is_set():
            due = started + n / rate
            if due - started > max_seconds:
                break
            try:  # sleep until the next write is due, waking at once on a stop
                await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
                break
            except TimeoutError:
                pass
            tally.max_lag_ms = max(tally.max_lag_ms, (loop.time() - due) * 1e3)
            task = asyncio.create_task(send(client, plan, n, tag, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        seconds = loop.time() - started
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=write_timeout)
            for task in pending:
                task.cancel()
            if pending:
                tally.statuses["unfinished"] += len(pending)
    return Summary(
        rate=rate,
        seconds=round(seconds, 3),
        sent=n,
        ok=tally.ok,
        failed=n - tally.ok,
        statuses=dict(sorted(tally.statuses.items())),
        achieved=round(tally.ok / seconds, 2) if seconds else 0.0,
        p50_ms=percentile(tally.latencies_ms, 50),
        p99_ms=percentile(tally.latencies_ms, 99),
        max_lag_ms=round(tally.max_lag_ms, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan", type=Path, required=True, help="the JSON plan run.py writes")
    parser.add_argument("--rate", type=float, required=True, help="writes per second (> 0)")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop by itself after this long")
    parser.add_argument("--timeout", type=float, default=10, help="seconds one write may take")
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error("--rate must be above 0 (W = 0 runs no writer)")
    summary = asyncio.run(run(Plan.load(args.plan), args.rate, args.max_seconds, args.timeout))
    result: dict[str, Any] = asdict(summary)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
