"""ASVS 5.0 V9 Self-contained Tokens: where the verifying key comes from, time, type, audience.

The forged-token table (test_forged_tokens.py) covers signatures, algorithms and claims;
these cases add what it does not. Cases are registered on TABLE; see test_asvs.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from saas_app.core.clock import FrozenClock
from tests.conftest import TEST_JWT_SECRET
from tests.github_helpers import GITHUB, query
from tests.security.test_asvs import (
    Case,
    MakeClient,
    MakeSettings,
    Scene,
    Table,
    bearer,
    claims_of,
    resign,
    run_case,
)

TABLE = Table("V9")


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def server_key_file(tmp: Path) -> Path:
    path = tmp / "server-rs256.pem"
    path.write_bytes(rsa_pem())
    return path


@TABLE.case("V9.1.3", github=True, JWT_ALGORITHM="RS256", JWT_PRIVATE_KEY_FILE=server_key_file)
async def keys_named_in_a_token_header_are_never_fetched_or_trusted(s: Scene) -> None:
    claims = claims_of(s.owner.login.access_token)
    kid = jwt.get_unverified_header(s.owner.login.access_token)["kid"]
    attacker = rsa_pem().decode()
    attacker_jwk = jwk.construct(attacker, "RS256").public_key().to_dict()
    # Each names a key the attacker controls; the URLs point at the fake, which records requests.
    headers: list[dict[str, Any]] = [
        {"kid": kid, "jku": f"{GITHUB}/attacker/jwks.json"},
        {"kid": kid, "x5u": f"{GITHUB}/attacker/cert.pem"},
        {"kid": kid, "jwk": attacker_jwk},
        {"kid": "attacker-key", "jku": f"{GITHUB}/attacker/jwks.json", "jwk": attacker_jwk},
    ]
    for header in headers:
        token = jwt.encode(claims, attacker, algorithm="RS256", headers={"typ": "at+jwt", **header})
        assert (await s.me(bearer(token))).status_code == 401, header
    assert s.env.fake.requests == [], "the app fetched a key it was pointed at"
    # The control: the same claims signed with the configured key are accepted.
    server_key = (s.tmp / "server-rs256.pem").read_text()
    genuine = jwt.encode(claims, server_key, algorithm="RS256", headers={"typ": "at+jwt", "kid": kid})
    assert (await s.me(bearer(genuine))).status_code == 200


@TABLE.case("V9.2.1")
async def a_token_is_refused_before_its_not_before_time(s: Scene) -> None:
    # The service never issues `nbf`; one signed with its key is honoured all the same.
    now = int(s.clock.now().timestamp())
    assert (await s.me(bearer(resign(s.owner.login.access_token, nbf=now - 60)))).status_code == 200
    later = resign(s.owner.login.access_token, nbf=now + 3600, exp=now + 3600 + 600)
    assert (await s.me(bearer(later))).status_code == 401
    assert (await s.me(bearer(later))).status_code == 401  # also once its signature is remembered
    s.clock.advance(seconds=3600)  # its span begins
    assert (await s.me(bearer(later))).status_code == 200


@TABLE.case("V9.2.2", "V9.2.4", github=True)
async def a_signed_value_of_another_kind_is_never_an_access_token(s: Scene) -> None:
    # The GitHub `state` is signed with the same key as access tokens.
    started = await s.client.get(s.path("/auth/github/authorize"))
    state = query(started.headers["location"])["state"]
    assert (await s.me(bearer(state))).status_code == 401
    access = s.owner.login.access_token
    state_claims = claims_of(state)
    kinds = [
        # a state dressed as an access token: every claim, its own audience
        resign(access, aud=state_claims["aud"]),
        # an access token typed as a state
        jwt.encode(
            claims_of(access), TEST_JWT_SECRET, algorithm="HS256", headers={"typ": "github-state+jwt"}
        ),
        # an access token for an audience next to ours
        resign(access, aud=[f"{s.settings.JWT_AUDIENCE}:github-state"]),
    ]
    for token in kinds:
        assert (await s.me(bearer(token))).status_code == 401
    assert (await s.me(bearer(resign(access)))).status_code == 200  # the control


@pytest.mark.parametrize("case", TABLE.params())
async def test_asvs_v9_tokens(
    case: Case, make_settings: MakeSettings, make_client: MakeClient, clock: FrozenClock, tmp_path: Path
) -> None:
    await run_case(case, make_settings, make_client, clock, tmp_path)
