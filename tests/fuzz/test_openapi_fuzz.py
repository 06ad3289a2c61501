"""Hostile input (issue 7): schemathesis fuzzes every operation of the app's OpenAPI document.

For each operation it sends generated valid (positive) and invalid (negative) requests, as the
tenant's owner, with an API key, as another tenant's owner, with a forged credential,
anonymously, or as generated, and checks every answer: never a 5xx; always a documented status,
Content-Type and body; invalid input refused; and nothing but a 4xx for a caller without a
credential of the tenant.

`make test` runs the bounded profile; `make fuzz` (FUZZ_PROFILE=deep) runs many more examples
per operation and a stateful run that chains create tenant -> log in -> use the token.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import Phase, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from saas_app.core.clock import FrozenClock
from saas_app.core.config import Settings
from saas_app.main import create_app
from tests.conftest import TEST_JWT_SECRET
from tests.fuzz.conftest import (
    DEEP,
    FUZZ_SETTINGS,
    STATS,
    Callers,
    Stats,
    World,
    check_no_access_without_credential,
    empty_database,
    fuzz_overrides,
    no_github,
)

CHECKS = [
    not_a_server_error,  # never a 5xx
    status_code_conformance,  # every status is documented for its operation
    content_type_conformance,  # ... with its Content-Type
    response_schema_conformance,  # ... and the body matches the documented schema
    response_headers_conformance,
    negative_data_rejection,  # invalid input is refused (with a status from REJECTED)
    unsupported_method,  # an undocumented method is a 405 ...
    allow_header_conformance,  # ... whose Allow names every documented method
]
# A refusal of invalid input: 413/414/431 too (oversized input is refused before parsing).
REJECTED = ["400", "401", "403", "404", "405", "409", "413", "414", "415", "422", "429", "431"]
CONFIG = {
    "generation": {"mode": "all"},  # positive and negative data
    "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
}

# The schema comes from the app itself; nothing here touches a database (the lifespan only
# builds an engine). Each test then calls an app of its own, on the test's fresh database.
SCHEMA_APP = create_app(
    Settings(
        _env_file=None,
        ENV="test",
        DATABASE_URL="sqlite+aiosqlite://",
        JWT_SECRET=TEST_JWT_SECRET,
        LOG_FORMAT="text",
    )
)
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    SCHEMA_APP,
    # Seeded in the bounded profile, so `make test` sends much the same cases each run.
    config=schemathesis.Config.from_dict({**CONFIG, **({} if DEEP else {"seed": 7})}),
)


@pytest.fixture
def fuzz_app(world: World, fuzz_settings: Settings, clock: FrozenClock) -> FastAPI:
    """The app under test; schemathesis runs its lifespan and ends it after the test."""
    return create_app(fuzz_settings, clock=clock, http_transport=httpx.MockTransport(no_github))


@pytest.fixture
def callers(world: World) -> Callers:
    return Callers(world)


@schema.parametrize()
@settings(FUZZ_SETTINGS)
def test_operation(case: Case, fuzz_app: FastAPI, callers: Callers, fuzz_stats: Stats) -> None:
    caller = callers.prepare(case)
    response = case.call(app=fuzz_app)
    fuzz_stats.record(case, caller, response.status_code)
    case.validate_response(response, checks=CHECKS)
    check_no_access_without_credential(case, caller, response.status_code)


# -- Stateful: create tenant -> log in -> use the token -------------------------------------

TOKEN_PATH = "/t/{tenant}/auth/token"


def _ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _link_name(path: str, method: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_")


def with_tenant_links(document: dict[str, Any]) -> dict[str, Any]:
    """The app's document plus OpenAPI links: a created tenant's slug and owner log in, and the
    token's tenant feeds every tenant operation (the token itself goes in `before_call`)."""
    document = copy.deepcopy(document)
    paths = document["paths"]
    paths["/tenants"]["post"]["responses"]["201"]["links"] = {
        "LogInAsOwner": {
            "operationRef": _ref(TOKEN_PATH, "post"),
            "parameters": {"path.tenant": "$response.body#/tenant/slug"},
            "requestBody": {
                "grant_type": "password",
                "username": "$request.body#/owner/email",
                "password": "$request.body#/owner/password",
            },
        }
    }
    links: dict[str, Any] = {
        "Refresh": {
            "operationRef": _ref(TOKEN_PATH, "post"),
            "parameters": {"path.tenant": "$request.path.tenant"},
            "requestBody": {"grant_type": "refresh_token", "refresh_token": "$response.body#/refresh_token"},
        }
    }
    for path, operations in paths.items():
        if path.startswith("/t/{tenant}") and path != TOKEN_PATH:
            for method in operations:
                links[_link_name(path, method)] = {
                    "operationRef": _ref(path, method),
                    "parameters": {"path.tenant": "$request.path.tenant"},
                }
    paths[TOKEN_PATH]["post"]["responses"]["200"]["links"] = links
    return document


stateful_schema = schemathesis.openapi.from_dict(
    with_tenant_links(SCHEMA_APP.openapi()),
    config=schemathesis.Config.from_dict({**CONFIG, "base-url": "http://testserver"}),
)


@pytest.fixture(scope="session")
def stateful_stats() -> Stats:
    return STATS.setdefault("stateful", Stats())


def test_stateful_tenant_workflows(
    make_settings: Callable[..., Settings], database_url: str, clock: FrozenClock, stateful_stats: Stats
) -> None:
    # Every scenario starts from an empty database, where an old slug may name a new
    # tenant: the tenant cache is evicted by the wipe's change of the data version.
    settings_ = make_settings(**fuzz_overrides())
    app = create_app(settings_, clock=clock, http_transport=httpx.MockTransport(no_github))

    class TenantWorkflows(stateful_schema.as_state_machine()):  # type: ignore[misc]
        """Each scenario starts from an empty database (so Hypothesis sees the same answers to
        the same steps), keeps the access tokens it obtains and sends them to their tenant."""

        tokens: dict[str, str]

        def setup(self) -> None:
            asyncio.run(empty_database(database_url))
            self.tokens = {}

        def before_call(self, case: Case) -> None:
            slug = (case.path_parameters or {}).get("tenant")
            if slug in self.tokens:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {self.tokens[slug]}"}

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"app": app}

        def after_call(self, response: schemathesis.Response, case: Case) -> None:
            super().after_call(response, case)
            caller = "owner" if "Authorization" in (case.headers or {}) else "anonymous"
            stateful_stats.record(case, caller, response.status_code)
            if case.operation.label == f"POST {TOKEN_PATH}" and response.status_code == 200:
                self.tokens[case.path_parameters["tenant"]] = response.json()["access_token"]

        def validate_response(
            self, response: schemathesis.Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response, checks=CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder
            )

    # Generate only, as schemathesis does for state machines: a scenario is reported as it
    # first ran, not shrunk.
    TenantWorkflows.run(
        settings=settings(FUZZ_SETTINGS, max_examples=100 if DEEP else 4, phases=[Phase.generate])
    )
