"""E-mail addresses: one canonical form, so look-alikes cannot be two accounts.

`ｏwner@example.com` (full-width o), `OWNER@example.com` and `ﬁnance@…` (a ligature) read as
`owner@…` / `finance@…` to a person; stored apart they are a second account that can pass
for the first and a way around per-account login limits. Every address is stored, looked
up and compared in its folded form (Unicode UAX #15 NFKC, then full case folding, as in
UTS #39's "confusable" handling and RFC 8265's casefolded identifiers).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field

MAX_LENGTH = 320  # RFC 3696 erratum 1690: 64 + 1 + 255


def normalize_email(address: str) -> str:
    """Returns the folded form of an address (or of any text compared with addresses).

    NFKC folds compatibility characters (full-width letters, ligatures); casefold then folds
    case fully ("ß" → "ss"); the second NFKC makes the result stable, so folding a folded
    address changes nothing (UAX #31 NFKC_Casefold is built the same way).
    """
    nfkc = unicodedata.normalize("NFKC", address.strip())
    return unicodedata.normalize("NFKC", nfkc.casefold())


def canonical_email(address: str) -> str:
    """Checks an address's syntax (email-validator), before and after folding, and returns
    its folded form; raises ValueError without quoting the address."""
    try:
        folded = normalize_email(_syntax_checked(address))
        # Folding can make a valid address invalid ("a﹫b@…" → "a@b@…"): check it again.
        return normalize_email(_syntax_checked(folded))
    except EmailNotValidError as exc:
        # email-validator's reason names the rule broken (and at most a character), not the address.
        raise ValueError(f"value is not a valid email address: {exc}") from None


def _syntax_checked(address: str) -> str:
    return validate_email(address, check_deliverability=False).normalized


# The request-body type of every address a client or operator gives (register, tenant
# owner, CLI): syntax-checked and folded before any service sees it.
EmailAddress = Annotated[
    str, Field(max_length=MAX_LENGTH, json_schema_extra={"format": "email"}), AfterValidator(canonical_email)
]
