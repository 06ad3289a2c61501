"""Hostile input over real HTTP: a short schemathesis pass against `python -m saas_app serve`.

Same checks as the in-process fuzz, through uvicorn's own parsing (headers, bodies, URLs) and
with the default abuse limits on, so 429 answers are exercised too. The bounded profile sends
4 cases per operation (a few seconds); the deep one sends 60.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.fuzz.conftest import (
    DEEP,
    FUZZ_SETTINGS,
    STATS,
    Callers,
    Stats,
    World,
    check_no_access_without_credential,
)
from tests.fuzz.test_openapi_fuzz import CHECKS, CONFIG

pytestmark = pytest.mark.e2e


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
