"""ASVS 5.0 V10 OAuth and OIDC: the service as GitHub's client, as the issuer of its own
tokens, and the one-time login code of a browser sign-in.

Most V10 requirements are proven by the GitHub and token tests that docs/security.md names;
these cases add what they do not. Cases are registered on TABLE; see test_asvs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from saas_app.core.clock import FrozenClock
from tests.github_helpers import REDIRECT, add_account, assert_tokens, query
from tests.security.test_asvs import (
    Case,
    MakeClient,
    MakeSettings,
    Scene,
    Table,
    assert_oauth_error,
    bearer,
    run_case,
)

TABLE = Table("V10")


@TABLE.case("V10.4.2", github=True)
async def replaying_a_redeemed_login_code_revokes_what_it_bought(s: Scene) -> None:
    signed_in = await s.env.sign_in(s.tenant, add_account(s.env.fake, "octo@example.com"), REDIRECT)
    code = query(signed_in.headers["location"])["code"]
    first = assert_tokens(await s.env.exchange(s.tenant, code))
    assert_oauth_error(await s.env.exchange(s.tenant, code), "invalid_grant")
    # RFC 6749 §4.1.2: the code leaked; what it bought must not outlive the replay.
    assert (await s.me(bearer(first["access_token"]))).status_code == 401
    assert_oauth_error(await s.refresh(first["refresh_token"]), "invalid_grant")


@pytest.mark.parametrize("case", TABLE.params())
async def test_asvs_v10_oauth(
    case: Case, make_settings: MakeSettings, make_client: MakeClient, clock: FrozenClock, tmp_path: Path
) -> None:
    await run_case(case, make_settings, make_client, clock, tmp_path)
