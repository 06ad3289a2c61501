"""`schemathesis run --checks all` against the real server: the document says what the code does.

Every check schemathesis has (positive data accepted, negative data refused, documented
statuses, bodies and headers, auth not ignored, ...) runs over the app's own document, served by
`python -m saas_app serve` on a database with a populated tenant: its owner's token and an API
key are configured for the document's security schemes, and the path parameters point at the
tenant and objects that exist, so guarded operations get past their guards. The bounded profile
(`make test`) sends a few cases per operation, seeded; `make fuzz` (FUZZ_PROFILE=deep) many more.

The only exceptions are per-operation, in EXPECTED below, each one justified in docs/api.md
("What schemathesis is told").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fuzz.conftest import ALLOWED_REDIRECT, DEEP, World
from tests.fuzz.test_openapi_fuzz import REJECTED

pytestmark = pytest.mark.e2e

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Schema-valid requests that the contract refuses on purpose: the values are well-formed but
# wrong (a password that is not the user's, a code that was never issued), which no schema can
# express. docs/api.md lists them.
EXPECTED: dict[str, list[str]] = {
    # RFC 6749 §5.2: wrong credentials, an unknown refresh token or code are 400 invalid_grant.
    "POST /t/{tenant}/auth/token": ["200", "400", "403", "429"],
    # A wrong current password is 400 invalid_password.
    "POST /t/{tenant}/users/me/password": ["204", "400", "401", "403", "429"],
    # A wrong TOTP or recovery code is 400 invalid_code (429 after too many).
    "POST /t/{tenant}/users/me/mfa/totp": ["2xx", "400", "401", "403", "409", "429"],
    "POST /t/{tenant}/users/me/mfa/totp/confirm": ["2xx", "400", "401", "403", "409", "429"],
    "POST /t/{tenant}/users/me/mfa/recovery-codes": ["2xx", "400", "401", "403", "409", "429"],
    # A reset token that was never mailed (any schemathesis makes up) is 400 invalid_token.
    "POST /t/{tenant}/auth/password/reset": ["204", "400", "429"],
    # So are a verification or invitation token (and an address taken since is 409 user_exists).
    "POST /t/{tenant}/auth/email/verify": ["204", "400", "409", "429"],
    "POST /t/{tenant}/auth/invitations/accept": ["201", "400", "409", "429"],
    # A new address: a wrong `password` is 400 invalid_password, a taken address 409
    # user_exists, no password and an old login 403 reauthentication_required.
    "PATCH /t/{tenant}/users/me": ["2xx", "400", "401", "403", "409", "429"],
    # An address verified already is 409 already_verified.
    "POST /t/{tenant}/users/me/email/verification": ["2xx", "401", "403", "409", "429"],
    # An invited address with an account or a pending invitation is 409; a well-formed name
    # of no role 422 unknown_role; roles beyond the caller's 403.
    "POST /t/{tenant}/invitations": ["2xx", "401", "403", "409", "422", "429"],
    # A `code` or `state` that GitHub never issued is 400 (invalid_state, github_code_invalid).
    "GET /t/{tenant}/auth/github/callback": ["3xx", "400", "404", "409", "502"],
    # An Idempotency-Key already sent with another body is 422 idempotency_key_reused (the
    # generator repeats small values such as "0"): docs/api.md, "Idempotency-Key".
    **{
        f"POST /t/{{tenant}}/{what}": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
        for what in ("projects", "roles", "api-keys")
    },
    # A well-formed name of no role is 422 unknown_role, as an unknown id is 404.
    "PUT /t/{tenant}/users/{user_id}/roles": ["2xx", "401", "403", "404", "409", "422"],
    # A cursor is opaque: only a `next_cursor` this API returned decodes; any other is 422.
    **{
        f"GET {path}": ["2xx", "401", "403", "404", "422", "429"]
        for path in (
            "/t/{tenant}/projects",
            "/t/{tenant}/users",
            "/t/{tenant}/users/me/sessions",
            "/t/{tenant}/roles",
            "/t/{tenant}/audit-events",
            "/t/{tenant}/api-keys",
            "/t/{tenant}/invitations",
        )
    },
}


def toml_value(value: Any) -> str:
    """TOML for the few value kinds used here (a JSON string is a valid TOML basic string)."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def config_file(path: Path, base: str, world: World) -> Path:
    parameters = {
        "path.tenant": world.slug,
        **{f"path.{k}": v for k, v in world.ids.items()},
        # Redirects are checked against OAUTH_ALLOWED_REDIRECTS, which no schema can list.
        "query.redirect_uri": ALLOWED_REDIRECT,
    }
    lines = [
        f"base-url = {toml_value(base)}",
        *([] if DEEP else ["seed = 7"]),
        "[generation]",
        'mode = "all"',
        f"max-examples = {60 if DEEP else 6}",
        "[checks.negative_data_rejection]",
        f"expected-statuses = {toml_value(REJECTED)}",
        "[auth.openapi.BearerToken]",
        f"bearer = {toml_value(world.owner_token)}",
        "[auth.openapi.APIKey]",
        f"api_key = {toml_value(world.api_key)}",
        "[parameters]",
        *(f"{toml_value(k)} = {toml_value(v)}" for k, v in parameters.items()),
    ]
    for label, statuses in EXPECTED.items():
        lines += [
            "[[operations]]",
            f"include-name = {toml_value(label)}",  # "METHOD /path" (separate filters would OR)
            "checks.positive_data_acceptance.expected-statuses = " + toml_value(statuses),
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_schemathesis_all_checks_over_http(fuzz_server: str, world: World, tmp_path: Path) -> None:
    config = config_file(tmp_path / "schemathesis.toml", fuzz_server, world)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{fuzz_server}/openapi.json",
        "--checks",
        "all",
        "--workers",
        "1",
        "--max-time",
        str(600 if DEEP else 60),
        # Logging out ends the session whose token every other case uses (in-process fuzz covers it).
        "--exclude-path",
        "/t/{tenant}/auth/logout",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.schemathesis_hooks"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=1200, check=False, cwd=ROOT, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
