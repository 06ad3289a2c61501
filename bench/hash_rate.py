"""The raw verify rate of the configured password hash: how many verifies per second
this process does in N threads, with no server in the way.

The runner starts it under `taskset` with the server's CPU set, so the figure is "the
raw verify rate on the cores the server has". Settings mirror saas_app's PasswordHasher
(passlib CryptContext, PASSWORD_SCHEMES' first scheme at BCRYPT_ROUNDS).

    .venv/bin/python bench/hash_rate.py --threads 2 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from passlib.context import CryptContext

PASSWORD = "bench-password-0123"  # noqa: S105 (a benchmark's throwaway)


def context(scheme: str, rounds: int) -> CryptContext:
    return CryptContext(schemes=[scheme], **{f"{scheme}__default_rounds": rounds})


def verify_rate(*, scheme: str, rounds: int, threads: int, seconds: float) -> dict[str, float]:
    """Verifies one hash in `threads` threads for about `seconds`; returns the rate."""
    ctx = context(scheme, rounds)
    stored = ctx.hash(PASSWORD)
    assert ctx.verify(PASSWORD, stored)
    counts = [0] * threads
    start = time.perf_counter()
    deadline = start + seconds

    def work(slot: int) -> None:
        while time.perf_counter() < deadline:
            ctx.verify(PASSWORD, stored)
            counts[slot] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start  # includes each thread's last, overrunning verify
    total = sum(counts)
    return {"verifies": total, "seconds": elapsed, "per_second": total / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    schemes = os.environ.get("PASSWORD_SCHEMES", "bcrypt_sha256")
    parser.add_argument("--scheme", default=schemes.split(",")[0].strip())
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BCRYPT_ROUNDS", "12")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = verify_rate(scheme=args.scheme, rounds=args.rounds, threads=args.threads, seconds=args.seconds)
    cpus = sorted(os.sched_getaffinity(0))
    if args.json:
        print(json.dumps({**result, "scheme": args.scheme, "rounds": args.rounds, "cpus": cpus}))
    else:
        print(
            f"{args.scheme} rounds={args.rounds} threads={args.threads} cpus={cpus}: "
            f"{result['per_second']:.2f} verifies/s ({result['verifies']:.0f} in {result['seconds']:.2f} s)"
        )


if __name__ == "__main__":
    main()
