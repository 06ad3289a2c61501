"""Loaded by the schemathesis CLI (SCHEMATHESIS_HOOKS) in tests/fuzz/test_schemathesis_cli.py.

`format: email` in the document means an address `email-validator` accepts, as pydantic's
`EmailStr` checks it: beside RFC 5322 syntax it refuses special-use domains (RFC 6761: `.test`,
`.invalid`, `.localhost`, ...), which JSON Schema's `email` format does not. docs/api.md says
so; here the generator is told the same, so it makes addresses the API means to accept.
"""

from __future__ import annotations

import schemathesis
from email_validator import EmailNotValidError, validate_email
from hypothesis import strategies as st


def accepted(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


schemathesis.openapi.format("email", st.emails().filter(accepted))
