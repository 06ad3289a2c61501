"""Hostile input over real HTTP: a short schemathesis pass against `python -m saas_app serve`.

Same checks as the in-process fuzz, through uvicorn's own parsing (headers, bodies, URLs) and
with the default abuse limits on, so 429 answers are exercised too. The bounded profile sends
4 cases per operation (a few seconds); the deep one sends 60.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from saas_app.core.config import Settings
from tests.conftest import REDIS_URL
from tests.fuzz.conftest import (
    ALLOWED_REDIRECT,
    DEEP,
    FUZZ_SETTINGS,
    STATS,
    Callers,
    Stats,
    World,
    check_no_access_without_credential,
)
from tests.fuzz.test_openapi_fuzz import CHECKS, CONFIG
from tests.servers import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def fuzz_server(database_url: str, world: World, fuzz_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The real server on the test's database (with `world` in it), GitHub configured but
    pointing at a closed loopback port: no case can get that far without a valid state."""
    env = {
        "DATABASE_URL": database_url,
        "RATE_LIMIT_KEY_PREFIX": f"fuzz-{uuid.uuid4().hex}",
        "PUBLIC_URL": fuzz_settings.PUBLIC_URL,  # the issuer of the world's tokens
        "GITHUB_CLIENT_ID": "fuzz-client",
        "GITHUB_CLIENT_SECRET": "fuzz-secret",
        "GITHUB_TOKEN_URL": "http://127.0.0.1:9/login/oauth/access_token",
        "GITHUB_API_URL": "http://127.0.0.1:9",
        "OAUTH_ALLOWED_REDIRECTS": ALLOWED_REDIRECT,
        **({"REDIS_URL": REDIS_URL} if REDIS_URL else {}),
    }
    log_path = tmp_path / "server.log"
    with running_server(env, log_path) as (base, _):
        yield base
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-4000:]


@pytest.fixture
def http_callers(world: World) -> Callers:
    return Callers(world)


@pytest.fixture(scope="session")
def http_stats() -> Stats:
    return STATS.setdefault("over HTTP", Stats())


def test_every_operation_over_http(fuzz_server: str, http_callers: Callers, http_stats: Stats) -> None:
    # schemathesis' lazy `from_fixture` loader does not run under pytest 9 (it sets the item's
    # `_nodeid`), so each operation gets its own Hypothesis test here, with the same strategies.
    schema = schemathesis.openapi.from_url(
        f"{fuzz_server}/openapi.json", config=schemathesis.Config.from_dict(CONFIG)
    )
    failures: dict[str, BaseException] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Logging out ends the session every other operation's owner cases use: it goes last.
    operations.sort(key=lambda operation: operation.label == "POST /t/{tenant}/auth/logout")
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(FUZZ_SETTINGS, max_examples=60 if DEEP else 4)
        @given(case=cases)
        def fuzz(case: Case) -> None:
            caller = http_callers.prepare(case)
            response = case.call(timeout=10)
            http_stats.record(case, caller, response.status_code)
            case.validate_response(response, checks=CHECKS)
            check_no_access_without_credential(case, caller, response.status_code)

        try:
            fuzz()
        except Exception as exc:  # every operation runs; all failures are reported together
            failures[operation.label] = exc
    assert not failures, "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
