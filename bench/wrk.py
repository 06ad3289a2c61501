"""Runs wrk (pinned to the load generator's CPUs) and parses its --latency report."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}  # to milliseconds
LATENCY_LINE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
MEAN_LINE = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m)\s", re.MULTILINE)
RPS_LINE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
TOTAL_LINE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
# Printed by bench/lua/mixed_reads.lua's done(): proof that the tokens rotated.
ROUND_ROBIN = re.compile(r"^round-robin: (\d+) requests over (\d+) users$", re.MULTILINE)
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    mean_ms: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    connections: int = 0
    users: int = 0  # distinct users the requests went out as (round-robin scripts only)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def steady_rps(self) -> float:
        """Connections ÷ mean latency (Little's law, closed loop): the steady-state rate.

        For slow requests (a login under a storm takes seconds) this beats wrk's count over
        the window, which misses the requests still in flight when the window closes.
        """
        if not self.requests or not self.mean_ms:
            return 0.0
        return self.connections / (self.mean_ms / 1e3)


def parse(output: str) -> WrkResult:
    """Parses the text wrk prints with --latency."""
    rps = RPS_LINE.search(output)
    total = TOTAL_LINE.search(output)
    mean = MEAN_LINE.search(output)
    latencies = {int(p): float(v) * UNITS[u] for p, v, u in LATENCY_LINE.findall(output)}
    if rps is None or total is None or mean is None or set(latencies) != {50, 75, 90, 99}:
        raise WrkError(f"unexpected wrk output:\n{output}")
    non_2xx = NON_2XX.search(output)
    sockets = SOCKET_ERRORS.search(output)
    socket_counts = [int(n) for n in sockets.groups()] if sockets else [0, 0, 0, 0]
    rotation = ROUND_ROBIN.search(output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * UNITS[total.group(3)] / 1e3,
        rps=float(rps.group(1)),
        mean_ms=float(mean.group(1)) * UNITS[mean.group(2)],
        p50_ms=latencies[50],
        p75_ms=latencies[75],
        p90_ms=latencies[90],
        p99_ms=latencies[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(socket_counts),
        timeouts=socket_counts[3],
        users=int(rotation.group(2)) if rotation else 0,
    )


@dataclass(frozen=True, slots=True)
class WrkJob:
    """One wrk invocation: -t1 -c<connections> -d<seconds> --latency [-s script]."""

    url: str
    connections: int
    seconds: int
    cpus: str
    script: Path | None = None
    env: dict[str, str] | None = None
    timeout_s: int = 5

    def command(self) -> list[str]:
        cmd = ["taskset", "-c", self.cpus, "wrk", "-t1", f"-c{self.connections}", f"-d{self.seconds}s"]
        cmd += [f"--timeout={self.timeout_s}s", "--latency"]
        if self.script is not None:
            cmd += ["-s", str(self.script)]
        return [*cmd, self.url]

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(self.env or {})},
        )

    def finish(self, process: subprocess.Popen[str]) -> WrkResult:
        output, _ = process.communicate(timeout=self.seconds + self.timeout_s + 60)
        if process.returncode != 0:
            raise WrkError(f"wrk exited {process.returncode}:\n{output}")
        return replace(parse(output), connections=self.connections)

    def run(self) -> WrkResult:
        return self.finish(self.start())
