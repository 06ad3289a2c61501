"""Medians, ratios against the issue's targets, and the markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wrk import WrkResult

LABELS = {
    "bare": "bare FastAPI `GET /users/me` (static, no auth)",
    "fastapi-users": "fastapi-users `GET /users/me` (JWT bearer)",
    "saas-bearer": "saas_app `GET /t/{t}/users/me` (bearer)",
    "saas-api-key": "saas_app `GET /t/{t}/projects` (X-API-Key)",
    "scale-bearer": "saas_app, scale DB: `GET /t/{t}/users/me` (bearer)",
    "scale-api-key": "saas_app, scale DB: `GET /t/{t}/projects` (X-API-Key)",
    "saas-login": "saas_app `POST /t/{t}/auth/token` (password grant)",
    "healthz-storm": "saas_app `GET /healthz` during the login storm",
}


@dataclass
class Results:
    """Everything measured, per round, keyed like LABELS; `hash` holds the raw verify rates."""

    http: dict[str, list[WrkResult]] = field(default_factory=dict)
    hash: list[dict[str, Any]] = field(default_factory=list)
    memory_kb: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, key: str, result: WrkResult) -> None:
        self.http.setdefault(key, []).append(result)

    def median(self, key: str, attr: str = "rps") -> float | None:
        rounds = self.http.get(key)
        if not rounds:
            return None
        return float(statistics.median(float(getattr(r, attr)) for r in rounds))

    def median_hash_rate(self) -> float | None:
        return statistics.median(h["per_second"] for h in self.hash) if self.hash else None


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    value: float | None
    shown: str
    goal: str
    met: bool | None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f} %"


def _times(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def _check(v: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if v is None else ok(v)


def ratios(results: Results) -> list[Ratio]:
    m = results.median
    bearer, bare, peer, key = m("saas-bearer"), m("bare"), m("fastapi-users"), m("saas-api-key")
    at_least = {
        "40%": lambda x: x >= 0.40,
        "4x": lambda x: x >= 4,
        "1x": lambda x: x >= 1,
        "90%": lambda x: x >= 0.90,
    }
    rows: list[Ratio] = []

    def add(name: str, v: float | None, shown: str, goal: str, ok: Callable[[float], bool] | None) -> None:
        rows.append(Ratio(name, v, shown, goal, _check(v, ok) if ok else None))

    v = _ratio(bearer, bare)
    add("bearer `/users/me` ÷ bare", v, _pct(v), "≥ 40 %", at_least["40%"])
    v = _ratio(bearer, peer)
    add("bearer `/users/me` ÷ fastapi-users", v, _times(v), "≥ 4×", at_least["4x"])
    v = _ratio(peer, bare)
    add("fastapi-users ÷ bare (context)", v, _pct(v), "issue saw ≈ 8 %", None)
    v = _ratio(key, bearer)
    add("API key `/projects` ÷ bearer `/users/me`", v, _times(v), "≥ 1×", at_least["1x"])
    v = _ratio(m("saas-login", "steady_rps"), results.median_hash_rate())
    add("logins/s ÷ raw verify/s", v, _pct(v), "≥ 90 %", at_least["90%"])
    v = m("healthz-storm", "p99_ms")
    add("`GET /healthz` p99 during the login storm", v, _ms(v), "< 50 ms", lambda x: x < 50)
    for kind, scale_key, small in (("bearer", "scale-bearer", bearer), ("API key", "scale-api-key", key)):
        v = _ratio(m(scale_key), small)
        if v is not None:
            add(f"scale ÷ small DB, {kind}", v, _pct(v), "≥ 90 %", at_least["90%"])
    rss_kb = results.memory_kb.get("saas_app", {}).get("VmRSS")
    v = rss_kb / 1024 if rss_kb is not None else None
    add("RSS of the saas_app worker after the run", v, _mb(v), "< 120 MB", lambda x: x < 120)
    return rows


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} MB"


def _ms(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def _mark(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[met]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render(results: Results, meta: dict[str, Any], order: Sequence[str]) -> str:
    out = [f"# saas_app load benchmark, {meta.get('database', 'SQLite')}: {meta['when']}", ""]
    if meta["quick"]:
        out += [
            "> **Quick mode** (smoke test): short rounds, too few samples to be a measurement.",
            "> Rerun `make bench` on an otherwise idle machine for figures worth quoting.",
            "",
        ]
    out += [f"- {line}" for line in meta["lines"]]
    out += ["", "## Throughput and latency (medians over rounds)", ""]
    rows = []
    notes = []
    for key in order:
        rounds = results.http.get(key)
        if not rounds:
            continue
        errors = sum(r.errors for r in rounds)
        if errors:
            notes.append(f"{LABELS[key]}: {errors} non-2xx responses or socket errors (see latest.json).")
        if key == "saas-login":  # a login takes seconds: Little's law, wrk's own count beside it
            rate = results.median(key, "steady_rps")
            per_round = " / ".join(f"{r.steady_rps:.2f} ({r.rps:.2f})" for r in rounds)
            if any(r.requests == 0 for r in rounds):
                notes.append("No login completed in some round: raise --login-duration.")
            notes.append(
                "Logins/s = connections ÷ mean latency (Little's law; each login takes seconds under "
                "the storm, so wrk's count over the window, in brackets, misses those in flight)."
            )
        else:
            rate = results.median(key)
            per_round = " / ".join(f"{r.rps:,.0f}" if r.rps >= 100 else f"{r.rps:.2f}" for r in rounds)
        rows.append(
            [
                LABELS[key],
                "n/a" if rate is None else f"{rate:,.1f}" if rate >= 100 else f"{rate:.2f}",
                _ms(results.median(key, "p50_ms")),
                _ms(results.median(key, "p99_ms")),
                per_round,
                f"**{errors}**" if errors else "0",
            ]
        )
    rate = results.median_hash_rate()
    if rate is not None:
        h = results.hash[0]
        rows.append(
            [
                f"raw `{h['scheme']}` verify, rounds {h['rounds']}, {meta['hash_threads']} threads, "
                f"in-process on CPU {meta['server_cpus']}",
                f"{rate:.2f}",
                "–",
                "–",
                " / ".join(f"{x['per_second']:.2f}" for x in results.hash),
                "–",
            ]
        )
    out += table(["target", "req/s", "p50", "p99", "req/s per round", "errors"], rows)
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    out += ["", "## Against the issue's targets", ""]
    out += table(
        ["ratio", "measured", "target", "met"],
        [[r.name, r.shown, r.goal, _mark(r.met)] for r in ratios(results)],
    )
    if results.memory_kb:
        out += ["", "## Memory after the run (one worker each)", ""]
        out += table(
            ["server", "VmRSS", "VmHWM (peak)"],
            [
                [name, f"{kb.get('VmRSS', 0) / 1024:.1f} MB", f"{kb.get('VmHWM', 0) / 1024:.1f} MB"]
                for name, kb in results.memory_kb.items()
            ],
        )
    out += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(out)
