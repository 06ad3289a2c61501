"""OWASP ASVS 5.0.0, chapters V6-V10, as a table of attacker-side tests.

Each case is an async function registered on its chapter's `Table` with the requirement
ids it proves (`@TABLE.case("V6.2.1")`); the chapter's one test runs each case against a
fresh app and tenant. The ids go into the test ids, so a requirement's proof is found by
name: `pytest tests/security -k "V6.2.1-"` (the trailing dash keeps V6.2.10-12 out).

A case registered with `Table.gap(...)` demonstrates a requirement the service does not
meet yet: it is a strict xfail (it fails today; the day it passes, the run fails until
docs/security.md and the case are updated).

`docs/security.md` ("OWASP ASVS 5.0") lists every requirement of the five chapters with
its status and the tests that prove it; `test_the_asvs_table_in_the_docs_matches_the_tests`
below keeps the two in step.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from jose import jwt
from sqlalchemy import select

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.models import Base
from tests.conftest import TEST_JWT_SECRET
from tests.factories import Member, TenantCtx, add_member, create_tenant, token
from tests.github_helpers import GitHubEnv, github_env, github_settings, new_fake

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
CHAPTER_MODULES = ("test_asvs_v6", "test_asvs_v7", "test_asvs_v8", "test_asvs_v9", "test_asvs_v10")
PROBLEM_JSON = "application/problem+json"

# ASVS 5.0.0 (OWASP/ASVS, 5.0/docs_en/OWASP_Application_Security_Verification_Standard_5.0.0_en.csv):
# how many requirements each section of chapters V6-V10 has.
SECTIONS = {
    "V6.1": 3, "V6.2": 12, "V6.3": 8, "V6.4": 6, "V6.5": 8, "V6.6": 4, "V6.7": 2, "V6.8": 4,
    "V7.1": 3, "V7.2": 4, "V7.3": 2, "V7.4": 5, "V7.5": 3, "V7.6": 2,
    "V8.1": 4, "V8.2": 4, "V8.3": 3, "V8.4": 2,
    "V9.1": 3, "V9.2": 4,
    "V10.1": 2, "V10.2": 3, "V10.3": 5, "V10.4": 16, "V10.5": 5, "V10.6": 2, "V10.7": 3,
}  # fmt: skip
REQUIREMENTS = [f"{section}.{n}" for section, count in SECTIONS.items() for n in range(1, count + 1)]
STATUSES = ("met", "not met", "not applicable")


# -- the scene every case attacks -------------------------------------------------------------


@dataclass
class Scene:
    """A fresh app (its settings, its frozen clock) and a tenant whose owner is signed in.

    With `github`, the app talks to tests/fake_github.py and `env` drives the browser leg.
    """

    client: AsyncClient
    app: FastAPI
    settings: Settings
    clock: FrozenClock
    tenant: TenantCtx
    tmp: Path
    github: GitHubEnv | None = None

    @property
    def owner(self) -> Member:
        return self.tenant.owner

    @property
    def env(self) -> GitHubEnv:
        assert self.github is not None, "register the case with github=True"
        return self.github

    def path(self, suffix: str = "") -> str:
        return self.tenant.path(suffix)

    async def token(self, **form: str) -> Response:
        return await token(self.client, self.tenant.slug, **form)

    async def password_grant(self, email: str, password: str, **extra: str) -> Response:
        return await self.token(grant_type="password", username=email, password=password, **extra)

    async def refresh(self, refresh_token: str) -> Response:
        return await self.token(grant_type="refresh_token", refresh_token=refresh_token)

    async def me(self, headers: Mapping[str, str]) -> Response:
        return await self.client.get(self.path("/users/me"), headers=dict(headers))

    async def member(self, *roles: str) -> Member:
        return await add_member(self.client, self.tenant, *roles)

    async def database_text(self) -> str:
        """Every row of every table, as text: to prove a secret is not stored."""
        async with self.app.state.runtime.session_factory() as session:
            rows = [
                repr(row)
                for table in Base.metadata.sorted_tables
                for row in (await session.execute(select(table))).all()
            ]
        return "\n".join(rows)


Run = Callable[[Scene], Awaitable[None]]
Setting = Any  # a value, or a function of the test's tmp_path returning one (e.g. a key file)


@dataclass(frozen=True)
class Case:
    requirements: tuple[str, ...]
    run: Run
    settings: Mapping[str, Setting] = field(default_factory=dict)
    github: bool = False
    gap: str | None = None  # why the requirement is not met (the case is a strict xfail)

    @property
    def id(self) -> str:
        return "-".join((*self.requirements, self.run.__name__.replace("_", "-")))

    def marks(self) -> list[pytest.MarkDecorator]:
        if self.gap is None:
            return []
        return [pytest.mark.xfail(strict=True, raises=AssertionError, reason=self.gap)]


class Table:
    """The cases of one ASVS chapter, in the order they are registered."""

    def __init__(self, chapter: str) -> None:
        self.chapter = chapter
        self.cases: list[Case] = []

    def case(self, *requirements: str, github: bool = False, **settings: Setting) -> Callable[[Run], Run]:
        """Registers a case proving `requirements` (run on an app with `settings`)."""
        return self._register(requirements, github, settings, gap=None)

    def gap(
        self, requirement: str, *, reason: str, github: bool = False, **settings: Setting
    ) -> Callable[[Run], Run]:
        """Registers a case that asserts what `requirement` asks and fails today (`reason`)."""
        return self._register((requirement,), github, settings, gap=reason)

    def _register(
        self, requirements: tuple[str, ...], github: bool, settings: dict[str, Setting], gap: str | None
    ) -> Callable[[Run], Run]:
        unknown = [r for r in requirements if r not in REQUIREMENTS or not r.startswith(f"{self.chapter}.")]
        assert not unknown, f"not ASVS 5.0 {self.chapter} requirements: {unknown}"

        def register(run: Run) -> Run:
            self.cases.append(Case(requirements, run, settings, github, gap))
            return run

        return register

    def params(self) -> list[Any]:
        """The cases as pytest parameters, with their ids; a gap is a strict xfail."""
        return [pytest.param(case, id=case.id, marks=case.marks()) for case in self.cases]


MakeSettings = Callable[..., Settings]
MakeClient = Callable[[Settings], AbstractAsyncContextManager[AsyncClient]]


@asynccontextmanager
async def open_scene(
    case: Case, make_settings: MakeSettings, make_client: MakeClient, clock: FrozenClock, tmp: Path
) -> AsyncIterator[Scene]:
    overrides = {name: value(tmp) if callable(value) else value for name, value in case.settings.items()}
    if case.github:
        settings = make_settings(**github_settings(**overrides))
        async with github_env(settings, clock, new_fake()) as env:
            yield Scene(env.client, env.app, settings, clock, await create_tenant(env.client), tmp, env)
        return
    settings = make_settings(**overrides)
    async with make_client(settings) as client:
        app: FastAPI = client.app  # type: ignore[attr-defined]  # set by conftest's make_client
        yield Scene(client, app, settings, clock, await create_tenant(client), tmp)


async def run_case(
    case: Case, make_settings: MakeSettings, make_client: MakeClient, clock: FrozenClock, tmp: Path
) -> None:
    """What each chapter's test does with one case."""
    async with open_scene(case, make_settings, make_client, clock, tmp) as scene:
        await case.run(scene)


# -- small assertions the chapters share ------------------------------------------------------


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def claims_of(access_token: str) -> dict[str, Any]:
    """The token's claims, read without verifying (the app verifies; a test only looks)."""
    claims: dict[str, Any] = jwt.get_unverified_claims(access_token)
    return claims


def resign(access_token: str, **changes: Any) -> str:
    """The token's claims with `changes`, signed with the app's own (test) HS256 secret: only
    what the app checks beyond the signature can refuse it."""
    claims = {**claims_of(access_token), **changes}
    return str(jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256", headers={"typ": "at+jwt"}))


def assert_oauth_error(response: Response, error: str, status: int = 400) -> None:
    """RFC 6749 §5.2 error body, never cached."""
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


def assert_problem(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["code"] == code


# -- the docs table and the tests agree --------------------------------------------------------

ROW = re.compile(r"^\|\s*\*{0,2}(V\d+\.\d+\.\d+)\*{0,2}\s*\|(.*)\|\s*$")
SUMMARY = re.compile(r"^\| (V\d+) [A-Za-z -]+ \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", re.M)
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]`]+)\])?`")


@dataclass(frozen=True)
class DocRow:
    requirement: str
    level: str
    status: str
    tests: tuple[tuple[str, str, str | None], ...]  # (path, function, parameter id)
    why: str


def doc_rows() -> dict[str, DocRow]:
    """The rows of the "OWASP ASVS 5.0" table: | id | requirement | L | status | tests | why |."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## OWASP ASVS 5.0", 1)
    assert len(section) == 2, "docs/security.md has no '## OWASP ASVS 5.0' section"
    rows: dict[str, DocRow] = {}
    for line in section[1].splitlines():
        match = ROW.match(line)
        if not match:
            continue
        cells = [cell.strip() for cell in match.group(2).split("|")]
        assert len(cells) == 5, f"{match.group(1)}: expected 6 cells, got {len(cells) + 1}: {line}"
        _, level, status, tests, why = cells
        assert match.group(1) not in rows, f"{match.group(1)} is listed twice"
        refs = tuple(
            (path, function, parameter or None) for path, function, parameter in TEST_REF.findall(tests)
        )
        rows[match.group(1)] = DocRow(match.group(1), level, status, refs, why)
    return rows


def table_cases() -> list[Case]:
    return [
        case
        for name in CHAPTER_MODULES
        for case in importlib.import_module(f"tests.security.{name}").TABLE.cases
    ]


def test_the_asvs_table_in_the_docs_matches_the_tests() -> None:
    rows = doc_rows()
    assert sorted(rows) == sorted(REQUIREMENTS), "the table must list every V6-V10 requirement once"
    cases = table_cases()
    case_ids = {case.id for case in cases}
    problems: list[str] = []
    for row in rows.values():
        if row.status not in STATUSES:
            problems.append(f"{row.requirement}: status {row.status!r}")
        if row.level not in {"1", "2", "3"}:
            problems.append(f"{row.requirement}: level {row.level!r}")
        if row.status == "met" and not row.tests:
            problems.append(f"{row.requirement}: met, but no proving test is named")
        if row.status != "met" and not row.why:
            problems.append(f"{row.requirement}: {row.status}, but no reason is given")
        for path, function, parameter in row.tests:
            source = ROOT / path
            if not source.is_file() or not re.search(
                rf"^(async )?def {function}\(", source.read_text(), re.M
            ):
                problems.append(f"{row.requirement}: no test {path}::{function}")
            elif parameter and parameter not in case_ids and parameter not in source.read_text():
                problems.append(f"{row.requirement}: no case {path}::{function}[{parameter}]")
    for case in cases:
        for requirement in case.requirements:
            expected = "not met" if case.gap else "met"
            if rows[requirement].status != expected:
                problems.append(f"case {case.id}: the docs say {requirement} is {rows[requirement].status!r}")
            if not any(parameter == case.id for _, _, parameter in rows[requirement].tests):
                problems.append(f"case {case.id}: not named in the docs' row for {requirement}")
    assert not problems, "\n".join(problems)


def test_the_summary_counts_match_the_table() -> None:
    rows = doc_rows().values()
    summary = {m[1]: tuple(int(n) for n in m.groups()[1:]) for m in SUMMARY.finditer(DOC.read_text())}
    counted = {
        chapter: (
            sum(1 for r in rows if r.requirement.startswith(f"{chapter}.")),
            *(
                sum(1 for r in rows if r.requirement.startswith(f"{chapter}.") and r.status == s)
                for s in STATUSES
            ),
        )
        for chapter in ("V6", "V7", "V8", "V9", "V10")
    }
    assert summary == counted
