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
    writes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # bench/writer.py's, per round
    memory_kb: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, key: str, result: WrkResult) -> None:
        self.http.setdefault(key, []).append(result)

    def add_writes(self, key: str, summary: dict[str, Any]) -> None:
        self.writes.setdefault(key, []).append(summary)

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
    if meta.get("mixed"):
        out += ["", *render_mixed(results, meta["mixed"])]
    # bare alone is the mixed workload's reference, shown there.
    if any(key != "bare" for key in order):
        out += ["", *render_single(results, meta, order)]
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


def render_single(results: Results, meta: dict[str, Any], order: Sequence[str]) -> list[str]:
    """The one-token, read-only targets of issue 6 (kept so that they can be held to it)."""
    out = ["## Single token, read-only: throughput and latency (medians over rounds)", ""]
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
    out += ["", "## Single token: against the targets of issue 6", ""]
    out += table(
        ["ratio", "measured", "target", "met"],
        [[r.name, r.shown, r.goal, _mark(r.met)] for r in ratios(results)],
    )
    return out


# --- the mixed workload (issue 14): the headline ----------------------------------------------

MIXED_NAMES = {"saas": "saas_app", "peer": "fastapi-users", "cold": "saas_app, read cache off"}


def mixed_key(target: str, writes: int) -> str:
    """The results key of one cell: `mixed-<saas|peer|cold>-w<writes/s>`."""
    return f"mixed-{target}-w{writes}"


def mixed_labels(levels: Sequence[int], cold_levels: Sequence[int], users: int) -> dict[str, str]:
    labels = {}
    for target, target_levels in (("saas", levels), ("peer", levels), ("cold", cold_levels)):
        path = "`GET /t/{t}/users/me`" if target != "peer" else "`GET /users/me`"
        for w in target_levels:
            labels[mixed_key(target, w)] = (
                f"{MIXED_NAMES[target]} {path}, {users} users round-robin, {w} writes/s"
            )
    return labels


def write_totals(results: Results, key: str) -> dict[str, Any] | None:
    """The writer's figures over rounds: median rate, summed counts, every failure by kind."""
    rounds = results.writes.get(key)
    if not rounds:
        return None
    statuses: dict[str, int] = {}
    for summary in rounds:
        for status, n in summary["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    p99s = [s["p99_ms"] for s in rounds if s["p99_ms"] is not None]
    return {
        "asked": rounds[0]["rate"],
        "achieved": statistics.median(s["achieved"] for s in rounds),
        "sent": sum(s["sent"] for s in rounds),
        "ok": sum(s["ok"] for s in rounds),
        "failed": sum(s["failed"] for s in rounds),
        "statuses": statuses,
        "p99_ms": statistics.median(p99s) if p99s else None,
        "max_lag_ms": max(s["max_lag_ms"] for s in rounds),
    }


def read_errors(results: Results, key: str) -> int | None:
    rounds = results.http.get(key)
    return None if not rounds else sum(r.errors for r in rounds)


def mixed_summary(results: Results, levels: Sequence[int], cold_levels: Sequence[int]) -> dict[str, Any]:
    """The headline figures (medians over rounds and their ratios), for the report and the JSON."""
    m = results.median
    saas0, peer0 = m(mixed_key("saas", 0)), m(mixed_key("peer", 0))
    rows = []
    for w in levels:
        saas, peer = m(mixed_key("saas", w)), m(mixed_key("peer", w))
        rows.append(
            {
                "writes": w,
                "saas_app": saas,
                "fastapi_users": peer,
                "saas_over_peer": _ratio(saas, peer),
                "saas_over_w0": _ratio(saas, saas0),
                "peer_over_w0": _ratio(peer, peer0),
                "saas_writes": write_totals(results, mixed_key("saas", w)),
                "peer_writes": write_totals(results, mixed_key("peer", w)),
                "saas_read_errors": read_errors(results, mixed_key("saas", w)),
                "peer_read_errors": read_errors(results, mixed_key("peer", w)),
            }
        )
    cold = []
    for w in cold_levels:
        rate = m(mixed_key("cold", w))
        cold.append(
            {
                "writes": w,
                "saas_app_cold": rate,
                "cold_over_peer": _ratio(rate, m(mixed_key("peer", w))),
                "cold_over_saas": _ratio(rate, m(mixed_key("saas", w))),
                "writes_done": write_totals(results, mixed_key("cold", w)),
                "read_errors": read_errors(results, mixed_key("cold", w)),
            }
        )
    bare = m("bare")
    reference = {"bare": bare, "saas_over_bare": _ratio(saas0, bare), "peer_over_bare": _ratio(peer0, bare)}
    return {"rows": rows, "cold": cold, "reference": reference}


def _rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def _writes_done(totals: dict[str, Any] | None) -> str:
    return "–" if totals is None else f"{totals['achieved']:.1f}"


def _count(n: int | None) -> str:
    return "–" if n is None else f"**{n}**" if n else "0"


def _failed(totals: dict[str, Any] | None) -> str:
    return "–" if totals is None else _count(totals["failed"])


def render_mixed(results: Results, mixed: dict[str, Any]) -> list[str]:
    summary = mixed_summary(results, mixed["writes"], mixed["cold_writes"])
    out = [
        f"## Mixed workload: {mixed['users']} users in {mixed['tenants']} tenants, reads while "
        "writing (issue 14; medians over rounds)",
        "",
        "Reads: wrk sends `GET …/users/me`, each request as the next of the users (round-robin "
        "over their access tokens). Writes, during the reads at W a second, spread over the same "
        "users: saas_app `POST /t/{t}/projects`, fastapi-users `PATCH /users/me` (a new email). "
        "Reads/s counts the reads only.",
        "",
    ]
    rows = []
    for row in summary["rows"]:
        rows.append(
            [
                str(row["writes"]),
                _rate(row["saas_app"]),
                _rate(row["fastapi_users"]),
                _times(row["saas_over_peer"]),
                _times(row["saas_over_w0"]),
                _times(row["peer_over_w0"]),
                f"{_writes_done(row['saas_writes'])} / {_writes_done(row['peer_writes'])}",
                f"{_failed(row['saas_writes'])} / {_failed(row['peer_writes'])}",
                f"{_count(row['saas_read_errors'])} / {_count(row['peer_read_errors'])}",
            ]
        )
    out += table(
        [
            "W writes/s",
            "saas_app reads/s",
            "fastapi-users reads/s",
            "saas_app ÷ fastapi-users",
            "saas_app W÷W0",
            "fastapi-users W÷W0",
            "writes/s done (saas_app / fastapi-users)",
            "failed writes",
            "reads non-2xx or socket errors",
        ],
        rows,
    )
    ref = summary["reference"]
    if ref["bare"] is not None:
        out += [
            "",
            f"Reference, bare FastAPI (static answer, no auth, no writes): {_rate(ref['bare'])} req/s; "
            f"at W = 0 saas_app is {_pct(ref['saas_over_bare'])} of it, "
            f"fastapi-users {_pct(ref['peer_over_bare'])}.",
        ]
    if summary["cold"]:
        out += [
            "",
            "Cold path: saas_app with `READ_CACHE_ENABLED=false` (every request reads the database):",
            "",
        ]
        out += table(
            [
                "W writes/s",
                "saas_app cold reads/s",
                "cold ÷ fastapi-users",
                "cold ÷ saas_app (cache on)",
                "writes/s done",
                "failed writes",
                "reads non-2xx or socket errors",
            ],
            [
                [
                    str(row["writes"]),
                    _rate(row["saas_app_cold"]),
                    _times(row["cold_over_peer"]),
                    _times(row["cold_over_saas"]),
                    _writes_done(row["writes_done"]),
                    _failed(row["writes_done"]),
                    _count(row["read_errors"]),
                ]
                for row in summary["cold"]
            ],
        )
    out += ["", *mixed_details(results, mixed)]
    return out


def mixed_details(results: Results, mixed: dict[str, Any]) -> list[str]:
    """Every cell's latencies, rounds, rotation and writes; and what went wrong, in bold."""
    labels = mixed_labels(mixed["writes"], mixed["cold_writes"], mixed["users"])
    rows, notes = [], []
    for key, label in labels.items():
        rounds = results.http.get(key)
        if not rounds:
            continue
        users = min(r.users for r in rounds)
        if users < mixed["users"]:
            notes.append(f"{label}: reads went out as only {users} of {mixed['users']} users in some round.")
        totals = write_totals(results, key)
        if totals is not None and totals["failed"]:
            notes.append(
                f"{label}: {totals['failed']} of {totals['sent']} writes failed: {totals['statuses']}."
            )
        if totals is not None and totals["achieved"] < 0.95 * totals["asked"]:
            notes.append(
                f"{label}: the writer achieved {totals['achieved']:.1f} of {totals['asked']:g} writes/s."
            )
        errors = sum(r.errors for r in rounds)
        if errors:
            notes.append(f"{label}: {errors} non-2xx reads or socket errors (see latest.json).")
        rows.append(
            [
                label,
                _ms(results.median(key, "p50_ms")),
                _ms(results.median(key, "p99_ms")),
                " / ".join(_rate(r.rps) for r in rounds),
                str(users),
                "–" if totals is None else f"{totals['ok']} of {totals['sent']}",
                "–" if totals is None else _ms(totals["p99_ms"]),
            ]
        )
    out = ["### Mixed workload, every cell", ""]
    out += table(
        ["cell", "read p50", "read p99", "reads/s per round", "users rotated", "writes 2xx", "write p99"],
        rows,
    )
    if notes:
        out += ["", *[f"- **{n}**" for n in notes]]
    return out
